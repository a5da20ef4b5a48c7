//! `~/.ssh/authorized_keys`: parse as sshd(8) does, change only what a command
//! names, keep every other line byte for byte.
//!
//! - [`line`]: the sshd line splitter and option parser (bytes in, sub-slices out).
//! - [`key`]: blob decoding, inner-type check, bits and fingerprints.
//! - [`file`]: reaching the file safely as root in a user-controlled home.
//!
//! Which keys accessd added is recorded in the state directory
//! (`keys/<user>.json`, fingerprints), never by marking the user's lines, so
//! `replace_keys` can take back exactly what accessd put there.

pub mod expiry;
pub mod file;
pub mod key;
pub mod line;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsx::{Dir, FileData};
use crate::names::{truncate_for_message, UserName};
use crate::state_dir::{private_file_meta, StateDir};
use crate::sys::System;

use self::file::Owner;
use self::key::PublicKey;
use self::line::{AuthKeysText, Entry};

/// sshd reads lines of up to 8 KiB (`SSH_MAX_PUBKEY_BYTES`, sshd(8)).
const MAX_LINE: usize = 8192;
/// Commands may not add RSA keys under this size (PROTOCOL §3).
const MIN_RSA_BITS: u32 = 2048;

/// One validated authorized_keys line from a command: optional options,
/// an accepted key type, a blob that decodes to that type, optional comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    options: Option<String>,
    /// What sshd makes of `options` (all defaults when there are none).
    parsed: line::KeyOptions,
    key: PublicKey,
    comment: Option<String>,
    /// The `expiry-time` value accessd adds in front of the line's own
    /// options for a command's `expires_at` (see [`expiry`]).
    expiry: Option<String>,
}

impl KeyLine {
    pub fn parse(line: &str) -> Result<KeyLine> {
        let shown = || truncate_for_message(line);
        if line.contains(['\n', '\r', '\0']) {
            return Err(Error::invalid(format!(
                "key line {:?} contains a line break or NUL",
                shown()
            )));
        }
        if line.len() > MAX_LINE {
            return Err(Error::invalid(format!(
                "key line {:?} is longer than sshd's {MAX_LINE}-byte limit",
                shown()
            )));
        }
        let bad = |why: String| Error::invalid(format!("key line {:?}: {why}", shown()));
        let fields = match line::split(line.as_bytes()) {
            Entry::Key(f) => f,
            Entry::Comment => return Err(bad("is empty or a comment".into())),
            Entry::Invalid(why) => return Err(bad(why.into())),
        };
        // The line is &str, so every field is UTF-8 too.
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let options = fields.options.map(text);
        let parsed = match &options {
            Some(o) => line::parse_options(o).map_err(bad)?,
            None => line::KeyOptions::default(),
        };
        let key_type = text(fields.key_type);
        let key = PublicKey::decode(&key_type, fields.blob).map_err(bad)?;
        if key.key_type == "ssh-rsa" && key.bits < MIN_RSA_BITS {
            return Err(bad(format!(
                "RSA key of {} bits; at least {MIN_RSA_BITS} are required",
                key.bits
            )));
        }
        Ok(KeyLine {
            options,
            parsed,
            key,
            comment: fields.comment.map(text),
            expiry: None,
        })
    }

    /// This line with sshd's `expiry-time="VALUE"` in front of its own
    /// options (sshd then honours the earliest of all its expiry times).
    /// The line must still fit sshd's line limit.
    pub fn with_expiry(mut self, value: String) -> Result<KeyLine> {
        self.expiry = Some(value);
        let n = self.render().len();
        if n > MAX_LINE {
            return Err(Error::invalid(format!(
                "key {}: with its expiry-time option the line is {n} bytes, over sshd's {MAX_LINE}-byte limit",
                self.fingerprint()
            )));
        }
        Ok(self)
    }

