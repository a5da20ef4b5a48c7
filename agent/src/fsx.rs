//! Files under the root, touched only through opened directory descriptors.
//!
//! Two rules make this module safe to use as root on a machine full of
//! untrusted users:
//!
//! 1. Paths are walked one component at a time with
//!    `openat(O_NOFOLLOW | O_DIRECTORY)`, so a symlink anywhere below the root
//!    is refused (`unsafe_path`) instead of followed, and every later
//!    operation is relative to a descriptor that cannot be swapped under us.
//! 2. There is exactly one way to replace a file: [`Dir::write_atomic`] —
//!    a temp file in the same directory, owner, mode and SELinux label set on
//!    the descriptor, write, fsync, rename, fsync the directory. Nothing is
//!    ever truncated in place.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fsync, unlinkat, Gid, Uid, UnlinkatFlags};

use zeroize::Zeroizing;

use crate::error::{Error, IoContext, Result};

const SELINUX_XATTR: &CStr = c"security.selinux";

/// Owner, mode and security label of a file, as they must be kept when it is
/// replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only (07777).
    pub mode: u32,
    /// The `security.selinux` xattr, when the file had one.
    pub selinux: Option<Vec<u8>>,
}

impl Meta {
    pub fn new(uid: u32, gid: u32, mode: u32) -> Self {
        Meta {
            uid,
            gid,
            mode,
            selinux: None,
        }
    }

    fn of_fd(fd: BorrowedFd<'_>, st: &FileStat) -> Self {
        Meta {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            selinux: get_xattr(fd, SELINUX_XATTR),
        }
    }
}

/// A regular file read through [`Dir::read`] or [`Dir::read_at_most`].
#[derive(Debug, Clone)]
pub struct FileData {
    pub bytes: Vec<u8>,
    pub meta: Meta,
    pub nlink: u64,
    /// `st_size` of the opened descriptor when it was read.
    pub size: u64,
}

impl FileData {
    // nlink_t is u64 here, u32 on other targets.
    #[allow(clippy::unnecessary_cast)]
    fn of(bytes: Vec<u8>, meta: Meta, st: &FileStat) -> Self {
        FileData {
            bytes,
            meta,
            nlink: st.st_nlink as u64,
            size: st.st_size.max(0) as u64,
        }
    }

    /// Was the file larger than `limit` (then `bytes` is not all of it)?
    pub fn over(&self, limit: usize) -> bool {
        self.size > limit as u64 || self.bytes.len() > limit
    }
}

/// What [`Dir::read`] reads at most: far above any passwd, shadow,
/// sshd_config or state file a real machine has (100,000 users make a
/// passwd of ~6 MiB), and a bound on what a wrong or hostile file can cost.
pub const DEFAULT_READ_LIMIT: usize = 64 << 20;

/// An opened directory. `path` is for messages only; every operation uses `fd`.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Its file system (`st_dev`): what is on the same one is as trusted
    /// as this directory; see [`check_fs`].
    dev: u64,
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// One plain name: no `/`, not `.` or `..`, not empty, no NUL.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::unsafe_path(name, "not a plain file name"));
    }
    Ok(())
}

