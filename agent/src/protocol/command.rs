//! Command payloads (PROTOCOL §3), parsed into types that cannot hold an
//! invalid value: every field is known (`deny_unknown_fields` at every
//! level), user names are [`UserName`]s, keys are [`KeyLine`]s, crypt
//! strings are [`CryptHash`]es. Parsing only ever sees payload bytes whose
//! signature has been verified.
//!
//! Password arguments are parsed by hand, not by serde: serde's messages
//! quote the offending value (`unknown variant "Hunter2"`), and a control
//! plane that wrongly sends a plaintext password must not see it echoed into
//! a result or a log.

use std::time::SystemTime;

use serde::Deserialize;
use serde_json::Value;

use crate::accounts::CryptHash;
use crate::error::{Error, Result};
use crate::names::UserName;
use crate::ssh::authkeys::{KeyLine, KeySelector};
use crate::ssh::sshd::{PermitRootLogin, SshdChange};

/// The operation names, as they appear in `op`.
pub const OPS: &[&str] = &[
    "set_password",
    "create_user",
    "delete_user",
    "add_keys",
    "remove_keys",
    "replace_keys",
    "set_sshd",
    "restart_sshd",
    "inventory",
    "lock_user",
    "unlock_user",
    "set_sudo",
];

/// A verified, validated command.
#[derive(Debug)]
pub struct Command {
    pub id: String,
    pub instance_id: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    pub op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ApplyAt {
    #[default]
    Now,
    NextBoot,
}

/// A password argument: still sealed (opened by the engine, which holds the
/// identity), or a hash made by the control plane.
pub enum PasswordArg {
    Sealed(Vec<u8>),
    Crypt(CryptHash),
}

impl std::fmt::Debug for PasswordArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordArg::Sealed(b) => write!(f, "Sealed(<{} bytes>)", b.len()),
            PasswordArg::Crypt(_) => f.write_str("Crypt(<redacted>)"),
        }
    }
}