    /// `SHA256:...` exactly as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint()
    }

    /// Warnings to pass on in the result (e.g. ssh-dss is refused by current OpenSSH).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.key.key_type == "ssh-dss" {
            w.push(format!(
                "{} is an ssh-dss key: OpenSSH 9.8 disables DSA and 10.0 removed it, so sshd may not accept it",
                self.fingerprint()
            ));
        }
        if self.parsed.expiry_with_zone {
            w.push(format!(
                "{} has an expiry-time ending in Z or UTC, which OpenSSH before 9.1 (Debian 11) refuses",
                self.fingerprint()
            ));
        }
        w
    }

    /// Has the line's `expiry-time` passed at `now` (seconds since the
    /// epoch)? sshd then refuses the key (`auth_authorise_keyopts`).
    pub fn expired_at(&self, now: u64) -> bool {
        self.parsed.valid_before.is_some_and(|t| t < now)
    }

    /// What sshd makes of the line's options.
    pub fn options(&self) -> &line::KeyOptions {
        &self.parsed
    }

    pub fn key_type(&self) -> &str {
        &self.key.key_type
    }

    pub fn bits(&self) -> u32 {
        self.key.bits
    }

    /// The line accessd writes: `[options ]type base64[ comment]`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(e) = &self.expiry {
            s.push_str(&format!("expiry-time=\"{e}\""));
            s.push(if self.options.is_some() { ',' } else { ' ' });
        }
        if let Some(o) = &self.options {
            s.push_str(o);
            s.push(' ');
        }
        s.push_str(&self.key.key_type);
        s.push(' ');
        s.push_str(&self.key.blob_base64());
        if let Some(c) = &self.comment {
            s.push(' ');
            s.push_str(c);
        }
        s
    }
}

/// Refuse lines whose `expiry-time` has passed at `now` (seconds since the
/// epoch): sshd would refuse those keys, so adding them cannot be `ok`.
pub fn check_unexpired(keys: &[KeyLine], now: u64) -> Result<()> {
    match keys.iter().find(|k| k.expired_at(now)) {
        Some(k) => Err(Error::invalid(format!(
            "key {}: its expiry-time has passed, so sshd would refuse it",
            k.fingerprint()
        ))),
        None => Ok(()),
    }
}

/// What `remove_keys` matches: a key line or a `SHA256:` fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelector {
    Key(KeyLine),
    Fingerprint(String),
}

impl KeySelector {
    pub fn parse(s: &str) -> Result<KeySelector> {
        if s.starts_with("SHA256:") {
            if key::is_fingerprint(s) {
                return Ok(KeySelector::Fingerprint(s.to_owned()));
            }
            return Err(Error::invalid(format!(
                "{:?} is not a SHA256 fingerprint as ssh-keygen -l prints it",
                truncate_for_message(s)
            )));
        }
        KeyLine::parse(s).map(KeySelector::Key)
    }

