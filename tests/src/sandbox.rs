//! The sandbox: a throwaway tree mounted over the real paths in a private
//! mount namespace, the commands run in it and the files read from it.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use crate::control::Agent;
use crate::host_guard::{host_baseline, HostSnapshot};
use crate::namespace::{enter_namespace, kill_namespace};
use crate::run::{host_ok, run_with, Out, COMMAND_TIMEOUT};
use crate::sshd::{restart_script, sshd_config, CLOUD_INIT_DROPIN};
use crate::wait::wait_until;

/// A private mount namespace with a real sshd and, optionally, accessd.
pub struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) holder: Child,
    pub(crate) pid: u32,
    pub(crate) mnt_ns: PathBuf,
    /// An open `/proc/PID/ns/mnt`: keeps the namespace (and so its inode
    /// number, which the kernel hands out lowest-free-first) alive until
    /// teardown has finished scanning for it, so that a namespace created by
    /// a parallel test can never be mistaken for this one.
    pub(crate) ns_pin: Option<fs::File>,
    /// The port the sandbox's sshd listens on (127.0.0.1 only).
    pub port: u16,
    pub(crate) agent: Option<Agent>,
    pub(crate) seq: AtomicU32,
}

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

    /// Poll `cond` for up to 20 s; panic naming `what` if it never holds.
    pub fn wait_for(&self, what: &str, cond: impl FnMut() -> bool) {
        wait_until(what, Duration::from_secs(20), cond);
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
