//! Passwords staged for the next boot (`set_password` with
//! `apply_at: "next_boot"`). The password is hashed when the command
//! arrives and only the hash is kept, in `<state_dir>/staged/`, one file
//! per command (mode 0600, in a 0700 directory). `accessd apply-staged`
//! applies each once, before sshd starts, and removes it.
//!
//! "Next boot" means a boot other than the one the command arrived in: each
//! entry records the kernel's boot id, and `apply-staged` leaves entries of
//! the current boot staged, whoever runs it (a restarted unit, an upgrade,
//! an operator). The units are the other, independent barrier.
//!
//! File names sort in arrival order, so that of two commands for one user
//! the later is applied last and wins: `n<sequence>-<id digest>.json`, the
//! sequence one more than the highest in the directory. A sequence rather
//! than the clock: a clock stepped back between two commands must not
//! reorder them, and `link()` (see [`write_new`]) makes a number taken by
//! two processes at once go to one of them. Names written before the
//! sequence (`<seconds>-<id digest>.json`) are still read; they sort before
//! every sequenced name, as they were staged earlier (within one second,
//! among themselves, by digest: what they recorded cannot tell more).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::CryptHash;
use crate::error::{Error, Result};
use crate::fsx::Dir;
use crate::names::UserName;
use crate::state_dir::{private_file_meta, write_new, StateDir};

/// How many times staging takes the next sequence number before giving up
/// (only another process staging at the same moment takes one first).
const SEQUENCE_ATTEMPTS: usize = 100;

/// The sequence number of a sequenced name (`n` and 20 digits).
fn sequence_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('n')?.get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    id: String,
    user: String,
    hash: String,
    /// Seconds since the epoch.
    staged_at: u64,
    /// The kernel's boot id when the command arrived. Absent only in
    /// entries written before it was recorded.
    #[serde(default)]
    boot_id: Option<String>,
    /// `must_change`: lastchg 0 when applied. Absent in older entries.
    #[serde(default)]
    must_change: bool,
}

/// One staged password change.
#[derive(Debug)]
pub struct Staged {
    /// The file it is stored in (to remove once applied).
    pub file: String,
    pub id: String,
    pub user: UserName,
    pub hash: CryptHash,
    /// Seconds since the epoch, by the wall clock when it was staged.
    pub staged_at: u64,
    /// The boot it was staged in (`None`: an entry from before boot ids
    /// were recorded).
    pub boot_id: Option<String>,
    /// The password must be changed at the first login after it is applied.
    pub must_change: bool,
}

impl Staged {
    /// May this entry be applied now? Only in a boot other than the one it
    /// was staged in. An entry without a boot id counts as staged in this
    /// boot unless the wall clock puts it before this boot's start.
    pub fn is_due(&self, current_boot: &str, boot_started_secs: u64) -> bool {
        match &self.boot_id {
            Some(b) => b != current_boot,
            None => self.staged_at < boot_started_secs,
        }
    }
}

pub struct Staging {
    dir: Dir,
}

impl Staging {
    pub fn open(state: &StateDir) -> Result<Staging> {
        Ok(Staging {
            dir: state.staged()?,
        })
    }

    /// Store the hash for `user`, after every entry staged before it
    /// (module docs: a later command for the same user is applied last).
    pub fn stage(
        &self,
        id: &str,
        user: &UserName,
        hash: &CryptHash,
        now_secs: u64,
        boot_id: &str,
        must_change: bool,
    ) -> Result<()> {
        let rec = Record {
            id: id.to_owned(),
            user: user.as_str().to_owned(),
            hash: hash.as_str().to_owned(),
            staged_at: now_secs,
            boot_id: Some(boot_id.to_owned()),
            must_change,
        };
        let digest = crate::hex::encode(&Sha256::digest(id.as_bytes())[..8]);
        let data = zeroize::Zeroizing::new(serde_json::to_vec(&rec).expect("a record serializes"));
        for _ in 0..SEQUENCE_ATTEMPTS {
            let next = self
                .dir
                .list()?
                .iter()
                .filter_map(|n| sequence_of(n))
                .max()
                .map_or(1, |s| s + 1);
            let name = format!("n{next:020}-{digest}.json");
            if write_new(&self.dir, &name, &data, &private_file_meta())? {
                return Ok(());
            }
        }
        Err(Error::Internal(format!(
            "staging in {}: another process took the next sequence number {SEQUENCE_ATTEMPTS} times",
            self.dir.path().display()
        )))
    }