    fn fingerprint(&self) -> String {
        match self {
            KeySelector::Key(k) => k.fingerprint(),
            KeySelector::Fingerprint(f) => f.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    #[serde(rename = "type")]
    pub key_type: String,
    pub bits: u32,
    pub fingerprint: String,
    pub comment: Option<String>,
    pub options: Option<String>,
    /// When accessd removes the key (RFC 3339), for a key bound with
    /// `expires_at`; left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeysOutcome {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub warnings: Vec<String>,
    /// The keys this edit took away, by fingerprint: none of them is in
    /// the file afterwards. `remove_keys`: every key it names (also one
    /// whose line was gone already, so a command sent again ends the
    /// sessions a first one left open); `replace_keys`: the managed keys
    /// not among the new ones. Whose sessions `terminate_sessions` ends;
    /// not part of the result.
    #[serde(skip)]
    pub revoked: BTreeSet<String>,
}

/// The key a file line holds, when it is a key line accessd understands.
fn line_key(raw: &[u8]) -> Option<PublicKey> {
    match line::split(AuthKeysText::body(raw)) {
        Entry::Key(f) => PublicKey::decode(std::str::from_utf8(f.key_type).ok()?, f.blob).ok(),
        _ => None,
    }
}

/// Add or update `keys` in `text`; returns the fingerprints of lines it
/// inserted (keys that were not there before).
fn add_to(text: &mut AuthKeysText, keys: &[KeyLine], out: &mut KeysOutcome) -> Vec<String> {
    let mut inserted = Vec::new();
    // The same key twice in one command: the later line wins.
    let mut seen = BTreeSet::new();
    let unique: Vec<&KeyLine> = keys
        .iter()
        .rev()
        .filter(|k| seen.insert(k.key.blob.clone()))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    for k in unique {
        out.warnings.extend(k.warnings());
        let wanted = format!("{}\n", k.render());
        let mut found = false;
        let mut i = 0;
        while i < text.lines.len() {
            let same = line_key(&text.lines[i])
                .is_some_and(|fk| fk.key_type == k.key.key_type && fk.blob == k.key.blob);
            if !same {
                i += 1;
                continue;
            }
            if found {
                // A duplicate of a key already kept: sshd would only ever use
                // the first one, so it is noise.
                text.lines.remove(i);
                out.removed += 1;
                continue;
            }
            found = true;
            if AuthKeysText::body(&text.lines[i]) != k.render().as_bytes() {
                text.lines[i] = wanted.clone().into_bytes();
                out.updated += 1;
            }
            i += 1;
        }
        if !found {
            if let Some(last) = text.lines.last_mut() {
                if !last.ends_with(b"\n") {
                    last.push(b'\n');
                }
            }
            text.lines.push(wanted.into_bytes());
            out.added += 1;
            inserted.push(k.fingerprint());
        }
    }
    inserted
}

/// Remove every line whose key has one of `fingerprints`; returns how many.
fn remove_from(text: &mut AuthKeysText, fingerprints: &BTreeSet<String>) -> usize {
    let before = text.lines.len();
    text.lines
        .retain(|l| !line_key(l).is_some_and(|k| fingerprints.contains(&k.fingerprint())));
    before - text.lines.len()
}

/// accessd's record of the keys it added for one user.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Managed {
    v: u32,
    fingerprints: BTreeSet<String>,
    /// Keys bound with `expires_at`, by fingerprint. Left out of the file
    /// when empty, so a record without expiries reads as it always did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    expiring: BTreeMap<String, Expiring>,
}

/// When accessd removes a key, and which command bound it (for the audit
/// event of the removal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expiring {
    /// Seconds since the epoch: the key stops working at this second.
    pub at: u64,
    pub command_id: String,
    /// The binding command asked for `terminate_sessions`: the key's live
    /// sessions end when it expires. Left out when false, so records
    /// written before it read as they always did.
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminate_sessions: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A command's `expires_at` for the keys it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Seconds since the epoch.
    pub at: u64,
    /// The id of the command binding the keys.
    pub command_id: String,
    /// How the installed sshd reads `expiry-time`.
    pub form: expiry::ExpiryForm,
    /// End the keys' live sessions when they expire.
    pub terminate_sessions: bool,
}

impl Expiry {
    /// `keys` as they are written: each with sshd's own `expiry-time`.
    fn lines(&self, keys: &[KeyLine]) -> Result<Vec<KeyLine>> {
        let value = expiry::expiry_time_value(self.at, self.form).ok_or_else(|| {
            Error::invalid(format!(
                "no expiry-time that this sshd reads can say {}",
                self.at
            ))
        })?;
        keys.iter()
            .map(|k| k.clone().with_expiry(value.clone()))
            .collect()
    }

    fn record(&self) -> Expiring {
        Expiring {
            at: self.at,
            command_id: self.command_id.clone(),
            terminate_sessions: self.terminate_sessions,
        }
    }
}

/// The record's directory, created when missing.
fn state_dir(sys: &System) -> Result<Dir> {
    StateDir::open(&sys.state_dir)?.keys()
}

/// The record's directory if there is one (none: no key is managed).
fn existing_state_dir(sys: &System) -> Result<Option<Dir>> {
    match StateDir::open_existing(&sys.state_dir)? {
        Some(state) => state.existing_keys(),
        None => Ok(None),
    }
}

fn state_name(user: &UserName) -> String {
    format!("{user}.json")
}

/// Where the record of the keys accessd added for `user` is kept: the
/// state's `keys/` directory (`None` while it does not exist) and the file
/// name. For create_user and delete_user, which take a record away with the
/// account it belonged to, so that a later user of the same name never has
/// keys removed by an old user's record.
pub fn managed_record(sys: &System, user: &UserName) -> Result<(Option<Dir>, String)> {
    Ok((existing_state_dir(sys)?, state_name(user)))
}

fn load_managed(dir: &Dir, user: &UserName) -> Result<Managed> {
    let Some(data) = dir.read(&state_name(user))? else {
        return Ok(Managed::default());
    };
    serde_json::from_slice(&data.bytes).map_err(|e| Error::BadFile {
        path: dir.display(&state_name(user)),
        message: format!("not a key record accessd wrote: {e}"),
    })
}

