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

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dsse::Envelope;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ApplyAt {
    #[default]
    Now,
    NextBoot,
}

impl ApplyAt {
    fn is_now(&self) -> bool {
        *self == ApplyAt::Now
    }
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
        /// End the live SSH sessions that authenticated with these keys.
        terminate_sessions: bool,
    },
    ReplaceKeys {
        user: UserName,
        keys: Vec<KeyLine>,
        expires_at: Option<SystemTime>,
        /// End the live SSH sessions of the keys removed now, and (with
        /// `expires_at`) those of `keys` when they expire.
        terminate_sessions: bool,
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

// The argument objects of each op (PROTOCOL §3), one public type per op:
// the engine parses them (`parse`), `accessctl`, the demo and the tests build
// them, so the wire names and defaults are written once. Each serializes to
// exactly what it parses from; defaults are left out when serializing, so a
// built command carries only what was asked for. Values whose check must not
// quote them (passwords) or whose message is fixed (times, keys, shells,
// cursors) are kept as sent and checked by `parse`, which turns them into an
// [`Op`].

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// A password argument as it is on the wire: `{"sealed": "<base64>"}` or
/// `{"crypt": "<hash>"}`. Deserializing keeps the JSON as sent; [`parse`]
/// checks it without ever quoting it. `Debug` never shows it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(Value);

impl Password {
    /// `{"crypt": hash}`: a crypt(3) hash made by the control plane.
    pub fn crypt(hash: &str) -> Password {
        Password(serde_json::json!({ "crypt": hash }))
    }

    /// `{"sealed": base64}` of a sealed box (see `client::seal_password`).
    pub fn sealed(sealed_box: &[u8]) -> Password {
        Password(serde_json::json!({ "sealed": super::dsse::encode_b64(sealed_box) }))
    }

    /// The JSON value, as it goes into `args`.
    pub fn to_value(&self) -> Value {
        self.0.clone()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A key expiry argument (`expires_at`, `keys_expire_at`) as sent: an
/// RFC 3339 UTC time, checked by [`parse`] (whether it is in the future is
/// the engine's check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyExpiry(Value);

impl KeyExpiry {
    /// The time in whole seconds, as [`super::format_time`] writes it.
    pub fn at(t: SystemTime) -> KeyExpiry {
        KeyExpiry(Value::String(super::format_time(t)))
    }

    /// An RFC 3339 UTC time given as text; `None` if it is not one.
    pub fn parse(s: &str) -> Option<KeyExpiry> {
        super::parse_time(s).map(|_| KeyExpiry(Value::String(s.to_owned())))
    }
}

/// `set_password`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub user: UserName,
    pub password: Password,
    #[serde(default, skip_serializing_if = "ApplyAt::is_now")]
    pub apply_at: ApplyAt,
    #[serde(default, skip_serializing_if = "is_false")]
    pub must_change: bool,
}

/// `create_user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub user: UserName,
    #[serde(default, skip_serializing_if = "is_false")]
    pub sudo: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
    /// authorized_keys lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_expire_at: Option<KeyExpiry>,
}

/// `delete_user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteUser {
    pub user: UserName,
    #[serde(default, skip_serializing_if = "is_false")]
    pub remove_home: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminate_sessions: bool,
}

/// `add_keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddKeys {
    pub user: UserName,
    /// authorized_keys lines (at least one).
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<KeyExpiry>,
}

/// `remove_keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveKeys {
    pub user: UserName,
    /// authorized_keys lines or `SHA256:` fingerprints (at least one).
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminate_sessions: bool,
}

/// `replace_keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceKeys {
    pub user: UserName,
    /// authorized_keys lines (may be empty: remove every managed key).
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<KeyExpiry>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminate_sessions: bool,
}

/// `set_sshd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSshd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubkey_authentication: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_authentication: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit_root_login: Option<PermitRootLogin>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub restart: bool,
}

/// `restart_sshd`: no arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSshd {}

