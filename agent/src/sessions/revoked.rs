//! The live sessions of keys that were just taken away (`remove_keys`,
//! `replace_keys`, an expiring key's sweep), found and ended through one
//! small trait: the engine decides *when* (after the lines are gone, never
//! after a failed edit), [`SshdLog`] decides *which*, and a test can put a
//! recorder in its place to watch the engine's order of effects without
//! root processes or a journal.

use std::collections::BTreeSet;

use super::by_key::{self, Outcome};
use crate::error::Result;
use crate::ssh::logins::{self, Login};
use crate::sys::System;

/// Finding and ending the live SSH sessions of `user` (uid `uid`) that
/// authenticated with one of `fingerprints`.
pub trait KeySessions: Send + Sync {
    /// End them (SIGTERM, then SIGKILL after [`super::GRACE`]).
    fn end(
        &self,
        sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<Outcome>;

    /// How many there are, touching none.
    fn count(
        &self,
        sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<usize>;
}

/// At most this many "Accepted publickey" records are read per call (the
/// newest first): a busy host's log since boot must not cost the agent
/// unbounded memory. Older sessions than the bound reaches are not seen.
pub const MAX_LOGINS: usize = 10_000;

/// The sessions sshd's own log names ([`logins::accepted`]: the journal's
/// trusted fields, else auth.log), each checked against /proc
/// ([`by_key::plan`]) before it is counted or ended. In image mode (a root
/// other than `/`) the image has no live sessions: nothing is read and
/// nothing is ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct SshdLog;

impl SshdLog {
    /// sshd's records since this boot (no live session is older).
    fn logins(sys: &System) -> Result<Vec<Login>> {
        let since = by_key::boot_time()?;
        logins::accepted(sys, Some(since), MAX_LOGINS)
    }
}

impl KeySessions for SshdLog {
    fn end(
        &self,
        sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<Outcome> {
        if !sys.is_live() || fingerprints.is_empty() {
            return Ok(Outcome::default());
        }
        by_key::end(&Self::logins(sys)?, fingerprints, user, uid)
    }

    fn count(
        &self,
        sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<usize> {
        if !sys.is_live() || fingerprints.is_empty() {
            return Ok(0);
        }
        by_key::count(&Self::logins(sys)?, fingerprints, user, uid)
    }
}
