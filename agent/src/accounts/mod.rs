//! Local accounts: /etc/passwd, /etc/shadow, /etc/group, /etc/gshadow,
//! /etc/subuid, /etc/subgid and home directories — changed exactly as
//! shadow-utils (`chpasswd -e`, `useradd -m`, `userdel -r`) would change them.
//!
//! How a change is made, for every operation:
//! 1. validate and hash the input before touching anything;
//! 2. take the locks shadow-utils takes ([`lock`]), then read the files —
//!    after locking, so no concurrent change is overwritten;
//! 3. edit only the lines concerned ([`db`]);
//! 4. replace every changed file in one all-or-nothing [`txn`], keeping
//!    `FILE-` backups;
//! 5. release the locks and invalidate the name-service caches.
//!
//! Submodules: [`lock`] (.pwd.lock + commonio locks), [`db`] (line-preserving
//! tables), [`txn`] (multi-file commit), [`hash`] (crypt strings, policy),
//! [`logindefs`], [`lifecycle`] (lock, unlock, forced password change),
//! `useradd`, `userdel`, `sudo`, `home` (skeleton copy and symlink-safe
//! removal).

pub mod hash;
mod home;
pub mod lifecycle;
pub mod lock;
pub mod logindefs;
pub mod sudo;
pub mod sudo_access;
pub mod txn;
mod useradd;
mod userdel;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::fsx::Dir;
use crate::names::UserName;
use crate::secret::Secret;
use crate::sys::System;
// The passwd read and the table parser live in `userdb`, below both this
// module (which writes the databases) and `ssh` (which needs a user's uid,
// gid and home, and is named by useradd/userdel): while `lookup` was here,
// `ssh::authkeys` importing it made accounts <-> ssh a cycle (issue 14).
// The submodules keep naming them through this module.
pub use crate::userdb as db;
use crate::userdb::{load, load_required, malformed, open_etc, record};
pub use crate::userdb::{lookup, UserRecord};

/// Password policy for plaintext passwords (PROTOCOL §3 "Secrets").
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    pub min_len: usize,
    pub max_len: usize,
    /// How many of: upper case, lower case, digit, other.
    pub min_classes: u8,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_len: 8,
            max_len: 72,
            min_classes: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsConfig {
    pub policy: PasswordPolicy,
    /// SHA-512 crypt rounds (5000 = libxcrypt's default, written without `rounds=`).
    pub rounds: u32,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            policy: PasswordPolicy::default(),
            rounds: 5000,
        }
    }
}

/// A validated crypt(3) string: `$6$`, `$5$` or `$y$`, with no `:`,
/// whitespace or control characters.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptHash(String);

