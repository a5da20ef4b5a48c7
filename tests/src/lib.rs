//! Harness for the end-to-end suite (scenarios in `tests/tests/*.rs`).
//!
//! Every test gets a [`Sandbox`]: a private mount namespace in which
//! throwaway directories are bind-mounted over `/etc` (a copy of the host's),
//! `/home`, `/root`, `/run`, `/var/log` and `/var/mail` (fresh and empty), a
//! real Debian `sshd` with a cloud image's layout listening on 127.0.0.1 and a
//! free port, and — once [`Sandbox::start_agent`] is called — the built
//! `accessd` daemon, configured to trust a control-plane key the test holds.
//!
//! The test process is multithreaded, so it cannot `unshare` itself. Instead
//! a holder process (`unshare -m` + a shell that waits) owns the namespace;
//! every command of a scenario runs inside it with `nsenter -t PID -m`, and
//! files are read through `/proc/PID/root`. Teardown ([`Drop`]) kills every
//! process whose mount namespace is the sandbox's, so nothing survives a
//! panicking test, and then checks that the host's account and ssh files are
//! byte for byte what they were before the first sandbox of this test binary
//! existed (see [`HostSnapshot`]).
//!
//! Commands are signed with `accessctl sign` and delivered with `accessctl
//! send`, which waits for the daemon's result and verifies its signature with
//! the agent's public key (`accessd identity`). Logins are real: `ssh -i` for
//! keys, `sshpass` for passwords, and a login counts only when the remote
//! `id -un` prints the user.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// The sshd every scenario talks to (Debian's openssh-server).
pub const SSHD: &str = "/usr/sbin/sshd";
/// Where the sandbox keeps accessd's configuration (inside the namespace).
pub const AGENT_CONFIG: &str = "/etc/accessd/accessd.toml";
/// Key id under which the sandbox's agent trusts the test's control-plane key.
pub const CONTROL_KEY_ID: &str = "e2e-console";

/// Default limit for one external command; a hung tool fails the test
/// instead of hanging the suite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Preflight: root, tools, namespaces. Fail loudly in CI, skip loudly outside.

/// The one skip rule of every suite (agent/tests/gate), shared by path so
/// that the scenarios in tests/tests skip the same way.
#[path = "../../agent/tests/gate/mod.rs"]
pub mod gate;