impl Dir {
    /// Open a trusted directory by path (the configured root or state dir).
    /// Symlinks in this path are the operator's choice and are followed.
    pub fn open(path: impl AsRef<Path>) -> Result<Dir> {
        let path = path.as_ref();
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("opening directory {}", path.display()))?;
        let dev = fstat(fd.as_fd())
            .ctx(|| format!("stat {}", path.display()))?
            .st_dev;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
            dev,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory, for messages.
    pub fn display(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Another handle on the same directory (a duplicated descriptor).
    pub fn try_clone(&self) -> Result<Dir> {
        Ok(Dir {
            fd: self
                .fd
                .try_clone()
                .ctx(|| format!("duplicating descriptor of {}", self.path.display()))?,
            path: self.path.clone(),
            dev: self.dev,
        })
    }

    pub fn stat(&self) -> Result<FileStat> {
        fstat(self.fd.as_fd()).ctx(|| format!("stat {}", self.path.display()))
    }

    /// Walk `rel` (absolute paths are taken as relative to this directory)
    /// one component at a time without following symlinks.
    /// A symlink or non-directory on the way is `unsafe_path`; a missing
    /// component is `Ok(None)`.
    pub fn try_open_dir(&self, rel: impl AsRef<Path>) -> Result<Option<Dir>> {
        let rel = rel.as_ref();
        let mut cur = self.try_clone()?;
        for comp in rel.components() {
            let name = match comp {
                Component::RootDir | Component::CurDir => continue,
                Component::Normal(n) => n,
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(Error::unsafe_path(
                        self.path.join(rel),
                        "path contains '..'",
                    ))
                }
            };
            let next_path = cur.path.join(name);
            // O_PATH first: nothing reaches the file system behind the
            // name (no open, no getattr) until check_fs has judged it.
            let pfd = match openat(
                cur.fd.as_fd(),
                name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP) => {
                    return Err(Error::unsafe_path(next_path, "is a symbolic link"))
                }
                Err(Errno::ENOTDIR) => {
                    let link = statx_nosync(cur.fd.as_fd(), name.as_bytes())
                        .is_ok_and(|(mode, _)| mode & libc::S_IFMT == libc::S_IFLNK);
                    let why = if link {
                        "is a symbolic link"
                    } else {
                        "is not a directory"
                    };
                    return Err(Error::unsafe_path(next_path, why));
                }
                Err(e) => {
                    return Err(e).ctx(|| format!("opening directory {}", next_path.display()))
                }
            };
            let dev = check_fs(cur.dev, pfd.as_fd(), &next_path)?;
            let fd = openat(pfd.as_fd(), ".", dir_flags(), Mode::empty())
                .ctx(|| format!("opening directory {}", next_path.display()))?;
            cur = Dir {
                fd,
                path: next_path,
                dev,
            };
        }
        Ok(Some(cur))
    }

    /// Like [`Dir::try_open_dir`], but a missing directory is an error.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> Result<Dir> {
        let rel = rel.as_ref();
        self.try_open_dir(rel)?.ok_or_else(|| Error::Io {
            context: format!("opening directory {}", self.path.join(rel).display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }

    /// Create the directory `name` here with `mode` (not affected by umask:
    /// it is set with fchmod on the new descriptor), then open it.
    /// Fails with `AlreadyExists` if something is there.
    pub fn create_dir(&self, name: &str, meta: &Meta) -> Result<Dir> {
        check_name(name)?;
        let path = self.display(name);
        mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o700))
            .ctx(|| format!("creating directory {}", path.display()))?;
        let dir = self.open_dir(name)?;
        fchown(
            dir.fd.as_fd(),
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .ctx(|| format!("chown {}", path.display()))?;
        fchmod(dir.fd.as_fd(), Mode::from_bits_truncate(meta.mode))
            .ctx(|| format!("chmod {}", path.display()))?;
        Ok(dir)
    }

    /// Set owner and mode of this directory, through its descriptor.
    pub fn set_meta(&self, uid: u32, gid: u32, mode: u32) -> Result<()> {
        fchown(
            self.fd.as_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .ctx(|| format!("chown {}", self.path.display()))?;
        fchmod(self.fd.as_fd(), Mode::from_bits_truncate(mode))
            .ctx(|| format!("chmod {}", self.path.display()))
    }

    /// lstat of `name` (a symlink is reported as a symlink). `None` if absent.
    /// Taken with `AT_STATX_DONT_SYNC`: a FUSE or network mount at `name`
    /// answers from the kernel's cache instead of being asked (and hanging).
    pub fn stat_at(&self, name: &str) -> Result<Option<FileStat>> {
        check_name(name)?;
        let cname = CString::new(name).map_err(|_| Error::unsafe_path(name, "contains NUL"))?;
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, C string and output buffer.
        let rc = unsafe {
            sys_statx(
                self.fd.as_raw_fd(),
                cname.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC,
                libc::STATX_BASIC_STATS,
                &mut stx,
            )
        };
        if rc != 0 {
            let e = Errno::last();
            if e == Errno::ENOENT {
                return Ok(None);
            }
            return Err(e).ctx(|| format!("stat {}", self.display(name).display()));
        }
        Ok(Some(filestat_of(&stx)))
    }

    /// Read the regular file `name`. A symlink, FIFO, device or directory is
    /// `unsafe_path` (and a FIFO is never blocked on). `None` if absent. A
    /// file over [`DEFAULT_READ_LIMIT`] is an `io_error` (see
    /// [`Dir::read_at_most`] for files with their own limit).
    pub fn read(&self, name: &str) -> Result<Option<FileData>> {
        let Some(data) = self.read_at_most(name, DEFAULT_READ_LIMIT)? else {
            return Ok(None);
        };
        if data.over(DEFAULT_READ_LIMIT) {
            return Err(Error::BadFile {
                path: self.display(name),
                message: format!("larger than {DEFAULT_READ_LIMIT} bytes; not read"),
            });
        }
        Ok(Some(data))
    }

    /// Read at most `limit + 1` bytes of the regular file `name`, through one
    /// descriptor: type, owner, links and size come from `fstat` of that
    /// descriptor, never from a name someone can swap, and no buffer is ever
    /// sized from what the file claims. [`FileData::over`] says whether the
    /// file holds more than `limit` bytes (by its size or by what was read,
    /// for a file growing meanwhile); then `bytes` are only its start.
    pub fn read_at_most(&self, name: &str, limit: usize) -> Result<Option<FileData>> {
        let Some((file, st, path)) = self.open_regular(name)? else {
            return Ok(None);
        };
        let meta = Meta::of_fd(file.as_fd(), &st);
        // At most limit + 1 bytes whatever the file says it holds: a
        // reader that must answer an oversized input (the inbox) still gets
        // its start, and the one byte more tells a file that grew.
        let mut bytes = Vec::new();
        file.take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .ctx(|| format!("reading {}", path.display()))?;
        Ok(Some(FileData::of(bytes, meta, &st)))
    }

    /// The last `limit` bytes (at most) of the regular file `name`, through
    /// one descriptor checked as [`Dir::read_at_most`] checks it: for logs,
    /// whose newest part is at the end. `size` is the file's size when it
    /// was opened; when it is over `limit`, `bytes` start mid-file (most
    /// likely mid-line). Bytes appended meanwhile are not read.
    pub fn read_tail(&self, name: &str, limit: usize) -> Result<Option<FileData>> {
        use std::io::{Seek, SeekFrom};
        let Some((mut file, st, path)) = self.open_regular(name)? else {
            return Ok(None);
        };
        let meta = Meta::of_fd(file.as_fd(), &st);
        let size = st.st_size.max(0) as u64;
        let start = size.saturating_sub(limit as u64);
        file.seek(SeekFrom::Start(start))
            .ctx(|| format!("seeking in {}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(size - start)
            .read_to_end(&mut bytes)
            .ctx(|| format!("reading {}", path.display()))?;
        Ok(Some(FileData::of(bytes, meta, &st)))
    }

    /// `name` opened for reading, when it is a regular file on a local
    /// file system: the file, its `fstat` and its path (for messages).
    fn open_regular(&self, name: &str) -> Result<Option<(File, FileStat, PathBuf)>> {
        check_name(name)?;
        let path = self.display(name);
        // O_PATH first, as in try_open_dir: a file that is a FUSE or NFS
        // mount of its own is refused before anything is asked of it.
        let pfd = match openat(
            self.fd.as_fd(),
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("opening {}", path.display())),
        };
        let (mode, _) = statx_nosync(pfd.as_fd(), b"")
            .map_err(Errno::from_raw)
            .ctx(|| format!("stat {}", path.display()))?;
        match mode & libc::S_IFMT {
            libc::S_IFLNK => return Err(Error::unsafe_path(path, "is a symbolic link")),
            libc::S_IFREG => {}
            _ => return Err(Error::unsafe_path(path, "is not a regular file")),
        }
        check_fs(self.dev, pfd.as_fd(), &path)?;
        // The inode just judged, opened for reading through /proc (the
        // name may hold another one by now).
        let fd = nix::fcntl::open(
            format!("/proc/self/fd/{}", pfd.as_raw_fd()).as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .ctx(|| format!("opening {}", path.display()))?;
        let st = fstat(fd.as_fd()).ctx(|| format!("stat {}", path.display()))?;
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
            return Err(Error::unsafe_path(path, "is not a regular file"));
        }
        Ok(Some((File::from(fd), st, path)))
    }

    /// Replace (or create) `name` with `data`, atomically and durably:
    /// temp file here → owner/mode/label → write → fsync → rename → fsync dir.
    /// A reader sees either the old file or the new one, never a mix, and a
    /// crash at any point leaves one of the two.
    pub fn write_atomic(&self, name: &str, data: &[u8], meta: &Meta) -> Result<()> {
        check_name(name)?;
        let path = self.display(name);
        let (tmp_name, fd) = self.create_temp(name)?;
        let result = (|| {
            let mut file = File::from(fd);
            fchown(
                file.as_fd(),
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .ctx(|| format!("chown temp file for {}", path.display()))?;
            // After chown: chown clears set-id bits.
            fchmod(file.as_fd(), Mode::from_bits_truncate(meta.mode))
                .ctx(|| format!("chmod temp file for {}", path.display()))?;
            if let Some(label) = &meta.selinux {
                set_xattr(file.as_fd(), SELINUX_XATTR, label)
                    .ctx(|| format!("copying the SELinux label to {}", path.display()))?;
            }
            file.write_all(data)
                .ctx(|| format!("writing temp file for {}", path.display()))?;
            fsync(file.as_fd()).ctx(|| format!("fsync temp file for {}", path.display()))?;
            renameat(self.fd.as_fd(), tmp_name.as_str(), self.fd.as_fd(), name)
                .ctx(|| format!("renaming temp file over {}", path.display()))
        })();
        if result.is_err() {
            let _ = unlinkat(
                self.fd.as_fd(),
                tmp_name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
            return result;
        }
        self.sync()
    }

    /// Keep the current `name` as `backup` (shadow-utils' `FILE-`) before it
    /// is replaced: the old inode itself is hard-linked under a temp name and
    /// renamed over `backup`, so the backup has the original bytes, owner,
    /// mode, label and times without a copy, and a reader of `backup` never
    /// sees a partial file. Durable once the directory is synced, which the
    /// following [`Dir::write_atomic`] does. Absent `name` is a no-op.
    pub fn backup(&self, name: &str, backup: &str) -> Result<()> {
        check_name(name)?;
        check_name(backup)?;
        let tmp = format!(".{backup}.accessd-{}", random_suffix());
        match nix::unistd::linkat(
            self.fd.as_fd(),
            name,
            self.fd.as_fd(),
            tmp.as_str(),
            nix::fcntl::AtFlags::empty(),
        ) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(e)
                    .ctx(|| format!("linking {} as a backup", self.display(name).display()))
            }
        }
        let renamed = renameat(self.fd.as_fd(), tmp.as_str(), self.fd.as_fd(), backup);
        // rename(2) does nothing, successfully, when both names are links to
        // the same inode — as when a writer was killed after its backup and
        // before its rename, leaving `backup` a link to the current file. The
        // temp name then still exists; it must not be left behind.
        match unlinkat(self.fd.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(e).ctx(|| format!("removing {}", self.display(&tmp).display()));
            }
        }
        renamed.ctx(|| format!("renaming the backup to {}", self.display(backup).display()))
    }

    /// Create the symbolic link `name` → `target` here, owned by uid:gid
    /// (the link itself; its target is never touched).
    pub fn create_symlink(&self, target: &Path, name: &str, uid: u32, gid: u32) -> Result<()> {
        check_name(name)?;
        let path = self.display(name);
        nix::unistd::symlinkat(target, self.fd.as_fd(), name)
            .ctx(|| format!("creating symlink {}", path.display()))?;
        nix::unistd::fchownat(
            self.fd.as_fd(),
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("chown symlink {}", path.display()))
    }

    /// fsync the directory itself, so that renames and unlinks in it survive
    /// a crash.
    pub fn sync(&self) -> Result<()> {
        fsync(self.fd.as_fd()).ctx(|| format!("fsync directory {}", self.path.display()))
    }

    /// Remove the file `name` (not a directory). Absent is fine.
    pub fn remove_file(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e).ctx(|| format!("removing {}", self.display(name).display())),
        }
    }

    /// Remove the empty directory `name`.
    pub fn remove_dir(&self, name: &str) -> Result<()> {
        check_name(name)?;
        unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir)
            .ctx(|| format!("removing directory {}", self.display(name).display()))
    }

    /// Names in this directory (without `.` and `..`), sorted bytewise.
    pub fn list(&self) -> Result<Vec<String>> {
        let fd = openat(self.fd.as_fd(), ".", dir_flags(), Mode::empty())
            .ctx(|| format!("opening {}", self.path.display()))?;
        let mut d =
            nix::dir::Dir::from_fd(fd).ctx(|| format!("listing {}", self.path.display()))?;
        let mut names = Vec::new();
        for entry in d.iter() {
            let entry = entry.ctx(|| format!("listing {}", self.path.display()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            // Names that are not UTF-8 are kept out: nothing we manage has one.
            if let Ok(s) = std::str::from_utf8(name) {
                names.push(s.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Create a new, empty temp file next to `name`, mode 0600, never
    /// following or reusing an existing entry.
    fn create_temp(&self, name: &str) -> Result<(String, OwnedFd)> {
        for _ in 0..16 {
            let tmp = format!(".{name}.accessd-{}", random_suffix());
            match openat(
                self.fd.as_fd(),
                tmp.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => return Ok((tmp, fd)),
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(e)
                        .ctx(|| format!("creating a temp file in {}", self.path.display()))
                }
            }
        }
        // Every name tried existed: EEXIST is what the OS said each time.
        Err(Errno::EEXIST).ctx(|| format!("creating a temp file in {}", self.path.display()))
    }
}

/// statx(2) as a raw system call. glibc's wrapper is GLIBC_2.28, above the
/// glibc 2.17 the packaged binaries are linked for (packaging/build.sh; the
/// link fails otherwise); the system call is the same.
unsafe fn sys_statx(
    dirfd: libc::c_int,
    path: *const libc::c_char,
    flags: libc::c_int,
    mask: libc::c_uint,
    buf: *mut libc::statx,
) -> libc::c_int {
    libc::syscall(
        libc::SYS_statx,
        libc::c_long::from(dirfd),
        path,
        libc::c_long::from(flags),
        libc::c_long::from(mask),
        buf,
    ) as libc::c_int
}

/// `statx(fd, path, AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC)` (`path`
/// empty: `fd` itself): mode and `st_dev`, from the kernel's cached
/// attributes, so a FUSE or NFS server is never asked.
fn statx_nosync(fd: BorrowedFd<'_>, path: &[u8]) -> std::result::Result<(u32, u64), i32> {
    let cpath = CString::new(path).map_err(|_| libc::EINVAL)?;
    let mut flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC;
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: an all-zero statx is a valid output buffer.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and output buffer.
    let rc = unsafe {
        sys_statx(
            fd.as_raw_fd(),
            cpath.as_ptr(),
            flags,
            libc::STATX_TYPE | libc::STATX_MODE,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(Errno::last_raw());
    }
    Ok((
        u32::from(stx.stx_mode),
        libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
    ))
}

fn filestat_of(stx: &libc::statx) -> FileStat {
    // SAFETY: an all-zero `stat` is a valid value; the fields set below are
    // the ones callers read.
    let mut st: FileStat = unsafe { std::mem::zeroed() };
    st.st_dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    st.st_ino = stx.stx_ino;
    st.st_mode = u32::from(stx.stx_mode);
    st.st_nlink = stx.stx_nlink as _;
    st.st_uid = stx.stx_uid;
    st.st_gid = stx.stx_gid;
    st.st_size = stx.stx_size as _;
    st.st_blocks = stx.stx_blocks as _;
    st.st_atime = stx.stx_atime.tv_sec as _;
    st.st_atime_nsec = stx.stx_atime.tv_nsec as _;
    st.st_mtime = stx.stx_mtime.tv_sec as _;
    st.st_mtime_nsec = stx.stx_mtime.tv_nsec as _;
    st.st_ctime = stx.stx_ctime.tv_sec as _;
    st.st_ctime_nsec = stx.stx_ctime.tv_nsec as _;
    st
}

/// File systems a user's home may be on: local disk (and memory) file
/// systems, where every operation completes. FUSE (a user's own server,
/// or sshfs, virtiofs...), NFS, SMB/CIFS, 9p, Ceph, AFS and the like can
/// make a call block for as long as their server likes, and the agent
/// applies commands one at a time: one such home would stop them all.
pub const LOCAL_FILE_SYSTEMS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "reiserfs", "bcachefs", "tmpfs",
    "ramfs", "overlay", "squashfs", "erofs",
];

/// The same set as `statfs` magic numbers, for a directory on another
/// `st_dev` than its parent that is not a mount point of its own (a nested
/// btrfs subvolume); such a directory cannot be a FUSE or network mount.
const LOCAL_MAGICS: &[i64] = &[
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x2FC1_2FC1, // zfs
    0xF2F5_2010, // f2fs
    0x3153_464A, // jfs
    0x5265_4973, // reiserfs
    0xCA45_1A4E, // bcachefs
    0x0102_1994, // tmpfs
    0x8584_58F6, // ramfs
    0x794C_7630, // overlay
    0x7371_7368, // squashfs
    0xE0F5_E1E2, // erofs
];

/// Judge the file system of the opened (O_PATH) `fd` at `path`, whose
/// parent is on `parent_dev`. The same device is fine (as trusted as the
/// parent, and so the configured root's own file system, whatever it is);
/// another is looked up in the kernel's mount table and must be one of
/// [`LOCAL_FILE_SYSTEMS`], else `unsafe_path`. Nothing here reaches the
/// file system's server. Returns `fd`'s device.
fn check_fs(parent_dev: u64, fd: BorrowedFd<'_>, path: &Path) -> Result<u64> {
    let (_, dev) = statx_nosync(fd, b"")
        .map_err(Errno::from_raw)
        .ctx(|| format!("stat {}", path.display()))?;
    if dev == parent_dev {
        return Ok(dev);
    }
    let fstype = match mount_fs_type(dev) {
        Some(t) => t,
        None => {
            // Not a mount point: the parent's file system (btrfs and zfs
            // give subvolumes and datasets their own st_dev).
            let st = nix::sys::statfs::fstatfs(fd).ctx(|| format!("statfs {}", path.display()))?;
            let magic = st.filesystem_type().0 as i64;
            if LOCAL_MAGICS.contains(&magic) {
                return Ok(dev);
            }
            format!("0x{magic:x}")
        }
    };
    if LOCAL_FILE_SYSTEMS.contains(&fstype.as_str()) {
        return Ok(dev);
    }
    Err(Error::unsafe_path(
        path,
        format!(
            "is on a {fstype} file system, not a local disk one \
             (FUSE and network file systems can block the agent)"
        ),
    ))
}

/// The type (`ext4`, `fuse.sshfs`, `nfs4`...) of the mount whose device is
/// `dev`, from `/proc/self/mountinfo` (kernel data; read at most 16 MiB).
fn mount_fs_type(dev: u64) -> Option<String> {
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    let mut text = String::new();
    File::open("/proc/self/mountinfo")
        .ok()?
        .take(16 << 20)
        .read_to_string(&mut text)
        .ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(' ');
        if f.nth(2)? != want {
            return None;
        }
        let mut after = l.split(" - ").nth(1)?.split(' ');
        after.next().map(str::to_owned)
    })
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).expect("the OS random number generator failed");
    crate::hex::encode(&b)
}

fn get_xattr(fd: BorrowedFd<'_>, name: &CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; fd is an open descriptor.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn set_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> std::io::Result<()> {
    // SAFETY: value is valid for value.len() bytes; fd is an open descriptor.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        // A filesystem without xattr support cannot carry a label either.
        if err.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// For messages: a path as bytes-safe text.
pub fn show(p: &Path) -> String {
    String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned()
}

/// What is read of a secret file at most: far above any signing key,
/// password or PEM private key (an RSA-8192 key is ~6.5 KiB).
pub const MAX_SECRET_BYTES: usize = 64 << 10;

/// Who besides its owner may touch a file the agent trusts
/// ([`Dir::read_private`]). Either way the owner is root or the effective
/// user, and the file is a regular file, not a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Private {
    /// A secret (a signing key, a password, a TLS private key): no
    /// permission at all for group or others (`chmod 600`), as sshd asks of
    /// private keys.
    Secret,
    /// Settings (accessd.toml): anyone may read them, only the owner may
    /// write (`chmod go-w`): whoever can change them chooses which control
    /// plane the agent obeys.
    Settings,
}

impl Dir {
    /// Read `name`, a file only its owner may change (and, for a
    /// [`Private::Secret`], read), of at most `limit` bytes. One descriptor
    /// ([`Dir::read_at_most`]): the type, owner and mode judged are those of
    /// the bytes read, and a symlink is refused, never followed. `what`
    /// names the file in errors ("mqtt password_file"); the contents never
    /// appear in one. `None` if absent.
    pub fn read_private(
        &self,
        name: &str,
        what: &str,
        rule: Private,
        limit: usize,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some(data) = self.read_at_most(name, limit)? else {
            return Ok(None);
        };
        let path = self.display(name);
        let over = data.over(limit);
        let (uid, mode) = (data.meta.uid, data.meta.mode);
        let bytes = Zeroizing::new(data.bytes);
        match rule {
            Private::Secret if mode & 0o077 != 0 => {
                return Err(Error::unsafe_path(
                    path,
                    format!(
                        "the {what} has mode {mode:04o}; it must not be readable by group or \
                         others (chmod 600; whoever could read it may have a copy)"
                    ),
                ))
            }
            Private::Settings if mode & 0o022 != 0 => {
                return Err(Error::unsafe_path(
                    &path,
                    format!(
                        "the {what} is writable by group or others (mode {mode:04o}); refusing it. \
                         Fix with: chmod go-w {}",
                        path.display()
                    ),
                ))
            }
            _ => {}
        }
        let euid = nix::unistd::geteuid().as_raw();
        if uid != 0 && uid != euid {
            return Err(Error::unsafe_path(
                path,
                format!(
                    "the {what} is owned by uid {}, neither root nor the user accessd runs as \
                     (uid {euid}); refusing it",
                    uid
                ),
            ));
        }
        if over {
            return Err(Error::Config {
                path,
                message: format!("the {what} is larger than {limit} bytes"),
            });
        }
        Ok(Some(bytes))
    }
}

/// [`Dir::read_private`] of a file named by a configured path: the
/// directories on the way are the operator's and followed as
/// [`Dir::open`] follows them; the file itself must be there.
pub fn read_private_file(
    path: &Path,
    what: &str,
    rule: Private,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::unsafe_path(path, format!("the {what} is not a UTF-8 file name")))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Dir::open(parent)?
        .read_private(name, what, rule, limit)?
        .ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            message: format!("the {what} does not exist"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    #[test]
    fn write_atomic_sets_owner_mode_and_leaves_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        d.write_atomic("f", b"one\n", &Meta::new(0, 42, 0o640))
            .unwrap();
        d.write_atomic("f", b"two\n", &Meta::new(0, 42, 0o640))
            .unwrap();
        let md = std::fs::metadata(t.path().join("f")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o640);
        assert_eq!(md.gid(), 42);
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"two\n");
        assert_eq!(d.list().unwrap(), vec!["f".to_string()]);
    }

    #[test]
    fn walking_refuses_symlinks_and_dotdot() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("home/alice")).unwrap();
        symlink("/etc", t.path().join("home/evil")).unwrap();
        let root = Dir::open(t.path()).unwrap();
        assert!(root.open_dir("/home/alice").is_ok());
        let e = root.open_dir("/home/evil").unwrap_err();
        assert_eq!(e.code(), crate::error::Code::UnsafePath);
        let e = root.open_dir("home/alice/../evil").unwrap_err();
        assert_eq!(e.code(), crate::error::Code::UnsafePath);
        assert!(root.try_open_dir("home/nobody").unwrap().is_none());
    }

    #[test]
    fn backup_over_a_link_to_the_same_file_leaves_no_temp() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        // What a writer killed between its backup and its rename leaves.
        std::fs::hard_link(t.path().join("f"), t.path().join("f-")).unwrap();
        let d = Dir::open(t.path()).unwrap();
        d.backup("f", "f-").unwrap();
        assert_eq!(d.list().unwrap(), vec!["f".to_string(), "f-".to_string()]);
    }

    #[test]
    fn read_at_most_reads_one_byte_past_the_limit_and_no_more() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), [7u8; 100]).unwrap();
        let d = Dir::open(t.path()).unwrap();
        let data = d.read_at_most("f", 10).unwrap().unwrap();
        assert_eq!(
            (data.bytes.len(), data.size, data.over(10)),
            (11, 100, true)
        );
        let data = d.read_at_most("f", 100).unwrap().unwrap();
        assert_eq!((data.bytes.len(), data.over(100)), (100, false));
    }

    #[test]
    fn read_tail_reads_the_last_bytes_and_refuses_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..100u8).collect();
        std::fs::write(t.path().join("f"), &body).unwrap();
        std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
        let d = Dir::open(t.path()).unwrap();
        let data = d.read_tail("f", 10).unwrap().unwrap();
        assert_eq!((data.bytes.as_slice(), data.size), (&body[90..], 100));
        let data = d.read_tail("f", 1000).unwrap().unwrap();
        assert_eq!(data.bytes, body);
        assert!(d.read_tail("l", 10).is_err());
        assert!(d.read_tail("absent", 10).unwrap().is_none());
    }

    #[test]
    fn the_mount_table_names_the_file_system_of_the_root() {
        let dev = std::fs::metadata("/").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.dev()
        });
        let t = mount_fs_type(dev.unwrap()).expect("/ is in /proc/self/mountinfo");
        assert!(!t.is_empty() && !t.contains(' '), "{t:?}");
        assert_eq!(mount_fs_type(u64::MAX), None);
    }

    #[test]
    fn read_refuses_symlink_and_fifo() {
        let t = tempfile::tempdir().unwrap();
        symlink("/etc/passwd", t.path().join("link")).unwrap();
        nix::unistd::mkfifo(&t.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let d = Dir::open(t.path()).unwrap();
        assert_eq!(
            d.read("link").unwrap_err().code(),
            crate::error::Code::UnsafePath
        );
        assert_eq!(
            d.read("fifo").unwrap_err().code(),
            crate::error::Code::UnsafePath
        );
        assert!(d.read("absent").unwrap().is_none());
    }

    fn secret(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn refusal(r: Result<Zeroizing<Vec<u8>>>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code(), crate::error::Code::UnsafePath, "{e}");
        let msg = e.to_string();
        assert!(!msg.contains("s3cret"), "{msg}");
        msg
    }

    #[test]
    fn a_secret_file_swapped_for_a_symlink_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = secret(t.path(), "real", 0o600);
        let p = t.path().join("pw");
        assert_eq!(
            &read_private_file(&real, "pw", Private::Secret, 100).unwrap()[..],
            b"s3cret\n"
        );
        symlink(&real, &p).unwrap();
        let msg = refusal(read_private_file(&p, "pw", Private::Secret, 100));
        assert!(msg.contains("symbolic link"), "{msg}");
    }

    #[test]
    fn a_group_or_world_readable_secret_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o620] {
            let p = secret(t.path(), &format!("pw{mode:o}"), mode);
            let msg = refusal(read_private_file(&p, "pw", Private::Secret, 100));
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
        }
    }

    #[test]
    fn settings_may_be_read_by_others_but_not_written() {
        let t = tempfile::tempdir().unwrap();
        let p = secret(t.path(), "accessd.toml", 0o644);
        assert!(read_private_file(&p, "settings", Private::Settings, 100).is_ok());
        for mode in [0o664, 0o646] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let msg = refusal(read_private_file(&p, "settings", Private::Settings, 100));
            assert!(msg.contains("writable by group or others"), "{msg}");
        }
    }

    #[test]
    fn a_secret_file_of_another_user_a_fifo_or_too_large_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        let p = secret(t.path(), "theirs", 0o600);
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
            let msg = refusal(
                d.read_private("theirs", "pw", Private::Secret, 100)
                    .map(Option::unwrap),
            );
            assert!(msg.contains("uid 65534"), "{msg}");
        }
        nix::unistd::mkfifo(&t.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        refusal(
            d.read_private("fifo", "pw", Private::Secret, 100)
                .map(Option::unwrap),
        );
        secret(t.path(), "big", 0o600);
        let e = d.read_private("big", "pw", Private::Secret, 3).unwrap_err();
        assert!(e.to_string().contains("larger than 3 bytes"), "{e}");
        assert!(d
            .read_private("absent", "pw", Private::Secret, 100)
            .unwrap()
            .is_none());
        let e =
            read_private_file(&t.path().join("absent"), "pw", Private::Secret, 100).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
