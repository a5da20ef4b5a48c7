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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ed25519_dalek::VerifyingKey;
use serde_json::{json, Value};

use crate::accounts::{self, CryptHash, NewUser, Password};
use crate::config::Config;
use crate::error::{Code, Error, Result};
use crate::identity::Identity;
use crate::names::UserName;
use crate::protocol::command::{self, ApplyAt, Command, Op, PasswordArg};
use crate::protocol::dsse::{self, Envelope};
use crate::protocol::result::{status_of, ResultPayload};
use crate::protocol::{format_time, AGENT_KEY_ID, COMMAND_TYPE, RESULT_TYPE};
use crate::replay::ReplayStore;
use crate::secret::Secret;
use crate::sessions::revoked::{KeySessions, SshdLog};
use crate::ssh::{authkeys, sshd};
use crate::staging::Staging;
use crate::state_dir::StateDir;
use crate::suspensions::Suspensions;
use crate::sys::System;

// The outcome types belong to the protocol (a result carries them); they are
// re-exported here because the engine is what produces them.
pub use crate::protocol::result::{Handled, Status};

pub struct Engine {
    cfg: Config,
    trusted: BTreeMap<String, VerifyingKey>,
    sys: System,
    identity: Identity,
    replay: ReplayStore,
    staging: Staging,
    suspensions: Suspensions,
    _state: StateDir,
    expiry: ExpiryState,
    /// Finds and ends the live sessions of keys taken away.
    key_sessions: Arc<dyn KeySessions>,
}

/// What the engine knows about managed key expiries between sweeps, so
/// that asking for the next one after every command costs no I/O.
#[derive(Debug, Default)]
struct ExpiryState {
    /// The record has been read since the engine started.
    scanned: bool,
    /// The earliest expiry known to come (seconds since the epoch); a key
    /// made permanent since only makes this early, never late.
    next: Option<u64>,
    /// Seconds to wait before retrying removals that failed (0: none failed).
    retry_secs: u64,
}

/// The first retry of a removal that failed, and the longest wait between two.
const EXPIRY_RETRY_FIRST: u64 = 60;
const EXPIRY_RETRY_MAX: u64 = 3600;

/// What is known about a command while it is handled; becomes the result.
#[derive(Default)]
struct Outcome {
    id: Option<String>,
    /// What the envelope claims, before verification (logs only).
    claimed_id: Option<String>,
    op: Option<String>,
    user: Option<String>,
}

/// A command ready to apply: passwords are hashes by now.
enum Ready {
    /// The hash, and whether it must be changed at the next login.
    SetPassword(UserName, CryptHash, bool),
    /// The hash, and whether it must be changed at the next login.
    StagePassword(UserName, CryptHash, bool),
    /// The new user, its keys, and when they expire (seconds since the epoch).
    CreateUser(NewUser, Vec<authkeys::KeyLine>, Option<u64>),
    Other(Op),
}

impl Engine {
    /// Load (or create) the agent identity in `sys.state_dir`, open the replay
    /// store, and be ready to handle envelopes.
    pub fn new(cfg: Config, sys: System) -> Result<Engine> {
        let trusted = cfg.trusted_keys().map_err(|message| Error::Setting {
            setting: "configuration".into(),
            message,
        })?;
        if trusted.is_empty() {
            tracing::warn!("no [trust] key is configured: every command will be refused");
        }
        let state = StateDir::open(&sys.state_dir)?;
        let identity = Identity::load_or_create(&state)?;
        let replay = ReplayStore::open(&state)?;
        let staging = Staging::open(&state)?;
        let suspensions = Suspensions::open(&state)?;
        Ok(Engine {
            cfg,
            trusted,
            sys,
            identity,
            replay,
            staging,
            suspensions,
            _state: state,
            expiry: ExpiryState::default(),
            key_sessions: Arc::new(SshdLog),
        })
    }

    /// Find and end the sessions of removed keys with `s` instead of by
    /// sshd's log and /proc (tests watch what the engine asks for).
    pub fn with_key_sessions(mut self, s: Arc<dyn KeySessions>) -> Engine {
        self.key_sessions = s;
        self
    }

