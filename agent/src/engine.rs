//! The command path: envelope bytes in, signed result envelope out
//! (PROTOCOL §2–4).
//!
//! The checks run in a fixed order, and each one only sees what the previous
//! ones accepted:
//!
//! 1. size, before any parsing (`bad_envelope`);
//! 2. DSSE parse and payloadType (`bad_envelope`);
//! 3. Ed25519 over PAE against the trusted keys (`unknown_key`, `bad_signature`);
//! 4. the verified payload bytes — and nothing else — parsed into a typed,
//!    validated command (`invalid_command`);
//! 5. instance id, then times (`wrong_instance`, `not_yet_valid`, `expired`);
//! 6. replay (`replayed`);
//! 7. sealed passwords opened and hashed, policy checked (`invalid_command`,
//!    `weak_password`) — the plaintext lives only between these two steps;
//! 8. the id recorded durably, then the command applied.
//!
//! Everything up to 7 changes nothing on disk: a `rejected` result is true.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ed25519_dalek::VerifyingKey;
use serde_json::{json, Value};

use crate::accounts::{self, CryptHash, NewUser, Password};
use crate::config::Config;
use crate::error::{Code, Error, Result};
use crate::fsx::Dir;
use crate::identity::{open_state_dir, Identity};
use crate::names::UserName;
use crate::protocol::command::{self, ApplyAt, Command, Op, PasswordArg};
use crate::protocol::dsse::{self, Envelope};
use crate::protocol::result::{status_of, ResultPayload};
use crate::protocol::{format_time, AGENT_KEY_ID, COMMAND_TYPE, RESULT_TYPE};
use crate::replay::ReplayStore;
use crate::secret::Secret;
use crate::ssh::{authkeys, sshd};
use crate::staging::Staging;
use crate::sys::System;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Rejected,
    Failed,
}

/// What happened to one envelope: the signed result to deliver, and the
/// fields the daemon logs (never a secret).
#[derive(Debug, Clone)]
pub struct Handled {
    /// The signed result envelope, serialized JSON (one line, no newline).
    pub envelope: Vec<u8>,
    pub id: Option<String>,
    pub op: Option<String>,
    pub target_user: Option<String>,
    pub status: Status,
    pub code: Code,
    pub message: String,
}

pub struct Engine {
    cfg: Config,
    trusted: BTreeMap<String, VerifyingKey>,
    sys: System,
    identity: Identity,
    replay: ReplayStore,
    staging: Staging,
    _state: Dir,
}

/// What is known about a command while it is handled; becomes the result.
#[derive(Default)]
struct Outcome {
    id: Option<String>,
    op: Option<String>,
    user: Option<String>,
}

/// A command ready to apply: passwords are hashes by now.
enum Ready {
    SetPassword(UserName, CryptHash),
    StagePassword(UserName, CryptHash),
    CreateUser(NewUser, Vec<authkeys::KeyLine>),
    Other(Op),
}

impl Engine {
    /// Load (or create) the agent identity in `sys.state_dir`, open the replay
    /// store, and be ready to handle envelopes.
    pub fn new(cfg: Config, sys: System) -> Result<Engine> {
        let trusted = cfg.trusted_keys().map_err(|msg| Error::Io {
            context: "configuration".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
        })?;
        if trusted.is_empty() {
            tracing::warn!("no [trust] key is configured: every command will be refused");
        }
        let state = open_state_dir(&sys.state_dir)?;
        let identity = Identity::load_or_create(&state)?;
        let replay = ReplayStore::open(&state)?;
        let staging = Staging::open(&state)?;
        Ok(Engine {
            cfg,
            trusted,
            sys,
            identity,
            replay,
            staging,
            _state: state,
        })
    }

    /// Replace the configuration (SIGHUP): trusted keys, limits, sshd options.
    /// A configuration that does not validate is not taken (Config::load
    /// has already refused it; this guards hand-built values).
    pub fn reconfigure(&mut self, cfg: Config) {
        match cfg.validate().and_then(|()| cfg.trusted_keys()) {
            Ok(trusted) => {
                self.trusted = trusted;
                self.cfg = cfg;
            }
            Err(e) => tracing::error!("new configuration not applied: {e}"),
        }
    }

