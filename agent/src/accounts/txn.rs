//! Several files changed as one: all replaced, or — on any failure — the
//! ones already replaced are put back. Each replacement goes through
//! [`Dir::write_atomic`]; the previous version of an account database is
//! kept as `FILE-`, as shadow-utils keeps it.

use crate::error::Result;
use crate::fsx::{Dir, FileData, Meta};

struct Change<'a> {
    dir: &'a Dir,
    name: String,
    old: Option<FileData>,
    /// `None`: remove the file.
    new: Option<Vec<u8>>,
    meta: Meta,
    backup: bool,
}

#[derive(Default)]
pub struct Txn<'a> {
    changes: Vec<Change<'a>>,
}

impl<'a> Txn<'a> {
    pub fn new() -> Self {
        Txn {
            changes: Vec::new(),
        }
    }

    /// Replace the existing `old` file `name` with `new`, keeping its owner,
    /// mode and label, and its previous content as `name-`. A no-op when
    /// the content is unchanged.
    pub fn replace(&mut self, dir: &'a Dir, name: &str, old: FileData, new: Vec<u8>) {
        if old.bytes == new {
            return;
        }
        self.changes.push(Change {
            dir,
            name: name.to_owned(),
            meta: old.meta.clone(),
            old: Some(old),
            new: Some(new),
            backup: true,
        });
    }

    /// Create (or replace, keeping no backup) `name` with `meta`. For files
    /// where a `name-` would itself be read, such as sudoers drop-ins.
    pub fn put(
        &mut self,
        dir: &'a Dir,
        name: &str,
        old: Option<FileData>,
        new: Vec<u8>,
        meta: Meta,
    ) {
        self.changes.push(Change {
            dir,
            name: name.to_owned(),
            old,
            new: Some(new),
            meta,
            backup: false,
        });
    }

    /// Remove `name` (restored from `old` on rollback).
    pub fn remove(&mut self, dir: &'a Dir, name: &str, old: FileData) {
        self.changes.push(Change {
            dir,
            name: name.to_owned(),
            meta: old.meta.clone(),
            old: Some(old),
            new: None,
            backup: false,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Apply every change in order. On failure, undo the applied ones in
    /// reverse order and return the first error.
    pub fn commit(self) -> Result<()> {
        self.commit_then(|| Ok(()))
    }

    /// [`Txn::commit`], then run `then` with the changes in place; if it
    /// fails, every change is undone — each file gets its old bytes back,
    /// and so does its `FILE-` backup — and its error is returned. For a
    /// step that must succeed with the files (the keys of a new user).
    pub fn commit_then<T>(self, then: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut backups = Vec::with_capacity(self.changes.len());
        for (i, c) in self.changes.iter().enumerate() {
            // What `FILE-` held, so that an undo restores it too; `None`
            // when it could not be read (then it is left as it is).
            backups.push(if c.backup {
                c.dir.read(&format!("{}-", c.name)).ok()
            } else {
                None
            });
            if let Err(e) = apply(c) {
                // `c` itself may have failed after its rename; put it back too.
                self.undo(&backups, i + 1);
                return Err(e);
            }
        }
        then().inspect_err(|_| self.undo(&backups, self.changes.len()))
    }

    /// Undo the first `n` changes, last first.
    fn undo(&self, backups: &[Option<Option<FileData>>], n: usize) {
        for (c, backup) in self.changes[..n].iter().zip(backups).rev() {
            if let Err(undo) = restore(c, backup.as_ref()) {
                tracing::error!(
                    file = %c.dir.display(&c.name).display(),
                    error = %undo,
                    "could not restore a file after a failed change"
                );
            }
        }
    }
}

fn apply(c: &Change<'_>) -> Result<()> {
    if c.backup {
        c.dir.backup(&c.name, &format!("{}-", c.name))?;
    }
    match &c.new {
        Some(bytes) => c.dir.write_atomic(&c.name, bytes, &c.meta),
        None => {
            c.dir.remove_file(&c.name)?;
            c.dir.sync()
        }
    }
}

fn restore(c: &Change<'_>, backup: Option<&Option<FileData>>) -> Result<()> {
    match &c.old {
        Some(old) => c.dir.write_atomic(&c.name, &old.bytes, &old.meta)?,
        None => {
            c.dir.remove_file(&c.name)?;
            c.dir.sync()?;
        }
    }
    let name = format!("{}-", c.name);
    match backup {
        Some(Some(old)) => c.dir.write_atomic(&name, &old.bytes, &old.meta),
        Some(None) => {
            c.dir.remove_file(&name)?;
            c.dir.sync()
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_failure_restores_the_files_already_replaced() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a"), b"old a\n").unwrap();
        fs::write(t.path().join("c"), b"old c\n").unwrap();
        // "b" is a directory: replacing it fails after "a" was replaced.
        fs::create_dir(t.path().join("b")).unwrap();
        let d = Dir::open(t.path()).unwrap();
        let a = d.read("a").unwrap().unwrap();
        let fake_b = d.read("c").unwrap().unwrap();
        let mut txn = Txn::new();
        txn.replace(&d, "a", a, b"new a\n".to_vec());
        txn.replace(&d, "b", fake_b, b"new b\n".to_vec());
        assert!(txn.commit().is_err());
        assert_eq!(fs::read(t.path().join("a")).unwrap(), b"old a\n");
        assert!(t.path().join("b").is_dir());
        assert!(!t.path().join("a-").exists(), "a backup left by the undo");
    }

    #[test]
    fn a_failed_step_after_the_commit_restores_files_and_backups() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("passwd"), b"v2\n").unwrap();
        fs::write(t.path().join("passwd-"), b"v1\n").unwrap();
        fs::write(t.path().join("group"), b"g1\n").unwrap();
        let d = Dir::open(t.path()).unwrap();
        let mut txn = Txn::new();
        txn.replace(
            &d,
            "passwd",
            d.read("passwd").unwrap().unwrap(),
            b"v3\n".to_vec(),
        );
        txn.replace(
            &d,
            "group",
            d.read("group").unwrap().unwrap(),
            b"g2\n".to_vec(),
        );
        txn.put(
            &d,
            "dropin",
            None,
            b"new\n".to_vec(),
            Meta::new(0, 0, 0o440),
        );
        let e = txn
            .commit_then(|| -> Result<()> {
                assert_eq!(fs::read(t.path().join("passwd")).unwrap(), b"v3\n");
                Err(crate::error::Error::invalid("the keys step failed"))
            })
            .unwrap_err();
        assert!(e.to_string().contains("keys step"));
        assert_eq!(fs::read(t.path().join("passwd")).unwrap(), b"v2\n");
        assert_eq!(fs::read(t.path().join("passwd-")).unwrap(), b"v1\n");
        assert_eq!(fs::read(t.path().join("group")).unwrap(), b"g1\n");
        assert!(!t.path().join("group-").exists());
        assert!(!t.path().join("dropin").exists());
    }

    #[test]
    fn the_previous_version_is_kept_as_file_dash() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("shadow"), b"one\n").unwrap();
        let d = Dir::open(t.path()).unwrap();
        let old = d.read("shadow").unwrap().unwrap();
        let mut txn = Txn::new();
        txn.replace(&d, "shadow", old, b"two\n".to_vec());
        txn.commit().unwrap();
        assert_eq!(fs::read(t.path().join("shadow")).unwrap(), b"two\n");
        assert_eq!(fs::read(t.path().join("shadow-")).unwrap(), b"one\n");
        let mut names = d.list().unwrap();
        names.sort();
        assert_eq!(names, vec!["shadow".to_string(), "shadow-".to_string()]);
    }
}