fn preflight() -> &'static Result<(), String> {
    static PREFLIGHT: OnceLock<Result<(), String>> = OnceLock::new();
    PREFLIGHT.get_or_init(|| {
        // /proc/self is owned by the effective uid.
        let euid = fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        if euid != 0 {
            return Err(format!(
                "the e2e suite must run as root (euid is {euid}): it mounts \
                 throwaway copies of /etc, /home, /root and /run in a private mount namespace"
            ));
        }
        let tools = [
            SSHD,
            "ssh",
            "sshpass",
            "ssh-keygen",
            "unshare",
            "nsenter",
            "mount",
            "useradd",
            "chpasswd",
            "pwck",
            "grpck",
            "su",
            "sudo",
            "visudo",
            "openssl",
            // Debian's, with python3-nacl (the independent result check).
            "/usr/bin/python3",
        ];
        let missing: Vec<&str> = tools.into_iter().filter(|t| which(t).is_none()).collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing tools: {} (run scripts/install-test-deps)",
                missing.join(", ")
            ));
        }
        let probe = Command::new("unshare")
            .args(["-m", "--propagation", "private", "--", "true"])
            .stdin(Stdio::null())
            .output();
        match probe {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "this machine cannot make a private mount namespace (`unshare -m` failed: {}); \
                 in a container, run it privileged or with CAP_SYS_ADMIN",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run unshare: {e}")),
        }
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        return Path::new(tool).is_file().then(|| PathBuf::from(tool));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A fresh sandbox, or `None` (with the reason printed) when this machine
/// cannot run the suite and we are not in CI. In CI it panics instead:
/// a suite that silently skips proves nothing.
pub fn sandbox() -> Option<Sandbox> {
    match preflight() {
        Ok(()) => Some(Sandbox::start()),
        Err(reason) => {
            // Under CI this panics; elsewhere the skip is printed uncaptured.
            gate::require(false, &format!("e2e suite cannot run: {reason}"));
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Binaries under test.

/// The built `accessd` (`ACCESSD_BIN` overrides).
pub fn accessd_bin() -> PathBuf {
    product_bin("accessd", "ACCESSD_BIN")
}

/// The built `accessctl` (`ACCESSCTL_BIN` overrides).
pub fn accessctl_bin() -> PathBuf {
    product_bin("accessctl", "ACCESSCTL_BIN")
}

/// Cargo gives integration tests only their own package's binaries, so the
/// product binaries are found next to this test executable:
/// `<target>/<profile>/deps/<test>` → `<target>/<profile>/<name>`. This
/// follows CARGO_TARGET_DIR and the profile without reading either.
fn product_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env}={} does not name a file", p.display());
        return p;
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join(name));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join(name));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => {
            assert_not_stale(p);
            p.clone()
        }
        None => panic!(
            "the {name} binary was not found (looked at {}); the e2e suite drives the built \
             binaries: run `cargo build --workspace --bins` first, or set {env}",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `cargo test -p accessd-e2e` alone does not rebuild the product, and a
/// stale binary makes every scenario lie; refuse one older than any source
/// file of the agent crate (when the sources are there to compare with).
fn assert_not_stale(bin: &Path) {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let mut stack = vec![sources];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if fs::metadata(&p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
            {
                panic!(
                    "{} is older than {}: run `cargo build --workspace --bins` first \
                     (`cargo test --workspace` does it too)",
                    bin.display(),
                    p.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Running commands with a deadline.

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Run `cmd` to completion (stdin from `input`, or /dev/null), killing it
/// after `timeout`. Panics only when the command cannot be started or hangs.
pub fn run_with(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Out {
    let shown = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot write stdin of {shown}: {e}"));
    }
    let out_reader = drain(child.stdout.take().expect("piped stdout"));
    let err_reader = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{shown} did not finish within {timeout:?}");
            }
            Err(e) => panic!("waiting for {shown}: {e}"),
        }
    };
    Out {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Run a host-side command (outside any sandbox) that must succeed.
fn host_ok(argv: &[&str]) -> String {
    let out = run_with(
        Command::new(argv[0]).args(&argv[1..]),
        None,
        COMMAND_TIMEOUT,
    );
    assert!(
        out.ok(),
        "{argv:?} failed ({}): {}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

// ---------------------------------------------------------------------------
// Host guard.

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
fn host_baseline() -> &'static HostSnapshot {
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

// ---------------------------------------------------------------------------
// The sandbox.

/// A private mount namespace with a real sshd and, optionally, accessd.
pub struct Sandbox {
    dir: tempfile::TempDir,
    holder: Child,
    pid: u32,
    mnt_ns: PathBuf,
    /// An open `/proc/PID/ns/mnt`: keeps the namespace (and so its inode
    /// number, which the kernel hands out lowest-free-first) alive until
    /// teardown has finished scanning for it, so that a namespace created by
    /// a parallel test can never be mistaken for this one.
    ns_pin: Option<fs::File>,
    /// The port the sandbox's sshd listens on (127.0.0.1 only).
    pub port: u16,
    agent: Option<Agent>,
    seq: AtomicU32,
}

/// The cloud image layout (Debian's packaged sshd_config: the Include comes
/// first, so drop-ins win), plus where this sandbox's sshd listens.
fn sshd_config(port: u16) -> String {
    let mut text = format!(
        "# accessd e2e sandbox: Debian's packaged sshd_config plus a private port\n\
         Include /etc/ssh/sshd_config.d/*.conf\n\
         \n\
         Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey /etc/ssh/ssh_host_ed25519_key\n\
         \n\
         KbdInteractiveAuthentication no\n\
         UsePAM yes\n\
         X11Forwarding yes\n\
         PrintMotd no\n\
         AcceptEnv LANG LC_*\n\
         Subsystem\tsftp\t/usr/lib/openssh/sftp-server\n"
    );
    // OpenSSH 9.8 penalises addresses that fail to authenticate; the suite
    // fails logins from 127.0.0.1 on purpose and must not be locked out.
    if sshd_version() >= (9, 8) {
        text.push_str("PerSourcePenalties no\n");
    }
    text
}

/// `(major, minor)` of the installed sshd (`sshd -V`; 9.2 on Debian 12).
fn sshd_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = run_with(Command::new(SSHD).arg("-V"), None, COMMAND_TIMEOUT);
        let text = format!("{}{}", out.stdout, out.stderr);
        let v = text
            .split("OpenSSH_")
            .nth(1)
            .unwrap_or_else(|| panic!("sshd -V printed no version: {text}"));
        let mut parts = v.split(|c: char| !c.is_ascii_digit());
        let mut num = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (num(), num())
    })
}

/// What cloud-init writes on images that enable password logins.
pub const CLOUD_INIT_DROPIN: &str = "PasswordAuthentication yes\n";

/// accessd's `[sshd] restart_command` in the sandbox. With sshd running it
/// does what Debian's `systemctl reload ssh` does (ExecReload: `sshd -t`,
/// then SIGHUP, on which sshd re-executes itself and re-reads its
/// configuration); with sshd stopped it starts it, as `systemctl start`
/// does. Then it waits until the listener has written its pid file, which
/// sshd does only after its sockets are bound — so a login right after a
/// restart is not racing it. Every run is counted in `restarts.log` so
/// tests can tell whether accessd restarted sshd.
///
/// Two switches (files under the sandbox's /run, see
/// [`Sandbox::restart_does_nothing`] and
/// [`Sandbox::fail_next_restart_after_reload`]) make it misbehave the ways
/// a real service manager can: succeed without starting anything (what
/// `systemctl try-reload-or-restart` does to a stopped unit), or fail after
/// sshd has already re-read its files.
fn restart_script(log_dir: &Path) -> String {
    let log = log_dir.display();
    format!(
        r#"#!/bin/sh
# accessd e2e: restart the sandbox's sshd (never the host's)
set -eu
echo restart >> "{log}/restarts.log"
if [ -e {NOOP_SWITCH} ]; then exit 0; fi
{SSHD} -t
pid=$(cat /run/sshd.pid 2>/dev/null || true)
rm -f /run/sshd.pid
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -HUP "$pid"
else
  {SSHD} -E "{log}/sshd.log"
fi
i=0
while [ ! -s /run/sshd.pid ]; do
  i=$((i + 1))
  if [ "$i" -gt 400 ]; then echo "sshd did not come back after SIGHUP" >&2; exit 1; fi
  sleep 0.05
done
if [ -e {FAIL_SWITCH} ]; then
  rm -f {FAIL_SWITCH}
  echo "restart-sshd: failing on purpose after sshd re-read its files" >&2
  exit 1
fi
"#
    )
}

/// See [`restart_script`].
const NOOP_SWITCH: &str = "/run/accessd-e2e-restart-does-nothing";
const FAIL_SWITCH: &str = "/run/accessd-e2e-fail-next-restart";

/// A port for a sandbox's sshd. It is chosen below the kernel's ephemeral
/// range: a port from `bind(0)` could be taken by any parallel test's
/// outgoing ssh connection between this check and sshd's own bind. Ports
/// are handed out in sequence from a per-process random start, so tests of
/// one binary never race each other for the same one.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
        })
        .unwrap_or(32768);
    let (base, span) = (10_000u32, ephemeral_low.saturating_sub(10_000).max(1000));
    let _ = NEXT.compare_exchange(
        u32::MAX,
        random_u32() % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = (base + NEXT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + span)
}

/// Good enough to spread parallel processes over the port range.
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        return std::process::id();
    }
    u32::from_ne_bytes(b)
}

