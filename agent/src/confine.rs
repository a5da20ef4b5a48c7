//! Run a program that belongs to a disk image (its own `sshd`, PROTOCOL §6)
//! so that it can neither write nor read anything of the host outside the
//! image, nor keep any privilege over it. A disk image is untrusted input:
//! a plain `chroot` as root is no boundary at all (chroot into a
//! subdirectory and climb out with `chdir("..")`, mount /proc and open
//! /proc/1/root, connect to the host's services, signal its processes).
//!
//! The program runs as pid 1 of new PID, mount, network, IPC, UTS and
//! cgroup namespaces, and as root of a user namespace that maps that root
//! to one unprivileged host id ([`CONFINED_ID`]) — no capability over
//! anything of the host. Step by step ([`plan`] lists them; the child
//! executes them with raw system calls only, because the agent is
//! multithreaded and a forked child may not allocate or take locks):
//!
//! 1. While still host root, in the child's new mount namespace (which
//!    therefore stays owned by the host's user namespace, so the confined
//!    program can never mount, unmount or remount anything in it): make
//!    every mount private; take a detached copy of the image's *top* mount
//!    only (never its submounts: an operator's bind of the host's /dev,
//!    /proc or /home under the image must not come along); make it
//!    read-only, nosuid, nodev and *idmapped* so that files owned by root in
//!    the image belong to the confined root (sshd's host-key and privsep
//!    directory checks pass) while the host sees [`CONFINED_ID`]; put a
//!    tiny read-only tmpfs on the image's /dev holding binds of the host's
//!    /dev/null, /dev/zero, /dev/random and /dev/urandom, and one on its
//!    /run holding sshd's privilege separation directory (so the image is
//!    never written); `pivot_root` into the image and detach the host's
//!    tree. No /proc is mounted.
//! 2. Enter the user namespace, drop supplementary groups and every
//!    capability (bounding, ambient, inheritable), join a new session
//!    keyring, set `no_new_privs`, resource limits and the parent-death
//!    signal, point stdin at /dev/null and stdout/stderr at pipes, mark every
//!    other descriptor close-on-exec, and exec the program with a fixed
//!    environment.
//!
//! The parent reads at most [`Limits`] bytes of output and kills the whole
//! namespace (its pid 1) when the time limit passes. Any step that fails
//! stops the child before the program runs: confinement fails closed, and
//! there is no fallback to a plain chroot.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::time::{Duration, Instant};

use libc::{c_int, c_long, c_uint, c_void};
use nix::errno::Errno;

use crate::sys::SAFE_PATH;

/// The host uid and gid the confined program's root is mapped to. An id no
/// account or service uses (above the 16-bit range, below the 2^31 ids
/// systemd calls unsafe, outside systemd-nspawn's container ranges), so no
/// host process shares it: nothing on the host is owned by it, and no host
/// process can ptrace or signal the confined one as "the same user".
pub const CONFINED_ID: u32 = 0x7ff0_0000;

/// How long and how much a confined program may run and print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time until the whole namespace is killed.
    pub timeout: Duration,
    /// Bytes read from stdout; one more and the program is killed.
    pub max_stdout: usize,
    /// Bytes read from stderr; one more and the program is killed.
    pub max_stderr: usize,
}

impl Limits {
    /// For `sshd -t` / `sshd -T` (docs/running.md, "Limits"). A real
    /// `sshd -T` prints about 5 KiB and finishes in well under a second.
    pub const SSHD: Limits = Limits {
        timeout: Duration::from_secs(30),
        max_stdout: 1 << 20,
        max_stderr: 64 << 10,
    };
}

/// Why a confined program produced no usable output.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfineError {
    /// The plan itself is unusable (a relative path, a NUL byte, root `/`).
    #[error("{0}")]
    Plan(String),
    /// Confinement could not be set up; the program was not run.
    #[error("{step}: {errno}")]
    Setup { step: &'static str, errno: Errno },
    /// Confinement was set up but the image's program could not be executed.
    #[error("executing it failed: {0}")]
    Exec(Errno),
    /// The program ran too long and was killed.
    #[error("it ran longer than {}s and was killed", .0.as_secs())]
    Timeout(Duration),
    /// The program printed too much and was killed.
    #[error("it printed more than {limit} bytes on {stream} and was killed")]
    TooMuchOutput { stream: &'static str, limit: usize },
}

impl ConfineError {
    /// True when the program never ran (setup or exec failed).
    pub fn not_run(&self) -> bool {
        matches!(
            self,
            ConfineError::Plan(_) | ConfineError::Setup { .. } | ConfineError::Exec(_)
        )
    }
}

/// A tmpfs the plan puts on a directory of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Dev,
    Run,
}