    /// Remove the managed keys whose expiry has come (each removal an
    /// audit event), and say when the next one is due: `None` when no
    /// managed key expires, so the daemon arms no timer. Reads the record
    /// at the first call and when something is due; otherwise answers from
    /// memory. Removals that fail are retried after a growing delay (1 min
    /// up to 1 h), never in a tight loop; their lines keep sshd's
    /// `expiry-time`, so sshd refuses those keys meanwhile.
    pub fn expire_keys(&mut self) -> Option<SystemTime> {
        let now = self.sys.clock.unix_secs();
        let at = |t: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(t);
        if self.expiry.scanned && self.expiry.next.is_none_or(|n| n > now) {
            return self.expiry.next.map(at);
        }
        let (sweep, all_ok) = match authkeys::expire_due(&self.sys, now) {
            Ok(s) => {
                let ok = s.failed.is_empty();
                (s, ok)
            }
            Err(e) => {
                crate::logging::key_expiry_failed(None, &[], &e);
                (authkeys::Sweep::default(), false)
            }
        };
        // The lines are gone by now: a session ended here cannot log back
        // in with its key. A failure to end them is told in the events, not
        // retried (the keys, which are what the sweep owes, are removed).
        let ended: BTreeMap<UserName, Result<crate::sessions::by_key::Outcome>> = sweep
            .sessions_to_end()
            .into_iter()
            .map(|(user, fps)| {
                let r = accounts::lookup(&self.sys, &user).and_then(|rec| {
                    self.key_sessions
                        .end(&self.sys, user.as_str(), rec.uid, &fps)
                });
                (user, r)
            })
            .collect();
        for k in &sweep.removed {
            let sessions = k.terminate_sessions.then(|| ended.get(&k.user)).flatten();
            crate::logging::key_expired(k, sessions);
        }
        for (user, fps, e) in &sweep.failed {
            crate::logging::key_expiry_failed(Some(user), fps, e);
        }
        let mut next = sweep.next;
        if all_ok {
            self.expiry.retry_secs = 0;
        } else {
            self.expiry.retry_secs =
                (self.expiry.retry_secs * 2).clamp(EXPIRY_RETRY_FIRST, EXPIRY_RETRY_MAX);
            let retry = now + self.expiry.retry_secs;
            next = Some(next.map_or(retry, |n| n.min(retry)));
        }
        self.expiry.scanned = true;
        self.expiry.next = next;
        next.map(at)
    }

    /// A key was just bound to expire at `t`: the next expiry may be earlier.
    fn note_expiry(&mut self, t: u64) {
        self.expiry.next = Some(self.expiry.next.map_or(t, |n| n.min(t)));
    }

    /// [`Engine::note_expiry`] for a command's expiry; its time, RFC 3339.
    fn expiry_noted(&mut self, e: Option<&authkeys::Expiry>) -> Option<String> {
        let e = e?;
        self.note_expiry(e.at);
        Some(format_time(
            SystemTime::UNIX_EPOCH + Duration::from_secs(e.at),
        ))
    }

    /// How the root's sshd reads `expiry-time`, and the command's expiry.
    /// `terminate_sessions`: the keys' sessions end when they expire.
    fn key_expiry(
        &self,
        id: &str,
        at: Option<u64>,
        terminate_sessions: bool,
    ) -> Option<authkeys::Expiry> {
        at.map(|at| authkeys::Expiry {
            at,
            command_id: id.to_owned(),
            form: authkeys::expiry::ExpiryForm::for_sshd(&self.sys, &self.cfg.sshd.binary),
            terminate_sessions,
        })
    }

