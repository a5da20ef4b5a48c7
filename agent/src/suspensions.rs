//! The account expiry dates that `lock_user` replaced, kept in
//! `<state_dir>/locks/USER` until `unlock_user` restores them (PROTOCOL §3).
//!
//! Only the raw shadow(5) expiry field is kept (a day number, or empty for
//! "never"). It lives in the state directory rather than in /etc, because
//! shadow-utils has nowhere to put it, and `usermod -U` alone would leave the
//! account expired.

use crate::error::{Error, Result};
use crate::fsx::Dir;
use crate::names::UserName;
use crate::state_dir::{private_file_meta, StateDir};

pub struct Suspensions {
    dir: Dir,
}

impl Suspensions {
    pub fn open(state: &StateDir) -> Result<Suspensions> {
        Ok(Suspensions {
            dir: state.locks()?,
        })
    }

    /// Remember `expire` as what `user`'s lock replaced (atomically, durably).
    pub fn remember(&self, user: &UserName, expire: &str) -> Result<()> {
        self.dir
            .write_atomic(user.as_str(), expire.as_bytes(), &private_file_meta())
    }

    /// The expiry `user`'s lock replaced, if one is remembered.
    pub fn recall(&self, user: &UserName) -> Result<Option<String>> {
        // The state directory is root's (0700, checked when opened).
        let Some(data) = self.dir.read(user.as_str())? else {
            return Ok(None);
        };
        let text = String::from_utf8(data.bytes)
            .ok()
            .filter(|t| t.len() <= 10 && t.bytes().all(|b| b.is_ascii_digit()));
        text.map(Some).ok_or_else(|| Error::BadFile {
            path: self.dir.display(user.as_str()),
            message: "not an account expiry day number".into(),
        })
    }

    /// Forget `user`'s record (after an unlock, or with the user).
    pub fn forget(&self, user: &UserName) -> Result<()> {
        self.dir.remove_file(user.as_str()).map(|_| ())
    }
}