/// One step of the child's setup, in order. Strings are prepared here, in
/// the parent: the child must not allocate.
#[derive(Debug)]
enum Step {
    /// Nothing mounted from here on propagates to the host's namespace.
    PrivatePropagation,
    /// A detached, non-recursive copy of the image's mount at this path.
    CloneImage(CString),
    /// Read-only, nosuid, nodev, idmapped to the confined user namespace.
    IdmapImage,
    /// Attach it over the image's path (in the private namespace only).
    AttachImage(CString),
    /// A small tmpfs on this directory of the image, found without
    /// following symlinks. Without the directory: fail when `required`,
    /// otherwise go without.
    Tmpfs {
        slot: Slot,
        dir: CString,
        required: bool,
    },
    /// A bind of this host device node on `name` in the /dev tmpfs.
    BindDevice {
        host: CString,
        name: CString,
    },
    /// A directory owned by the confined root (mode 0755) in the /run
    /// tmpfs: sshd's privilege separation directory.
    PrivsepDir(CString),
    /// Make each tmpfs read-only.
    SealTmpfs,
    /// pivot_root into the image; the host's tree is detached.
    PivotRoot,
    /// From here on: the confined user namespace.
    EnterUserns,
    NewSessionKeyring,
    /// No supplementary groups; uid and gid 0 of the namespace.
    DropIds,
    /// Files, cores, processes, descriptors, memory; CPU seconds as given.
    ResourceLimits {
        cpu_secs: u64,
    },
    /// Bounding, ambient, inheritable, permitted and effective sets emptied.
    DropCapabilities,
    NoNewPrivs,
    DieWithParent,
    /// stdin /dev/null (the image's, i.e. the bound host node), stdout and
    /// stderr the pipes; every other descriptor close-on-exec.
    Stdio,
    Exec {
        path: CString,
        argv: Vec<CString>,
        envp: Vec<CString>,
    },
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::PrivatePropagation => "making the mount namespace private",
            Step::CloneImage(_) => "cloning the image's mount",
            Step::IdmapImage => "making the image's mount read-only and idmapped",
            Step::AttachImage(_) => "attaching the image's mount",
            Step::Tmpfs {
                slot: Slot::Dev, ..
            } => "mounting a tmpfs on the image's /dev",
            Step::Tmpfs {
                slot: Slot::Run, ..
            } => "mounting a tmpfs on the image's /run",
            Step::BindDevice { .. } => "binding a device node into /dev",
            Step::PrivsepDir(_) => "creating /run/sshd",
            Step::SealTmpfs => "making /dev and /run read-only",
            Step::PivotRoot => "pivot_root into the image",
            Step::EnterUserns => "entering the unprivileged user namespace",
            Step::NewSessionKeyring => "joining a new session keyring",
            Step::DropIds => "dropping user and group ids",
            Step::ResourceLimits { .. } => "setting resource limits",
            Step::DropCapabilities => "dropping capabilities",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::DieWithParent => "setting the parent-death signal",
            Step::Stdio => "setting up stdin, stdout and stderr",
            Step::Exec { .. } => "exec",
        }
    }
}

/// What to run and how: the steps, in order.
#[derive(Debug)]
pub struct Plan {
    steps: Vec<Step>,
    program: PathBuf,
    limits: Limits,
}

const DEVICES: [&str; 4] = ["null", "zero", "random", "urandom"];

fn cstring(what: &str, b: &[u8]) -> Result<CString, ConfineError> {
    CString::new(b).map_err(|_| ConfineError::Plan(format!("{what} contains a NUL byte")))
}

