//! The seam between the agent and the machine: where files live (a root
//! directory, like `useradd --root`), what time it is, and how external
//! programs are run. Production uses `/`, the system clock and real processes;
//! tests pass a temporary root, a fixed clock and, where a real program cannot
//! be used, a recording runner.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext};

/// The time source. Passed in so that expiry, replay windows and `lastchg`
/// are testable.
///
/// Besides the wall clock (which can be stepped, by NTP or by hand) it tells
/// which boot this is and how long ago the boot was by a clock that is never
/// stepped. The two together say whether time has really passed: next-boot
/// passwords wait for another boot id, and replay records are kept until
/// the command's window has passed by the step-free clock too.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

    /// The kernel's id of the current boot
    /// (`/proc/sys/kernel/random/boot_id`; a new random UUID at every boot).
    fn boot_id(&self) -> crate::error::Result<String>;

    /// Time since this boot, including suspend (`CLOCK_BOOTTIME`): never
    /// stepped, only meaningful together with [`Clock::boot_id`].
    fn since_boot(&self) -> Duration;

    /// Seconds since the epoch (negative times are clamped to 0).
    fn unix_secs(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
    }

    /// Days since 1970-01-01 UTC, as /etc/shadow's `lastchg` counts them.
    fn days_since_epoch(&self) -> u64 {
        self.unix_secs() / 86_400
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// Where the running kernel publishes its boot id. Not under `root`: an
/// image being edited has no boot of its own; the boot is the host's.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// Set by accessd.service and accessd-boot.service to `%b`, the boot id as
/// PID 1 sees it (32 hex digits); preferred over [`BOOT_ID_PATH`].
const BOOT_ID_ENV: &str = "ACCESSD_BOOT_ID";

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn boot_id(&self) -> crate::error::Result<String> {
        // The units pass systemd's own boot id (`%b`): under
        // ProtectKernelTunables=, systemd before 257 hides the per-boot
        // boot_id that a container manager (systemd-nspawn) mounts over
        // the kernel's, and the service would read the host's, the same
        // at every boot of the container: next-boot passwords never
        // applied there. Outside a container both are the same UUID.
        if let Ok(v) = std::env::var(BOOT_ID_ENV) {
            return parse_boot_id(&v).ok_or_else(|| Error::Setting {
                setting: BOOT_ID_ENV.into(),
                message: "does not hold a UUID".into(),
            });
        }
        let text =
            std::fs::read_to_string(BOOT_ID_PATH).ctx(|| format!("reading {BOOT_ID_PATH}"))?;
        parse_boot_id(&text).ok_or_else(|| Error::BadFile {
            path: BOOT_ID_PATH.into(),
            message: "does not hold a UUID".into(),
        })
    }

    fn since_boot(&self) -> Duration {
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
            Ok(ts) => Duration::new(ts.tv_sec().max(0) as u64, ts.tv_nsec().max(0) as u32),
            // Cannot fail on Linux; zero errs on the side of keeping records.
            Err(_) => Duration::ZERO,
        }
    }
}

/// A boot id as the kernel writes it: a UUID (36 characters of hex and
/// dashes) and a newline; or as systemd's `%b` writes it, 32 hex digits,
/// which is the same UUID without dashes and comes back in the kernel's
/// form (staged entries recorded either way compare equal).
pub fn parse_boot_id(text: &str) -> Option<String> {
    let id = text.trim_end_matches('\n');
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let d = id.to_ascii_lowercase();
        return Some(format!(
            "{}-{}-{}-{}-{}",
            &d[0..8],
            &d[8..12],
            &d[12..16],
            &d[16..20],
            &d[20..32]
        ));
    }
    let ok = id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    ok.then(|| id.to_ascii_lowercase())
}

/// A clock that always says the same time (tests, and replaying a recorded run):
/// one boot that never ends ([`FixedClock::BOOT_ID`]) in which no time passes.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub SystemTime);

impl FixedClock {
    pub const BOOT_ID: &'static str = "00000000-0000-4000-8000-000000000000";

