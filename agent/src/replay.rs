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
//! hidden file or too long. The file holds the id, the command's times, and
//! when it was received: by the wall clock, and by the boot id and the time
//! since boot (a clock nothing steps).
//!
//! # When a record may go
//!
//! A command is accepted only while the wall clock is within
//! `[issued_at - skew, expires_at + skew]`, a span of `ttl + 2 skew`. A
//! record is removed only when all of these hold:
//!
//! 1. `now > expires_at + skew` — expired by the command's own times;
//! 2. `now > received + ttl + skew` — expired counting from when it arrived
//!    by the local wall clock (a command received late in a wrong clock's
//!    view);
//! 3. at least `ttl + 2 skew` has really passed since it was received, by
//!    `CLOCK_BOOTTIME` within one boot.
//!
//! 1 and 2 alone read the same wall clock, so a clock stepped forward
//! satisfies both and a step back then makes a captured command fresh again;
//! 3 is what no step of the wall clock can fake. `CLOCK_BOOTTIME` restarts at
//! every boot, so a record seen for the first time in a later boot is
//! re-stamped with that boot and kept for another full span of it (a quick
//! reboot with a wrong RTC cannot forget it either). Records written before
//! these fields existed are stamped the same way, with `max_ttl` as their
//! ttl.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fsx::Dir;
use crate::state_dir::{private_file_meta, write_new, StateDir};
use crate::sys::Clock;

/// How often pruning runs at most (it lists the directory).
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    /// `expires_at` of the command, seconds since the epoch.
    expires_at: u64,
    /// `issued_at` of the command, seconds since the epoch.
    #[serde(default)]
    issued_at: Option<u64>,
    /// The local wall clock when the command was received.
    #[serde(default)]
    received_at: Option<u64>,
    /// The boot that `since_boot` counts in.
    #[serde(default)]
    boot_id: Option<String>,
    /// Seconds since that boot when the record was made, or first seen in
    /// that boot.
    #[serde(default)]
    since_boot: Option<u64>,
}

