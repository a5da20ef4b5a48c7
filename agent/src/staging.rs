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

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::CryptHash;
use crate::error::{Error, Result};
use crate::fsx::{Dir, Meta};
use crate::identity::sub_dir;
use crate::names::UserName;

pub const STAGED_DIR: &str = "staged";

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
    pub fn open(state: &Dir) -> Result<Staging> {
        Ok(Staging {
            dir: sub_dir(state, STAGED_DIR)?,
        })
    }

    /// Store the hash for `user`. Files sort by staging time, so a later
    /// command for the same user is applied last and wins.
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
        let name = format!("{now_secs:020}-{digest}.json");
        let data = zeroize::Zeroizing::new(serde_json::to_vec(&rec).expect("a record serializes"));
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        self.dir
            .write_atomic(&name, &data, &Meta::new(euid, egid, 0o600))
    }

    /// Every staged change, oldest first. A file that does not parse is
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
}
