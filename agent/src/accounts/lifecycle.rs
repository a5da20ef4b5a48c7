//! Suspending an account and forcing a new password: what `usermod -L -e 1`,
//! `usermod -U` and `passwd -e` write to /etc/shadow (PROTOCOL §3 `lock_user`,
//! `unlock_user`, `set_password`'s `must_change`).
//!
//! `passwd -l` alone only disables the password, and key logins stay open;
//! an account expiry date of 1 (1970-01-02) makes sshd refuse every method,
//! keys included (PAM's account stage and sshd's own shadow check both read
//! it). So a lock is both: a `!` before the hash and expiry 1. The expiry it
//! replaced is returned to the caller, who keeps it (the state directory) and
//! hands it back to [`unlock`].
//!
//! The field edits are pure functions ([`plan_lock`], [`plan_unlock`]) over a
//! shadow line's fields; [`lock`] and [`unlock`] only add the locking and the
//! commit every account change shares.

use std::time::Duration;

use serde::Serialize;

use super::{load_required, lock, open_etc, shadow_index, txn};
use crate::error::{Error, Result};
use crate::names::UserName;
use crate::sys::System;

/// shadow(5) fields, by index.
const PASSWORD: usize = 1;
const EXPIRE: usize = 7;

/// The account expiry `usermod -L -e 1` writes: day 1 after the epoch, long past.
pub const LOCKED_EXPIRE: &[u8] = b"1";

/// What a lock did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Locked {
    /// false: the account was locked already (password `!` and expiry 1).
    pub changed: bool,
    /// The expiry field the lock replaced (`""` = none), to restore on unlock.
    /// `None` when nothing was replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_expire: Option<String>,
}

/// What an unlock did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unlocked {
    /// false: the account was not locked.
    pub changed: bool,
    /// The expiry field now in force (`""` = none).
    pub expire: String,
    /// The password stays disabled: its hash was only `!` (a user who never
    /// had a password, such as a key-only user); as `usermod -U` does, the
    /// `!` is kept rather than leaving an empty, passwordless hash.
    pub password_still_disabled: bool,
}

/// The shadow fields after `usermod -L -e 1`, and the expiry it replaced.
/// `None` when the account is locked already (nothing to write).
pub fn plan_lock(fields: &[Vec<u8>]) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
    let mut f = padded(fields);
    let hash_locked = f[PASSWORD].first() == Some(&b'!');
    if hash_locked && f[EXPIRE] == LOCKED_EXPIRE {
        return None;
    }
    let previous = std::mem::replace(&mut f[EXPIRE], LOCKED_EXPIRE.to_vec());
    if !hash_locked {
        f[PASSWORD].insert(0, b'!');
    }
    Some((f, previous))
}

/// The shadow fields after `usermod -U -e RESTORE`. `restore` is the expiry
/// the lock replaced (`None`: unknown, cleared as `usermod -e ''` does).
/// Returns `None` when the account is not locked.
pub fn plan_unlock(fields: &[Vec<u8>], restore: Option<&[u8]>) -> Option<(Vec<Vec<u8>>, bool)> {
    let mut f = padded(fields);
    let expired_by_lock = f[EXPIRE] == LOCKED_EXPIRE;
    let hash_locked = f[PASSWORD].first() == Some(&b'!');
    // A lone `!` is "no password", not a lock: usermod -U leaves it.
    let hash_unlockable = hash_locked && f[PASSWORD].len() > 1;
    if !expired_by_lock && !hash_unlockable {
        return None;
    }
    if hash_unlockable {
        f[PASSWORD].remove(0);
    }
    if expired_by_lock {
        f[EXPIRE] = restore.unwrap_or(b"").to_vec();
    }
    let still_disabled = f[PASSWORD].as_slice() == b"!";
    Some((f, still_disabled))
}

/// Whether a shadow entry is locked as `lock_user` locks (expiry 1): the
/// state inventory reports and `set_password` preserves.
pub fn is_locked(fields: &[Vec<u8>]) -> bool {
    fields.get(EXPIRE).map(Vec::as_slice) == Some(LOCKED_EXPIRE)
}

/// `usermod -L -e 1 USER`.
pub fn lock(sys: &System, user: &UserName, lock_timeout: Duration) -> Result<Locked> {
    lock_remembering(sys, user, lock_timeout, |_| Ok(()))
}

/// [`lock`], handing the expiry it replaces to `remember` before anything
/// is written: if `remember` fails, nothing is locked; if the commit fails
/// after it, an unused record is left, which [`unlock`]'s caller discards.
pub fn lock_remembering(
    sys: &System,
    user: &UserName,
    lock_timeout: Duration,
    remember: impl FnOnce(&str) -> Result<()>,
) -> Result<Locked> {
    edit_shadow(sys, user, lock_timeout, |f| {
        Ok(match plan_lock(f) {
            None => (
                None,
                Locked {
                    changed: false,
                    previous_expire: None,
                },
            ),
            Some((new, previous)) => {
                let previous = text(&previous)?;
                remember(&previous)?;
                (
                    Some(new),
                    Locked {
                        changed: true,
                        previous_expire: Some(previous),
                    },
                )
            }
        })
    })
}