/// Times of a command being recorded.
pub struct Window {
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

pub struct ReplayStore {
    dir: Dir,
    last_prune: Option<SystemTime>,
}

fn file_name(id: &str) -> String {
    crate::hex::encode(&Sha256::digest(id.as_bytes()))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl ReplayStore {
    pub fn open(state: &StateDir) -> Result<ReplayStore> {
        Ok(ReplayStore {
            dir: state.replay()?,
            last_prune: None,
        })
    }

    /// Has `id` been accepted before?
    pub fn seen(&self, id: &str) -> Result<bool> {
        Ok(self.dir.stat_at(&file_name(id))?.is_some())
    }

    /// Record `id` durably. `replayed` if it was already recorded (by this
    /// process or another one, at any time before).
    pub fn record(&mut self, id: &str, window: &Window, clock: &dyn Clock) -> Result<()> {
        let rec = Record {
            id: id.to_owned(),
            expires_at: secs(window.expires_at),
            issued_at: Some(secs(window.issued_at)),
            received_at: Some(clock.unix_secs()),
            // Without a boot id the record is stamped at its first prune.
            boot_id: clock.boot_id().ok(),
            since_boot: Some(clock.since_boot().as_secs()),
        };
        let data = serde_json::to_vec(&rec).expect("a record serializes");
        if write_new(&self.dir, &file_name(id), &data, &private_file_meta())? {
            Ok(())
        } else {
            Err(Error::Replayed(id.to_owned()))
        }
    }

    /// Forget ids whose window has passed by every measure (module docs).
    /// Runs at most once a minute of wall-clock time (or after a step
    /// back). Unreadable records are kept (a record is never dropped by
    /// mistake), and nothing is pruned when the boot cannot be told.
    pub fn prune(&mut self, clock: &dyn Clock, skew: Duration, max_ttl: Duration) -> Result<usize> {
        let now_t = clock.now();
        if let Some(last) = self.last_prune {
            if now_t.duration_since(last).unwrap_or(Duration::ZERO) < PRUNE_INTERVAL
                && now_t >= last
            {
                return Ok(0);
            }
        }
        self.last_prune = Some(now_t);
        let Ok(boot_id) = clock.boot_id() else {
            return Ok(0);
        };
        let since_boot = clock.since_boot().as_secs();
        let now = secs(now_t);
        let skew = skew.as_secs();
        let mut removed = 0;
        let mut stamped = false;
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
            let Ok(mut rec) = serde_json::from_slice::<Record>(&data.bytes) else {
                continue;
            };
            let ttl = match rec.issued_at {
                Some(i) => rec.expires_at.saturating_sub(i),
                None => max_ttl.as_secs(),
            };
            let by_wall = now > rec.expires_at.saturating_add(skew)
                && rec
                    .received_at
                    .is_none_or(|r| now > r.saturating_add(ttl).saturating_add(skew));
            if !by_wall {
                continue;
            }
            match (&rec.boot_id, rec.since_boot) {
                (Some(b), Some(at)) if *b == boot_id => {
                    let span = ttl.saturating_add(2 * skew);
                    if since_boot >= at.saturating_add(span) {
                        self.dir.remove_file(&name)?;
                        removed += 1;
                    }
                }
                _ => {
                    // First seen in this boot: the step-free span starts now.
                    rec.boot_id = Some(boot_id.clone());
                    rec.since_boot = Some(since_boot);
                    let data = serde_json::to_vec(&rec).expect("a record serializes");
                    self.dir.write_atomic(&name, &data, &private_file_meta())?;
                    stamped = true;
                }
            }
        }
        if removed > 0 || stamped {
            self.dir.sync()?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::sys::TestClock;

    const SKEW: Duration = Duration::from_secs(300);
    const MAX_TTL: Duration = Duration::from_secs(3600);

    #[test]
    fn ids_are_remembered_across_reopen_and_pruned_after_both_clocks_pass_the_window() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = TestClock::at(t0);
        let w = Window {
            issued_at: t0,
            expires_at: t0 + Duration::from_secs(600),
        };
        let mut s = ReplayStore::open(&state).unwrap();
        s.record("c-1.2:..", &w, &clock).unwrap();
        assert_eq!(
            s.record("c-1.2:..", &w, &clock).unwrap_err().code(),
            Code::Replayed
        );
        let mut s = ReplayStore::open(&state).unwrap();
        assert!(s.seen("c-1.2:..").unwrap());
        // The window is 600 + 2 x 300 s: one second short, it stays.
        clock.pass(Duration::from_secs(1199));
        assert_eq!(s.prune(&clock, SKEW, MAX_TTL).unwrap(), 0);
        clock.pass(Duration::from_secs(1));
        let mut s = ReplayStore::open(&state).unwrap();
        assert_eq!(s.prune(&clock, SKEW, MAX_TTL).unwrap(), 1);
        assert!(!s.seen("c-1.2:..").unwrap());
    }

    #[test]
    fn a_record_in_the_old_format_is_stamped_and_kept_a_whole_span() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let mut s = ReplayStore::open(&state).unwrap();
        let name = file_name("c-old");
        s.dir
            .write_atomic(
                &name,
                br#"{"id":"c-old","expires_at":1000}"#,
                &private_file_meta(),
            )
            .unwrap();
        let clock = TestClock::at(UNIX_EPOCH + Duration::from_secs(1_000_000));
        assert_eq!(s.prune(&clock, SKEW, MAX_TTL).unwrap(), 0, "stamped, kept");
        let mut s = ReplayStore::open(&state).unwrap();
        clock.pass(MAX_TTL + 2 * SKEW - Duration::from_secs(1));
        assert_eq!(s.prune(&clock, SKEW, MAX_TTL).unwrap(), 0);
        clock.pass(Duration::from_secs(1));
        let mut s = ReplayStore::open(&state).unwrap();
        assert_eq!(s.prune(&clock, SKEW, MAX_TTL).unwrap(), 1);
    }
}