/// Plan running `program` (an absolute path inside the image) with `args`,
/// confined to the image mounted at `image` (an absolute host path, not `/`),
/// within `limits`.
pub fn plan(
    image: &Path,
    program: &Path,
    args: &[OsString],
    limits: Limits,
) -> Result<Plan, ConfineError> {
    if !image.is_absolute() || image.parent().is_none() {
        return Err(ConfineError::Plan(format!(
            "the image root {} must be an absolute path other than /",
            image.display()
        )));
    }
    if !program.is_absolute() {
        return Err(ConfineError::Plan(format!(
            "{} is not an absolute path",
            program.display()
        )));
    }
    let root = cstring("the image root", image.as_os_str().as_bytes())?;
    let path = cstring("the program path", program.as_os_str().as_bytes())?;
    let mut argv = vec![path.clone()];
    for a in args {
        argv.push(cstring("an argument", a.as_bytes())?);
    }
    let envp = vec![
        cstring("PATH", format!("PATH={SAFE_PATH}").as_bytes())?,
        cstring("LC_ALL", b"LC_ALL=C")?,
    ];
    let mut steps = vec![
        Step::PrivatePropagation,
        Step::CloneImage(root.clone()),
        Step::IdmapImage,
        Step::AttachImage(root),
        // sshd exits at once without /dev/null (sanitise_stdfd).
        Step::Tmpfs {
            slot: Slot::Dev,
            dir: c"dev".to_owned(),
            required: true,
        },
    ];
    for d in DEVICES {
        steps.push(Step::BindDevice {
            host: cstring("a device", format!("/dev/{d}").as_bytes())?,
            name: cstring("a device", d.as_bytes())?,
        });
    }
    steps.extend([
        // An image without /run keeps whatever privsep directory it has
        // (RHEL's is /usr/share/empty.sshd); sshd says if it is missing.
        Step::Tmpfs {
            slot: Slot::Run,
            dir: c"run".to_owned(),
            required: false,
        },
        Step::PrivsepDir(c"sshd".to_owned()),
        Step::SealTmpfs,
        Step::PivotRoot,
        Step::EnterUserns,
        Step::NewSessionKeyring,
        Step::DropIds,
        Step::ResourceLimits {
            // The wall-clock limit kills it first; this only bounds a
            // program that would spin faster than the parent can notice.
            cpu_secs: limits.timeout.as_secs().max(1),
        },
        Step::DropCapabilities,
        Step::NoNewPrivs,
        Step::DieWithParent,
        Step::Stdio,
        Step::Exec { path, argv, envp },
    ]);
    Ok(Plan {
        steps,
        program: program.to_path_buf(),
        limits,
    })
}

impl Plan {
    /// The steps, by name, in order (for messages and tests).
    pub fn step_names(&self) -> Vec<&'static str> {
        self.steps.iter().map(Step::name).collect()
    }

    pub fn program(&self) -> &Path {
        &self.program
    }
}

// ---- System calls the libc crate has no wrapper for (linux/mount.h). ----

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: c_uint = 0x40;
const FSOPEN_CLOEXEC: c_uint = 1;
const FSCONFIG_SET_STRING: c_uint = 1;
const FSCONFIG_CMD_CREATE: c_uint = 6;
const FSMOUNT_CLOEXEC: c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x01;
const MOUNT_ATTR_NOSUID: u64 = 0x02;
const MOUNT_ATTR_NODEV: u64 = 0x04;
const MOUNT_ATTR_NOEXEC: u64 = 0x08;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const KEYCTL_JOIN_SESSION_KEYRING: c_long = 1;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// -1 with errno set → Err(errno).
fn check(r: c_long) -> Result<c_long, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

fn open_tree(dfd: c_int, path: &CStr, flags: c_uint) -> Result<c_int, Errno> {
    // SAFETY: plain system call; `path` is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_open_tree, dfd, path.as_ptr(), flags) })
        .map(|fd| fd as c_int)
}

fn mount_setattr(fd: c_int, set: u64, userns: Option<c_int>) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: set
            | if userns.is_some() {
                MOUNT_ATTR_IDMAP
            } else {
                0
            },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u as u64),
    };
    // SAFETY: plain system call on a struct that lives for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

