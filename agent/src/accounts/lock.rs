//! The locks every writer of the account databases honours.
//!
//! 1. `/etc/.pwd.lock`: an exclusive OFD lock, polled until a deadline. glibc's
//!    `lckpwdf()` (used by shadow-utils and pam_unix) takes a classic POSIX
//!    lock on the same file, and OFD and POSIX locks conflict with each other,
//!    so this excludes them all. We never call `lckpwdf()` itself: it relies on
//!    `alarm()`, which a multithreaded process cannot use safely (ground-truth
//!    §1.1). An OFD lock also belongs to our descriptor, not to the process,
//!    so closing some other descriptor of the file cannot drop it.
//! 2. For each file changed, shadow-utils' commonio `FILE.lock`: a pid file
//!    linked to `FILE.lock`, with a dead holder's lock taken over. Tools run
//!    with `--prefix` skip step 1 and rely on this alone.
//!
//! [`Locks`] releases everything in reverse order when dropped, on every path.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};

use crate::error::{Error, IoContext, Result};
use crate::fsx::Dir;

/// glibc's `lckpwdf()` gives up after 15 s; so do we.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

const POLL: Duration = Duration::from_millis(20);

/// Held locks on /etc/.pwd.lock and on some `FILE.lock`s of one `etc` directory.
pub struct Locks<'a> {
    etc: &'a Dir,
    /// Names of the `FILE.lock`s we created, in the order taken.
    files: Vec<String>,
    /// The OFD lock lives as long as this descriptor.
    _pwd: OwnedFd,
}

impl<'a> Locks<'a> {
    /// Take /etc/.pwd.lock, then `FILE.lock` for each of `files` (in the given
    /// order, which callers keep the same as shadow-utils' own), all within
    /// `timeout`.
    pub fn acquire(etc: &'a Dir, files: &[&str], timeout: Duration) -> Result<Locks<'a>> {
        let deadline = Instant::now() + timeout;
        let pwd = lock_pwd(etc, deadline)?;
        let mut locks = Locks {
            etc,
            files: Vec::new(),
            _pwd: pwd,
        };
        for f in files {
            // On error `locks` is dropped here, which releases what was taken.
            lock_file(etc, f, deadline)?;
            locks.files.push(format!("{f}.lock"));
        }
        sweep_temps(etc, files)?;
        Ok(locks)
    }
}

impl Drop for Locks<'_> {
    fn drop(&mut self) {
        for name in self.files.iter().rev() {
            if let Err(e) = self.etc.remove_file(name) {
                // Nothing to return to; a leftover lock names our (soon dead)
                // pid, which every tool treats as stale.
                tracing::warn!(error = %e, "could not remove lock file");
            }
        }
        // `_pwd` is closed after this, releasing the OFD lock.
    }
}

fn lock_pwd(etc: &Dir, deadline: Instant) -> Result<OwnedFd> {
    let path = etc.display(".pwd.lock");
    let fd = openat(
        etc.as_fd(),
        ".pwd.lock",
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY,
        Mode::from_bits_truncate(0o600),
    )
    .ctx(|| format!("opening {}", path.display()))?;
    loop {
        let fl = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: fd is open for the duration of the call; fl is a valid flock.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if rc == 0 {
            return Ok(fd);
        }
        let err = Errno::last();
        if !matches!(err, Errno::EAGAIN | Errno::EACCES | Errno::EINTR) {
            return Err(err).ctx(|| format!("locking {}", path.display()));
        }
        if Instant::now() >= deadline {
            return Err(Error::LockTimeout(path));
        }
        sleep(POLL);
    }
}

/// Remove temp files of ours (`.FILE.accessd-*`, `.FILE-.accessd-*`) that a
/// writer killed mid-write left behind. Safe only now: every accessd writer
/// of these files holds the locks we hold, so none of them is in flight.
fn sweep_temps(etc: &Dir, files: &[&str]) -> Result<()> {
    let prefixes: Vec<String> = files
        .iter()
        .flat_map(|f| [format!(".{f}.accessd-"), format!(".{f}-.accessd-")])
        .collect();
    for name in etc.list()? {
        if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            etc.remove_file(&name)?;
        }
    }
    Ok(())
}

/// commonio's protocol: write our pid to `FILE.<pid>`, `link()` it to
/// `FILE.lock` (atomic even on NFS), check the link count, drop the pid file.
/// A `FILE.lock` naming a dead process is removed and the link retried.
fn lock_file(etc: &Dir, file: &str, deadline: Instant) -> Result<()> {
    let pid = std::process::id();
    let lock = format!("{file}.lock");
    let tmp = format!("{file}.{pid}");
    let lock_path = etc.display(&lock);
    // A pid file of ours can only be left over from a crash of an earlier
    // process with our pid; it is never a live lock.
    etc.remove_file(&tmp)?;
    let fd = openat(
        etc.as_fd(),
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .ctx(|| format!("creating {}", etc.display(&tmp).display()))?;
    let result = (|| {
        let mut f = File::from(fd);
        f.write_all(format!("{pid}\0").as_bytes())
            .and_then(|()| f.sync_data())
            .ctx(|| format!("writing {}", etc.display(&tmp).display()))?;
        loop {
            match linkat(
                etc.as_fd(),
                tmp.as_str(),
                etc.as_fd(),
                lock.as_str(),
                AtFlags::empty(),
            ) {
                Ok(()) => {
                    let st = fstatat(etc.as_fd(), tmp.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .ctx(|| format!("stat {}", etc.display(&tmp).display()))?;
                    if st.st_nlink != 2 {
                        let _ = unlinkat(etc.as_fd(), lock.as_str(), UnlinkatFlags::NoRemoveDir);
                        return Err(Error::Internal(format!(
                            "checking the link count of {}: {} links, not 2 (the file system does not keep the hard link shadow-utils' lock relies on)",
                            lock_path.display(),
                            st.st_nlink
                        )));
                    }
                    return Ok(());
                }
                Err(Errno::EEXIST) => {
                    if holder_is_dead(etc, &lock)? {
                        etc.remove_file(&lock)?;
                        continue;
                    }
                }
                Err(e) => return Err(e).ctx(|| format!("linking {}", lock_path.display())),
            }
            if Instant::now() >= deadline {
                return Err(Error::LockTimeout(lock_path.clone()));
            }
            sleep(POLL);
        }
    })();
    let _ = etc.remove_file(&tmp);
    result
}

/// Does `FILE.lock` name a process that no longer exists? An unreadable or
/// malformed lock is treated as held (commonio does the same), so we wait
/// rather than break a lock we do not understand.
fn holder_is_dead(etc: &Dir, lock: &str) -> Result<bool> {
    let Some(data) = etc.read(lock)? else {
        // Removed between link() and read(): try again at once.
        return Ok(false);
    };
    let text = String::from_utf8_lossy(&data.bytes);
    let digits = text.trim_end_matches(['\0', '\n']).trim();
    let Ok(pid) = digits.parse::<i32>() else {
        return Ok(false);
    };
    if pid <= 0 {
        return Ok(false);
    }
    if pid as u32 == std::process::id() {
        // Our own pid can only be a leftover: we never hold a FILE.lock
        // outside `Locks`, and `Locks` is exclusive through .pwd.lock.
        return Ok(true);
    }
    Ok(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(Errno::ESRCH))
}