fn mkdir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn write_file(p: &Path, contents: &str, mode: u32) {
    fs::write(p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

impl Sandbox {
    /// Build the throwaway tree, enter a namespace with it mounted, start
    /// sshd. Panics with the reason if any step fails.
    pub fn start() -> Sandbox {
        host_baseline();
        let dir = tempfile::Builder::new()
            .prefix("accessd-e2e-")
            .tempdir()
            .expect("create the sandbox directory");
        let t = dir.path();
        let port = free_port();

        // /etc is a copy of the host's, so PAM, NSS, sudo, login.defs and skel
        // are the real distribution's; /home, /root, /run and the logs start empty.
        host_ok(&["cp", "-a", "/etc", &t.join("etc").to_string_lossy()]);
        let etc_ssh = t.join("etc/ssh");
        for e in fs::read_dir(&etc_ssh).expect("read etc/ssh copy").flatten() {
            // Never carry the host's host keys into a throwaway tree.
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                fs::remove_file(e.path()).expect("remove copied host key");
            }
        }
        let dropins = etc_ssh.join("sshd_config.d");
        let _ = fs::remove_dir_all(&dropins);
        mkdir(&dropins, 0o755);
        write_file(&etc_ssh.join("sshd_config"), &sshd_config(port), 0o644);
        write_file(
            &dropins.join("50-cloud-init.conf"),
            CLOUD_INIT_DROPIN,
            0o600,
        );
        host_ok(&[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "accessd-e2e-host",
            "-f",
            &etc_ssh.join("ssh_host_ed25519_key").to_string_lossy(),
        ]);
        let _ = fs::remove_dir_all(t.join("etc/accessd"));
        // A host in maintenance mode must not make every login fail here.
        let _ = fs::remove_file(t.join("etc/nologin"));
        mkdir(&t.join("etc/accessd"), 0o755);
        // Marker that proves the namespace sees the copy and the host does not.
        write_file(&t.join("etc/accessd-e2e-sandbox"), "sandbox\n", 0o644);

        mkdir(&t.join("home"), 0o755);
        mkdir(&t.join("root"), 0o700);
        mkdir(&t.join("run/sshd"), 0o755);
        mkdir(&t.join("run"), 0o755);
        mkdir(&t.join("varlog"), 0o755);
        mkdir(&t.join("varmail"), 0o2775);
        mkdir(&t.join("log"), 0o755);
        mkdir(&t.join("keys"), 0o700);
        mkdir(&t.join("state"), 0o700);
        mkdir(&t.join("bin"), 0o755);
        let log_dir = t.join("log");
        write_file(
            &t.join("bin/restart-sshd"),
            &restart_script(&log_dir),
            0o755,
        );

        let (holder, pid, mnt_ns, ns_pin) = enter_namespace(t);
        let mut sb = Sandbox {
            dir,
            holder,
            pid,
            mnt_ns,
            ns_pin: Some(ns_pin),
            port,
            agent: None,
            seq: AtomicU32::new(0),
        };
        assert!(
            sb.path("/etc/accessd-e2e-sandbox").exists()
                && !Path::new("/etc/accessd-e2e-sandbox").exists(),
            "the namespace does not see the throwaway /etc (or the host does)"
        );
        sb.start_sshd();
        sb
    }

    fn start_sshd(&mut self) {
        let log = self.log_dir().join("sshd.log");
        let out = self.run(&[SSHD, "-E", &log.to_string_lossy()]);
        assert!(
            out.ok(),
            "sshd did not start: {}{}",
            out.stderr,
            self.tail("sshd.log")
        );
        self.wait_for("sshd to write /run/sshd.pid", || {
            fs::read_to_string(self.path("/run/sshd.pid")).is_ok_and(|s| !s.trim().is_empty())
        });
        self.wait_for("sshd to accept connections", || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// Poll `cond` for up to 20 s; panic naming `what` if it never holds.
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The host path of the sandbox's throwaway tree (its tempdir).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Diagnostics: sshd.log, accessd.log, restarts.log.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The last lines of a log in [`Sandbox::log_dir`], for failure messages.
    pub fn tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.log_dir().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "\n--- {name} (last lines) ---\n{}",
            lines[from..].join("\n")
        )
    }

    /// A path as the sandbox sees it, reachable from the host
    /// (`/proc/PID/root/...`).
    pub fn path(&self, inside: impl AsRef<Path>) -> PathBuf {
        let inside = inside.as_ref();
        let rel = inside.strip_prefix("/").unwrap_or(inside);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(rel)
    }

    /// Contents of a file inside the sandbox.
    pub fn read(&self, inside: impl AsRef<Path>) -> String {
        let p = self.path(&inside);
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", inside.as_ref().display()))
    }

    /// lstat of a path inside the sandbox (None when absent).
    pub fn lstat(&self, inside: impl AsRef<Path>) -> Option<fs::Metadata> {
        fs::symlink_metadata(self.path(inside)).ok()
    }

    /// Write a file inside the sandbox (as root; for test fixtures).
    pub fn write(&self, inside: impl AsRef<Path>, contents: &str, mode: u32) {
        write_file(&self.path(inside), contents, mode);
    }

    /// Run a command inside the namespace (as root, cwd `/`).
    pub fn run(&self, argv: &[&str]) -> Out {
        self.run_input(argv, None)
    }

    /// Run a command inside the namespace with `input` on stdin.
    pub fn run_input(&self, argv: &[&str], input: Option<&[u8]>) -> Out {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "-w", "--"])
            .args(argv)
            .env("HOME", "/root")
            .env("LC_ALL", "C");
        run_with(&mut cmd, input, COMMAND_TIMEOUT)
    }

    /// Run a command inside the namespace that must succeed; its stdout.
    pub fn run_ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.ok(),
            "{argv:?} failed in the sandbox ({}): {}{}",
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// `sh -c SCRIPT` inside the namespace.
    pub fn sh(&self, script: &str) -> Out {
        self.run(&["sh", "-c", script])
    }

    /// `sshd -T`: the effective server configuration, lower-case keys.
    pub fn sshd_effective(&self) -> BTreeMap<String, String> {
        let out = self.run(&[SSHD, "-T"]);
        assert!(out.ok(), "sshd -T failed: {}", out.stderr);
        out.stdout
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One effective sshd option (`sshd -T`), e.g. `passwordauthentication`.
    pub fn sshd_option(&self, key: &str) -> String {
        self.sshd_effective()
            .remove(key)
            .unwrap_or_else(|| panic!("sshd -T does not print {key}"))
    }

    /// The pid of the listening sshd.
    pub fn sshd_pid(&self) -> u32 {
        self.read("/run/sshd.pid")
            .trim()
            .parse()
            .expect("a pid in /run/sshd.pid")
    }

    /// How many times the restart command has run.
    pub fn sshd_restarts(&self) -> usize {
        fs::read_to_string(self.log_dir().join("restarts.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Stop the sandbox's sshd (SIGTERM to the listener; sessions stay),
    /// and wait until nothing listens on its port.
    pub fn stop_sshd(&self) {
        let pid = self.sshd_pid();
        // SAFETY: kill(2) with a pid this sandbox's sshd wrote; no memory is shared.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        self.wait_for("sshd to stop listening", || {
            TcpStream::connect(("127.0.0.1", self.port)).is_err()
        });
    }

    /// Is anything accepting connections on the sandbox's sshd port?
    pub fn sshd_listening(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// From now on the restart command exits 0 and does nothing.
    pub fn restart_does_nothing(&self) {
        self.write(NOOP_SWITCH, "", 0o644);
    }

    /// The next restart command reloads sshd and then fails (once).
    pub fn fail_next_restart_after_reload(&self) {
        self.write(FAIL_SWITCH, "", 0o644);
    }

    /// Run the sandbox's restart command as accessd would.
    pub fn restart_sshd(&self) {
        let script = self.dir.path().join("bin/restart-sshd");
        let out = self.run(&[&script.to_string_lossy()]);
        assert!(
            out.ok(),
            "restart-sshd failed: {}{}",
            out.stderr,
            self.tail("sshd.log")
        );
    }

    /// A fresh client key pair made with ssh-keygen.
    pub fn client_key(&self, name: &str, kind: KeyKind) -> ClientKey {
        let private = self.dir.path().join("keys").join(name);
        let mut argv = vec!["ssh-keygen", "-q", "-N", "", "-C", name];
        argv.extend_from_slice(kind.args());
        let p = private.to_string_lossy().into_owned();
        argv.extend_from_slice(&["-f", &p]);
        host_ok(&argv);
        let public = fs::read_to_string(private.with_extension("pub"))
            .expect("read the .pub file ssh-keygen wrote")
            .trim()
            .to_string();
        let listing = host_ok(&[
            "ssh-keygen",
            "-l",
            "-E",
            "sha256",
            "-f",
            &format!("{p}.pub"),
        ]);
        let fingerprint = listing
            .split_whitespace()
            .nth(1)
            .expect("ssh-keygen -l prints a fingerprint")
            .to_string();
        ClientKey {
            private,
            public,
            fingerprint,
        }
    }

    fn ssh_base(&self) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-p",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([self.port.to_string()])
        .collect()
    }

    /// Try `ssh -i KEY user@127.0.0.1 id -un` (from inside the sandbox).
    pub fn try_key_login(&self, user: &str, key: &ClientKey) -> Login {
        let mut argv: Vec<String> = vec!["ssh".into()];
        argv.extend(self.ssh_base());
        argv.extend(
            [
                "-i",
                &key.private.to_string_lossy(),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "KbdInteractiveAuthentication=no",
                &format!("{user}@127.0.0.1"),
                "id",
                "-un",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        Login::from(user, self.run(&argv))
    }

    /// `sshpass -e ssh [-tt] user@127.0.0.1 id -un`, run in the sandbox, the
    /// password in the environment (`sshpass -e`), never in argv. `prefix`
    /// goes before sshpass (a `timeout`), `ssh_flags` right after `ssh`.
    fn password_ssh(&self, user: &str, password: &str, prefix: &[&str], ssh_flags: &[&str]) -> Out {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "-w", "--"])
            .args(prefix)
            .args(["sshpass", "-e", "ssh"])
            .args(ssh_flags)
            .args(self.ssh_base())
            .args([
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                // Both ways sshd accepts a password, so that "password
                // logins are off" is tested against either.
                "PreferredAuthentications=password,keyboard-interactive",
                "-o",
                "NumberOfPasswordPrompts=1",
                &format!("{user}@127.0.0.1"),
                "id",
                "-un",
            ])
            .env("HOME", "/root")
            .env("LC_ALL", "C")
            .env("SSHPASS", password);
        run_with(&mut cmd, None, COMMAND_TIMEOUT)
    }

    /// Try `sshpass ssh user@127.0.0.1 id -un` with a password.
    pub fn try_password_login(&self, user: &str, password: &str) -> Login {
        Login::from(user, self.password_ssh(user, password, &[], &[]))
    }

    /// A password login on a terminal (`ssh -tt`), as a person logs in:
    /// PAM's "you must change your password" dialogue only happens on one.
    /// It is answered with the same password once; whatever follows (a
    /// prompt for the new password) ends at the time limit. Returns what the
    /// terminal showed.
    pub fn password_login_on_a_tty(&self, user: &str, password: &str) -> Out {
        self.password_ssh(user, password, &["timeout", "20"], &["-tt"])
    }

    /// Give users created from now on a uid range of this sandbox's own
    /// (`UID_MIN`): `pgrep -u` sees every process of the machine, parallel
    /// sandboxes' users included. Returns the new UID_MIN.
    pub fn private_uid_range(&self) -> u32 {
        let uid_min = 30_000 + u32::from(self.port) % 20_000;
        assert!(self
            .sh(&format!(
                "sed -i 's/^UID_MIN.*/UID_MIN {uid_min}/' /etc/login.defs"
            ))
            .ok());
        uid_min
    }

    /// A session that stays: `ssh USER@127.0.0.1 exec sleep 600` with `key`,
    /// in the background inside the sandbox (its teardown kills what is
    /// left); returns once the remote sleep runs.
    pub fn start_live_session(&self, user: &str, key: &ClientKey) {
        let ssh = format!(
            "setsid ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -o BatchMode=yes -o IdentitiesOnly=yes -o PasswordAuthentication=no -i {} -p {} \
             {user}@127.0.0.1 exec sleep 600 </dev/null >/dev/null 2>&1 &",
            key.private.display(),
            self.port
        );
        assert!(self.sh(&ssh).ok());
        self.wait_for("the session's remote sleep", || {
            self.run(&["pgrep", "-u", user, "-x", "sleep"]).ok()
        });
    }

    /// What `sudo -l -U USER` says: may the user run commands with sudo?
    pub fn sudo_grants(&self, user: &str) -> bool {
        let out = self.run(&["sudo", "-l", "-U", user]);
        let text = format!("{}{}", out.stdout, out.stderr);
        if text.contains("may run the following commands") {
            true
        } else {
            assert!(
                text.contains("is not allowed to run sudo"),
                "sudo -l -U {user} said neither: {text}"
            );
            false
        }
    }

    pub fn assert_key_login(&self, user: &str, key: &ClientKey) {
        let l = self.try_key_login(user, key);
        assert!(
            l.ok,
            "key login as {user} with {} should work: {l:?}{}",
            key.fingerprint,
            self.tail("sshd.log")
        );
    }

    pub fn assert_no_key_login(&self, user: &str, key: &ClientKey) {
        let l = self.try_key_login(user, key);
        assert!(
            !l.ok,
            "key login as {user} with {} should be refused: {l:?}",
            key.fingerprint
        );
        self.assert_sshd_serving();
    }

    pub fn assert_password_login(&self, user: &str, password: &str) {
        let l = self.try_password_login(user, password);
        assert!(
            l.ok,
            "password login as {user} should work: {l:?}{}",
            self.tail("sshd.log")
        );
    }

    pub fn assert_no_password_login(&self, user: &str, password: &str) {
        let l = self.try_password_login(user, password);
        assert!(!l.ok, "password login as {user} should be refused: {l:?}");
        self.assert_sshd_serving();
    }

    /// A refused login proves something only if sshd was there to refuse it.
    pub fn assert_sshd_serving(&self) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap_or_else(|e| {
            panic!(
                "sshd is not listening on port {}: {e}{}",
                self.port,
                self.tail("sshd.log")
            )
        });
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        let mut banner = [0u8; 8];
        s.read_exact(&mut banner).expect("read the sshd banner");
        assert_eq!(&banner[..4], b"SSH-", "sshd did not greet with a banner");
    }

    /// Create a user the way an admin would by hand (useradd -m), for
    /// fixtures that must not depend on accessd.
    pub fn useradd(&self, user: &str) {
        self.run_ok(&["useradd", "-m", "-s", "/bin/sh", user]);
    }

    /// Set a password by hand with chpasswd (fixtures and oracles).
    pub fn chpasswd(&self, user: &str, password: &str) {
        let line = format!("{user}:{password}\n");
        let out = self.run_input(&["chpasswd"], Some(line.as_bytes()));
        assert!(out.ok(), "chpasswd failed: {}", out.stderr);
    }

    /// The shadow entry of `user` (fields split on ':'), if any.
    pub fn shadow_entry(&self, user: &str) -> Option<Vec<String>> {
        db_entry(&self.read("/etc/shadow"), user)
    }

    /// The passwd entry of `user` (fields split on ':'), if any.
    pub fn passwd_entry(&self, user: &str) -> Option<Vec<String>> {
        db_entry(&self.read("/etc/passwd"), user)
    }

    /// The group entry of `group` (fields split on ':'), if any.
    pub fn group_entry(&self, group: &str) -> Option<Vec<String>> {
        db_entry(&self.read("/etc/group"), group)
    }

    /// Next unique command id in this sandbox.
    pub fn next_id(&self) -> String {
        format!(
            "e2e-{}-{}",
            self.port,
            self.seq.fetch_add(1, Ordering::SeqCst)
        )
    }
}