#[derive(Debug)]
pub enum Op {
    SetPassword {
        user: UserName,
        password: PasswordArg,
        apply_at: ApplyAt,
        /// lastchg 0, as `passwd -e` writes it.
        must_change: bool,
    },
    CreateUser {
        user: UserName,
        sudo: bool,
        shell: Option<String>,
        password: Option<PasswordArg>,
        keys: Vec<KeyLine>,
        /// `keys_expire_at`: when `keys` stop working.
        keys_expire_at: Option<SystemTime>,
    },
    DeleteUser {
        user: UserName,
        remove_home: bool,
        /// End the user's processes instead of failing with `user_busy`.
        terminate_sessions: bool,
    },
    AddKeys {
        user: UserName,
        keys: Vec<KeyLine>,
        /// When the keys stop working (checked to be in the future by the
        /// engine, which knows the time).
        expires_at: Option<SystemTime>,
    },
    RemoveKeys {
        user: UserName,
        keys: Vec<KeySelector>,
    },
    ReplaceKeys {
        user: UserName,
        keys: Vec<KeyLine>,
        expires_at: Option<SystemTime>,
    },
    SetSshd {
        change: SshdChange,
        restart: bool,
    },
    RestartSshd,
    Inventory(crate::inventory::Request),
    LockUser {
        user: UserName,
        terminate_sessions: bool,
    },
    UnlockUser {
        user: UserName,
    },
    SetSudo {
        user: UserName,
        sudo: bool,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::SetPassword { .. } => "set_password",
            Op::CreateUser { .. } => "create_user",
            Op::DeleteUser { .. } => "delete_user",
            Op::AddKeys { .. } => "add_keys",
            Op::RemoveKeys { .. } => "remove_keys",
            Op::ReplaceKeys { .. } => "replace_keys",
            Op::SetSshd { .. } => "set_sshd",
            Op::RestartSshd => "restart_sshd",
            Op::Inventory(_) => "inventory",
            Op::LockUser { .. } => "lock_user",
            Op::UnlockUser { .. } => "unlock_user",
            Op::SetSudo { .. } => "set_sudo",
        }
    }

    /// The user the command is about, for logs and audit fields.
    pub fn target_user(&self) -> Option<&UserName> {
        match self {
            Op::SetPassword { user, .. }
            | Op::CreateUser { user, .. }
            | Op::DeleteUser { user, .. }
            | Op::AddKeys { user, .. }
            | Op::RemoveKeys { user, .. }
            | Op::ReplaceKeys { user, .. }
            | Op::LockUser { user, .. }
            | Op::UnlockUser { user }
            | Op::SetSudo { user, .. } => Some(user),
            Op::SetSshd { .. } | Op::RestartSshd | Op::Inventory(_) => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    v: u64,
    id: String,
    instance_id: String,
    issued_at: String,
    expires_at: String,
    op: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPasswordArgs {
    user: UserName,
    password: Value,
    #[serde(default)]
    apply_at: ApplyAt,
    #[serde(default)]
    must_change: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockUserArgs {
    user: UserName,
    #[serde(default)]
    terminate_sessions: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserArgs {
    user: UserName,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSudoArgs {
    user: UserName,
    sudo: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUserArgs {
    user: UserName,
    #[serde(default)]
    sudo: bool,
    #[serde(default)]
    shell: Option<String>,
    #[serde(default)]
    password: Option<Value>,
    #[serde(default)]
    keys: Option<Vec<String>>,
    #[serde(default)]
    keys_expire_at: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteUserArgs {
    user: UserName,
    #[serde(default)]
    remove_home: bool,
    #[serde(default)]
    terminate_sessions: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysArgs {
    user: UserName,
    keys: Vec<String>,
}

/// `add_keys` and `replace_keys`: [`KeysArgs`] and an `expires_at`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindKeysArgs {
    user: UserName,
    keys: Vec<String>,
    #[serde(default)]
    expires_at: Option<Value>,
}

/// A key expiry argument: an RFC 3339 UTC time (`Z` or `+00:00`). Whether
/// it is in the future is the engine's check.
fn key_expiry(v: Option<Value>, what: &str) -> Result<Option<SystemTime>> {
    let Some(v) = v else { return Ok(None) };
    let t = v
        .as_str()
        .and_then(super::parse_time)
        .ok_or_else(|| invalid(format!("{what} is not an RFC 3339 UTC time")))?;
    Ok(Some(t))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSshdArgs {
    #[serde(default)]
    pubkey_authentication: Option<bool>,
    #[serde(default)]
    password_authentication: Option<bool>,
    #[serde(default)]
    permit_root_login: Option<PermitRootLogin>,
    #[serde(default = "yes")]
    restart: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryArgs {
    #[serde(default)]
    users: Option<Vec<UserName>>,
    #[serde(default)]
    cursor: Option<String>,
}

/// Command ids (PROTOCOL §3): 1..128 chars of `[A-Za-z0-9._:-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// The `id` and `op` of a payload, when they can be read, for the result of
/// a command that is rejected later (PROTOCOL §4: otherwise `id` is null).
/// For verified bytes only: an unverified id would let anyone make the
/// agent answer, or log, in a real command's name. Bytes not (yet)
/// verified go through [`claimed_id`].
pub fn peek(payload: &[u8]) -> (Option<String>, Option<String>) {
    read_id_op(payload)
}

/// The id that payload bytes *claim*, without any verification: for the
/// `CLAIMED_COMMAND_ID` of a log event before (or without) a verified
/// signature, and for a client naming files after its own envelope. Never
/// an authority; only an id of the protocol's shape is returned, so it is a
/// harmless token wherever it is written.
pub fn claimed_id(payload: &[u8]) -> Option<String> {
    read_id_op(payload).0
}

fn read_id_op(payload: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(payload) else {
        return (None, None);
    };
    let id = map
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| valid_id(s))
        .map(str::to_owned);
    let op = map
        .get("op")
        .and_then(Value::as_str)
        .filter(|s| OPS.contains(s))
        .map(str::to_owned);
    (id, op)
}

/// Any JSON value in which no object has the same key twice (keys compared
/// after unescaping, as serde_json compares them). The error never names
/// the key: it may sit inside a password object. serde_json's recursion
/// limit (128) bounds the depth.
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("an object has the same key twice"));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidCommand(msg.into())
}

fn args_of<T: for<'de> Deserialize<'de>>(op: &str, args: Option<Value>) -> Result<T> {
    let args = args.unwrap_or_else(|| Value::Object(Default::default()));
    serde_json::from_value(args).map_err(|e| invalid(format!("{op} args: {e}")))
}

/// Parse a password argument without ever quoting it.
fn password_arg(v: Value, what: &str) -> Result<PasswordArg> {
    let Value::Object(map) = v else {
        return Err(invalid(format!(
            "{what} must be an object {{\"sealed\": ...}} or {{\"crypt\": ...}}; \
             a plaintext password is never accepted"
        )));
    };
    if map.len() != 1 {
        return Err(invalid(format!(
            "{what} must have exactly one field, \"sealed\" or \"crypt\""
        )));
    }
    let (kind, value) = map.into_iter().next().expect("one entry");
    // The field's name is checked before its value, and only the two known
    // names are ever written into a message: a key is as likely to be the
    // password as a value is (`{"Hunter2": 5}`).
    let kind = match kind.as_str() {
        "sealed" => "sealed",
        "crypt" => "crypt",
        _ => {
            return Err(invalid(format!(
                "{what} has an unknown field; use \"sealed\" or \"crypt\""
            )))
        }
    };
    let Value::String(s) = value else {
        return Err(invalid(format!("{what}.{kind} must be a string")));
    };
    match kind {
        "sealed" => {
            let bytes = super::dsse::decode_b64(&s)
                .ok_or_else(|| invalid(format!("{what}.sealed is not base64")))?;
            // epk (32) + MAC (16): anything shorter cannot be a sealed box.
            if bytes.len() < 48 {
                return Err(invalid(format!(
                    "{what}.sealed is too short to be a sealed box"
                )));
            }
            Ok(PasswordArg::Sealed(bytes))
        }
        _ => CryptHash::parse(&s).map(PasswordArg::Crypt).map_err(|e| {
            // parse_crypt's reasons are fixed texts that never quote the hash.
            let why = match e {
                Error::InvalidCommand(why) => why,
                other => other.to_string(),
            };
            invalid(format!("{what}.crypt: {why}"))
        }),
    }
}

fn key_lines(keys: Vec<String>) -> Result<Vec<KeyLine>> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| KeyLine::parse(k).map_err(|e| invalid(format!("keys[{i}]: {e}"))))
        .collect()
}

fn nonempty<T>(op: &str, v: Vec<T>) -> Result<Vec<T>> {
    if v.is_empty() {
        Err(invalid(format!("{op}: keys must not be empty")))
    } else {
        Ok(v)
    }
}

fn shell(s: String) -> Result<String> {
    let ok = s.starts_with('/')
        && s.len() <= 255
        && !s.contains("/../")
        && !s.ends_with("/..")
        && s.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != ':');
    if ok {
        Ok(s)
    } else {
        Err(invalid(format!(
            "shell {:?} must be an absolute path without ':', '..', whitespace or control characters",
            crate::names::truncate_for_message(&s)
        )))
    }
}

/// Parse verified payload bytes into a [`Command`]. Only structure and
/// values are checked here; instance, times and replay are the engine's.
pub fn parse(payload: &[u8]) -> Result<Command> {
    // First, on the whole payload: serde only refuses a duplicate field of a
    // struct, and `args` is read as a map where the last duplicate wins, so
    // `"user":"root","user":"x"` would apply to a user nobody reviewed.
    serde_json::from_slice::<NoDuplicateKeys>(payload)
        .map_err(|e| invalid(format!("payload: {e}")))?;
    let raw: RawCommand =
        serde_json::from_slice(payload).map_err(|e| invalid(format!("payload: {e}")))?;
    if raw.v != 1 {
        return Err(invalid(format!("unsupported version v={}", raw.v)));
    }
    if !valid_id(&raw.id) {
        return Err(invalid(
            "id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    let issued_at = super::parse_time(&raw.issued_at)
        .ok_or_else(|| invalid("issued_at is not an RFC 3339 UTC time"))?;
    let expires_at = super::parse_time(&raw.expires_at)
        .ok_or_else(|| invalid("expires_at is not an RFC 3339 UTC time"))?;
    let op = raw.op.as_str();
    let op = match op {
        "set_password" => {
            let a: SetPasswordArgs = args_of(op, raw.args)?;
            Op::SetPassword {
                user: a.user,
                password: password_arg(a.password, "password")?,
                apply_at: a.apply_at,
                must_change: a.must_change,
            }
        }
        "create_user" => {
            let a: CreateUserArgs = args_of(op, raw.args)?;
            Op::CreateUser {
                user: a.user,
                sudo: a.sudo,
                shell: a.shell.map(shell).transpose()?,
                password: a
                    .password
                    .map(|p| password_arg(p, "password"))
                    .transpose()?,
                keys: key_lines(a.keys.unwrap_or_default())?,
                keys_expire_at: key_expiry(a.keys_expire_at, "keys_expire_at")?,
            }
        }
        "delete_user" => {
            let a: DeleteUserArgs = args_of(op, raw.args)?;
            Op::DeleteUser {
                user: a.user,
                remove_home: a.remove_home,
                terminate_sessions: a.terminate_sessions,
            }
        }
        "add_keys" => {
            let a: BindKeysArgs = args_of(op, raw.args)?;
            Op::AddKeys {
                user: a.user,
                keys: nonempty(op, key_lines(a.keys)?)?,
                expires_at: key_expiry(a.expires_at, "expires_at")?,
            }
        }
        "replace_keys" => {
            let a: BindKeysArgs = args_of(op, raw.args)?;
            Op::ReplaceKeys {
                user: a.user,
                keys: key_lines(a.keys)?,
                expires_at: key_expiry(a.expires_at, "expires_at")?,
            }
        }
        "remove_keys" => {
            let a: KeysArgs = args_of(op, raw.args)?;
            let keys = a
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| KeySelector::parse(k).map_err(|e| invalid(format!("keys[{i}]: {e}"))))
                .collect::<Result<Vec<_>>>()?;
            Op::RemoveKeys {
                user: a.user,
                keys: nonempty(op, keys)?,
            }
        }
        "set_sshd" => {
            let a: SetSshdArgs = args_of(op, raw.args)?;
            let change = SshdChange {
                pubkey_authentication: a.pubkey_authentication,
                password_authentication: a.password_authentication,
                permit_root_login: a.permit_root_login,
            };
            if change == SshdChange::default() {
                return Err(invalid(
                    "set_sshd: give at least one of pubkey_authentication, \
                     password_authentication, permit_root_login",
                ));
            }
            Op::SetSshd {
                change,
                restart: a.restart,
            }
        }
        "restart_sshd" => {
            let NoArgs {} = args_of(op, raw.args)?;
            Op::RestartSshd
        }
        "inventory" => {
            let a: InventoryArgs = args_of(op, raw.args)?;
            if a.users.as_ref().is_some_and(Vec::is_empty) {
                return Err(invalid(
                    "inventory: users must not be empty (leave it out to list every user)",
                ));
            }
            Op::Inventory(crate::inventory::Request {
                users: a.users.unwrap_or_default(),
                cursor: a
                    .cursor
                    .as_deref()
                    .map(crate::inventory::Cursor::parse)
                    .transpose()?,
            })
        }
        "lock_user" => {
            let a: LockUserArgs = args_of(op, raw.args)?;
            if a.user.as_str() == "root" {
                // Locking root out of a cloud instance is what the console's
                // password reset exists to undo.
                return Err(invalid(
                    "lock_user refuses root: a locked root cannot be recovered from the instance",
                ));
            }
            Op::LockUser {
                user: a.user,
                terminate_sessions: a.terminate_sessions,
            }
        }
        "unlock_user" => {
            let a: UserArgs = args_of(op, raw.args)?;
            Op::UnlockUser { user: a.user }
        }
        "set_sudo" => {
            let a: SetSudoArgs = args_of(op, raw.args)?;
            Op::SetSudo {
                user: a.user,
                sudo: a.sudo,
            }
        }
        other => {
            return Err(invalid(format!(
                "unknown op {:?}",
                crate::names::truncate_for_message(other)
            )))
        }
    };
    Ok(Command {
        id: raw.id,
        instance_id: raw.instance_id,
        issued_at,
        expires_at,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn cmd(op: &str, args: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "v": 1, "id": "c-1", "instance_id": "i-1",
            "issued_at": "2026-11-29T18:00:00Z", "expires_at": "2026-11-29T18:10:00Z",
            "op": op, "args": args,
        }))
        .unwrap()
    }

    #[test]
    fn lock_user_of_root_is_refused_before_anything_is_attempted() {
        let e = parse(&cmd("lock_user", serde_json::json!({"user": "root"}))).unwrap_err();
        assert_eq!(e.code(), Code::InvalidCommand, "{e}");
        let c = parse(&cmd("lock_user", serde_json::json!({"user": "bob"}))).unwrap();
        assert!(matches!(
            c.op,
            Op::LockUser {
                terminate_sessions: false,
                ..
            }
        ));
        let c = parse(&cmd("unlock_user", serde_json::json!({"user": "bob"}))).unwrap();
        assert_eq!(c.op.name(), "unlock_user");
        assert!(OPS.contains(&"lock_user") && OPS.contains(&"unlock_user"));
    }

    #[test]
    fn ops_without_key_parsing_parse() {
        let c = parse(&cmd("delete_user", serde_json::json!({"user": "bob"}))).unwrap();
        assert!(matches!(
            c.op,
            Op::DeleteUser {
                remove_home: false,
                terminate_sessions: false,
                ..
            }
        ));
        let c = parse(&cmd(
            "delete_user",
            serde_json::json!({"user": "bob", "terminate_sessions": true}),
        ))
        .unwrap();
        assert!(matches!(
            c.op,
            Op::DeleteUser {
                terminate_sessions: true,
                ..
            }
        ));
        let c = parse(&cmd(
            "set_sshd",
            serde_json::json!({"permit_root_login": "prohibit-password"}),
        ))
        .unwrap();
        assert!(matches!(c.op, Op::SetSshd { restart: true, .. }));
        let c = parse(&cmd("inventory", Value::Null)).unwrap();
        assert_eq!(c.op.name(), "inventory");
        let c = parse(&cmd("restart_sshd", serde_json::json!({}))).unwrap();
        assert_eq!(c.op.name(), "restart_sshd");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_invalid_command() {
        for bad in [
            cmd("delete_user", serde_json::json!({"user": "bob", "x": 1})),
            cmd("delete_user", serde_json::json!({"user": "Bob"})),
            cmd("set_sshd", serde_json::json!({})),
            cmd(
                "set_sshd",
                serde_json::json!({"permit_root_login": "maybe"}),
            ),
            cmd("inventory", serde_json::json!({"x": 1})),
            cmd("frobnicate", Value::Null),
            br#"{"v":1}"#.to_vec(),
            b"not json".to_vec(),
        ] {
            assert_eq!(parse(&bad).unwrap_err().code(), Code::InvalidCommand);
        }
        let mut v: Value = serde_json::from_slice(&cmd("inventory", Value::Null)).unwrap();
        v["extra"] = 1.into();
        assert!(parse(v.to_string().as_bytes()).is_err());
        v = serde_json::from_slice(&cmd("inventory", Value::Null)).unwrap();
        v["v"] = 2.into();
        assert!(parse(v.to_string().as_bytes()).is_err());
        v["v"] = 1.into();
        v["id"] = "a/b".into();
        assert!(parse(v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn a_plaintext_password_is_never_quoted_in_the_error() {
        for pw in [
            serde_json::json!("Hunter2-Secret"),
            serde_json::json!({"sealed": "Hunter2-Secret"}),
            serde_json::json!({"plain": "Hunter2-Secret"}),
            serde_json::json!({"sealed": "Hunter2-Secret", "crypt": "x"}),
            serde_json::json!({"Hunter2-Secret": "x"}),
        ] {
            let e = parse(&cmd(
                "set_password",
                serde_json::json!({"user": "bob", "password": pw}),
            ))
            .unwrap_err();
            assert_eq!(e.code(), Code::InvalidCommand);
            assert!(!e.to_string().contains("Hunter2"), "{e}");
        }
    }

    #[test]
    fn peek_reads_only_well_formed_ids() {
        assert_eq!(
            peek(&cmd("inventory", Value::Null)),
            (Some("c-1".into()), Some("inventory".into()))
        );
        assert_eq!(peek(br#"{"id":"a b","op":"zz"}"#), (None, None));
        assert_eq!(peek(b"[]"), (None, None));
    }

    #[test]
    fn a_key_expiry_that_is_not_an_rfc3339_utc_time_is_invalid_command() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMU3PG77wArVV58QldS0w27ZKeU/f5DVdcL7Fbmo4fgY x";
        for bad in [
            serde_json::json!("2030-01-01T01:00:00+01:00"),
            serde_json::json!("2030-01-01 00:00:00"),
            serde_json::json!("tomorrow"),
            serde_json::json!(1893456000),
            serde_json::json!(""),
        ] {
            for (op, field) in [
                ("add_keys", "expires_at"),
                ("replace_keys", "expires_at"),
                ("create_user", "keys_expire_at"),
            ] {
                let e = parse(&cmd(
                    op,
                    serde_json::json!({"user": "bob", "keys": [key], field: bad}),
                ))
                .unwrap_err();
                assert_eq!(e.code(), Code::InvalidCommand, "{op} {bad}: {e}");
            }
        }
        // remove_keys has no expiry.
        let e = parse(&cmd(
            "remove_keys",
            serde_json::json!({"user": "bob", "keys": [key], "expires_at": "2030-01-01T00:00:00Z"}),
        ))
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidCommand);
        let c = parse(&cmd(
            "add_keys",
            serde_json::json!({"user": "bob", "keys": [key], "expires_at": "2030-01-01T00:00:00+00:00"}),
        ))
        .unwrap();
        let Op::AddKeys { expires_at, .. } = c.op else {
            panic!("{:?}", c.op)
        };
        assert_eq!(
            expires_at,
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_893_456_000))
        );
    }

    #[test]
    fn ids_allow_dots_and_colons() {
        assert!(valid_id("c-1.2:3_x"));
        assert!(!valid_id(""));
        assert!(!valid_id(&"a".repeat(129)));
        assert!(!valid_id("a/b"));
    }
}