/// `inventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserName>>,
    /// `data.next` of an earlier inventory result, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `lock_user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockUser {
    pub user: UserName,
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminate_sessions: bool,
}

/// `unlock_user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockUser {
    pub user: UserName,
}

/// `set_sudo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSudo {
    pub user: UserName,
    pub sudo: bool,
}

/// An op with its arguments: what a control plane builds. Its `op` is the
/// wire name; [`Args::to_value`] is the `args` object.
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    SetPassword(SetPassword),
    CreateUser(CreateUser),
    DeleteUser(DeleteUser),
    AddKeys(AddKeys),
    RemoveKeys(RemoveKeys),
    ReplaceKeys(ReplaceKeys),
    SetSshd(SetSshd),
    RestartSshd(RestartSshd),
    Inventory(Inventory),
    LockUser(LockUser),
    UnlockUser(UnlockUser),
    SetSudo(SetSudo),
}

impl Args {
    /// The arguments of `op` from a payload's `args` (absent or `null`: no
    /// arguments). The op list the engine accepts.
    pub fn from_json(op: &str, args: Option<Value>) -> Result<Args> {
        Ok(match op {
            "set_password" => Args::SetPassword(args_of(op, args)?),
            "create_user" => Args::CreateUser(args_of(op, args)?),
            "delete_user" => Args::DeleteUser(args_of(op, args)?),
            "add_keys" => Args::AddKeys(args_of(op, args)?),
            "remove_keys" => Args::RemoveKeys(args_of(op, args)?),
            "replace_keys" => Args::ReplaceKeys(args_of(op, args)?),
            "set_sshd" => Args::SetSshd(args_of(op, args)?),
            "restart_sshd" => Args::RestartSshd(args_of(op, args)?),
            "inventory" => Args::Inventory(args_of(op, args)?),
            "lock_user" => Args::LockUser(args_of(op, args)?),
            "unlock_user" => Args::UnlockUser(args_of(op, args)?),
            "set_sudo" => Args::SetSudo(args_of(op, args)?),
            other => {
                return Err(invalid(format!(
                    "unknown op {:?}",
                    crate::names::truncate_for_message(other)
                )))
            }
        })
    }

    /// The wire name, as in [`OPS`].
    pub fn op(&self) -> &'static str {
        match self {
            Args::SetPassword(_) => "set_password",
            Args::CreateUser(_) => "create_user",
            Args::DeleteUser(_) => "delete_user",
            Args::AddKeys(_) => "add_keys",
            Args::RemoveKeys(_) => "remove_keys",
            Args::ReplaceKeys(_) => "replace_keys",
            Args::SetSshd(_) => "set_sshd",
            Args::RestartSshd(_) => "restart_sshd",
            Args::Inventory(_) => "inventory",
            Args::LockUser(_) => "lock_user",
            Args::UnlockUser(_) => "unlock_user",
            Args::SetSudo(_) => "set_sudo",
        }
    }

    /// The `args` object; `null` (no `args` member) when it would be empty,
    /// as the payload has always been written for ops without arguments.
    pub fn to_value(&self) -> Value {
        let v = match self {
            Args::SetPassword(a) => serde_json::to_value(a),
            Args::CreateUser(a) => serde_json::to_value(a),
            Args::DeleteUser(a) => serde_json::to_value(a),
            Args::AddKeys(a) => serde_json::to_value(a),
            Args::RemoveKeys(a) => serde_json::to_value(a),
            Args::ReplaceKeys(a) => serde_json::to_value(a),
            Args::SetSshd(a) => serde_json::to_value(a),
            Args::RestartSshd(a) => serde_json::to_value(a),
            Args::Inventory(a) => serde_json::to_value(a),
            Args::LockUser(a) => serde_json::to_value(a),
            Args::UnlockUser(a) => serde_json::to_value(a),
            Args::SetSudo(a) => serde_json::to_value(a),
        }
        .expect("argument structs serialize to JSON");
        match v {
            Value::Object(m) if m.is_empty() => Value::Null,
            v => v,
        }
    }
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
/// For verified bytes only (what [`super::dsse::Envelope::verify`] hands
/// back): an unverified id would let anyone make the agent answer, or log,
/// in a real command's name. Envelopes not (yet) verified go through
/// [`claimed_id`].
pub fn peek(payload: &[u8]) -> (Option<String>, Option<String>) {
    read_id_op(payload)
}