/// `usermod -U -e RESTORE USER`, RESTORE being what [`lock`] returned.
pub fn unlock(
    sys: &System,
    user: &UserName,
    restore: Option<&str>,
    lock_timeout: Duration,
) -> Result<Unlocked> {
    if let Some(r) = restore {
        // The value came from our own state directory; still, it goes into
        // /etc/shadow, so it must be what shadow(5) allows there.
        if !(r.is_empty() || r.bytes().all(|b| b.is_ascii_digit()) && r.len() <= 10) {
            return Err(Error::invalid(
                "the remembered account expiry is not a day number",
            ));
        }
    }
    edit_shadow(sys, user, lock_timeout, |f| {
        Ok(match plan_unlock(f, restore.map(str::as_bytes)) {
            None => (
                None,
                Unlocked {
                    changed: false,
                    expire: text(f.get(EXPIRE).map_or(&b""[..], Vec::as_slice))?,
                    password_still_disabled: f.get(PASSWORD).map(Vec::as_slice) == Some(b"!"),
                },
            ),
            Some((new, still_disabled)) => {
                let expire = text(&new[EXPIRE])?;
                (
                    Some(new),
                    Unlocked {
                        changed: true,
                        expire,
                        password_still_disabled: still_disabled,
                    },
                )
            }
        })
    })
}

/// shadow's lastchg as `passwd -e` / `chage -d 0` write it: 0, "the password
/// must be changed at the next login".
pub const MUST_CHANGE_LASTCHG: &[u8] = b"0";

/// Lock passwd and shadow as usermod does, read the user's shadow entry,
/// let `edit` decide, and commit what it returns (with a `shadow-` backup).
fn edit_shadow<T>(
    sys: &System,
    user: &UserName,
    lock_timeout: Duration,
    edit: impl FnOnce(&[Vec<u8>]) -> Result<(Option<Vec<Vec<u8>>>, T)>,
) -> Result<T> {
    let etc = open_etc(sys)?;
    let out = {
        let _locks = lock::Locks::acquire(&etc, &["passwd", "shadow"], lock_timeout)?;
        let (data, mut shadow) = load_required(&etc, "shadow")?;
        let i = shadow_index(&etc, &shadow, user)?;
        let (new, out) = edit(&shadow.fields(i))?;
        if let Some(new) = new {
            shadow.set_fields(i, &new);
            let mut t = txn::Txn::new();
            t.replace(&etc, "shadow", data, shadow.to_bytes());
            t.commit()?;
        }
        out
    };
    super::invalidate_caches(sys);
    Ok(out)
}

/// A shadow line's fields, padded to the nine fields shadow(5) has.
fn padded(fields: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut f = fields.to_vec();
    if f.len() < 9 {
        f.resize(9, Vec::new());
    }
    f
}

fn text(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::invalid("a shadow field is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Vec<Vec<u8>> {
        line.split(':').map(|s| s.as_bytes().to_vec()).collect()
    }

    fn line(f: &[Vec<u8>]) -> String {
        f.iter()
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }

    #[test]
    fn lock_prefixes_the_hash_and_expires_the_account() {
        let (f, prev) = plan_lock(&fields("alice:$6$s$h:20000:0:99999:7::20500:")).unwrap();
        assert_eq!(line(&f), "alice:!$6$s$h:20000:0:99999:7::1:");
        assert_eq!(prev, b"20500");
    }

    #[test]
    fn locking_a_locked_account_changes_nothing() {
        assert!(plan_lock(&fields("alice:!$6$s$h:20000:0:99999:7::1:")).is_none());
    }

    #[test]
    fn a_password_locked_account_still_gets_the_expiry() {
        // `passwd -l` leaves key logins open: lock_user must close them too.
        let (f, prev) = plan_lock(&fields("alice:!$6$s$h:20000:0:99999:7:::")).unwrap();
        assert_eq!(line(&f), "alice:!$6$s$h:20000:0:99999:7::1:");
        assert_eq!(prev, b"");
    }

    #[test]
    fn unlock_restores_the_remembered_expiry() {
        let (f, disabled) =
            plan_unlock(&fields("alice:!$6$s$h:20000:0:99999:7::1:"), Some(b"20500")).unwrap();
        assert_eq!(line(&f), "alice:$6$s$h:20000:0:99999:7::20500:");
        assert!(!disabled);
    }

    #[test]
    fn unlock_of_a_key_only_user_keeps_the_lone_bang() {
        let (f, disabled) = plan_unlock(&fields("bob:!:20000:0:99999:7::1:"), None).unwrap();
        assert_eq!(line(&f), "bob:!:20000:0:99999:7:::");
        assert!(disabled);
    }

    #[test]
    fn unlocking_an_unlocked_account_changes_nothing() {
        assert!(plan_unlock(&fields("alice:$6$s$h:20000:0:99999:7:::"), None).is_none());
        assert!(plan_unlock(&fields("bob:!:20000:0:99999:7:::"), None).is_none());
    }

    #[test]
    fn short_lines_are_padded_to_nine_fields() {
        let (f, _) = plan_lock(&fields("carol:$6$s$h:20000")).unwrap();
        assert_eq!(line(&f), "carol:!$6$s$h:20000:::::1:");
    }
}