    /// Handle one envelope. Never panics on input; every outcome is a signed result.
    pub fn handle(&mut self, envelope: &[u8]) -> Handled {
        let received_at = self.sys.clock.now();
        let mut out = Outcome::default();
        let result = self.process(envelope, &mut out);
        self.finish(out, received_at, result)
    }

    /// Apply what `set_password` with `apply_at: next_boot` staged; each
    /// outcome is a signed result (to be written to the outbox).
    pub fn apply_staged(&mut self) -> Vec<Handled> {
        let received_at = self.sys.clock.now();
        let entries = match self.staging.list() {
            Ok(e) => e,
            Err(e) => {
                let out = Outcome {
                    op: Some("set_password".into()),
                    ..Outcome::default()
                };
                return vec![self.finish(out, received_at, Err(e))];
            }
        };
        let mut results = Vec::new();
        for entry in entries {
            let received_at = self.sys.clock.now();
            let (file, out, result) = match entry {
                Ok(s) => {
                    let out = Outcome {
                        id: Some(s.id.clone()),
                        op: Some("set_password".into()),
                        user: Some(s.user.to_string()),
                    };
                    let r = accounts::set_password(
                        &self.sys,
                        &self.cfg.accounts(),
                        &s.user,
                        &Password::Crypt(s.hash),
                    )
                    .map(|()| (format!("staged password of {} applied", s.user), json!({})));
                    (s.file, out, r)
                }
                Err((file, e)) => {
                    let out = Outcome {
                        op: Some("set_password".into()),
                        ..Outcome::default()
                    };
                    (file, out, Err(e))
                }
            };
            // Removed whatever the outcome: a change that cannot apply now
            // (user deleted since) would fail again at every boot.
            let removal = self.staging.remove(&file);
            let mut handled = self.finish(out, received_at, result);
            if let Err(e) = removal {
                tracing::error!("could not remove staged file {file}: {e}");
                handled
                    .message
                    .push_str(&format!(" (the staged file could not be removed: {e})"));
            }
            results.push(handled);
        }
        results
    }