fn move_mount(from: c_int, to_dfd: c_int, to: &CStr, flags: c_uint) -> Result<(), Errno> {
    // SAFETY: plain system call; paths are NUL-terminated.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            c"".as_ptr(),
            to_dfd,
            to.as_ptr(),
            flags | MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// A detached tmpfs (at most 64 KiB, 16 inodes), nosuid, nodev, noexec.
fn small_tmpfs() -> Result<c_int, Errno> {
    // SAFETY: plain system calls; every string is NUL-terminated.
    unsafe {
        let fs = check(libc::syscall(
            libc::SYS_fsopen,
            c"tmpfs".as_ptr(),
            FSOPEN_CLOEXEC,
        ))? as c_int;
        let set = |k: &CStr, v: &CStr| {
            check(libc::syscall(
                libc::SYS_fsconfig,
                fs,
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            ))
        };
        let r = set(c"size", c"64k")
            .and_then(|_| set(c"nr_inodes", c"16"))
            .and_then(|_| set(c"mode", c"0755"))
            .and_then(|_| {
                check(libc::syscall(
                    libc::SYS_fsconfig,
                    fs,
                    FSCONFIG_CMD_CREATE,
                    std::ptr::null::<c_void>(),
                    std::ptr::null::<c_void>(),
                    0,
                ))
            })
            .and_then(|_| {
                check(libc::syscall(
                    libc::SYS_fsmount,
                    fs,
                    FSMOUNT_CLOEXEC,
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                ))
            });
        libc::close(fs);
        r.map(|m| m as c_int)
    }
}

/// close_range(2) as a raw system call. glibc's wrapper is GLIBC_2.34, above
/// the glibc 2.17 the packaged binaries are linked for (packaging/build.sh;
/// the link fails otherwise); the system call is the same. Async-signal-safe,
/// as the child after clone() needs.
unsafe fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    libc::syscall(
        libc::SYS_close_range,
        libc::c_long::from(first),
        libc::c_long::from(last),
        libc::c_long::from(flags),
    ) as c_int
}

fn errno_of(r: c_int) -> Result<c_int, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

// ---- The child. Runs after clone(): system calls only, no allocation. ----

/// Descriptors the child starts with (made by the parent before clone).
struct ChildFds {
    userns: c_int,
    stdout: c_int,
    stderr: c_int,
    report: c_int,
}

/// The child's working state: descriptors it opened along the way.
struct ChildState {
    image: c_int,
    root: c_int,
    dev: c_int,
    run: c_int,
}

fn report_and_exit(fd: c_int, index: usize, errno: Errno) -> ! {
    let msg: [i32; 2] = [index as i32, errno as i32];
    // SAFETY: write(2) of a local buffer, then _exit(2): async-signal-safe.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), std::mem::size_of_val(&msg));
        libc::_exit(125)
    }
}

fn child_main(plan: &Plan, fds: &ChildFds) -> isize {
    // Handlers the agent installed (tokio's) must not run in this child.
    // SAFETY: sigaction/sigprocmask with local, zeroed structures.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    let mut st = ChildState {
        image: -1,
        root: -1,
        dev: -1,
        run: -1,
    };
    for (i, step) in plan.steps.iter().enumerate() {
        if let Err(e) = run_step(step, fds, &mut st) {
            report_and_exit(fds.report, i, e);
        }
    }
    // Exec returned.
    report_and_exit(fds.report, plan.steps.len() - 1, Errno::last())
}

