//! Home directories: created from the skeleton like `useradd -m`, removed
//! like `userdel -r` — always through directory descriptors, so a symlink
//! planted by the (untrusted) user is unlinked, never followed.

use std::path::{Component, Path};

use nix::sys::stat::SFlag;

use crate::error::{Error, IoContext, Result};
use crate::fsx::{Dir, Meta};

fn kind(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits())
}

/// Split an absolute home path into its parent and last component.
fn split_home(home: &Path) -> Result<(&Path, &str)> {
    let bad = || Error::unsafe_path(home, "home must be an absolute path below /");
    if !home.is_absolute() || home.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad());
    }
    let name = home.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    Ok((home.parent().ok_or_else(bad)?, name))
}

/// Create `home` (mode `mode`, owned by uid:gid) and copy `skel` into it.
/// Missing parents are created 0755 root:root. Returns `false`, and copies
/// nothing, when the home already exists (useradd does the same).
pub fn create(
    root: &Dir,
    home: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
    skel: Option<&Dir>,
) -> Result<bool> {
    let (parent, name) = split_home(home)?;
    let mut cur = root.open_dir(".")?;
    for comp in parent.components() {
        let Component::Normal(c) = comp else { continue };
        let c = c
            .to_str()
            .ok_or_else(|| Error::unsafe_path(home, "not UTF-8"))?;
        cur = match cur.try_open_dir(c)? {
            Some(d) => d,
            None => cur.create_dir(c, &Meta::new(0, 0, 0o755))?,
        };
    }
    if cur.stat_at(name)?.is_some() {
        return Ok(false);
    }
    let dir = cur.create_dir(name, &Meta::new(uid, gid, mode))?;
    if let Some(skel) = skel {
        if let Err(e) = copy_tree(skel, &dir, uid, gid) {
            let _ = remove_tree(&cur, name);
            return Err(e);
        }
    }
    cur.sync()?;
    Ok(true)
}

/// Whether the directory `home` has an entry `name`. When that cannot be
/// told (a symlinked or unreadable home), the answer is yes: callers use it
/// to decide what they may remove again, and must not remove what was there.
pub fn has_entry(root: &Dir, home: &Path, name: &str) -> bool {
    match root.try_open_dir(home) {
        Ok(Some(d)) => !matches!(d.stat_at(name), Ok(None)),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Remove `home/name` if it is an empty directory (what a failed key step
/// may leave in a home that existed before).
pub fn remove_empty(root: &Dir, home: &Path, name: &str) -> Result<()> {
    if let Some(d) = root.try_open_dir(home)? {
        if d.stat_at(name)?
            .is_some_and(|st| kind(st.st_mode) == SFlag::S_IFDIR)
        {
            d.remove_dir(name)?;
        }
    }
    Ok(())
}

/// Copy directories, regular files and symlinks, keeping each mode and
/// giving everything to uid:gid. Other file types are skipped.
fn copy_tree(src: &Dir, dst: &Dir, uid: u32, gid: u32) -> Result<()> {
    for name in src.list()? {
        let Some(st) = src.stat_at(&name)? else {
            continue;
        };
        let mode = st.st_mode & 0o7777;
        match kind(st.st_mode) {
            SFlag::S_IFDIR => {
                let d = dst.create_dir(&name, &Meta::new(uid, gid, mode))?;
                copy_tree(&src.open_dir(&name)?, &d, uid, gid)?;
            }
            SFlag::S_IFREG => {
                if let Some(data) = src.read(&name)? {
                    dst.write_atomic(&name, &data.bytes, &Meta::new(uid, gid, mode))?;
                }
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(src.as_fd(), name.as_str())
                    .ctx(|| format!("reading link {}", src.display(&name).display()))?;
                dst.create_symlink(Path::new(&target), &name, uid, gid)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `userdel -r`: remove `home` if it is a directory owned by `uid`.
/// Returns whether it was removed.
pub fn remove(root: &Dir, home: &Path, uid: u32) -> Result<bool> {
    let (parent, name) = split_home(home)?;
    let Some(p) = root.try_open_dir(parent)? else {
        return Ok(false);
    };
    let Some(st) = p.stat_at(name)? else {
        return Ok(false);
    };
    if kind(st.st_mode) != SFlag::S_IFDIR {
        return Err(Error::unsafe_path(home, "is not a directory; not removed"));
    }
    if st.st_uid != uid {
        tracing::warn!(home = %home.display(), "home is not owned by the user; not removed");
        return Ok(false);
    }
    remove_tree(&p, name)?;
    p.sync()?;
    Ok(true)
}

/// Remove the directory `name` in `parent` and everything in it, without
/// following symlinks and without crossing into another filesystem.
fn remove_tree(parent: &Dir, name: &str) -> Result<()> {
    let d = parent.open_dir(name)?;
    let dev = d.stat()?.st_dev;
    remove_contents(&d, dev)?;
    parent.remove_dir(name)
}

fn remove_contents(d: &Dir, dev: u64) -> Result<()> {
    for entry in d.list()? {
        let Some(st) = d.stat_at(&entry)? else {
            continue;
        };
        if kind(st.st_mode) == SFlag::S_IFDIR {
            // open_dir refuses a symlink swapped in since stat_at.
            let sub = d.open_dir(&entry)?;
            if sub.stat()?.st_dev != dev {
                return Err(Error::unsafe_path(
                    d.display(&entry),
                    "is a mount point; not removing across filesystems",
                ));
            }
            remove_contents(&sub, dev)?;
            d.remove_dir(&entry)?;
        } else {
            d.remove_file(&entry)?;
        }
    }
    Ok(())
}