fn store_managed(dir: &Dir, user: &UserName, m: &Managed) -> Result<()> {
    let m = Managed { v: 1, ..m.clone() };
    let mut bytes = serde_json::to_vec_pretty(&m).expect("a set of strings serializes");
    bytes.push(b'\n');
    dir.write_atomic(&state_name(user), &bytes, &private_file_meta())
}

/// One edit of one user's file: read, change in memory, write once.
struct Edit {
    owner: Owner,
    ssh: Option<Dir>,
    old: Option<FileData>,
    text: AuthKeysText,
}

impl Edit {
    fn open(sys: &System, user: &UserName, create: bool) -> Result<Edit> {
        let owner = file::owner_of(sys, user)?;
        let ssh = file::open_ssh_dir(sys, &owner, create)?;
        let old = match &ssh {
            Some(d) => file::read_keys_file(d, &owner)?,
            None => None,
        };
        let text = AuthKeysText::parse(old.as_ref().map_or(&[][..], |d| &d.bytes));
        Ok(Edit {
            owner,
            ssh,
            old,
            text,
        })
    }

    /// Write the file when its content changed, or when it exists with the
    /// wrong owner or mode (corrected by writing a fresh 0600 copy).
    fn commit(&self) -> Result<()> {
        let Some(ssh) = &self.ssh else {
            return Ok(());
        };
        let new = self.text.render();
        let changed = match &self.old {
            Some(old) => old.bytes != new || file::meta_is_wrong(old, &self.owner),
            None => !new.is_empty(),
        };
        if changed {
            file::write_keys_file(ssh, &self.owner, &new, self.old.as_ref())?;
        }
        Ok(())
    }
}

/// Apply an edit, keeping the managed-key record consistent with the file:
/// the union of old and new record is stored before the file changes and
/// the new record after, so a crash between the two can only leave accessd
/// believing it owns a key it just handled — never forgetting one it added,
/// nor an expiry it must carry out. (A crash there can make accessd remove
/// at its old expiry a key that the interrupted command made permanent;
/// sending the command again settles it.)
fn apply(
    sys: &System,
    user: &UserName,
    create: bool,
    change: impl FnOnce(&mut AuthKeysText, &Managed, &mut KeysOutcome) -> Managed,
) -> Result<KeysOutcome> {
    let mut edit = Edit::open(sys, user, create)?;
    let state = state_dir(sys)?;
    let managed = load_managed(&state, user)?;
    let mut out = KeysOutcome::default();
    let after = change(&mut edit.text, &managed, &mut out);
    let mut union = managed.clone();
    union
        .fingerprints
        .extend(after.fingerprints.iter().cloned());
    union.expiring.extend(after.expiring.clone());
    if union != managed {
        store_managed(&state, user, &union)?;
    }
    edit.commit()?;
    if after != union {
        store_managed(&state, user, &after)?;
    }
    Ok(out)
}

/// The record after binding `keys` (already written with their expiry, if
/// any): a key bound again without `expires_at` no longer expires.
fn bound(mut m: Managed, keys: &[KeyLine], expiry: Option<&Expiry>) -> Managed {
    for k in keys {
        match expiry {
            Some(e) => m.expiring.insert(k.fingerprint(), e.record()),
            None => m.expiring.remove(&k.fingerprint()),
        };
    }
    m
}

/// The lines to write: with `expiry`, each carries sshd's `expiry-time`.
fn lines_until(keys: &[KeyLine], expiry: Option<&Expiry>) -> Result<Vec<KeyLine>> {
    match expiry {
        Some(e) => e.lines(keys),
        None => Ok(keys.to_vec()),
    }
}

pub fn add_keys(sys: &System, user: &UserName, keys: &[KeyLine]) -> Result<KeysOutcome> {
    add_keys_until(sys, user, keys, None)
}

/// [`add_keys`], the keys ending at `expiry` when one is given: each line
/// carries sshd's `expiry-time`, and the record says when accessd removes it.
pub fn add_keys_until(
    sys: &System,
    user: &UserName,
    keys: &[KeyLine],
    expiry: Option<&Expiry>,
) -> Result<KeysOutcome> {
    let keys = lines_until(keys, expiry)?;
    apply(sys, user, true, |text, managed, out| {
        let inserted = add_to(text, &keys, out);
        let mut m = managed.clone();
        m.fingerprints.extend(inserted);
        bound(m, &keys, expiry)
    })
}