impl CryptHash {
    pub fn parse(s: &str) -> Result<CryptHash> {
        hash::parse_crypt(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CryptHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is not a plaintext, but it is still nothing to log.
        f.write_str("CryptHash(<redacted>)")
    }
}

/// What `set_password` / `create_user` are given.
#[derive(Debug)]
pub enum Password {
    /// Checked against the policy, then hashed with SHA-512 crypt.
    Plain(Secret),
    /// Stored as given.
    Crypt(CryptHash),
}

#[derive(Debug)]
pub struct NewUser {
    pub name: UserName,
    pub sudo: bool,
    /// Must be listed in /etc/shells; default from /etc/default/useradd.
    pub shell: Option<String>,
    pub password: Option<Password>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedUser {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
    /// How sudo was granted: `group:sudo`, `group:wheel` or `dropin:/etc/sudoers.d/NAME`.
    pub sudo: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordState {
    Set,
    Locked,
    Empty,
}

/// A local user as the inventory reports it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    #[serde(flatten)]
    pub record: UserRecord,
    pub sudo: bool,
    pub password: PasswordState,
    /// Locked as `lock_user` locks (account expiry 1).
    pub locked: bool,
    /// The account expiry date (`YYYY-MM-DD`), when one is set.
    pub expires: Option<String>,
    /// lastchg 0: the password must be changed at the next login.
    pub must_change: bool,
}

/// Check `pw` against the policy and hash it (SHA-512 crypt, 16-char salt).
pub fn hash_password(cfg: &AccountsConfig, pw: &Secret) -> Result<CryptHash> {
    hash::hash(cfg, pw)
}

/// Replace the user's hash in /etc/shadow and set lastchg to today.
pub fn set_password(
    sys: &System,
    cfg: &AccountsConfig,
    user: &UserName,
    pw: &Password,
) -> Result<()> {
    set_password_with_timeout(sys, cfg, user, pw, lock::DEFAULT_TIMEOUT)
}

/// [`set_password`] with a lock deadline other than glibc's 15 s.
pub fn set_password_with_timeout(
    sys: &System,
    cfg: &AccountsConfig,
    user: &UserName,
    pw: &Password,
    lock_timeout: Duration,
) -> Result<()> {
    set_password_with(sys, cfg, user, pw, PasswordOptions::default(), lock_timeout).map(|_| ())
}

/// How [`set_password_with`] sets a password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PasswordOptions {
    /// lastchg 0, as `passwd -e` / `chage -d 0` write it: the user must
    /// choose a new password at the next login.
    pub must_change: bool,
}

/// What [`set_password_with`] did besides replacing the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PasswordSet {
    /// The account is locked ([`lifecycle::lock`]): the new hash is stored
    /// behind a `!`, so the lock holds until `unlock_user` and the new
    /// password works from then on. A reset must not silently unlock.
    pub kept_locked: bool,
    pub must_change: bool,
}

/// Replace the user's hash in /etc/shadow; lastchg becomes today, or 0 with
/// `must_change`.
pub fn set_password_with(
    sys: &System,
    cfg: &AccountsConfig,
    user: &UserName,
    pw: &Password,
    opts: PasswordOptions,
    lock_timeout: Duration,
) -> Result<PasswordSet> {
    // Hash first: it is slow on purpose and needs no lock.
    let hash = resolve_password(cfg, pw)?;
    let etc = open_etc(sys)?;
    let lastchg = if opts.must_change {
        lifecycle::MUST_CHANGE_LASTCHG.to_vec()
    } else {
        lastchg(sys)
    };
    let kept_locked;
    {
        // chpasswd locks passwd, then shadow.
        let _locks = lock::Locks::acquire(&etc, &["passwd", "shadow"], lock_timeout)?;
        let (data, mut shadow) = load_required(&etc, "shadow")?;
        let i = shadow_index(&etc, &shadow, user)?;
        let mut f = shadow.fields(i);
        if f.len() < 3 {
            f.resize(9, Vec::new());
        }
        kept_locked = lifecycle::is_locked(&f);
        let mut new_hash = hash.as_str().as_bytes().to_vec();
        if kept_locked {
            new_hash.insert(0, b'!');
        }
        f[1] = new_hash;
        f[2] = lastchg;
        shadow.set_fields(i, &f);
        let mut t = txn::Txn::new();
        t.replace(&etc, "shadow", data, shadow.to_bytes());
        t.commit()?;
    }
    invalidate_caches(sys);
    Ok(PasswordSet {
        kept_locked,
        must_change: opts.must_change,
    })
}

pub fn create_user(sys: &System, cfg: &AccountsConfig, spec: &NewUser) -> Result<CreatedUser> {
    create_user_then(sys, cfg, spec, |_| Ok(())).map(|(c, ())| c)
}

/// [`create_user`], then `then` (the new user's keys) while the account
/// files are still locked. When `then` fails, the create is undone: every
/// file this command changed gets its old bytes back (their `FILE-`
/// backups too), a home it made is removed — and one that was there before
/// is kept, as `useradd -m` keeps it — and `then`'s error is returned.
pub fn create_user_then<T>(
    sys: &System,
    cfg: &AccountsConfig,
    spec: &NewUser,
    then: impl FnOnce(&CreatedUser) -> Result<T>,
) -> Result<(CreatedUser, T)> {
    useradd::create(sys, cfg, spec, lock::DEFAULT_TIMEOUT, then)
}

