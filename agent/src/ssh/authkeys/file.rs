//! Reaching `~/.ssh/authorized_keys` as root in a home the user controls.
//!
//! The home is walked from the root with `openat(O_NOFOLLOW|O_DIRECTORY)`
//! ([`Dir::try_open_dir`]), so a symlink anywhere on the way — `~` itself
//! included — is refused, and everything after that happens on descriptors
//! the user cannot swap. `~/.ssh` and the file are refused when sshd's
//! StrictModes would refuse them or when writing would act on something other
//! than the user's own file (symlink, hard link, FIFO, device, foreign
//! owner). The only changes ever made are fchown/fchmod on the opened `.ssh`
//! descriptor, `mkdirat` of `.ssh` and [`Dir::write_atomic`] inside it.

use std::path::PathBuf;

use nix::sys::stat::SFlag;

use crate::error::{Error, Result};
use crate::fsx::{Dir, FileData, Meta};
use crate::names::UserName;
use crate::sys::System;

pub const SSH_DIR: &str = ".ssh";
pub const KEYS_FILE: &str = "authorized_keys";
/// 8 MiB: a thousand 8 KiB lines, far beyond any real authorized_keys.
pub const MAX_FILE_BYTES: usize = 8 << 20;

/// Who a home belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The user's uid, primary gid and home from passwd under the root.
pub fn owner_of(sys: &System, user: &UserName) -> Result<Owner> {
    let rec = crate::userdb::lookup(sys, user)?;
    Ok(Owner {
        uid: rec.uid,
        gid: rec.gid,
        home: rec.home,
    })
}

fn is_type(mode: u32, t: SFlag) -> bool {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) == t
}

/// Open the user's home without following symlinks. A home that is not an
/// absolute path, or is missing, is an error: sshd would not read keys there.
fn open_home(sys: &System, owner: &Owner) -> Result<Dir> {
    if !owner.home.is_absolute() {
        return Err(Error::unsafe_path(
            &owner.home,
            "home in passwd is not an absolute path",
        ));
    }
    Dir::open(&sys.root)?
        .try_open_dir(&owner.home)?
        .ok_or_else(|| Error::Io {
            context: format!("opening home directory {}", sys.path(&owner.home).display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

/// Refuse an opened `.ssh` with a foreign owner; with `fix`, put owner and
/// mode right through the descriptor.
fn check_ssh_dir(dir: &Dir, owner: &Owner, fix: bool) -> Result<()> {
    let st = dir.stat()?;
    if st.st_uid != owner.uid && st.st_uid != 0 {
        return Err(Error::unsafe_path(
            dir.path(),
            format!("is owned by uid {}, not the user or root", st.st_uid),
        ));
    }
    if fix && (st.st_uid != owner.uid || st.st_gid != owner.gid || st.st_mode & 0o7777 != 0o700) {
        dir.set_meta(owner.uid, owner.gid, 0o700)?;
    }
    Ok(())
}

/// `~/.ssh`, opened safely. With `create`, a missing one is made 0700 and
/// owned by the user; without, a missing one is `None`. Owner and mode of an
/// existing one are only corrected when `create` is set (i.e. when writing).
pub fn open_ssh_dir(sys: &System, owner: &Owner, create: bool) -> Result<Option<Dir>> {
    let home = open_home(sys, owner)?;
    match home.stat_at(SSH_DIR)? {
        None if create => {
            let dir = home.create_dir(SSH_DIR, &Meta::new(owner.uid, owner.gid, 0o700))?;
            home.sync()?;
            Ok(Some(dir))
        }
        None => Ok(None),
        Some(st) if is_type(st.st_mode, SFlag::S_IFLNK) => Err(Error::unsafe_path(
            home.display(SSH_DIR),
            "is a symbolic link",
        )),
        Some(st) if !is_type(st.st_mode, SFlag::S_IFDIR) => Err(Error::unsafe_path(
            home.display(SSH_DIR),
            "is not a directory",
        )),
        Some(_) => {
            // Opened with O_NOFOLLOW: if it was swapped for a symlink since
            // the lstat, this fails rather than following it.
            let dir = home.open_dir(SSH_DIR)?;
            check_ssh_dir(&dir, owner, create)?;
            Ok(Some(dir))
        }
    }
}

/// Read `authorized_keys` in an opened `.ssh`. Refuses symlinks, non-regular
/// files, hard links and foreign owners; absent is `None`.
pub fn read_keys_file(ssh: &Dir, owner: &Owner) -> Result<Option<FileData>> {
    // The user controls the file, its size and which inode the name holds
    // from one moment to the next: size, type, links and owner are judged
    // on the one descriptor read, and at most MAX_FILE_BYTES + 1 bytes are
    // ever read or allocated (a 64 GiB sparse file swapped in by rename
    // once made the agent abort on allocating its st_size).
    let Some(data) = ssh.read_at_most(KEYS_FILE, MAX_FILE_BYTES)? else {
        return Ok(None);
    };
    if data.over(MAX_FILE_BYTES) {
        return Err(Error::unsafe_path(
            ssh.display(KEYS_FILE),
            format!("is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let path = ssh.display(KEYS_FILE);
    if data.nlink > 1 {
        // Replacing a hard link by rename is harmless to the other name, but
        // a second name means someone linked a file here that is not the
        // user's key file (or linked this one elsewhere): refuse, as sshd
        // users would expect from a root tool.
        return Err(Error::unsafe_path(
            path,
            format!("has {} hard links", data.nlink),
        ));
    }
    if data.meta.uid != owner.uid && data.meta.uid != 0 {
        return Err(Error::unsafe_path(
            path,
            format!("is owned by uid {}, not the user or root", data.meta.uid),
        ));
    }
    Ok(Some(data))
}

/// Write `authorized_keys` atomically, 0600, owned by the user, keeping an
/// existing SELinux label.
pub fn write_keys_file(
    ssh: &Dir,
    owner: &Owner,
    bytes: &[u8],
    old: Option<&FileData>,
) -> Result<()> {
    let meta = Meta {
        selinux: old.and_then(|d| d.meta.selinux.clone()),
        ..Meta::new(owner.uid, owner.gid, 0o600)
    };
    ssh.write_atomic(KEYS_FILE, bytes, &meta)
}

/// Does an existing file need its owner or mode corrected?
pub fn meta_is_wrong(data: &FileData, owner: &Owner) -> bool {
    data.meta.uid != owner.uid || data.meta.gid != owner.gid || data.meta.mode != 0o600
}