pub fn remove_keys(sys: &System, user: &UserName, keys: &[KeySelector]) -> Result<KeysOutcome> {
    let fps: BTreeSet<String> = keys.iter().map(KeySelector::fingerprint).collect();
    apply(sys, user, false, |text, managed, out| {
        out.removed = remove_from(text, &fps);
        out.revoked = fps.clone();
        forget(managed, &fps)
    })
}

/// The record without the keys `fps`.
fn forget(managed: &Managed, fps: &BTreeSet<String>) -> Managed {
    let mut m = managed.clone();
    m.fingerprints.retain(|f| !fps.contains(f));
    m.expiring.retain(|f, _| !fps.contains(f));
    m
}

pub fn replace_keys(sys: &System, user: &UserName, keys: &[KeyLine]) -> Result<KeysOutcome> {
    replace_keys_until(sys, user, keys, None)
}

/// [`replace_keys`], the new keys ending at `expiry` when one is given.
pub fn replace_keys_until(
    sys: &System,
    user: &UserName,
    keys: &[KeyLine],
    expiry: Option<&Expiry>,
) -> Result<KeysOutcome> {
    let keys = lines_until(keys, expiry)?;
    let wanted: BTreeSet<String> = keys.iter().map(KeyLine::fingerprint).collect();
    apply(sys, user, true, |text, managed, out| {
        // Keys accessd added that stay wanted are updated in place, not
        // removed and appended, so their position in the file is kept.
        let drop: BTreeSet<String> = managed.fingerprints.difference(&wanted).cloned().collect();
        out.removed = remove_from(text, &drop);
        let inserted = add_to(text, &keys, out);
        out.revoked = drop.clone();
        let mut m = forget(managed, &drop);
        m.fingerprints.extend(inserted);
        bound(m, &keys, expiry)
    })
}

/// A key whose time had come, and what became of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredKey {
    pub user: UserName,
    pub fingerprint: String,
    pub at: u64,
    pub command_id: String,
    /// Lines removed (0 when it was no longer in the file, or the user no
    /// longer exists).
    pub lines_removed: usize,
    /// Its binding command asked for `terminate_sessions`: the key's live
    /// sessions are to be ended now (the caller does that, see
    /// [`Sweep::sessions_to_end`]).
    pub terminate_sessions: bool,
    /// The user no longer exists (so neither do their sessions).
    pub user_gone: bool,
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    pub removed: Vec<ExpiredKey>,
    /// Users whose due keys could not be removed now (their lines still
    /// carry `expiry-time`, so sshd refuses them anyway).
    pub failed: Vec<(UserName, Vec<String>, Error)>,
    /// The earliest expiry still to come, seconds since the epoch.
    pub next: Option<u64>,
}

impl Sweep {
    /// The users whose removed keys asked for `terminate_sessions`, each
    /// with those keys' fingerprints: the sessions to end after the sweep
    /// (the lines are gone by then, so an ended session cannot log back in
    /// with its key). Users who no longer exist are left out.
    pub fn sessions_to_end(&self) -> BTreeMap<UserName, BTreeSet<String>> {
        let mut out: BTreeMap<UserName, BTreeSet<String>> = BTreeMap::new();
        for k in self
            .removed
            .iter()
            .filter(|k| k.terminate_sessions && !k.user_gone)
        {
            out.entry(k.user.clone())
                .or_default()
                .insert(k.fingerprint.clone());
        }
        out
    }
}