/// What `delete_user` is asked to do besides removing the account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `userdel -r`: the home (when it is the user's) and the mail spool.
    pub remove_home: bool,
    /// End the user's processes instead of failing with `user_busy`.
    pub terminate_sessions: bool,
}

/// What `delete_user` did about the user's processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Deleted {
    pub sessions_ended: Vec<crate::sessions::Ended>,
    /// Processes of the user still running (0 on success).
    pub sessions_open: usize,
}

pub fn delete_user(sys: &System, user: &UserName, remove_home: bool) -> Result<Deleted> {
    delete_user_with(
        sys,
        user,
        DeleteOptions {
            remove_home,
            terminate_sessions: false,
        },
    )
}

pub fn delete_user_with(sys: &System, user: &UserName, opts: DeleteOptions) -> Result<Deleted> {
    userdel::delete(sys, user, opts, lock::DEFAULT_TIMEOUT)
}

/// The uids commands may name (PROTOCOL §3): 0 and login.defs'
/// UID_MIN..=UID_MAX (useradd's defaults 1000 and 60000 when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegularUids {
    pub min: u32,
    pub max: u32,
}

impl RegularUids {
    pub fn load(etc: &Dir) -> Result<RegularUids> {
        let defs = logindefs::Defs::load(etc, "login.defs", ' ')?;
        let clamp = |v: i64| v.clamp(1, i64::from(u32::MAX)) as u32;
        Ok(RegularUids {
            min: clamp(defs.num_or("UID_MIN", 1000)),
            max: clamp(defs.num_or("UID_MAX", 60000)),
        })
    }

    /// Root, or a regular (not a system) account.
    pub fn names(&self, uid: u32) -> bool {
        uid == 0 || (self.min..=self.max).contains(&uid)
    }

    /// Why an account with `uid` is not one a command may name.
    fn refusal(&self, name: &str, uid: u32) -> Error {
        Error::invalid(format!(
            "refusing {name}: uid {uid} is a system account, outside \
             UID_MIN..UID_MAX ({}..{}) of login.defs; commands name only root and regular users",
            self.min, self.max
        ))
    }
}

/// The passwd entry of a user that a command may name: root or a regular
/// user (`invalid_command` for any other account — daemon, www-data,
/// nobody —, `user_not_found` when there is none). Every op that acts on
/// an existing user checks it through here.
pub fn managed_user(sys: &System, user: &UserName) -> Result<UserRecord> {
    let etc = open_etc(sys)?;
    let range = RegularUids::load(&etc)?;
    let rec = lookup(sys, user)?;
    if !range.names(rec.uid) {
        return Err(range.refusal(user.as_str(), rec.uid));
    }
    Ok(rec)
}

/// Users with uid 0 or UID_MIN..=UID_MAX, in passwd order.
pub fn list_users(sys: &System) -> Result<Vec<UserSummary>> {
    let root = Dir::open(&sys.root)?;
    let etc = root.open_dir("etc")?;
    let range = RegularUids::load(&etc)?;
    let (_, passwd) = load_required(&etc, "passwd")?;
    // Indexed once: looking each user up by a walk of shadow and group made
    // an inventory of N users cost N^2.
    let mut shadow: std::collections::HashMap<Vec<u8>, Vec<Vec<u8>>> = Default::default();
    if let Some((_, t)) = load(&etc, "shadow")? {
        for (_, f) in t.entries() {
            if let Some(name) = f.first() {
                // The first entry of a name is the one the system uses.
                shadow.entry(name.clone()).or_insert_with(|| f.clone());
            }
        }
    }
    let group = load(&etc, "group")?.map(|(_, t)| t);
    let groups = sudo::GroupIndex::new(group.as_ref());
    let sudoers = sudo::Sudoers::load(&root)?;
    let mut out = Vec::new();
    for (_, f) in passwd.entries() {
        let Some(rec) = record(&f) else { continue };
        if !range.names(rec.uid) {
            continue;
        }
        let sf = shadow.get(rec.name.as_bytes());
        let password = match &sf {
            Some(sf) => password_state(sf.get(1).map(Vec::as_slice).unwrap_or(b"")),
            None => password_state(&f[1]),
        };
        let field = |i: usize| {
            sf.as_ref()
                .and_then(|sf| sf.get(i))
                .map(Vec::as_slice)
                .unwrap_or(b"")
        };
        let locked = sf.is_some_and(|f| lifecycle::is_locked(f));
        let expires = db::parse_num(field(7)).and_then(day_to_date);
        let must_change = field(2) == lifecycle::MUST_CHANGE_LASTCHG;
        let who = groups.who(&rec.name, rec.uid, rec.gid);
        let sudo = !sudoers.rules_for(&who).is_empty();
        out.push(UserSummary {
            record: rec,
            sudo,
            password,
            locked,
            expires,
            must_change,
        });
    }
    Ok(out)
}