    /// Base64 of the agent's Ed25519 public key.
    pub fn public_key(&self) -> String {
        self.identity.public_key_b64()
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn finish(
        &self,
        out: Outcome,
        received_at: SystemTime,
        result: Result<(String, Value)>,
    ) -> Handled {
        let (code, message, data) = match result {
            Ok((msg, data)) => (Code::Ok, msg, data),
            Err(e) => (e.code(), e.to_string(), json!({})),
        };
        let status = status_of(code);
        // The daemon writes the audit record from `Handled`; this is the
        // step-by-step trace. Messages never carry a secret (see error.rs).
        tracing::debug!(
            id = out.id.as_deref().unwrap_or("-"),
            op = out.op.as_deref().unwrap_or("-"),
            code = code.as_str(),
            "result: {message}"
        );
        let payload = ResultPayload {
            v: 1,
            id: out.id.clone(),
            instance_id: self.cfg.instance_id.clone(),
            op: out.op.clone(),
            status,
            code,
            message: message.clone(),
            data,
            received_at: format_time(received_at),
            finished_at: format_time(self.sys.clock.now()),
        };
        let envelope = dsse::sign(
            RESULT_TYPE,
            &payload.to_json(),
            self.identity.signing_key(),
            AGENT_KEY_ID,
        )
        .into_bytes();
        Handled {
            envelope,
            id: out.id,
            op: out.op,
            target_user: out.user,
            status,
            code,
            message,
        }
    }

    fn process(&mut self, bytes: &[u8], out: &mut Outcome) -> Result<(String, Value)> {
        if bytes.len() > self.cfg.max_envelope_bytes {
            return Err(Error::BadEnvelope(format!(
                "{} bytes is over the limit of {}",
                bytes.len(),
                self.cfg.max_envelope_bytes
            )));
        }
        let (keyid, payload) = Envelope::parse(bytes)?.verify(COMMAND_TYPE, &self.trusted)?;
        (out.id, out.op) = command::peek(&payload);
        tracing::debug!(
            keyid,
            id = out.id.as_deref().unwrap_or("-"),
            "signature verified"
        );
        let cmd = command::parse(&payload)?;
        out.user = cmd.op.target_user().map(|u| u.to_string());
        self.check_instance_and_times(&cmd)?;

        let skew = Duration::from_secs(self.cfg.clock_skew_secs);
        if let Err(e) = self.replay.prune(self.sys.clock.now(), skew) {
            // Pruning is housekeeping; a failure must not stop commands.
            tracing::warn!("pruning the replay record failed: {e}");
        }
        if self.replay.seen(&cmd.id)? {
            return Err(Error::Replayed(cmd.id));
        }
        let ready = self.prepare(cmd.op)?;
        self.replay.record(&cmd.id, cmd.expires_at)?;
        self.apply(&cmd.id, ready)
    }

    fn check_instance_and_times(&self, cmd: &Command) -> Result<()> {
        if cmd.instance_id != self.cfg.instance_id {
            return Err(Error::WrongInstance(format!(
                "the command is for instance {:?}, this is {:?}",
                crate::names::truncate_for_message(&cmd.instance_id),
                self.cfg.instance_id
            )));
        }
        let now = self.sys.clock.now();
        let skew = Duration::from_secs(self.cfg.clock_skew_secs);
        if cmd.issued_at > now + skew {
            return Err(Error::NotYetValid(format!(
                "issued_at {} is after now ({}) plus {}s of tolerated skew",
                format_time(cmd.issued_at),
                format_time(now),
                skew.as_secs()
            )));
        }
        if now > cmd.expires_at + skew {
            return Err(Error::Expired(format!(
                "expires_at {} is before now ({}) minus {}s of tolerated skew",
                format_time(cmd.expires_at),
                format_time(now),
                skew.as_secs()
            )));
        }
        // A long window would make a leaked command useful for long, and
        // would keep its id in the replay record as long.
        let ttl = cmd
            .expires_at
            .duration_since(cmd.issued_at)
            .map_err(|_| Error::invalid("expires_at is before issued_at"))?;
        if ttl > Duration::from_secs(self.cfg.max_ttl_secs) {
            return Err(Error::invalid(format!(
                "validity window of {}s is over the maximum of {}s",
                ttl.as_secs(),
                self.cfg.max_ttl_secs
            )));
        }
        Ok(())
    }

    /// Open a password argument and hash it: after this no plaintext exists.
    fn password_hash(&self, arg: PasswordArg) -> Result<CryptHash> {
        match arg {
            PasswordArg::Crypt(h) => Ok(h),
            PasswordArg::Sealed(boxed) => {
                let mut plain = self.identity.unseal(&boxed).ok_or_else(|| {
                    Error::invalid(
                        "password.sealed does not open with this agent's key \
                         (sealed to another agent, or damaged)",
                    )
                })?;
                let secret = Secret::new(std::mem::take(&mut *plain));
                if std::str::from_utf8(secret.expose()).is_err()
                    || secret.expose().iter().any(|&b| b == 0 || b == b'\n')
                {
                    return Err(Error::invalid(
                        "the sealed password is not UTF-8 text without NUL or newline",
                    ));
                }
                accounts::hash_password(&self.cfg.accounts(), &secret)
            }
        }
    }

    fn prepare(&self, op: Op) -> Result<Ready> {
        Ok(match op {
            Op::SetPassword {
                user,
                password,
                apply_at,
            } => {
                let hash = self.password_hash(password)?;
                match apply_at {
                    ApplyAt::Now => Ready::SetPassword(user, hash),
                    ApplyAt::NextBoot => Ready::StagePassword(user, hash),
                }
            }
            Op::CreateUser {
                user,
                sudo,
                shell,
                password,
                keys,
            } => {
                let password = password
                    .map(|p| self.password_hash(p).map(Password::Crypt))
                    .transpose()?;
                Ready::CreateUser(
                    NewUser {
                        name: user,
                        sudo,
                        shell,
                        password,
                    },
                    keys,
                )
            }
            other => Ready::Other(other),
        })
    }

    fn apply(&mut self, id: &str, ready: Ready) -> Result<(String, Value)> {
        let sys = &self.sys;
        let acfg = self.cfg.accounts();
        let sshd_opts = &self.cfg.sshd;
        // Commands name only root and regular users (PROTOCOL §3): one
        // check, here, for every op that acts on an existing user.
        let existing = match &ready {
            Ready::SetPassword(u, _) | Ready::StagePassword(u, _) => Some(u),
            Ready::Other(op) => op.target_user(),
            Ready::CreateUser(..) => None,
        };
        if let Some(user) = existing {
            accounts::managed_user(sys, user)?;
        }
        match ready {
            Ready::SetPassword(user, hash) => {
                accounts::set_password(sys, &acfg, &user, &Password::Crypt(hash))?;
                Ok((format!("password of {user} set"), json!({})))
            }
            Ready::StagePassword(user, hash) => {
                // The user exists now (checked above); a typo fails today, not at boot.
                self.staging
                    .stage(id, &user, &hash, sys.clock.unix_secs())?;
                Ok((
                    format!("password of {user} staged for the next boot"),
                    json!({ "apply_at": "next_boot" }),
                ))
            }
            Ready::CreateUser(spec, keys) => {
                let user = &spec.name;
                // The keys are added while the new account's files are
                // still locked; if that fails, create_user_then undoes
                // exactly what it did (a home that was there stays), so
                // `failed` means every file is as before.
                let (created, keys) = accounts::create_user_then(sys, &acfg, &spec, |_| {
                    if keys.is_empty() {
                        Ok(None)
                    } else {
                        authkeys::add_keys(sys, user, &keys).map(Some)
                    }
                })?;
                let mut data = json!(created);
                if let Some(k) = keys {
                    data["keys"] = json!(k);
                }
                Ok((format!("created user {user} (uid {})", created.uid), data))
            }
            Ready::Other(op) => match op {
                Op::DeleteUser {
                    user,
                    remove_home,
                    terminate_sessions,
                } => {
                    let d = accounts::delete_user_with(
                        sys,
                        &user,
                        accounts::DeleteOptions {
                            remove_home,
                            terminate_sessions,
                        },
                    )?;
                    let how = if remove_home { " and its home" } else { "" };
                    let ended = match d.sessions_ended.len() {
                        0 => String::new(),
                        n => format!("; ended {n} process(es) of the user"),
                    };
                    Ok((format!("deleted user {user}{how}{ended}"), json!(d)))
                }
                Op::AddKeys { user, keys } => {
                    let o = authkeys::add_keys(sys, &user, &keys)?;
                    Ok((
                        format!(
                            "added {} and updated {} key(s) for {user}",
                            o.added, o.updated
                        ),
                        json!(o),
                    ))
                }
                Op::RemoveKeys { user, keys } => {
                    let o = authkeys::remove_keys(sys, &user, &keys)?;
                    Ok((format!("removed {} key(s) for {user}", o.removed), json!(o)))
                }
                Op::ReplaceKeys { user, keys } => {
                    let o = authkeys::replace_keys(sys, &user, &keys)?;
                    Ok((
                        format!(
                            "replaced the managed keys of {user}: removed {}, added {}, updated {}",
                            o.removed, o.added, o.updated
                        ),
                        json!(o),
                    ))
                }
                Op::SetSshd { change, restart } => {
                    let o = sshd::set_sshd(sys, sshd_opts, &change, restart)?;
                    let msg = if o.message.is_empty() {
                        "sshd settings applied".to_string()
                    } else {
                        o.message.clone()
                    };
                    Ok((msg, json!(o)))
                }
                Op::RestartSshd => {
                    let what = sshd::restart_sshd(sys, sshd_opts)?;
                    Ok((what, json!({})))
                }
                Op::Inventory => {
                    let data = crate::inventory::collect(sys, sshd_opts)?;
                    let n = data["users"].as_array().map_or(0, Vec::len);
                    Ok((format!("inventory of {n} user(s)"), data))
                }
                Op::SetPassword { .. } | Op::CreateUser { .. } => {
                    unreachable!("prepared into Ready::SetPassword/StagePassword/CreateUser")
                }
            },
        }
    }
}