fn run_step(step: &Step, fds: &ChildFds, st: &mut ChildState) -> Result<(), Errno> {
    // SAFETY (for every block below): direct system calls on descriptors
    // and NUL-terminated strings this process owns; nothing allocates.
    unsafe {
        match step {
            Step::PrivatePropagation => errno_of(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))
            .map(drop),
            Step::CloneImage(root) => {
                st.image = open_tree(
                    libc::AT_FDCWD,
                    root,
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as c_uint,
                )?;
                Ok(())
            }
            Step::IdmapImage => mount_setattr(
                st.image,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                Some(fds.userns),
            ),
            Step::AttachImage(root) => {
                move_mount(st.image, libc::AT_FDCWD, root, 0)?;
                st.root = errno_of(libc::open(
                    root.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                ))?;
                Ok(())
            }
            Step::Tmpfs {
                slot,
                dir,
                required,
            } => {
                let at = libc::openat(
                    st.root,
                    dir.as_ptr(),
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if at < 0 {
                    return if *required {
                        Err(Errno::last())
                    } else {
                        Ok(())
                    };
                }
                let m = small_tmpfs();
                let r = m.and_then(|m| move_mount(m, at, c"", MOVE_MOUNT_T_EMPTY_PATH).map(|()| m));
                libc::close(at);
                let m = r?;
                match slot {
                    Slot::Dev => st.dev = m,
                    Slot::Run => st.run = m,
                }
                Ok(())
            }
            Step::BindDevice { host, name } => {
                let f = errno_of(libc::openat(
                    st.dev,
                    name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o666 as c_uint,
                ))?;
                libc::close(f);
                let src = open_tree(
                    libc::AT_FDCWD,
                    host,
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as c_uint,
                )?;
                let r = mount_setattr(src, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, None)
                    .and_then(|()| move_mount(src, st.dev, name, 0));
                libc::close(src);
                r
            }
            Step::PrivsepDir(name) => {
                if st.run < 0 {
                    return Ok(());
                }
                errno_of(libc::mkdirat(st.run, name.as_ptr(), 0o755))?;
                errno_of(libc::fchownat(
                    st.run,
                    name.as_ptr(),
                    CONFINED_ID,
                    CONFINED_ID,
                    libc::AT_SYMLINK_NOFOLLOW,
                ))
                .map(drop)
            }
            Step::SealTmpfs => {
                for fd in [st.dev, st.run] {
                    if fd >= 0 {
                        mount_setattr(fd, MOUNT_ATTR_RDONLY, None)?;
                    }
                }
                Ok(())
            }
            Step::PivotRoot => {
                errno_of(libc::fchdir(st.root))?;
                check(libc::syscall(
                    libc::SYS_pivot_root,
                    c".".as_ptr(),
                    c".".as_ptr(),
                ))?;
                errno_of(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
                errno_of(libc::chdir(c"/".as_ptr())).map(drop)
            }
            Step::EnterUserns => {
                check(libc::syscall(
                    libc::SYS_setns,
                    fds.userns,
                    libc::CLONE_NEWUSER,
                ))?;
                Ok(())
            }
            Step::NewSessionKeyring => {
                // The agent's session keyring must not be reachable; a
                // kernel without keys has none to reach.
                match check(libc::syscall(
                    libc::SYS_keyctl,
                    KEYCTL_JOIN_SESSION_KEYRING,
                    std::ptr::null::<c_void>(),
                )) {
                    Err(Errno::ENOSYS) | Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Step::DropIds => {
                // Raw system calls: glibc's wrappers would try to signal the
                // agent's other threads, which do not exist in this child.
                check(libc::syscall(
                    libc::SYS_setgroups,
                    0,
                    std::ptr::null::<libc::gid_t>(),
                ))?;
                check(libc::syscall(libc::SYS_setresgid, 0, 0, 0))?;
                check(libc::syscall(libc::SYS_setresuid, 0, 0, 0)).map(drop)
            }
            Step::ResourceLimits { cpu_secs } => {
                let lim = |r, v: u64| {
                    let l = libc::rlimit {
                        rlim_cur: v,
                        rlim_max: v,
                    };
                    errno_of(libc::setrlimit(r, &l)).map(drop)
                };
                // No files can be written anyway; no core dumps of the image.
                lim(libc::RLIMIT_FSIZE, 0)?;
                lim(libc::RLIMIT_CORE, 0)?;
                lim(libc::RLIMIT_NPROC, 8)?;
                lim(libc::RLIMIT_NOFILE, 64)?;
                lim(libc::RLIMIT_AS, 256 << 20)?;
                lim(libc::RLIMIT_MEMLOCK, 0)?;
                lim(libc::RLIMIT_MSGQUEUE, 0)?;
                lim(libc::RLIMIT_CPU, *cpu_secs)
            }
            Step::DropCapabilities => {
                let mut cap = 0;
                while libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) == 0 {
                    cap += 1;
                }
                // EINVAL: past the last capability the kernel knows.
                if Errno::last() != Errno::EINVAL || cap == 0 {
                    return Err(Errno::last());
                }
                errno_of(libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL,
                    0,
                    0,
                    0,
                ))?;
                let hdr = [LINUX_CAPABILITY_VERSION_3, 0u32];
                let data = [0u32; 6];
                check(libc::syscall(libc::SYS_capset, hdr.as_ptr(), data.as_ptr())).map(drop)
            }
            Step::NoNewPrivs => {
                errno_of(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)).map(drop)
            }
            Step::DieWithParent => {
                errno_of(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0)).map(drop)
            }
            Step::Stdio => {
                let null = errno_of(libc::open(c"/dev/null".as_ptr(), libc::O_RDWR))?;
                for (from, to) in [(null, 0), (fds.stdout, 1), (fds.stderr, 2)] {
                    if from == to {
                        errno_of(libc::fcntl(to, libc::F_SETFD, 0))?;
                    } else {
                        errno_of(libc::dup2(from, to))?;
                    }
                }
                errno_of(close_range(
                    3,
                    c_uint::MAX,
                    libc::CLOSE_RANGE_CLOEXEC as c_int,
                ))
                .map(drop)
            }
            Step::Exec { path, argv, envp } => {
                // Arrays of pointers on the stack: no allocation here.
                let mut a: [*const libc::c_char; 32] = [std::ptr::null(); 32];
                let mut e: [*const libc::c_char; 4] = [std::ptr::null(); 4];
                if argv.len() >= a.len() || envp.len() >= e.len() {
                    return Err(Errno::E2BIG);
                }
                for (slot, s) in a.iter_mut().zip(argv) {
                    *slot = s.as_ptr();
                }
                for (slot, s) in e.iter_mut().zip(envp) {
                    *slot = s.as_ptr();
                }
                libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr());
                Err(Errno::last())
            }
        }
    }
}