    /// After the keys `revoked` of `user` were removed from the file: end
    /// their live sessions (`terminate`), or count them, into the result.
    /// The keys are removed and stay removed, so a failure here is told
    /// (`sessions_error`), never `failed`.
    fn revoked_sessions(
        &self,
        user: &UserName,
        revoked: &BTreeSet<String>,
        terminate: bool,
        msg: &mut String,
        data: &mut Value,
    ) {
        let sys = &self.sys;
        let uid = || accounts::lookup(sys, user).map(|rec| rec.uid);
        if terminate {
            let r = match revoked.is_empty() {
                true => Ok(Default::default()),
                false => {
                    uid().and_then(|uid| self.key_sessions.end(sys, user.as_str(), uid, revoked))
                }
            };
            match r {
                Ok(o) => {
                    if !o.ended.is_empty() {
                        msg.push_str(&format!(
                            "; ended {} session(s) that logged in with the removed key(s)",
                            o.ended.len()
                        ));
                    }
                    if o.open > 0 {
                        msg.push_str(&format!("; {} such session(s) still open", o.open));
                    }
                    data["sessions_ended"] = json!(o.ended);
                    match o.unmatched_error(user.as_str()) {
                        // Live sessions of an unknown key: the ended and
                        // open ones are not all there is, and how many of
                        // the removed keys' sessions are open is unknown
                        // (left out, as when the log cannot be read).
                        Some(e) => {
                            msg.push_str(&format!("; {e}: they were not ended"));
                            data["sessions_error"] = json!(e);
                        }
                        None => data["sessions_open"] = json!(o.open),
                    }
                }
                Err(e) => {
                    msg.push_str(&format!(
                        "; the sessions of the removed key(s) could not be ended: {e}"
                    ));
                    data["sessions_ended"] = json!([]);
                    data["sessions_error"] = json!(e.to_string());
                }
            }
        } else {
            let r = match revoked.is_empty() {
                true => Ok(Default::default()),
                false => {
                    uid().and_then(|uid| self.key_sessions.count(sys, user.as_str(), uid, revoked))
                }
            };
            match r {
                Ok(o) => {
                    let n = o.open;
                    if n > 0 {
                        msg.push_str(&format!(
                            "; {n} live session(s) that logged in with the removed key(s) \
                             stay open (terminate_sessions: true ends them)"
                        ));
                    }
                    match o.unmatched_error(user.as_str()) {
                        // Unknown, not `n`: as above.
                        Some(e) => {
                            msg.push_str(&format!("; {e}"));
                            data["sessions_error"] = json!(e);
                        }
                        None => data["sessions_open"] = json!(n),
                    }
                }
                Err(e) => {
                    msg.push_str(&format!(
                        "; the live sessions of the removed key(s) could not be counted: {e}"
                    ));
                    data["sessions_error"] = json!(e.to_string());
                }
            }
        }
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

    /// Apply what `set_password` with `apply_at: next_boot` staged in an
    /// earlier boot; each outcome is a signed result (to be written to the
    /// outbox). Entries staged during the current boot stay staged, with no
    /// result yet. An error only when the current boot cannot be told (then
    /// nothing is applied): applying then could be applying early.
    pub fn apply_staged(&mut self) -> Result<Vec<Handled>> {
        let boot_id = self.sys.clock.boot_id().map_err(|e| {
            e.while_doing(
                "reading the kernel's boot id (next-boot passwords wait for another boot)",
            )
        })?;
        let boot_started = self
            .sys
            .clock
            .unix_secs()
            .saturating_sub(self.sys.clock.since_boot().as_secs());
        let received_at = self.sys.clock.now();
        let entries = match self.staging.list() {
            Ok(e) => e,
            Err(e) => {
                let out = Outcome {
                    op: Some("set_password".into()),
                    ..Outcome::default()
                };
                return Ok(vec![self.finish(out, received_at, Err(e))]);
            }
        };
        let mut results = Vec::new();
        for entry in entries {
            let received_at = self.sys.clock.now();
            let (file, out, result) = match entry {
                Ok(s) if !s.is_due(&boot_id, boot_started) => {
                    tracing::info!(
                        command_id = s.id.as_str(),
                        "the password staged by {} waits for the next boot \
                         (it was staged during this one)",
                        s.id
                    );
                    continue;
                }
                Ok(s) => {
                    let out = Outcome {
                        id: Some(s.id.clone()),
                        op: Some("set_password".into()),
                        user: Some(s.user.to_string()),
                        claimed_id: None,
                    };
                    let r = accounts::set_password_with(
                        &self.sys,
                        &self.cfg.accounts(),
                        &s.user,
                        &Password::Crypt(s.hash),
                        accounts::PasswordOptions {
                            must_change: s.must_change,
                        },
                        accounts::lock::DEFAULT_TIMEOUT,
                    )
                    .map(|set| {
                        let mut msg = format!("staged password of {} applied", s.user);
                        if set.must_change {
                            msg.push_str("; it must be changed at the next login");
                        }
                        if set.kept_locked {
                            msg.push_str("; the account stays locked until unlock_user");
                        }
                        (
                            msg,
                            json!({ "must_change": set.must_change, "locked": set.kept_locked }),
                        )
                    });
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
        Ok(results)
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
        let mut payload = ResultPayload {
            v: 1,
            id: out.id.clone(),
            instance_id: self.cfg.instance_id.clone(),
            op: out.op.clone(),
            status,
            code,
            message,
            data,
            received_at: format_time(received_at),
            finished_at: format_time(self.sys.clock.now()),
        };
        let mut envelope = self.sign_result(&payload);
        if envelope.len() > self.cfg.max_result_bytes {
            // PROTOCOL §4: never a larger result (a broker would drop it,
            // or the transport could not send it at all).
            payload = fit_result(payload, envelope.len(), self.cfg.max_result_bytes);
            envelope = self.sign_result(&payload);
            tracing::warn!(
                id = out.id.as_deref().unwrap_or("-"),
                op = out.op.as_deref().unwrap_or("-"),
                "result shrunk to fit max_result_bytes: {}",
                payload.message
            );
        }
        let (status, code, message) = (payload.status, payload.code, payload.message);
        // The daemon writes the audit record from `Handled`; this is the
        // step-by-step trace. Messages never carry a secret (see error.rs).
        tracing::debug!(
            id = out.id.as_deref().unwrap_or("-"),
            op = out.op.as_deref().unwrap_or("-"),
            code = code.as_str(),
            "result: {message}"
        );
        // A verified id supersedes the claim; the claim is kept only to
        // correlate what was refused.
        let claimed_id = if out.id.is_some() {
            None
        } else {
            out.claimed_id
        };
        Handled {
            envelope,
            id: out.id,
            claimed_id,
            op: out.op,
            target_user: out.user,
            status,
            code,
            message,
        }
    }

    fn sign_result(&self, payload: &ResultPayload) -> Vec<u8> {
        dsse::sign(
            RESULT_TYPE,
            &payload.to_json(),
            self.identity.signing_key(),
            AGENT_KEY_ID,
        )
        .into_bytes()
    }

    /// How many bytes an inventory page's serialized `data` may take so
    /// that the signed result envelope fits `max_result_bytes`: the
    /// envelope is base64 of the payload plus a fixed frame, and the
    /// payload is `data` plus fields of known size (the message is counted
    /// at its longest, 200 bytes).
    fn data_budget(&self, id: &str) -> usize {
        let frame = self.sign_result_len(b"");
        let payload_room = (self.cfg.max_result_bytes.saturating_sub(frame) / 4) * 3;
        let now = format_time(self.sys.clock.now());
        let fixed = ResultPayload {
            v: 1,
            id: Some(id.to_owned()),
            instance_id: self.cfg.instance_id.clone(),
            op: Some("inventory".into()),
            status: Status::Ok,
            code: Code::Ok,
            message: "m".repeat(200),
            data: json!({}),
            received_at: now.clone(),
            finished_at: now,
        }
        .to_json()
        .len();
        payload_room.saturating_sub(fixed + 64)
    }

    fn sign_result_len(&self, payload: &[u8]) -> usize {
        dsse::sign(
            RESULT_TYPE,
            payload,
            self.identity.signing_key(),
            AGENT_KEY_ID,
        )
        .len()
    }

    fn process(&mut self, bytes: &[u8], out: &mut Outcome) -> Result<(String, Value)> {
        if bytes.len() > self.cfg.max_envelope_bytes {
            return Err(Error::BadEnvelope(format!(
                "{} bytes is over the limit of {}",
                bytes.len(),
                self.cfg.max_envelope_bytes
            )));
        }
        let envelope = Envelope::parse(bytes)?;
        out.claimed_id = command::claimed_id_in(&envelope);
        let (keyid, payload) = envelope.verify(COMMAND_TYPE, &self.trusted)?;
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
        let max_ttl = Duration::from_secs(self.cfg.max_ttl_secs);
        if let Err(e) = self.replay.prune(&*self.sys.clock, skew, max_ttl) {
            // Pruning is housekeeping; a failure must not stop commands.
            tracing::warn!("pruning the replay record failed: {e}");
        }
        if self.replay.seen(&cmd.id)? {
            return Err(Error::Replayed(cmd.id));
        }
        let ready = self.prepare(cmd.op)?;
        let window = crate::replay::Window {
            issued_at: cmd.issued_at,
            expires_at: cmd.expires_at,
        };
        self.replay.record(&cmd.id, &window, &*self.sys.clock)?;
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

    /// Remove what `set_password` staged for `user` (who was just deleted);
    /// the ids of those commands.
    fn drop_staged_of(&self, user: &UserName) -> Vec<String> {
        let entries = match self.staging.list() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("could not list staged passwords after deleting {user}: {e}");
                return Vec::new();
            }
        };
        let mut ids = Vec::new();
        for s in entries.into_iter().flatten() {
            if s.user != *user {
                continue;
            }
            match self.staging.remove(&s.file) {
                Ok(()) => ids.push(s.id),
                Err(e) => tracing::error!(
                    "could not remove the staged password {} of deleted user {user}: {e}",
                    s.file
                ),
            }
        }
        ids
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
        if let Op::AddKeys { keys, .. }
        | Op::ReplaceKeys { keys, .. }
        | Op::CreateUser { keys, .. } = &op
        {
            // Before anything is touched: sshd refuses a key whose own
            // expiry-time has passed, so adding one cannot be `ok`.
            authkeys::check_unexpired(keys, self.sys.clock.unix_secs())?;
        }
        let expiry = match &op {
            Op::AddKeys { expires_at, .. } | Op::ReplaceKeys { expires_at, .. } => {
                self.future_secs(*expires_at, "expires_at")?
            }
            Op::CreateUser { keys_expire_at, .. } => {
                self.future_secs(*keys_expire_at, "keys_expire_at")?
            }
            _ => None,
        };
        Ok(match op {
            Op::SetPassword {
                user,
                password,
                apply_at,
                must_change,
            } => {
                let hash = self.password_hash(password)?;
                match apply_at {
                    ApplyAt::Now => Ready::SetPassword(user, hash, must_change),
                    ApplyAt::NextBoot => Ready::StagePassword(user, hash, must_change),
                }
            }
            Op::CreateUser {
                user,
                sudo,
                shell,
                password,
                keys,
                keys_expire_at: _,
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
                    expiry,
                )
            }
            other => Ready::Other(other),
        })
    }

    /// A key expiry in whole seconds since the epoch, refused unless it is
    /// in the future (PROTOCOL §3): a key that ends now or earlier would be
    /// refused by sshd at once, so binding it cannot be `ok`.
    fn future_secs(&self, t: Option<SystemTime>, what: &str) -> Result<Option<u64>> {
        let Some(t) = t else { return Ok(None) };
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let now = self.sys.clock.unix_secs();
        if secs <= now {
            return Err(Error::invalid(format!(
                "{what} {} is not in the future (now is {})",
                format_time(t),
                format_time(self.sys.clock.now())
            )));
        }
        Ok(Some(secs))
    }

    fn apply(&mut self, id: &str, ready: Ready) -> Result<(String, Value)> {
        let sys = &self.sys;
        let acfg = self.cfg.accounts();
        let sshd_opts = &self.cfg.sshd;
        // Commands name only root and regular users (PROTOCOL §3): one
        // check, here, for every op that acts on an existing user.
        let existing = match &ready {
            Ready::SetPassword(u, _, _) | Ready::StagePassword(u, _, _) => Some(u),
            Ready::Other(op) => op.target_user(),
            Ready::CreateUser(..) => None,
        };
        if let Some(user) = existing {
            accounts::managed_user(sys, user)?;
        }
        match ready {
            Ready::SetPassword(user, hash, must_change) => {
                let set = accounts::set_password_with(
                    sys,
                    &acfg,
                    &user,
                    &Password::Crypt(hash),
                    accounts::PasswordOptions { must_change },
                    accounts::lock::DEFAULT_TIMEOUT,
                )?;
                let mut msg = format!("password of {user} set");
                if set.must_change {
                    msg.push_str("; it must be changed at the next login");
                }
                if set.kept_locked {
                    msg.push_str("; the account stays locked until unlock_user");
                }
                Ok((
                    msg,
                    json!({ "must_change": set.must_change, "locked": set.kept_locked }),
                ))
            }
            Ready::StagePassword(user, hash, must_change) => {
                // The user exists now (checked above); a typo fails today, not at boot.
                // Without the boot id, apply-staged could not tell this boot
                // from the next one: refuse now rather than apply early.
                let boot_id = sys.clock.boot_id().map_err(|e| {
                    e.while_doing("reading the kernel's boot id to stage for the next boot")
                })?;
                self.staging.stage(
                    id,
                    &user,
                    &hash,
                    sys.clock.unix_secs(),
                    &boot_id,
                    must_change,
                )?;
                Ok((
                    format!("password of {user} staged for the next boot"),
                    json!({ "apply_at": "next_boot", "must_change": must_change }),
                ))
            }
            Ready::CreateUser(spec, keys, until) => {
                let expiry = self.key_expiry(id, until, false);
                let user = &spec.name;
                // The keys are added while the new account's files are
                // still locked; if that fails, create_user_then undoes
                // exactly what it did (a home that was there stays), so
                // `failed` means every file is as before.
                let (created, keys) = accounts::create_user_then(sys, &acfg, &spec, |_| {
                    if keys.is_empty() {
                        Ok(None)
                    } else {
                        authkeys::add_keys_until(sys, user, &keys, expiry.as_ref()).map(Some)
                    }
                })?;
                let mut data = json!(created);
                if let Some(k) = keys {
                    data["keys"] = json!(k);
                    if let Some(e) = &expiry {
                        data["keys_expire_at"] = json!(format_time(
                            SystemTime::UNIX_EPOCH + Duration::from_secs(e.at)
                        ));
                        self.note_expiry(e.at);
                    }
                }
                // A password staged for, or an expiry lock_user remembered
                // of, an earlier user of the name (removed by plain userdel)
                // is not this user's.
                if let Err(e) = self.suspensions.forget(user) {
                    tracing::warn!("could not remove a stale lock record of {user}: {e}");
                }
                let dropped = self.drop_staged_of(user);
                if !dropped.is_empty() {
                    data["staged_dropped"] = json!(dropped);
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
                    // What lock_user remembered for this user is theirs too:
                    // an unlock_user of a later user of the name must not
                    // restore it.
                    if let Err(e) = self.suspensions.forget(&user) {
                        tracing::warn!("could not remove the lock record of {user}: {e}");
                    }
                    // So is a password staged for the next boot: applied to a
                    // later user of the name, it would give them the old
                    // user's password.
                    let dropped = self.drop_staged_of(&user);
                    let how = match d.home_removed {
                        Some(true) => " and its home",
                        _ => "",
                    };
                    let ended = match d.sessions_ended.len() {
                        0 => String::new(),
                        n => format!("; ended {n} process(es) of the user"),
                    };
                    let staged = match dropped.len() {
                        0 => String::new(),
                        n => format!("; dropped {n} password change(s) staged for the next boot"),
                    };
                    // The account is deleted: what did not complete after
                    // that is told, and the result is `ok` all the same.
                    let warned: String = d.warnings.iter().map(|w| format!("; {w}")).collect();
                    let mut data = json!(d);
                    if !dropped.is_empty() {
                        data["staged_dropped"] = json!(dropped);
                    }
                    Ok((
                        format!("deleted user {user}{how}{ended}{staged}{warned}"),
                        data,
                    ))
                }
                Op::AddKeys {
                    user,
                    keys,
                    expires_at,
                } => {
                    let expiry = self.key_expiry(id, expires_at.and_then(unix_secs), false);
                    let o = authkeys::add_keys_until(sys, &user, &keys, expiry.as_ref())?;
                    let until = self.expiry_noted(expiry.as_ref());
                    Ok((
                        format!(
                            "added {} and updated {} key(s) for {user}{}",
                            o.added,
                            o.updated,
                            until
                                .as_deref()
                                .map_or(String::new(), |t| format!(", working until {t}"))
                        ),
                        with_expiry(json!(o), until),
                    ))
                }
                Op::RemoveKeys {
                    user,
                    keys,
                    terminate_sessions,
                } => {
                    // The lines go first, so that an ended session cannot
                    // log back in with its key; a failed edit ends nothing.
                    let o = authkeys::remove_keys(sys, &user, &keys)?;
                    let mut msg = format!("removed {} key(s) for {user}", o.removed);
                    let mut data = json!(o);
                    self.revoked_sessions(
                        &user,
                        &o.revoked,
                        terminate_sessions,
                        &mut msg,
                        &mut data,
                    );
                    Ok((msg, data))
                }
                Op::ReplaceKeys {
                    user,
                    keys,
                    expires_at,
                    terminate_sessions,
                } => {
                    let expiry =
                        self.key_expiry(id, expires_at.and_then(unix_secs), terminate_sessions);
                    let o = authkeys::replace_keys_until(sys, &user, &keys, expiry.as_ref())?;
                    let until = self.expiry_noted(expiry.as_ref());
                    let mut msg = format!(
                        "replaced the managed keys of {user}: removed {}, added {}, updated {}{}",
                        o.removed,
                        o.added,
                        o.updated,
                        until
                            .as_deref()
                            .map_or(String::new(), |t| format!(", working until {t}"))
                    );
                    let mut data = with_expiry(json!(o), until);
                    self.revoked_sessions(
                        &user,
                        &o.revoked,
                        terminate_sessions,
                        &mut msg,
                        &mut data,
                    );
                    Ok((msg, data))
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
                Op::Inventory(req) => {
                    let budget = self.data_budget(id);
                    let data = crate::inventory::collect(sys, sshd_opts, &req, budget)?;
                    let n = data["users"].as_array().map_or(0, Vec::len);
                    let more = if data["truncated"] == true {
                        "; more users: send the same inventory with cursor = data.next"
                    } else {
                        ""
                    };
                    Ok((format!("inventory of {n} user(s){more}"), data))
                }
                Op::LockUser {
                    user,
                    terminate_sessions,
                } => {
                    let suspensions = &self.suspensions;
                    let locked = accounts::lifecycle::lock_remembering(
                        sys,
                        &user,
                        accounts::lock::DEFAULT_TIMEOUT,
                        |previous| suspensions.remember(&user, previous),
                    )?;
                    let mut msg = if locked.changed {
                        format!("locked {user}: password disabled and account expired, so every login method is refused")
                    } else {
                        format!("{user} was locked already; nothing changed")
                    };
                    let mut data = json!({ "changed": locked.changed });
                    if terminate_sessions {
                        // After the lock, so that no new session can start
                        // while the old ones are ended. The lock is done and
                        // stays done: a failure here is told, not `failed`.
                        let ended = accounts::lookup(sys, &user)
                            .map(|rec| crate::sessions::end_all(&sys.root, rec.uid, user.as_str()));
                        match ended {
                            Ok((ended, Ok(open))) => {
                                msg.push_str(&format!(
                                    "; ended {} process(es) of the user",
                                    ended.len()
                                ));
                                if open > 0 {
                                    msg.push_str(&format!(", {open} still running"));
                                }
                                data["sessions_ended"] = json!(ended);
                                data["sessions_open"] = json!(open);
                            }
                            // A later scan failed: those ended before it
                            // are listed all the same.
                            Ok((ended, Err(e))) => {
                                if !ended.is_empty() {
                                    msg.push_str(&format!(
                                        "; ended {} process(es) of the user",
                                        ended.len()
                                    ));
                                }
                                msg.push_str(&format!(
                                    "; its sessions could not all be ended: {e}"
                                ));
                                data["sessions_ended"] = json!(ended);
                                data["sessions_error"] = json!(e.to_string());
                            }
                            Err(e) => {
                                msg.push_str(&format!("; its sessions could not be ended: {e}"));
                                data["sessions_ended"] = json!([]);
                                data["sessions_error"] = json!(e.to_string());
                            }
                        }
                    }
                    Ok((msg, data))
                }
                Op::SetSudo { user, sudo } => {
                    let c = accounts::sudo_access::set(
                        sys,
                        &user,
                        sudo,
                        accounts::lock::DEFAULT_TIMEOUT,
                    )?;
                    let msg = match (c.changed, c.sudo) {
                        (true, true) => format!("granted sudo to {user} ({})", c.grants.join(", ")),
                        (true, false) => format!("revoked sudo of {user}"),
                        (false, true) => format!(
                            "{user} has sudo already ({}); nothing changed",
                            c.grants.join(", ")
                        ),
                        (false, false) => format!("{user} has no sudo; nothing changed"),
                    };
                    Ok((msg, json!(c)))
                }
                Op::UnlockUser { user } => {
                    let restore = self.suspensions.recall(&user)?;
                    let u = accounts::lifecycle::unlock(
                        sys,
                        &user,
                        restore.as_deref(),
                        accounts::lock::DEFAULT_TIMEOUT,
                    )?;
                    // Done with it either way: a record without a lock is
                    // one a failed lock left behind.
                    if let Err(e) = self.suspensions.forget(&user) {
                        tracing::warn!("could not remove the lock record of {user}: {e}");
                    }
                    let mut msg = if u.changed {
                        format!("unlocked {user}")
                    } else {
                        format!("{user} was not locked; nothing changed")
                    };
                    if u.password_still_disabled {
                        msg.push_str("; it has no password, so only key logins work");
                    }
                    Ok((
                        msg,
                        json!({
                            "changed": u.changed,
                            "expires": u.expire.parse().ok().and_then(accounts::day_to_date),
                        }),
                    ))
                }
                Op::SetPassword { .. } | Op::CreateUser { .. } => {
                    unreachable!("prepared into Ready::SetPassword/StagePassword/CreateUser")
                }
            },
        }
    }
}

/// Whole seconds since the epoch (the engine refused earlier times already).
fn unix_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// A keys result with `expires_at` (RFC 3339) when the keys expire.
fn with_expiry(mut data: Value, until: Option<String>) -> Value {
    if let Some(t) = until {
        data["expires_at"] = json!(t);
    }
    data
}

/// A result whose envelope (`size` bytes) is over `limit`, made small and
/// still true (PROTOCOL §4: `failed` promises that nothing changed):
///
/// - an op that applied a change stays `ok` (it did apply), with its data
///   left out and the message saying so: saying `failed` would be a lie;
/// - `inventory` changes nothing, so its result becomes `failed`/`io_error`
///   (only possible when even one user cannot fit a page);
/// - a `rejected` or `failed` result keeps its status and code, with a
///   shortened message (its data is empty anyway).
fn fit_result(mut p: ResultPayload, size: usize, limit: usize) -> ResultPayload {
    use crate::inventory::shorten;
    let why = format!(
        "the result envelope would have been {size} bytes, over max_result_bytes = {limit}"
    );
    let read_only = p.op.as_deref() == Some("inventory");
    match p.status {
        Status::Ok if read_only => {
            p.status = Status::Failed;
            p.code = Code::IoError;
            p.message = format!("inventory not reported: {why}; nothing was changed");
        }
        Status::Ok => {
            p.message = format!(
                "{} (applied; its result data was left out: {why})",
                shorten(&p.message, 512)
            );
            p.data = json!({ "data_omitted": true });
            return p;
        }
        Status::Rejected | Status::Failed => {
            p.message = format!("{} ({why})", shorten(&p.message, 512));
        }
    }
    p.data = json!({});
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(op: &str, status: Status, code: Code, data: Value) -> ResultPayload {
        ResultPayload {
            v: 1,
            id: Some("c-1".into()),
            instance_id: "i-1".into(),
            op: Some(op.into()),
            status,
            code,
            message: "m".repeat(100_000),
            data,
            received_at: "2026-11-29T18:00:00Z".into(),
            finished_at: "2026-11-29T18:00:00Z".into(),
        }
    }

    #[test]
    fn an_oversized_result_of_an_applied_change_stays_ok_without_its_data() {
        let big = json!({ "x": "y".repeat(100_000) });
        let p = fit_result(
            payload("remove_keys", Status::Ok, Code::Ok, big),
            300_000,
            61_440,
        );
        // It did apply: `failed` would claim that nothing changed.
        assert_eq!((p.status, p.code), (Status::Ok, Code::Ok));
        assert_eq!(p.data, json!({ "data_omitted": true }));
        assert!(p.message.contains("applied; its result data was left out"));
        assert!(p.to_json().len() < 2048, "{}", p.to_json().len());
    }

    #[test]
    fn an_oversized_inventory_becomes_failed_io_error_which_is_true_for_a_read() {
        let p = fit_result(
            payload("inventory", Status::Ok, Code::Ok, json!({"users": []})),
            300_000,
            8192,
        );
        assert_eq!((p.status, p.code), (Status::Failed, Code::IoError));
        assert!(p.message.contains("nothing was changed"), "{}", p.message);
        assert_eq!(p.data, json!({}));
    }

    #[test]
    fn an_oversized_failure_keeps_its_code_with_a_short_message() {
        let p = fit_result(
            payload("add_keys", Status::Failed, Code::UnsafePath, json!({})),
            300_000,
            8192,
        );
        assert_eq!((p.status, p.code), (Status::Failed, Code::UnsafePath));
        assert!(p.message.len() < 1024, "{}", p.message.len());
    }
}
