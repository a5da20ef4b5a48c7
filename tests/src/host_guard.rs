//! The host guard: the host's account and ssh files, byte for byte, before
//! and after every sandbox.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The host files the suite must never change: the account databases, sudo
/// policy, everything under /etc/ssh, root's keys, accessd's default state
/// directory, and the list of homes and mail spools. Contents, mode and owner of each, compared exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot(BTreeMap<PathBuf, String>);

const GUARDED_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/login.defs",
];
const GUARDED_TREES: &[&str] = &[
    "/etc/ssh",
    "/etc/sudoers.d",
    "/etc/accessd",
    "/root/.ssh",
    "/var/lib/accessd",
];
const GUARDED_LISTINGS: &[&str] = &["/home", "/var/mail"];

impl HostSnapshot {
    /// Read the guarded files of this machine now.
    pub fn take() -> HostSnapshot {
        Self::take_under(Path::new("/"))
    }

    /// Read the guarded files as seen under `root` (a sandbox's
    /// `/proc/PID/root`), to prove the snapshot notices changes.
    pub fn take_under(root: &Path) -> HostSnapshot {
        let mut map = BTreeMap::new();
        let under = |p: &str| root.join(p.trim_start_matches('/'));
        for f in GUARDED_FILES {
            record(&mut map, Path::new(f), &under(f), true);
        }
        for t in GUARDED_TREES {
            record_tree(&mut map, Path::new(t), &under(t));
        }
        for l in GUARDED_LISTINGS {
            record(&mut map, Path::new(l), &under(l), false);
            if let Ok(rd) = fs::read_dir(under(l)) {
                for e in rd.flatten() {
                    let name = Path::new(l).join(e.file_name());
                    record(&mut map, &name, &e.path(), false);
                }
            }
        }
        HostSnapshot(map)
    }

    /// Every file under `dir` (an absolute path) as seen under `root`:
    /// for "nothing in /etc changed" checks.
    pub fn tree_under(root: &Path, dir: &str) -> HostSnapshot {
        let mut map = BTreeMap::new();
        record_tree(
            &mut map,
            Path::new(dir),
            &root.join(dir.trim_start_matches('/')),
        );
        HostSnapshot(map)
    }

    /// Human-readable differences (empty when equal).
    pub fn diff(&self, later: &HostSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (path, before) in &self.0 {
            match later.0.get(path) {
                None => out.push(format!("{} disappeared", path.display())),
                Some(after) if after != before => out.push(format!("{} changed", path.display())),
                Some(_) => {}
            }
        }
        for path in later.0.keys().filter(|p| !self.0.contains_key(*p)) {
            out.push(format!("{} appeared", path.display()));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn record(map: &mut BTreeMap<PathBuf, String>, name: &Path, real: &Path, contents: bool) {
    let desc = match fs::symlink_metadata(real) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => format!("unreadable: {e}"),
        Ok(m) => {
            let mut d = format!("mode {:o} owner {}:{}", m.mode(), m.uid(), m.gid());
            if m.file_type().is_symlink() {
                let _ = write!(d, " -> {:?}", fs::read_link(real).ok());
            } else if m.is_file() && contents {
                match fs::read(real) {
                    Ok(bytes) => {
                        let _ = write!(d, " {} bytes {}", bytes.len(), fingerprint(&bytes));
                    }
                    Err(e) => {
                        let _ = write!(d, " unreadable: {e}");
                    }
                }
            }
            d
        }
    };
    map.insert(name.to_path_buf(), desc);
}

fn record_tree(map: &mut BTreeMap<PathBuf, String>, name: &Path, real: &Path) {
    record(map, name, real, true);
    let is_dir = fs::symlink_metadata(real)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if !is_dir {
        return;
    }
    let mut entries: Vec<_> = fs::read_dir(real)
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        record_tree(map, &name.join(e.file_name()), &e.path());
    }
}

/// A 128-bit FNV-1a digest: a compact stand-in for the contents, enough to
/// tell "unchanged" from "changed" (this guards against accidents, not
/// adversaries, and keeps the suite free of a hashing dependency).
fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in bytes {
        h ^= u128::from(*b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    format!("{h:032x}")
}

/// The host as it was before this test binary made its first sandbox. Every
/// sandbox compares against it when it is torn down, so the guard holds
/// whichever tests run, in whatever order or parallelism.
pub(crate) fn host_baseline() -> &'static HostSnapshot {
    static BASELINE: OnceLock<HostSnapshot> = OnceLock::new();
    BASELINE.get_or_init(HostSnapshot::take)
}

/// Panics if the host's guarded files differ from the baseline.
pub fn assert_host_untouched() {
    let diff = host_baseline().diff(&HostSnapshot::take());
    assert!(
        diff.is_empty(),
        "THE HOST WAS MODIFIED by the e2e suite: {}",
        diff.join("; ")
    );
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn fingerprint_tells_contents_apart() {
        assert_ne!(fingerprint(b"root:x:0:0"), fingerprint(b"root:x:0:1"));
        assert_eq!(fingerprint(b"same"), fingerprint(b"same"));
    }
}