// ---- The parent. ----

/// A close-on-exec pipe whose ends are never 0, 1 or 2: the child puts its
/// stdio there, and an agent started with a closed stdin must not have a
/// pipe end overwritten by that.
fn pipe() -> Result<(OwnedFd, OwnedFd), ConfineError> {
    let fail = |errno| ConfineError::Setup {
        step: "creating pipes",
        errno,
    };
    let high = |fd: OwnedFd| -> Result<OwnedFd, ConfineError> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
            .map(|n| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) })
            .map_err(fail)
    };
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail)?;
    Ok((high(r)?, high(w)?))
}

/// A user namespace whose uid 0 and gid 0 are [`CONFINED_ID`] on the host,
/// held by a descriptor. It takes a process to create one: a forked helper
/// unshares, says so, and waits to be killed once its maps are written.
/// The helper closes every descriptor it inherited but its own pipe: a
/// fork copies the agent's whole table, including pipes of other confined
/// runs, whose readers would otherwise wait for this helper too.
fn confined_userns() -> Result<OwnedFd, ConfineError> {
    let fail = |step: &'static str| move |errno| ConfineError::Setup { step, errno };
    let (ready_r, ready_w) = pipe()?;
    let w = ready_w.as_raw_fd();
    // SAFETY: the child only makes system calls and exits.
    let pid =
        match unsafe { nix::unistd::fork() }.map_err(fail("forking the user namespace helper"))? {
            nix::unistd::ForkResult::Child => unsafe {
                if w > 3 {
                    close_range(3, w as c_uint - 1, 0);
                }
                close_range(w as c_uint + 1, c_uint::MAX, 0);
                let code = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                    libc::write(w, b"u".as_ptr().cast(), 1);
                    loop {
                        libc::pause();
                    }
                } else {
                    Errno::last() as c_int
                };
                libc::_exit(code)
            },
            nix::unistd::ForkResult::Parent { child } => child,
        };
    drop(ready_w);
    let mut helper = Reaper(Some(pid));
    let mut b = [0u8; 1];
    if nix::unistd::read(&ready_r, &mut b) != Ok(1) {
        // The helper exited with the errno of its unshare().
        let errno = match helper.wait() {
            Some(st) if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) != 0 => {
                Errno::from_raw(libc::WEXITSTATUS(st))
            }
            _ => Errno::EIO,
        };
        return Err(ConfineError::Setup {
            step: "creating the user namespace",
            errno,
        });
    }
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let map = format!("0 {CONFINED_ID} 1\n");
    std::fs::write(proc.join("uid_map"), &map)
        .and_then(|()| std::fs::write(proc.join("gid_map"), &map))
        .and_then(|()| std::fs::File::open(proc.join("ns/user")))
        .map(OwnedFd::from)
        .map_err(|e| ConfineError::Setup {
            step: "mapping the user namespace",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    // `helper` is killed and reaped here; the descriptor keeps the
    // namespace alive.
}

/// Kills and reaps the child however `run` returns.
struct Reaper(Option<nix::unistd::Pid>);

impl Reaper {
    fn wait(&mut self) -> Option<c_int> {
        let pid = self.0.take()?;
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a local status word.
            let r = unsafe { libc::waitpid(pid.as_raw(), &mut status, 0) };
            if r == pid.as_raw() {
                return Some(status);
            }
            if Errno::last() != Errno::EINTR {
                return None;
            }
        }
    }

    /// The status if the child has exited (then it is reaped), else `None`
    /// (also when there is no child left to wait for: `self.0` is `None`).
    fn try_wait(&mut self) -> Option<c_int> {
        let pid = self.0?;
        let mut status = 0;
        // SAFETY: waitpid on our own child with a local status word.
        let r = unsafe { libc::waitpid(pid.as_raw(), &mut status, libc::WNOHANG) };
        if r == pid.as_raw() {
            self.0 = None;
            return Some(status);
        }
        if r < 0 && Errno::last() != Errno::EINTR {
            self.0 = None;
        }
        None
    }

    fn kill(&mut self) {
        if let Some(pid) = self.0 {
            // The child is pid 1 of its namespace: SIGKILL to it ends every
            // process the program started.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            self.wait();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run the plan: stdout, stderr and exit status, or why there are none.
pub fn run(plan: &Plan) -> Result<Output, ConfineError> {
    let limits = &plan.limits;
    let userns = confined_userns()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let fds = ChildFds {
        userns: userns.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        report: rep_w.as_raw_fd(),
    };
    let mut stack = vec![0u8; 256 << 10];
    let flags = nix::sched::CloneFlags::CLONE_NEWNS
        | nix::sched::CloneFlags::CLONE_NEWPID
        | nix::sched::CloneFlags::CLONE_NEWNET
        | nix::sched::CloneFlags::CLONE_NEWIPC
        | nix::sched::CloneFlags::CLONE_NEWUTS
        | nix::sched::CloneFlags::CLONE_NEWCGROUP;
    // SAFETY: the child runs `child_main`, which only makes system calls on
    // memory prepared before the clone, then execs or exits.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| child_main(plan, &fds)),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|errno| ConfineError::Setup {
        step: "creating the namespaces",
        errno,
    })?;
    let mut child = Reaper(Some(pid));
    drop((out_w, err_w, rep_w, userns));

    let deadline = Instant::now() + limits.timeout;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut report = Vec::new();
    let mut open = [Some(out_r), Some(err_r), Some(rep_r)];
    let caps = [limits.max_stdout, limits.max_stderr, 8];
    while open.iter().any(Option::is_some) {
        let now = Instant::now();
        if now >= deadline {
            child.kill();
            return Err(ConfineError::Timeout(limits.timeout));
        }
        let wait = (deadline - now).as_millis().min(i32::MAX as u128) as i32;
        let mut pfds: Vec<libc::pollfd> = open
            .iter()
            .map(|o| libc::pollfd {
                fd: o.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll on a local array of descriptors we own.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            child.kill();
            return Err(ConfineError::Setup {
                step: "reading its output",
                errno: Errno::last(),
            });
        }
        for (i, p) in pfds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let buf = match i {
                0 => &mut out,
                1 => &mut err,
                _ => &mut report,
            };
            let mut chunk = [0u8; 16 << 10];
            let fd = open[i].as_ref().expect("polled descriptor is open");
            match nix::unistd::read(fd, &mut chunk) {
                Ok(0) => open[i] = None,
                Ok(k) => {
                    buf.extend_from_slice(&chunk[..k]);
                    if buf.len() > caps[i] {
                        child.kill();
                        if i == 2 {
                            return Err(ConfineError::Setup {
                                step: "reading the setup report",
                                errno: Errno::EIO,
                            });
                        }
                        return Err(ConfineError::TooMuchOutput {
                            stream: if i == 0 { "stdout" } else { "stderr" },
                            limit: caps[i],
                        });
                    }
                }
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                Err(_) => open[i] = None,
            }
        }
    }
    // Output closed; the process may still run (it can close its stdout
    // and wait forever): the time limit holds here too.
    let status = loop {
        match child.try_wait() {
            Some(st) => break Some(st),
            None if child.0.is_none() => break None,
            None if Instant::now() >= deadline => {
                child.kill();
                return Err(ConfineError::Timeout(limits.timeout));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    if report.len() == 8 {
        let index = i32::from_ne_bytes(report[0..4].try_into().expect("4 bytes")) as usize;
        let errno = Errno::from_raw(i32::from_ne_bytes(
            report[4..8].try_into().expect("4 bytes"),
        ));
        return Err(match plan.steps.get(index) {
            Some(Step::Exec { .. }) => ConfineError::Exec(errno),
            Some(step) => ConfineError::Setup {
                step: step.name(),
                errno,
            },
            None => ConfineError::Setup {
                step: "an unknown step",
                errno,
            },
        });
    }
    let Some(status) = status else {
        return Err(ConfineError::Setup {
            step: "waiting for it",
            errno: Errno::ECHILD,
        });
    };
    Ok(Output {
        status: ExitStatus::from_raw(status),
        stdout: out,
        stderr: err,
    })
}

/// Plan and run `program args` confined to `image`.
pub fn run_in_image(
    image: &Path,
    program: &Path,
    args: &[OsString],
    limits: Limits,
) -> Result<Output, ConfineError> {
    run(&plan(image, program, args, limits)?)
}

/// For messages: the program and its arguments.
pub fn display(program: &Path, args: &[OsString]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&OsStr::to_string_lossy(a));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Plan) -> Vec<&'static str> {
        p.step_names()
    }

    fn pos(p: &Plan, name: &str) -> usize {
        names(p).iter().position(|n| *n == name).unwrap()
    }

    #[test]
    fn the_host_root_is_never_an_image() {
        for root in ["/", "relative/dir", ""] {
            let e = plan(
                Path::new(root),
                Path::new("/usr/sbin/sshd"),
                &[],
                Limits::SSHD,
            )
            .unwrap_err();
            assert!(matches!(e, ConfineError::Plan(_)), "{root}: {e:?}");
            assert!(e.not_run());
        }
        let e = plan(
            Path::new("/mnt/img"),
            Path::new("usr/sbin/sshd"),
            &[],
            Limits::SSHD,
        )
        .unwrap_err();
        assert!(matches!(e, ConfineError::Plan(_)));
        let e = plan(
            Path::new("/mnt/img"),
            Path::new("/usr/sbin/sshd"),
            &[OsString::from("a\0b")],
            Limits::SSHD,
        )
        .unwrap_err();
        assert!(matches!(e, ConfineError::Plan(_)));
    }

    #[test]
    fn every_mount_is_made_before_the_host_is_detached_and_privilege_dropped() {
        let p = plan(
            Path::new("/mnt/img"),
            Path::new("/usr/sbin/sshd"),
            &["-t".into()],
            Limits::SSHD,
        )
        .unwrap();
        let pivot = pos(&p, "pivot_root into the image");
        let userns = pos(&p, "entering the unprivileged user namespace");
        let caps = pos(&p, "dropping capabilities");
        let exec = pos(&p, "exec");
        assert_eq!(pos(&p, "making the mount namespace private"), 0);
        for (i, s) in p.steps.iter().enumerate() {
            let mounts = matches!(
                s,
                Step::CloneImage(_)
                    | Step::IdmapImage
                    | Step::AttachImage(_)
                    | Step::Tmpfs { .. }
                    | Step::BindDevice { .. }
                    | Step::PrivsepDir(_)
                    | Step::SealTmpfs
            );
            if mounts {
                assert!(i < pivot, "{} after pivot_root", s.name());
            }
        }
        // The mount namespace stays owned by the host's user namespace:
        // the user namespace is entered only after every mount.
        assert!(pivot < userns);
        assert!(userns < pos(&p, "dropping user and group ids"));
        assert!(pos(&p, "dropping user and group ids") < caps);
        assert!(caps < pos(&p, "setting no_new_privs"));
        assert!(pos(&p, "setting up stdin, stdout and stderr") < exec);
        assert_eq!(exec, p.steps.len() - 1);
        // The image is made read-only and idmapped before it is attached.
        assert!(
            pos(&p, "making the image's mount read-only and idmapped")
                < pos(&p, "attaching the image's mount")
        );
    }

    #[test]
    fn only_device_nodes_of_the_host_are_brought_in() {
        let p = plan(
            Path::new("/mnt/img"),
            Path::new("/usr/sbin/sshd"),
            &[],
            Limits::SSHD,
        )
        .unwrap();
        let hosts: Vec<&CStr> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::BindDevice { host, .. } => Some(host.as_c_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            hosts,
            [c"/dev/null", c"/dev/zero", c"/dev/random", c"/dev/urandom"]
        );
        let Some(Step::Exec { argv, envp, .. }) = p.steps.last() else {
            panic!("last step is exec");
        };
        assert_eq!(argv[0].as_c_str(), c"/usr/sbin/sshd");
        assert_eq!(envp.len(), 2, "a fixed environment, nothing inherited");
    }
}
