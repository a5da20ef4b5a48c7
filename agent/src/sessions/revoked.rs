//! The live sessions of keys that were just taken away (`remove_keys`,
//! `replace_keys`, an expiring key's sweep), found and ended through one
//! small trait: the engine decides *when* (after the lines are gone, never
//! after a failed edit), [`SshdLog`] decides *which*, and a test can put a
//! recorder in its place to watch the engine's order of effects without
//! root processes or a journal.

use std::collections::BTreeSet;

use super::by_key::{self, Outcome, Snapshot, UserSessions};
use crate::error::Result;
use crate::ssh::logins::{self, Records, Source};
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

    /// How many there are (`open`), touching none; `unmatched` as for
    /// [`KeySessions::end`].
    fn count(
        &self,
        sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<Outcome>;
}

/// The user's live sessions from /proc ([`by_key::candidates`]), each
/// matched by its pid to sshd's own record ([`logins::for_pids`]: the
/// journal's trusted fields, else auth.log's tail) before it is counted
/// or ended. Every live session is seen whatever the log holds; one whose
/// record is not found is `unmatched`, with why. In image mode (a root
/// other than `/`) the image has no live sessions: nothing is read and
/// nothing is ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct SshdLog;

impl SshdLog {
    /// The process table and `user`'s sessions in it, attributed; the log
    /// is read only when the user has a live session.
    fn sessions(
        sys: &System,
        user: &str,
        uid: u32,
    ) -> Result<(Snapshot, UserSessions, Option<String>)> {
        let snap = Snapshot::read()?;
        let live = by_key::candidates_of(&snap, uid);
        if live.is_empty() {
            return Ok((snap, UserSessions::default(), None));
        }
        let pids = live.iter().map(|c| (c.pid, c.started)).collect();
        let records = logins::for_pids(sys, &pids)?;
        let sessions = by_key::attribute(&records.logins, user, uid, &snap);
        Ok((snap, sessions, Some(unmatched_why(&records))))
    }
}

/// Why a live session's record may be missing from `records`.
pub fn unmatched_why(records: &Records) -> String {
    let place = match records.source {
        Source::Journal => "the journal",
        Source::AuthLog => "/var/log/auth.log (or secure; rotated files are not read)",
    };
    match &records.cut {
        Some(cut) => format!(
            "their login records were not found in {place}, which was not read in full ({cut})"
        ),
        None => format!(
            "their login records are no longer in {place} (rotated away or not kept), \
             or do not match the connection"
        ),
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
        let (snap, sessions, why) = Self::sessions(sys, user, uid)?;
        let mut o = by_key::end_keys(&sessions, fingerprints, user, &snap)?;
        o.unmatched_why = why.filter(|_| o.unmatched > 0);
        Ok(o)
    }

    fn count(
        &self,
        sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<Outcome> {
        if !sys.is_live() || fingerprints.is_empty() {
            return Ok(Outcome::default());
        }
        let (_, sessions, why) = Self::sessions(sys, user, uid)?;
        let mut o = by_key::count(&sessions, fingerprints);
        o.unmatched_why = why.filter(|_| o.unmatched > 0);
        Ok(o)
    }
}