/// Remove every managed key whose expiry is at or before `now` (seconds
/// since the epoch) from its user's authorized_keys and from the record.
/// Reads only the record when nothing is due.
pub fn expire_due(sys: &System, now: u64) -> Result<Sweep> {
    let mut sweep = Sweep::default();
    let Some(state) = existing_state_dir(sys)? else {
        return Ok(sweep);
    };
    for name in state.list()? {
        let Some(user) = name
            .strip_suffix(".json")
            .and_then(|u| UserName::parse(u).ok())
        else {
            continue;
        };
        let managed = match load_managed(&state, &user) {
            Ok(m) => m,
            Err(e) => {
                sweep.failed.push((user, Vec::new(), e));
                continue;
            }
        };
        let (due, later): (Vec<_>, Vec<_>) =
            managed.expiring.iter().partition(|(_, e)| e.at <= now);
        if let Some(t) = later.iter().map(|(_, e)| e.at).min() {
            sweep.next = Some(sweep.next.map_or(t, |n| n.min(t)));
        }
        if due.is_empty() {
            continue;
        }
        let due: BTreeMap<String, Expiring> = due
            .into_iter()
            .map(|(f, e)| (f.clone(), e.clone()))
            .collect();
        let fps: BTreeSet<String> = due.keys().cloned().collect();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let r = apply(sys, &user, false, |text, m, _| {
            for f in &fps {
                let one = BTreeSet::from([f.clone()]);
                counts.insert(f.clone(), remove_from(text, &one));
            }
            forget(m, &fps)
        });
        let mut user_gone = false;
        match r {
            Ok(_) => {}
            Err(Error::UserNotFound(_)) => {
                user_gone = true;
                // The user is gone, and so is every line: forget the keys.
                let m = forget(&managed, &fps);
                if let Err(e) = store_managed(&state, &user, &m) {
                    sweep.failed.push((user, fps.into_iter().collect(), e));
                    continue;
                }
            }
            Err(e) => {
                sweep.failed.push((user, fps.into_iter().collect(), e));
                continue;
            }
        }
        for (fingerprint, e) in due {
            sweep.removed.push(ExpiredKey {
                user: user.clone(),
                lines_removed: counts.get(&fingerprint).copied().unwrap_or(0),
                fingerprint,
                at: e.at,
                command_id: e.command_id,
                terminate_sessions: e.terminate_sessions,
                user_gone,
            });
        }
    }
    Ok(sweep)
}

/// The managed expiries of `user`'s keys, by fingerprint (read only).
fn managed_expiries(sys: &System, user: &UserName) -> Result<BTreeMap<String, Expiring>> {
    let Some(state) = existing_state_dir(sys)? else {
        return Ok(BTreeMap::new());
    };
    Ok(load_managed(&state, user)?.expiring)
}

/// When accessd removes the managed key `fingerprint` of `user`, if it does.
pub fn managed_expiry(sys: &System, user: &UserName, fingerprint: &str) -> Result<Option<u64>> {
    let Some(state) = existing_state_dir(sys)? else {
        return Ok(None);
    };
    Ok(load_managed(&state, user)?
        .expiring
        .get(fingerprint)
        .map(|e| e.at))
}

pub fn list_keys(sys: &System, user: &UserName) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for_each_key(sys, user, |k| out.push(k))?;
    Ok(out)
}

/// Call `visit` with each key line of `user`'s authorized_keys, in file
/// order, without holding more than the file's bytes and one key at a time:
/// a legal file of 100,000 short lines must not cost the agent 100,000
/// parsed keys at once (inventory keeps only what it reports).
pub fn for_each_key(sys: &System, user: &UserName, mut visit: impl FnMut(KeyInfo)) -> Result<()> {
    let owner = file::owner_of(sys, user)?;
    let Some(ssh) = file::open_ssh_dir(sys, &owner, false)? else {
        return Ok(());
    };
    let Some(data) = file::read_keys_file(&ssh, &owner)? else {
        return Ok(());
    };
    let expiring = match managed_expiries(sys, user) {
        Ok(e) => e,
        Err(e) => {
            // The keys are still listed; only their managed expiry is not.
            tracing::warn!("reading the managed-key record of {user}: {e}");
            BTreeMap::new()
        }
    };
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for raw in data.bytes.split_inclusive(|&b| b == b'\n') {
        let Entry::Key(f) = line::split(AuthKeysText::body(raw)) else {
            continue;
        };
        let Ok(key) = PublicKey::decode(&lossy(f.key_type), f.blob) else {
            continue;
        };
        let fingerprint = key.fingerprint();
        visit(KeyInfo {
            key_type: key.key_type.clone(),
            bits: key.bits,
            expires_at: expiring.get(&fingerprint).map(|e| {
                crate::time::format_time(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.at),
                )
            }),
            fingerprint,
            comment: f.comment.map(lossy),
            options: f.options.map(lossy),
        });
    }
    Ok(())
}