/// The id a command envelope *claims*, read without verifying anything: for
/// the `CLAIMED_COMMAND_ID` of a log event before (or without) a verified
/// signature, and for a client naming files, or matching results, after its
/// own envelope. Never an authority; only an id of the protocol's shape is
/// returned (it is attacker-controlled until verified; the shape keeps it a
/// harmless token wherever it is written). `None` when `envelope` is not a
/// DSSE envelope ([`Envelope::parse`]) or its payload has no such id.
pub fn claimed_id(envelope: &[u8]) -> Option<String> {
    claimed_id_in(&Envelope::parse(envelope).ok()?)
}

/// [`claimed_id`] of an envelope already parsed (the engine parses it once
/// for both the claim and the verification).
pub fn claimed_id_in(envelope: &Envelope) -> Option<String> {
    read_id_op(envelope.unverified_payload()).0
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
    // `"args": null` never gets here as Some(Null) from a payload (serde
    // reads it as None); from a caller it means the same: no arguments.
    let args = match args {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v) => v,
    };
    serde_json::from_value(args).map_err(|e| invalid(format!("{op} args: {e}")))
}

/// Parse a password argument without ever quoting it.
fn password_arg(Password(v): Password, what: &str) -> Result<PasswordArg> {
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

/// A key expiry argument: an RFC 3339 UTC time (`Z` or `+00:00`). Whether
/// it is in the future is the engine's check.
fn key_expiry(v: Option<KeyExpiry>, what: &str) -> Result<Option<SystemTime>> {
    let Some(KeyExpiry(v)) = v else {
        return Ok(None);
    };
    let t = v
        .as_str()
        .and_then(super::parse_time)
        .ok_or_else(|| invalid(format!("{what} is not an RFC 3339 UTC time")))?;
    Ok(Some(t))
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
    let op = match Args::from_json(&raw.op, raw.args)? {
        Args::SetPassword(a) => Op::SetPassword {
            user: a.user,
            password: password_arg(a.password, "password")?,
            apply_at: a.apply_at,
            must_change: a.must_change,
        },
        Args::CreateUser(a) => Op::CreateUser {
            user: a.user,
            sudo: a.sudo,
            shell: a.shell.map(shell).transpose()?,
            password: a
                .password
                .map(|p| password_arg(p, "password"))
                .transpose()?,
            keys: key_lines(a.keys.unwrap_or_default())?,
            keys_expire_at: key_expiry(a.keys_expire_at, "keys_expire_at")?,
        },
        Args::DeleteUser(a) => Op::DeleteUser {
            user: a.user,
            remove_home: a.remove_home,
            terminate_sessions: a.terminate_sessions,
        },
        Args::AddKeys(a) => Op::AddKeys {
            user: a.user,
            keys: nonempty("add_keys", key_lines(a.keys)?)?,
            expires_at: key_expiry(a.expires_at, "expires_at")?,
        },
        Args::ReplaceKeys(a) => Op::ReplaceKeys {
            user: a.user,
            keys: key_lines(a.keys)?,
            expires_at: key_expiry(a.expires_at, "expires_at")?,
            terminate_sessions: a.terminate_sessions,
        },
        Args::RemoveKeys(a) => {
            let keys = a
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| KeySelector::parse(k).map_err(|e| invalid(format!("keys[{i}]: {e}"))))
                .collect::<Result<Vec<_>>>()?;
            Op::RemoveKeys {
                user: a.user,
                keys: nonempty("remove_keys", keys)?,
                terminate_sessions: a.terminate_sessions,
            }
        }
        Args::SetSshd(a) => {
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
        Args::RestartSshd(RestartSshd {}) => Op::RestartSshd,
        Args::Inventory(a) => {
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
        Args::LockUser(a) => {
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
        Args::UnlockUser(a) => Op::UnlockUser { user: a.user },
        Args::SetSudo(a) => Op::SetSudo {
            user: a.user,
            sudo: a.sudo,
        },
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

    fn envelope_with(payload: &str) -> Vec<u8> {
        let p = super::super::dsse::encode_b64(payload.as_bytes());
        format!(r#"{{"payloadType":"x","payload":"{p}","signatures":[{{"sig":""}}]}}"#).into_bytes()
    }

    #[test]
    fn an_envelope_claims_a_well_formed_id_unverified() {
        assert_eq!(
            claimed_id(&envelope_with(r#"{"id":"c-1.2:3_x"}"#)).as_deref(),
            Some("c-1.2:3_x")
        );
    }

    #[test]
    fn a_claimed_id_that_could_forge_log_fields_is_not_read() {
        assert_eq!(
            claimed_id(&envelope_with(r#"{"id":"a\nMESSAGE_ID=x"}"#)),
            None
        );
        assert_eq!(claimed_id(&envelope_with(r#"{"id":""}"#)), None);
        assert_eq!(claimed_id(b"not json"), None);
        // A payload is not an envelope: its id is claimed by nothing.
        assert_eq!(claimed_id(br#"{"id":"c-1"}"#), None);
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
        // add_keys removes nothing, so it has no sessions to end.
        let e = parse(&cmd(
            "add_keys",
            serde_json::json!({"user": "bob", "keys": [key], "terminate_sessions": true}),
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

    /// Typed arguments for `op`, with every field set away from its default
    /// (so a field that serializes under the wrong name, or is skipped when
    /// it should not be, fails the round trip).
    fn sample(op: &str) -> Args {
        let user = UserName::parse("bob").unwrap();
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMU3PG77wArVV58QldS0w27ZKeU/f5DVdcL7Fbmo4fgY x"
                .to_string();
        let when =
            KeyExpiry::at(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_893_456_000));
        let crypt = Password::crypt("$6$salt$2g3wBi3ExZ8LZRNBhZBm4nDrd0pJeP9qsbn6dq9s6sDW.Lxh8u3vRvm6TsOsyDnbBQhn7oQEv3Cak/dXT/lqC0");
        match op {
            "set_password" => Args::SetPassword(SetPassword {
                user,
                password: Password::sealed(&[7; 48]),
                apply_at: ApplyAt::NextBoot,
                must_change: true,
            }),
            "create_user" => Args::CreateUser(CreateUser {
                user,
                sudo: true,
                shell: Some("/bin/zsh".into()),
                password: Some(crypt),
                keys: Some(vec![key]),
                keys_expire_at: Some(when),
            }),
            "delete_user" => Args::DeleteUser(DeleteUser {
                user,
                remove_home: true,
                terminate_sessions: true,
            }),
            "add_keys" => Args::AddKeys(AddKeys {
                user,
                keys: vec![key],
                expires_at: Some(when),
            }),
            "remove_keys" => Args::RemoveKeys(RemoveKeys {
                user,
                keys: vec![
                    key,
                    "SHA256:ZzlM1AbDTeIhCSl8TPuPOTTJzuOQ+z5LrRAQq3jVBgU".into(),
                ],
                terminate_sessions: true,
            }),
            "replace_keys" => Args::ReplaceKeys(ReplaceKeys {
                user,
                keys: vec![key],
                expires_at: Some(when),
                terminate_sessions: true,
            }),
            "set_sshd" => Args::SetSshd(SetSshd {
                pubkey_authentication: Some(true),
                password_authentication: Some(false),
                permit_root_login: Some(PermitRootLogin::ProhibitPassword),
                restart: false,
            }),
            "restart_sshd" => Args::RestartSshd(RestartSshd {}),
            "inventory" => Args::Inventory(Inventory {
                users: Some(vec![user]),
                cursor: None,
            }),
            "lock_user" => Args::LockUser(LockUser {
                user,
                terminate_sessions: true,
            }),
            "unlock_user" => Args::UnlockUser(UnlockUser { user }),
            "set_sudo" => Args::SetSudo(SetSudo { user, sudo: true }),
            other => panic!("no sample arguments for op {other}: add them here"),
        }
    }

    #[test]
    fn typed_args_of_every_op_round_trip_through_the_wire_and_parse() {
        for &op in OPS {
            let args = sample(op);
            assert_eq!(args.op(), op);
            let v = args.to_value();
            let back = Args::from_json(op, Some(v.clone())).unwrap();
            assert_eq!(back, args, "{op}: {v}");
            let c = parse(&cmd(op, v.clone())).unwrap_or_else(|e| panic!("{op}: {v}: {e}"));
            assert_eq!(c.op.name(), op);
        }
        // Defaults are left out, and read back as the defaults.
        let bare = Args::SetSshd(SetSshd {
            pubkey_authentication: None,
            password_authentication: Some(false),
            permit_root_login: None,
            restart: true,
        });
        assert_eq!(
            bare.to_value(),
            serde_json::json!({"password_authentication": false})
        );
        assert_eq!(
            Args::from_json("set_sshd", Some(bare.to_value())).unwrap(),
            bare
        );
        assert_eq!(Args::RestartSshd(RestartSshd {}).to_value(), Value::Null);
        let Op::SetPassword {
            password,
            apply_at,
            must_change,
            ..
        } = parse(&cmd("set_password", sample("set_password").to_value()))
            .unwrap()
            .op
        else {
            panic!()
        };
        assert!(matches!(password, PasswordArg::Sealed(b) if b == [7; 48]));
        assert_eq!((apply_at, must_change), (ApplyAt::NextBoot, true));
        let Op::AddKeys {
            keys, expires_at, ..
        } = parse(&cmd("add_keys", sample("add_keys").to_value()))
            .unwrap()
            .op
        else {
            panic!()
        };
        assert_eq!(keys.len(), 1);
        assert_eq!(
            expires_at,
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_893_456_000))
        );
        // terminate_sessions reaches the op of both key removals, and is
        // false (and left out of the wire form) when not given.
        for op in ["remove_keys", "replace_keys"] {
            let on = parse(&cmd(op, sample(op).to_value())).unwrap().op;
            assert!(
                matches!(
                    on,
                    Op::RemoveKeys {
                        terminate_sessions: true,
                        ..
                    } | Op::ReplaceKeys {
                        terminate_sessions: true,
                        ..
                    }
                ),
                "{op}"
            );
            let mut v = sample(op).to_value();
            v.as_object_mut().unwrap().remove("terminate_sessions");
            let off = parse(&cmd(op, v.clone())).unwrap().op;
            assert!(
                matches!(
                    off,
                    Op::RemoveKeys {
                        terminate_sessions: false,
                        ..
                    } | Op::ReplaceKeys {
                        terminate_sessions: false,
                        ..
                    }
                ),
                "{op}"
            );
            let back = Args::from_json(op, Some(v.clone())).unwrap();
            assert_eq!(back.to_value(), v, "{op}: the default is left out");
        }
        let bad = cmd(
            "remove_keys",
            serde_json::json!({"user": "bob", "keys": ["SHA256:ZzlM1AbDTeIhCSl8TPuPOTTJzuOQ+z5LrRAQq3jVBgU"], "terminate_sessions": "yes"}),
        );
        assert_eq!(parse(&bad).unwrap_err().code(), Code::InvalidCommand);
    }

    #[test]
    fn ids_allow_dots_and_colons() {
        assert!(valid_id("c-1.2:3_x"));
        assert!(!valid_id(""));
        assert!(!valid_id(&"a".repeat(129)));
        assert!(!valid_id("a/b"));
    }
}