fn db_entry(text: &str, name: &str) -> Option<Vec<String>> {
    text.lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(name))
}

/// The rest of the holder's life. Drop kills the namespace when a test ends
/// or panics; this covers the test process being killed outright (a CI
/// timeout, ^C): when its parent is gone the holder SIGKILLs everything in
/// its namespace (sshd, sessions, accessd) and removes the throwaway tree
/// (`$1`, only ever a directory named accessd-e2e-*), which TempDir's Drop
/// would have removed.
const WATCHDOG: &str = r#"echo ready
exec </dev/null >/dev/null 2>&1
set +e
me=$(readlink /proc/$$/ns/mnt)
while kill -0 "$PPID"; do sleep 1; done
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" != "$$" ] && [ "$(readlink "$p/ns/mnt")" = "$me" ] && kill -KILL "$pid"
done
case "$1" in /tmp/accessd-e2e-*|/*/accessd-e2e-*) rm -rf --one-file-system -- "$1" ;; esac
exit 0
"#;

/// Start the namespace holder: `unshare -m --propagation private` runs a
/// shell that bind-mounts the throwaway tree over the real paths, says
/// `ready`, and then waits as [`WATCHDOG`]. Returns the child, its pid (the
/// namespace's anchor) and its mount-namespace link.
fn enter_namespace(t: &Path) -> Holder {
    // `-n`: no utab bookkeeping under the host's /run for these mounts.
    let mut script = String::from(
        "set -eu\n\
         mount -n --bind \"$1/etc\" /etc\n\
         mount -n --bind \"$1/home\" /home\n\
         mount -n --bind \"$1/root\" /root\n\
         mount -n --bind \"$1/run\" /run\n\
         mount -n --bind \"$1/varlog\" /var/log\n",
    );
    if Path::new("/var/mail").is_dir() {
        script.push_str("mount -n --bind \"$1/varmail\" /var/mail\n");
    }
    script.push_str(WATCHDOG);
    // One failure to set up a namespace was seen once in many runs on a
    // busy shared machine and could not be reproduced; it is reported and
    // retried rather than failing a scenario that has not started yet.
    let mut failures = Vec::new();
    for _ in 0..3 {
        match spawn_holder(&script, t) {
            Ok(holder) => {
                for f in &failures {
                    eprintln!("warning: a namespace holder failed to start and was retried: {f}");
                }
                return holder;
            }
            Err(e) => failures.push(e),
        }
    }
    panic!(
        "could not set up the sandbox's mount namespace: {}",
        failures.join("; ")
    )
}

/// The namespace holder: child, pid, namespace link, namespace pin.
type Holder = (Child, u32, PathBuf, fs::File);

fn spawn_holder(script: &str, t: &Path) -> Result<Holder, String> {
    let mut child = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(t)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start unshare: {e}"))?;
    let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = child.wait();
        return Err(format!(
            "holder said {line:?} ({read:?}), exit {status:?}, stderr: {}",
            err.trim()
        ));
    }
    let pid = child.id();
    // Pinned before it is read: the holder is our unreaped child, so the
    // pid is still the holder's.
    let pin =
        fs::File::open(format!("/proc/{pid}/ns/mnt")).expect("open the holder's mount namespace");
    let mnt_ns =
        fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("read the holder's mount namespace");
    let ours = fs::read_link("/proc/self/ns/mnt").expect("read our mount namespace");
    assert_ne!(mnt_ns, ours, "the holder is not in a namespace of its own");
    Ok((child, pid, mnt_ns, pin))
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.as_mut() {
            agent.stop();
        }
        if thread::panicking() {
            eprintln!(
                "sandbox {} (port {}) logs:{}{}",
                self.dir.path().display(),
                self.port,
                self.tail("sshd.log"),
                self.tail("accessd.log")
            );
        }
        kill_namespace(&self.mnt_ns, self.pid);
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        self.ns_pin.take();
        // Checked on every teardown so that the guard covers every test,
        // whichever order or thread it ran in. A panic inside a panic would
        // abort and hide the first failure, so only report then.
        let diff = host_baseline().diff(&HostSnapshot::take());
        if !diff.is_empty() {
            if thread::panicking() {
                eprintln!(
                    "THE HOST WAS MODIFIED by the e2e suite: {}",
                    diff.join("; ")
                );
            } else {
                panic!(
                    "THE HOST WAS MODIFIED by the e2e suite: {}",
                    diff.join("; ")
                );
            }
        }
    }
}

/// SIGKILL every process in the sandbox's mount namespace (sshd, its
/// sessions, accessd, the holder), until none is left. A namespace is
/// identified by its `/proc/PID/ns/mnt` link, so processes that daemonized
/// away from our children are found too.
fn kill_namespace(mnt_ns: &Path, holder: u32) {
    for _ in 0..50 {
        let mut found = false;
        if let Ok(rd) = fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().as_deref() == Some(mnt_ns) {
                    // Zombies keep their ns link only while they have a mm;
                    // skip ones already dead (state Z).
                    let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    if state
                        .rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z'))
                    {
                        continue;
                    }
                    found = true;
                    kill_if_in(pid, mnt_ns);
                }
            }
        }
        if !found {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("warning: processes of sandbox namespace (holder {holder}) survived SIGKILL");
}

/// SIGKILL `pid` if it is (still) in `mnt_ns`. The pid is pinned with a
/// pidfd before its namespace is checked, so a pid that is recycled between
/// the scan and the signal can never make us kill an unrelated process.
fn kill_if_in(pid: i32, mnt_ns: &Path) {
    // SAFETY: plain syscalls on integers; the fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    if fd < 0 {
        let no_pidfd = std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS);
        if no_pidfd && fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().as_deref() == Some(mnt_ns)
        {
            // Kernels before 5.3: the racy way is all there is.
            // SAFETY: a plain syscall on integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        return; // otherwise it is gone already
    }
    if fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().as_deref() == Some(mnt_ns) {
        // SAFETY: fd is a pidfd we own; a null siginfo is allowed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
    // SAFETY: fd is ours and not used again.
    unsafe { libc::close(fd) };
}

// ---------------------------------------------------------------------------
// Client keys and logins.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Ed25519,
    Rsa2048,
    Ecdsa256,
}

impl KeyKind {
    fn args(self) -> &'static [&'static str] {
        match self {
            KeyKind::Ed25519 => &["-t", "ed25519"],
            KeyKind::Rsa2048 => &["-t", "rsa", "-b", "2048"],
            KeyKind::Ecdsa256 => &["-t", "ecdsa", "-b", "256"],
        }
    }
}

/// A key pair made by ssh-keygen for a test client.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// Private key file (host path under the sandbox dir; /tmp is shared).
    pub private: PathBuf,
    /// The authorized_keys line (`type base64 comment`).
    pub public: String,
    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

/// The outcome of one login attempt.
#[derive(Debug, Clone)]
pub struct Login {
    /// The remote `id -un` printed the user.
    pub ok: bool,
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Login {
    fn from(user: &str, out: Out) -> Login {
        Login {
            ok: out.ok() && out.stdout.trim() == user,
            exit: out.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

// ---------------------------------------------------------------------------
// The agent under test and the control plane that drives it.

struct Agent {
    daemon: Option<Child>,
    control_key: PathBuf,
    public_key: String,
    instance_id: String,
    state_dir: PathBuf,
}

impl Agent {
    fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            // SIGTERM first: a clean shutdown is part of what a restart
            // tests. (nsenter exec'd accessd, so the child is accessd; it is
            // not reaped yet, so its pid cannot have been recycled.)
            // SAFETY: a plain syscall on integers.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A verified result from the agent (the payload `accessctl send` printed).
#[derive(Debug, Clone)]
pub struct Reply {
    /// `accessctl send` exit code: 0 ok, 2 rejected, 3 failed.
    pub exit: i32,
    pub payload: Value,
}

impl Reply {
    pub fn status(&self) -> &str {
        self.payload["status"].as_str().unwrap_or("")
    }
    pub fn code(&self) -> &str {
        self.payload["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.payload["message"].as_str().unwrap_or("")
    }

    /// Panics unless the command was applied.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status() == "ok" && self.code() == "ok" && self.exit == 0,
            "expected ok, got {}",
            self.payload
        );
        self
    }

    /// Panics unless the command was rejected with `code`.
    pub fn assert_rejected(&self, code: &str) -> &Self {
        assert!(
            self.status() == "rejected" && self.code() == code && self.exit == 2,
            "expected rejected/{code}, got {}",
            self.payload
        );
        self
    }

    /// Panics unless the command failed with `code`.
    pub fn assert_failed(&self, code: &str) -> &Self {
        assert!(
            self.status() == "failed" && self.code() == code && self.exit == 3,
            "expected failed/{code}, got {}",
            self.payload
        );
        self
    }
}

/// A command being built for `accessctl sign`.
pub struct Cmd<'a> {
    sb: &'a Sandbox,
    /// The `accessctl sign` subcommand (`add-keys` for the op `add_keys`).
    op: String,
    args: Vec<String>,
    password: Option<String>,
    key: Option<(PathBuf, String)>,
    instance: Option<String>,
}

impl<'a> Cmd<'a> {
    /// Add `accessctl sign` flags (`--user`, `--key-line`, `--sudo`...).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|s| s.as_ref().to_string()));
        self
    }

    /// `--user NAME`.
    pub fn user(self, user: &str) -> Self {
        self.args(["--user", user])
    }

    /// `--key-line LINE` for each public key.
    pub fn keys(mut self, keys: &[&ClientKey]) -> Self {
        for k in keys {
            self.args.push("--key-line".into());
            self.args.push(k.public.clone());
        }
        self
    }

    /// A password sealed to the agent's key (given on stdin, never argv).
    pub fn password(mut self, pw: &str) -> Self {
        self.password = Some(pw.to_string());
        self
    }

    /// Sign with another key than the trusted control-plane key.
    pub fn signed_by(mut self, key_file: &Path, key_id: &str) -> Self {
        self.key = Some((key_file.to_path_buf(), key_id.to_string()));
        self
    }

    /// Address another instance than the sandbox's.
    pub fn instance(mut self, id: &str) -> Self {
        self.instance = Some(id.to_string());
        self
    }

    /// Sign the command; the envelope is written to a file whose path is
    /// returned (so a test can deliver it again, or tamper with it).
    pub fn sign(self) -> PathBuf {
        let agent = self.sb.agent();
        let id = if self.args.iter().any(|a| a == "--id") {
            None
        } else {
            Some(self.sb.next_id())
        };
        let out_file = self.sb.dir.path().join("keys").join(format!(
            "cmd-{}.json",
            self.sb.seq.fetch_add(1, Ordering::SeqCst)
        ));
        let (key, key_id) = self
            .key
            .clone()
            .unwrap_or_else(|| (agent.control_key.clone(), CONTROL_KEY_ID.to_string()));
        let mut cmd = Command::new(accessctl_bin());
        cmd.arg("sign")
            .arg(&self.op)
            .arg("--key")
            .arg(&key)
            .args(["--key-id", &key_id])
            .args([
                "--instance",
                self.instance.as_deref().unwrap_or(&agent.instance_id),
            ]);
        if let Some(id) = &id {
            cmd.args(["--id", id]);
        }
        cmd.args(&self.args);
        if self.password.is_some() {
            cmd.args(["--password-stdin", "--agent-key", &agent.public_key]);
        }
        cmd.arg("--out").arg(&out_file);
        let out = run_with(
            &mut cmd,
            self.password.as_deref().map(str::as_bytes),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.ok(),
            "accessctl sign {:?} failed: {}",
            self.args,
            out.stderr
        );
        out_file
    }

    /// Sign and deliver; the verified result.
    pub fn send(self) -> Reply {
        let sb = self.sb;
        let envelope = self.sign();
        sb.deliver(&envelope)
    }
}

impl Sandbox {
    fn agent(&self) -> &Agent {
        self.agent
            .as_ref()
            .expect("call Sandbox::start_agent first")
    }

    /// The sandbox's instance id.
    pub fn instance_id(&self) -> &str {
        &self.agent().instance_id
    }

    /// The agent's public key (base64 Ed25519), as `accessd identity` printed it.
    pub fn agent_public_key(&self) -> &str {
        &self.agent().public_key
    }

    /// accessd's state directory (the same path inside and outside).
    pub fn state_dir(&self) -> &Path {
        &self.agent().state_dir
    }

    /// Configure accessd (trusting a fresh control-plane key, restarting the
    /// sandbox's sshd) and start the daemon inside the namespace.
    pub fn start_agent(&mut self) {
        let keys = self.dir.path().join("keys");
        let prefix = keys.join("console");
        let out = run_with(
            Command::new(accessctl_bin())
                .arg("keygen")
                .arg("--out")
                .arg(&prefix),
            None,
            COMMAND_TIMEOUT,
        );
        assert!(out.ok(), "accessctl keygen failed: {}", out.stderr);
        let control_pub = fs::read_to_string(prefix.with_extension("pub"))
            .expect("read the control-plane public key")
            .trim()
            .to_string();
        let instance_id = format!("i-e2e{}", self.port);
        let state_dir = self.dir.path().join("state");
        let restart = self.dir.path().join("bin/restart-sshd");
        let config = format!(
            "# accessd e2e sandbox\n\
             instance_id = \"{instance_id}\"\n\
             state_dir = \"{}\"\n\
             root = \"/\"\n\
             \n\
             [trust]\n\
             {CONTROL_KEY_ID} = \"{control_pub}\"\n\
             \n\
             [sshd]\n\
             restart_command = [\"{}\"]\n",
            state_dir.display(),
            restart.display()
        );
        self.write(AGENT_CONFIG, &config, 0o600);
        let out = self.run(&[&self.accessd_inside(), "identity", "--config", AGENT_CONFIG]);
        assert!(
            out.ok(),
            "accessd identity failed: {}{}",
            out.stdout,
            out.stderr
        );
        let public_key = out.stdout.trim().to_string();
        self.agent = Some(Agent {
            daemon: None,
            control_key: prefix.with_extension("key"),
            public_key,
            instance_id,
            state_dir,
        });
        self.start_daemon();
    }

    fn start_daemon(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir().join("accessd.log"))
            .expect("open accessd.log");
        let child = Command::new("nsenter")
            .arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "-w", "--"])
            .arg(self.accessd_inside())
            .args(["--config", AGENT_CONFIG])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start accessd");
        let inbox = self.state_dir().join("inbox");
        let agent = self.agent.as_mut().expect("agent configured");
        agent.daemon = Some(child);
        let mut exited = None;
        self.wait_for("accessd to create its inbox", || {
            let agent = self.agent.as_ref().expect("agent");
            // Waiting on a daemon that died is pointless: report why instead.
            if let Some(child) = agent.daemon.as_ref() {
                let alive = fs::metadata(format!("/proc/{}", child.id())).is_ok()
                    && !fs::read_to_string(format!("/proc/{}/stat", child.id()))
                        .unwrap_or_default()
                        .rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z'));
                if !alive {
                    exited = Some(());
                    return true;
                }
            }
            inbox.is_dir()
        });
        assert!(
            exited.is_none(),
            "accessd exited at start{}",
            self.tail("accessd.log")
        );
    }

    /// Stop the daemon (SIGTERM), as at shutdown.
    pub fn stop_agent(&mut self) {
        self.agent
            .as_mut()
            .expect("call Sandbox::start_agent first")
            .stop();
    }

    /// Start the daemon again after [`Sandbox::stop_agent`].
    pub fn resume_agent(&mut self) {
        assert!(self.agent().daemon.is_none(), "the daemon is running");
        self.start_daemon();
    }

    /// Stop the daemon (SIGTERM) and start it again, same config and state.
    pub fn restart_agent(&mut self) {
        self.agent
            .as_mut()
            .expect("call Sandbox::start_agent first")
            .stop();
        self.start_daemon();
    }

    /// A command with operation `op`, signed by the trusted control-plane key.
    pub fn cmd(&self, op: &str) -> Cmd<'_> {
        Cmd {
            sb: self,
            op: op.replace('_', "-"),
            args: Vec::new(),
            password: None,
            key: None,
            instance: None,
        }
    }

    /// Deliver an envelope file through the inbox; the verified result.
    pub fn deliver(&self, envelope: &Path) -> Reply {
        let agent = self.agent();
        let mut cmd = Command::new(accessctl_bin());
        cmd.arg("send")
            .arg("--inbox")
            .arg(agent.state_dir.join("inbox"))
            .args(["--agent-key", &agent.public_key, "--timeout", "30s"])
            .arg(envelope);
        let out = run_with(&mut cmd, None, Duration::from_secs(45));
        let exit = out.code().unwrap_or(-1);
        assert!(
            matches!(exit, 0 | 2 | 3),
            "accessctl send failed (exit {exit}): {}{}",
            out.stderr,
            self.tail("accessd.log")
        );
        let payload: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "accessctl send printed no result JSON ({e}): {}",
                out.stdout
            )
        });
        Reply { exit, payload }
    }

    /// `accessd apply-staged` inside the namespace as the boot unit runs it
    /// at the *next* boot: the kernel's boot id reads as a new one (a bind
    /// mount in a mount namespace of its own, so only this run sees it).
    /// The agent leaves entries staged during the current boot alone.
    pub fn apply_staged(&self) -> Out {
        static BOOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = self.dir.path().join("next-boot-id");
        fs::write(
            &file,
            format!("{:08x}-0000-4000-8000-{n:012x}\n", std::process::id()),
        )
        .unwrap();
        self.apply_staged_same_boot_with(&[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$1\" /proc/sys/kernel/random/boot_id && shift && exec \"$@\"",
            "sh",
            &file.to_string_lossy(),
        ])
    }

    /// `accessd apply-staged` inside the namespace in this very boot (what
    /// a restart of the units would run).
    pub fn apply_staged_same_boot(&self) -> Out {
        self.apply_staged_same_boot_with(&[])
    }

    fn apply_staged_same_boot_with(&self, prefix: &[&str]) -> Out {
        let bin = self.accessd_inside();
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.extend([bin.as_str(), "apply-staged", "--config", AGENT_CONFIG]);
        self.run(&argv)
    }

    /// The accessd binary as the namespace sees it. A target directory under
    /// one of the masked paths (say /root/target) is hidden by the throwaway
    /// mounts, so the binary is copied into the sandbox then.
    pub fn accessd_inside(&self) -> String {
        let bin = accessd_bin();
        let masked = ["/etc", "/home", "/root", "/run", "/var/log", "/var/mail"];
        if !masked.iter().any(|m| bin.starts_with(m)) {
            return bin.to_string_lossy().into_owned();
        }
        let copy = self.dir.path().join("bin/accessd");
        if !copy.exists() {
            fs::copy(&bin, &copy)
                .unwrap_or_else(|e| panic!("copy {} into the sandbox: {e}", bin.display()));
        }
        copy.to_string_lossy().into_owned()
    }
}

// ---------------------------------------------------------------------------
// Time.

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// Days since the epoch, as shadow's lastchg counts them.
pub fn days_since_epoch() -> i64 {
    unix_now().div_euclid(86_400)
}

/// RFC 3339 UTC time `offset` seconds from now (`2026-11-29T18:00:00Z`).
pub fn rfc3339_from_now(offset: i64) -> String {
    rfc3339_at(unix_now() + offset)
}

/// RFC 3339 UTC time of the Unix time `t`.
pub fn rfc3339_at(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn sshd_version_is_read() {
        if gate::require(which(SSHD).is_some(), "sshd is not installed") {
            assert!(
                sshd_version() >= (8, 2),
                "Include needs 8.2: {:?}",
                sshd_version()
            );
        }
    }

    #[test]
    fn rfc3339_matches_date_for_the_same_instant() {
        // One fixed instant for both sides: reading two clocks could
        // straddle a minute (this test once compared `now` twice and failed so).
        let now = unix_now();
        for t in [0, 951_782_400, 1_709_164_800, 4_107_542_399, now] {
            let date = host_ok(&["date", "-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"]);
            assert_eq!(rfc3339_at(t), date.trim(), "t = {t}");
        }
    }

    /// One rule for every suite: `CI=false` or `CI=0` in a developer's shell
    /// is a local run (one suite treated any value as CI, another did not
    /// accept `1`).
    #[test]
    fn only_true_or_1_in_ci_means_ci() {
        for (v, ci) in [
            (None, false),
            (Some("true"), true),
            (Some("TRUE"), true),
            (Some("1"), true),
            (Some("false"), false),
            (Some("0"), false),
            (Some(""), false),
        ] {
            assert_eq!(gate::ci_value_means_ci(v), ci, "CI={v:?}");
        }
    }

    #[test]
    fn fingerprint_tells_contents_apart() {
        assert_ne!(fingerprint(b"root:x:0:0"), fingerprint(b"root:x:0:1"));
        assert_eq!(fingerprint(b"same"), fingerprint(b"same"));
    }
}
