//! The agent under test and the control plane that drives it: accessd's
//! configuration, commands signed with `accessctl sign`, delivered with
//! `accessctl send`, and the verified replies.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins::{accessctl_bin, accessd_bin};
use crate::login::ClientKey;
use crate::run::{run_with, Out, COMMAND_TIMEOUT};
use crate::sandbox::Sandbox;

/// Where the sandbox keeps accessd's configuration (inside the namespace).
pub const AGENT_CONFIG: &str = "/etc/accessd/accessd.toml";
/// Key id under which the sandbox's agent trusts the test's control-plane key.
pub const CONTROL_KEY_ID: &str = "e2e-console";

pub(crate) struct Agent {
    daemon: Option<Child>,
    control_key: PathBuf,
    public_key: String,
    instance_id: String,
    state_dir: PathBuf,
}

impl Agent {
    pub(crate) fn stop(&mut self) {
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