    /// Every staged change, in arrival order (module docs). A file that does not parse is
    /// returned as an error with its name, so it is reported and removed
    /// rather than retried at every boot.
    pub fn list(&self) -> Result<Vec<std::result::Result<Staged, (String, Error)>>> {
        let mut out = Vec::new();
        for name in self.dir.list()? {
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let Some(data) = self.dir.read(&name)? else {
                continue;
            };
            let bytes = zeroize::Zeroizing::new(data.bytes);
            let parsed = serde_json::from_slice::<Record>(&bytes)
                .map_err(|e| Error::invalid(format!("staged file {name}: {e}")))
                .and_then(|r| {
                    Ok(Staged {
                        file: name.clone(),
                        user: UserName::parse(&r.user)?,
                        hash: CryptHash::parse(&r.hash).map_err(|_| {
                            Error::invalid(format!("staged file {name}: not a crypt hash"))
                        })?,
                        id: r.id,
                        staged_at: r.staged_at,
                        boot_id: r.boot_id,
                        must_change: r.must_change,
                    })
                });
            out.push(parsed.map_err(|e| (name, e)));
        }
        Ok(out)
    }

    pub fn remove(&self, file: &str) -> Result<()> {
        self.dir.remove_file(file)?;
        self.dir.sync()
    }

    pub fn dir(&self) -> &Dir {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(boot_id: Option<&str>, staged_at: u64) -> Staged {
        Staged {
            file: "f".into(),
            id: "c-1".into(),
            user: UserName::parse("alice").unwrap(),
            hash: CryptHash::parse("$6$saltsaltsaltsalt$O2HS/QLzw2LXNAuEEjzBCvpTtT4/qqIzkH/QWm9fEK8jpOPPP.cUucXonsJZdFdRiwQcmf6l9V6QcO14VJNDj1").unwrap(),
            staged_at,
            boot_id: boot_id.map(str::to_owned),
            must_change: false,
        }
    }

    #[test]
    fn an_entry_is_due_only_in_another_boot() {
        assert!(!entry(Some("b1"), 100).is_due("b1", 50));
        assert!(entry(Some("b1"), 100).is_due("b2", 500));
        // Another boot id decides, whatever the wall clock says.
        assert!(entry(Some("b1"), 900).is_due("b2", 500));
        // Without a boot id, only an entry older than this boot's start.
        assert!(entry(None, 100).is_due("b1", 500));
        assert!(!entry(None, 600).is_due("b1", 500));
    }

    const HASH: &str = "$6$saltsaltsaltsalt$O2HS/QLzw2LXNAuEEjzBCvpTtT4/qqIzkH/QWm9fEK8jpOPPP.cUucXonsJZdFdRiwQcmf6l9V6QcO14VJNDj1";

    fn staging() -> (tempfile::TempDir, Staging) {
        let t = tempfile::tempdir().unwrap();
        let s = Staging::open(&StateDir::open(t.path()).unwrap()).unwrap();
        (t, s)
    }

    fn stage_at(s: &Staging, id: &str, now_secs: u64) {
        let alice = UserName::parse("alice").unwrap();
        let hash = CryptHash::parse(HASH).unwrap();
        s.stage(id, &alice, &hash, now_secs, "b1", false).unwrap();
    }

    fn listed_ids(s: &Staging) -> Vec<String> {
        s.list()
            .unwrap()
            .into_iter()
            .map(|e| e.unwrap().id)
            .collect()
    }

    #[test]
    fn staged_entries_list_in_arrival_order_within_a_second() {
        let (_t, s) = staging();
        let ids: Vec<String> = (0..10).map(|i| format!("c-{i}")).collect();
        for id in &ids {
            stage_at(&s, id, 1_700_000_000);
        }
        assert_eq!(listed_ids(&s), ids);
    }

    #[test]
    fn a_clock_stepped_back_does_not_reorder_staged_entries() {
        let (_t, s) = staging();
        stage_at(&s, "c-first", 1_700_000_000);
        stage_at(&s, "c-second", 1_600_000_000);
        assert_eq!(listed_ids(&s), ["c-first", "c-second"]);
    }

    #[test]
    fn entries_named_by_the_previous_version_are_read_and_listed_first() {
        let (_t, s) = staging();
        stage_at(&s, "c-new", 1_700_000_000);
        // What the previous version wrote: `<seconds:020>-<digest>.json`.
        let old = format!(
            r#"{{"id":"c-old","user":"alice","hash":"{HASH}","staged_at":1700000000,"boot_id":"b0"}}"#
        );
        s.dir
            .write_atomic(
                "00000000001700000000-ffffffffffffffff.json",
                old.as_bytes(),
                &private_file_meta(),
            )
            .unwrap();
        assert_eq!(listed_ids(&s), ["c-old", "c-new"]);
        // Removing the old entry once applied works by the name it has.
        let first = s.list().unwrap().remove(0).unwrap();
        s.remove(&first.file).unwrap();
        assert_eq!(listed_ids(&s), ["c-new"]);
    }

    #[test]
    fn sequence_numbers_are_read_only_from_sequenced_names() {
        assert_eq!(
            sequence_of("n00000000000000000042-0123456789abcdef.json"),
            Some(42)
        );
        assert_eq!(
            sequence_of("00000000001700000000-0123456789abcdef.json"),
            None
        );
        assert_eq!(sequence_of("n+0000000000000000042-x.json"), None);
        assert_eq!(sequence_of("n42.json"), None);
    }
}