/// Days since the epoch (shadow's unit) as `YYYY-MM-DD`.
pub fn day_to_date(days: u64) -> Option<String> {
    // 9999-12-31: beyond it there is no four-digit year to write.
    if days > 2_932_896 {
        return None;
    }
    let secs = days * 86_400;
    let t = std::time::SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(
        humantime::format_rfc3339_seconds(t)
            .to_string()
            .get(..10)?
            .to_owned(),
    )
}

fn password_state(field: &[u8]) -> PasswordState {
    match field {
        b"" => PasswordState::Empty,
        f if f.starts_with(b"$") => PasswordState::Set,
        // `!…` (locked by usermod -L / passwd -l), `*`, `!!`, `x`: no
        // password login possible.
        _ => PasswordState::Locked,
    }
}

/// The line of `user` in shadow (read under the locks): `user_not_found`
/// when passwd has no such user either, else an error that says what to do.
fn shadow_index(etc: &Dir, shadow: &db::Table, user: &UserName) -> Result<usize> {
    if let Some(i) = shadow.find(user.as_str()) {
        return Ok(i);
    }
    let (_, passwd) = load_required(etc, "passwd")?;
    Err(if passwd.contains(user.as_str()) {
        Error::invalid(format!(
            "user {user} has no entry in {}; run pwconv first",
            etc.display("shadow").display()
        ))
    } else {
        Error::UserNotFound(user.to_string())
    })
}

fn resolve_password(cfg: &AccountsConfig, pw: &Password) -> Result<CryptHash> {
    match pw {
        Password::Plain(s) => hash::hash(cfg, s),
        Password::Crypt(h) => Ok(h.clone()),
    }
}

/// shadow's lastchg: days since the epoch; 0 would mean "must change at next
/// login", so chpasswd writes it as empty (aging off) instead.
fn lastchg(sys: &System) -> Vec<u8> {
    match sys.clock.days_since_epoch() {
        0 => Vec::new(),
        d => d.to_string().into_bytes(),
    }
}

/// What shadow-utils does after every committed change: tell nscd and sssd
/// to forget what they cached. Only on the live system (a cache never
/// holds an image's users), and only where the tools are installed.
fn invalidate_caches(sys: &System) {
    if !sys.is_live() {
        return;
    }
    let cmds: [(&str, &[&str]); 3] = [
        ("nscd", &["-i", "passwd"]),
        ("nscd", &["-i", "group"]),
        ("sss_cache", &["-UG"]),
    ];
    for (prog, args) in cmds {
        let Some(path) = crate::sys::find_program(prog) else {
            continue;
        };
        let cmd = crate::sys::Cmd::new(path).args(args.iter().copied());
        match sys
            .runner
            .run(&cmd)
            .ctx(|| format!("running {}", cmd.display()))
        {
            // nscd exits 1 when installed but not running: nothing cached.
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cache invalidation failed"),
        }
    }
}