    pub fn at_unix(secs: u64) -> Self {
        FixedClock(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
    fn boot_id(&self) -> crate::error::Result<String> {
        Ok(Self::BOOT_ID.to_owned())
    }
    fn since_boot(&self) -> Duration {
        Duration::ZERO
    }
}

/// A clock a test moves: the wall clock can be stepped either way (as NTP
/// or an operator does), time can pass (both clocks advance), and the
/// machine can reboot (a new boot id, time since boot back to zero).
#[derive(Debug)]
pub struct TestClock {
    state: std::sync::Mutex<TestClockState>,
}

#[derive(Debug, Clone)]
struct TestClockState {
    wall: SystemTime,
    since_boot: Duration,
    boot: u64,
}

impl TestClock {
    pub fn at(wall: SystemTime) -> Self {
        TestClock {
            state: std::sync::Mutex::new(TestClockState {
                wall,
                since_boot: Duration::from_secs(60),
                boot: 1,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut TestClockState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `d` really passes: both clocks move.
    pub fn pass(&self, d: Duration) {
        self.with(|s| {
            s.wall += d;
            s.since_boot += d;
        })
    }

    /// The wall clock is set to `wall`; no time passes.
    pub fn set_wall(&self, wall: SystemTime) {
        self.with(|s| s.wall = wall)
    }

    /// A reboot that takes `d` of wall-clock time.
    pub fn reboot(&self, d: Duration) {
        self.with(|s| {
            s.wall += d;
            s.since_boot = Duration::from_secs(5);
            s.boot += 1;
        })
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        self.with(|s| s.wall)
    }
    fn boot_id(&self) -> crate::error::Result<String> {
        Ok(self.with(|s| format!("00000000-0000-4000-8000-{:012x}", s.boot)))
    }
    fn since_boot(&self) -> Duration {
        self.with(|s| s.since_boot)
    }
}

/// An external program to run: never through a shell, secrets only on stdin.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Bytes written to the child's stdin (stdin is /dev/null when `None`).
    pub stdin: Option<Vec<u8>>,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// How the command reads in logs and error messages.
    pub fn display(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// Runs external programs (`sshd -t`, `systemctl`, `visudo`, `nscd`).
pub trait Runner: Send + Sync {
    fn run(&self, cmd: &Cmd) -> std::io::Result<Output>;
}

/// Runs programs for real, with a fixed PATH and locale so that their output
/// does not depend on the environment the agent was started from.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessRunner;

pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Runner for ProcessRunner {
    fn run(&self, cmd: &Cmd) -> std::io::Result<Output> {
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .env_clear()
            .env("PATH", SAFE_PATH)
            .env("LC_ALL", "C")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = c.spawn()?;
        if let Some(input) = &cmd.stdin {
            // Take stdin so that it is closed (EOF) once written.
            let mut pipe = child.stdin.take().expect("stdin was piped");
            pipe.write_all(input)?;
        }
        child.wait_with_output()
    }
}

/// How long and how much [`run_bounded`] lets a program run and print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Wall-clock time from start to exit.
    pub wall: Duration,
    /// Bytes of stdout read, in all.
    pub max_bytes: usize,
    /// Lines of stdout read.
    pub max_lines: usize,
}

impl Bounds {
    /// For reading sshd's log from `journalctl` (ssh::logins).
    pub const LOG: Bounds = Bounds {
        wall: Duration::from_secs(10),
        max_bytes: 16 << 20,
        max_lines: 200_000,
    };
}

/// Why [`run_bounded`] stopped reading before the program's output ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The line callback had what it wanted.
    Done,
    /// [`Bounds::max_bytes`] were read.
    Bytes,
    /// [`Bounds::max_lines`] were read.
    Lines,
}

/// What [`run_bounded`] saw.
#[derive(Debug)]
pub struct Ran {
    /// The exit status; `None` when the program was killed for `cut`.
    pub status: Option<std::process::ExitStatus>,
    /// Set when reading stopped before the end of the output (the program
    /// was then killed).
    pub cut: Option<Cut>,
    /// The start of stderr (at most 4 KiB).
    pub stderr: Vec<u8>,
}

/// Stderr kept for messages.
const MAX_STDERR: usize = 4 << 10;

/// Run `cmd` (environment as [`ProcessRunner`] sets it; stdin from
/// `/dev/null`) and hand each line of its stdout (without the newline) to
/// `line`, which returns false once it has what it wants. The program is
/// killed (SIGKILL to its pid) and reaped when `line` says so, when the
/// output goes over `bounds` (a [`Cut`], not an error: what was read is
/// kept), and when it runs past `bounds.wall` (an [`Error::Timeout`]).
/// Nothing is buffered beyond the current line, itself within
/// `bounds.max_bytes`.
///
/// [`Error::Timeout`]: crate::error::Error::Timeout
pub fn run_bounded(
    cmd: &Cmd,
    bounds: &Bounds,
    mut line: impl FnMut(&[u8]) -> bool,
) -> crate::error::Result<Ran> {
    use std::os::fd::AsFd;

    /// Kills and reaps the child on every way out.
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            if matches!(self.0.try_wait(), Ok(None)) {
                let _ = self.0.kill();
            }
            let _ = self.0.wait();
        }
    }

    let what = cmd.display();
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = std::time::Instant::now();
    let deadline = start + bounds.wall;
    let mut child = Guard(c.spawn().ctx(|| format!("running {what}"))?);
    let out = child.0.stdout.take().expect("stdout was piped");
    let err = child.0.stderr.take().expect("stderr was piped");
    let timeout = || {
        Error::Timeout(format!(
            "{what} ran longer than {}s and was killed",
            bounds.wall.as_secs()
        ))
    };

    let mut pending: Vec<u8> = Vec::new();
    let mut stderr = Vec::new();
    let (mut bytes, mut lines) = (0usize, 0usize);
    let mut cut = None;
    let mut open = [true, true];
    let mut chunk = vec![0u8; 64 << 10];
    'read: while open[0] || open[1] {
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err(timeout());
        }
        let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        let mut fds = [
            libc::pollfd {
                fd: if open[0] { out.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if open[1] { err.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on a local array of two pollfd structs whose
        // descriptors (or -1) stay open across the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).ctx(|| format!("reading the output of {what}"));
        }
        if fds[1].revents != 0 {
            match nix::unistd::read(err.as_fd(), &mut chunk) {
                Ok(0) => open[1] = false,
                Ok(k) => {
                    // Read on past the kept start: a program blocked on a
                    // full stderr pipe would never end its stdout.
                    let room = MAX_STDERR.saturating_sub(stderr.len());
                    stderr.extend_from_slice(&chunk[..k.min(room)]);
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => open[1] = false,
            }
        }
        if fds[0].revents != 0 {
            let k = match nix::unistd::read(out.as_fd(), &mut chunk) {
                Ok(0) => {
                    open[0] = false;
                    0
                }
                Ok(k) => k,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => 0,
                Err(e) => return Err(e).ctx(|| format!("reading the output of {what}")),
            };
            let room = bounds.max_bytes - bytes;
            let take = k.min(room);
            bytes += take;
            let mut rest = &chunk[..take];
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                pending.extend_from_slice(&rest[..nl]);
                rest = &rest[nl + 1..];
                lines += 1;
                if !line(&pending) {
                    cut = Some(Cut::Done);
                    break 'read;
                }
                pending.clear();
                if lines >= bounds.max_lines {
                    cut = Some(Cut::Lines);
                    break 'read;
                }
            }
            pending.extend_from_slice(rest);
            if take < k || bytes >= bounds.max_bytes {
                cut = Some(Cut::Bytes);
                break 'read;
            }
            if !open[0] && !pending.is_empty() {
                // A last line without a newline.
                lines += 1;
                if !line(&pending) {
                    cut = Some(Cut::Done);
                    break 'read;
                }
                pending.clear();
            }
        }
    }
    if cut.is_some() {
        return Ok(Ran {
            status: None,
            cut,
            stderr,
        });
    }
    // Output closed; the program may still run (it can close its stdout
    // and go on): the time limit holds here too.
    loop {
        match child.0.try_wait().ctx(|| format!("waiting for {what}"))? {
            Some(status) => {
                return Ok(Ran {
                    status: Some(status),
                    cut: None,
                    stderr,
                })
            }
            None if std::time::Instant::now() >= deadline => return Err(timeout()),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Is the program available? (`nscd`, `sss_cache`, `visudo` are optional.)
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    SAFE_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Everything the apply layer needs to know about the machine it changes.
#[derive(Clone)]
pub struct System {
    /// Every system path (/etc/shadow, /home/x, /etc/ssh) is resolved under
    /// this directory. `/` in production.
    pub root: PathBuf,
    /// The agent's own state (identity, replay set, managed keys, outbox).
    /// Not under `root`: when editing a mounted image offline, the state
    /// belongs to the agent doing the editing.
    pub state_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    pub runner: Arc<dyn Runner>,
}

impl System {
    pub fn new(root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        System {
            root: root.into(),
            state_dir: state_dir.into(),
            clock: Arc::new(SystemClock),
            runner: Arc::new(ProcessRunner),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_runner(mut self, runner: Arc<dyn Runner>) -> Self {
        self.runner = runner;
        self
    }

    /// True when the agent manages the running system rather than an image
    /// or a sandbox: only then are services restarted.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `abs` (an absolute system path such as `/etc/shadow`) under the root,
    /// for messages and for tools that take paths. File access goes through
    /// [`crate::fsx`], which never follows symlinks.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let rel = abs.as_ref().strip_prefix("/").unwrap_or(abs.as_ref());
        self.root.join(rel)
    }
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("root", &self.root)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_id_from_systemd_reads_as_the_kernels() {
        // %b (what the units pass) and /proc/sys/kernel/random/boot_id name
        // the same boot: a staged entry recorded under one must not look
        // like another boot's under the other (it would be applied early).
        let kernel = parse_boot_id("7317bd6b-bc7d-4375-a351-0cda40d7b6c5\n").unwrap();
        assert_eq!(
            parse_boot_id("7317BD6BBC7D4375A3510CDA40D7B6C5"),
            Some(kernel)
        );
        assert_eq!(parse_boot_id("7317bd6bbc7d4375a3510cda40d7b6c"), None);
        assert_eq!(parse_boot_id("%b"), None);
    }

    #[test]
    fn days_since_epoch_matches_shadow_lastchg() {
        // 2026-11-29T00:00:00Z is day 20786 (ground-truth.md, checked with useradd).
        assert_eq!(
            FixedClock::at_unix(20786 * 86400 + 3600).days_since_epoch(),
            20786
        );
    }

    #[test]
    fn paths_resolve_under_root() {
        let sys = System::new("/tmp/r", "/tmp/s");
        assert_eq!(sys.path("/etc/shadow"), Path::new("/tmp/r/etc/shadow"));
        assert!(!sys.is_live());
    }

    fn sh(script: &str) -> Cmd {
        Cmd::new("sh").args(["-c", script])
    }

    #[test]
    fn a_bounded_program_printing_forever_is_killed_at_the_line_limit() {
        let bounds = Bounds {
            wall: Duration::from_secs(10),
            max_bytes: 16 << 20,
            max_lines: 1000,
        };
        let started = std::time::Instant::now();
        let mut n = 0;
        let ran = run_bounded(&Cmd::new("yes"), &bounds, |l| {
            assert_eq!(l, b"y");
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(
            (ran.cut, ran.status.is_none(), n),
            (Some(Cut::Lines), true, 1000)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_bounded_program_is_killed_at_the_byte_limit_even_without_newlines() {
        let bounds = Bounds {
            wall: Duration::from_secs(10),
            max_bytes: 1 << 20,
            max_lines: 10,
        };
        let ran = run_bounded(&Cmd::new("cat").arg("/dev/zero"), &bounds, |_| true).unwrap();
        assert_eq!(ran.cut, Some(Cut::Bytes));
    }

    #[test]
    fn a_bounded_program_is_killed_at_the_time_limit() {
        let bounds = Bounds {
            wall: Duration::from_millis(500),
            ..Bounds::LOG
        };
        for script in ["sleep 30", "exec >&- 2>&-; sleep 30", "while :; do :; done"] {
            let started = std::time::Instant::now();
            let e = run_bounded(&sh(script), &bounds, |_| true).unwrap_err();
            assert!(
                matches!(e, crate::error::Error::Timeout(_)),
                "{script}: {e}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{script}: {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn a_bounded_program_stops_when_the_reader_has_enough() {
        let mut got = Vec::new();
        let ran = run_bounded(&sh("printf 'a\\nb\\nc'; exit 3"), &Bounds::LOG, |l| {
            got.push(String::from_utf8(l.to_vec()).unwrap());
            true
        })
        .unwrap();
        // A last line without a newline counts; the exit status is kept.
        assert_eq!(got, ["a", "b", "c"]);
        assert_eq!(
            (ran.cut, ran.status.and_then(|s| s.code())),
            (None, Some(3))
        );
        let mut n = 0;
        let ran = run_bounded(&Cmd::new("yes"), &Bounds::LOG, |_| {
            n += 1;
            n < 3
        })
        .unwrap();
        assert_eq!((ran.cut, n), (Some(Cut::Done), 3));
        let ran = run_bounded(&sh("echo oops >&2; exit 1"), &Bounds::LOG, |_| true).unwrap();
        assert_eq!(ran.stderr, b"oops\n");
        let e = run_bounded(&Cmd::new("/nonexistent/x"), &Bounds::LOG, |_| true).unwrap_err();
        assert!(e.to_string().starts_with("running /nonexistent/x: "), "{e}");
    }

    #[test]
    fn runner_passes_stdin_and_captures_output() {
        let out = ProcessRunner
            .run(&Cmd {
                stdin: Some(b"hello".to_vec()),
                ..Cmd::new("cat")
            })
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
    }
}
