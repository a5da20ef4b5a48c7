//! Accepted command ids, remembered in `<state_dir>/replay/` so that a
//! command never runs twice, even across a restart or a crash (PROTOCOL §3).
//!
//! One file per id. The id is recorded — written and fsynced, with the
//! directory — *before* the command is applied: a crash after recording
//! loses at most one command's effect, never applies one twice. Recording is
//! `link()`-exclusive, so two processes (the daemon and `accessd apply`)
//! cannot both accept the same id.
//!
//! File names are the SHA-256 of the id in hex: ids may contain `.` and `:`
//! and be 128 bytes long, and a name derived this way can never be `..`, a
//! hidden file or too long. The file holds the id and its expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fsx::{Dir, Meta};
use crate::identity::{sub_dir, write_new};

pub const REPLAY_DIR: &str = "replay";

/// How often pruning runs at most (it lists the directory).
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    /// `expires_at` of the command, seconds since the epoch.
    expires_at: u64,
}

pub struct ReplayStore {
    dir: Dir,
    last_prune: Option<SystemTime>,
}

fn file_name(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl ReplayStore {
    pub fn open(state: &Dir) -> Result<ReplayStore> {
        Ok(ReplayStore {
            dir: sub_dir(state, REPLAY_DIR)?,
            last_prune: None,
        })
    }

    /// Has `id` been accepted before?
    pub fn seen(&self, id: &str) -> Result<bool> {
        Ok(self.dir.stat_at(&file_name(id))?.is_some())
    }

    /// Record `id` durably. `replayed` if it was already recorded (by this
    /// process or another one, at any time before).
    pub fn record(&mut self, id: &str, expires_at: SystemTime) -> Result<()> {
        let rec = Record {
            id: id.to_owned(),
            expires_at: secs(expires_at),
        };
        let data = serde_json::to_vec(&rec).expect("a record serializes");
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        if write_new(
            &self.dir,
            &file_name(id),
            &data,
            &Meta::new(euid, egid, 0o600),
        )? {
            Ok(())
        } else {
            Err(Error::Replayed(id.to_owned()))
        }
    }

    /// Forget ids whose command expired more than `skew` ago: such a command
    /// would be rejected as `expired` anyway. Runs at most once a minute.
    /// Unreadable records are kept (a record is never dropped by mistake).
    pub fn prune(&mut self, now: SystemTime, skew: Duration) -> Result<usize> {
        if let Some(last) = self.last_prune {
            if now.duration_since(last).unwrap_or(Duration::ZERO) < PRUNE_INTERVAL && now >= last {
                return Ok(0);
            }
        }
        self.last_prune = Some(now);
        let now = secs(now);
        let mut removed = 0;
        for name in self.dir.list()? {
            if name.starts_with('.') {
                // A temp file left by a crash between write and link.
                if name.starts_with(".new-") {
                    self.dir.remove_file(&name)?;
                }
                continue;
            }
            let Some(data) = self.dir.read(&name)? else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<Record>(&data.bytes) else {
                continue;
            };
            if rec.expires_at.saturating_add(skew.as_secs()) < now {
                self.dir.remove_file(&name)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.dir.sync()?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn ids_are_remembered_across_reopen_and_pruned_after_expiry() {
        let tmp = tempfile::tempdir().unwrap();
        let state = Dir::open(tmp.path()).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = ReplayStore::open(&state).unwrap();
        s.record("c-1.2:..", t0).unwrap();
        assert_eq!(s.record("c-1.2:..", t0).unwrap_err().code(), Code::Replayed);
        let mut s = ReplayStore::open(&state).unwrap();
        assert!(s.seen("c-1.2:..").unwrap());
        assert_eq!(s.record("c-1.2:..", t0).unwrap_err().code(), Code::Replayed);
        let skew = Duration::from_secs(300);
        assert_eq!(s.prune(t0 + skew, skew).unwrap(), 0);
        let mut s = ReplayStore::open(&state).unwrap();
        assert_eq!(
            s.prune(t0 + skew + Duration::from_secs(1), skew).unwrap(),
            1
        );
        assert!(!s.seen("c-1.2:..").unwrap());
    }
}
