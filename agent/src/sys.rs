//! The seam between the agent and the machine: where files live (a root
//! directory, like `useradd --root`), what time it is, and how external
//! programs are run. Production uses `/`, the system clock and real processes;
//! tests pass a temporary root, a fixed clock and, where a real program cannot
//! be used, a recording runner.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time source. Passed in so that expiry, replay windows and `lastchg`
/// are testable.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

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

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that always says the same time (tests, and replaying a recorded run).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub SystemTime);

impl FixedClock {
    pub fn at_unix(secs: u64) -> Self {
        FixedClock(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
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
