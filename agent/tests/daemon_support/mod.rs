//! A machine for the daemon's end-to-end tests: a temp root with its own
//! /etc and homes, a temp state dir, a config pointing there, a trusted
//! control-plane key, and the real `accessd` binary started on it.
//! Nothing outside the temp directory is touched.

#![allow(dead_code)]

// A test binary that uses two support modules gets two copies of this
// small file; both are the same rule.
#[allow(clippy::duplicate_mod)]
#[path = "../gate/mod.rs"]
pub mod gate;

// The one wait loop of every suite (see ../wait/mod.rs), shared by path.
#[allow(clippy::duplicate_mod)]
#[path = "../wait/mod.rs"]
pub mod wait;
pub use wait::wait_until;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use accessd::inbox::Inbox;
use accessd::protocol::client::{verify_result, CommandSpec};
use accessd::protocol::result::ResultPayload;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{json, Value};

pub const INSTANCE: &str = "i-daemon-test";
pub const USER: &str = "alice";
/// Not a timing assertion: how long to wait before declaring the daemon stuck.
pub const PATIENCE: Duration = Duration::from_secs(180);

pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    gate::require(
        false,
        "needs root (the daemon tests chown files in a temp root)",
    )
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn b64(k: &SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(k.verifying_key().as_bytes())
}

pub struct Machine {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub cp: SigningKey,
    /// The agent's public key, read once (a later config may be broken on purpose).
    agent: std::cell::OnceCell<VerifyingKey>,
}

impl Machine {
    /// A sandbox whose config trusts `cp` as key id `cp`, with user alice.
    pub fn new() -> Machine {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let state = tmp.path().join("state");
        accessd::demo::build_root(&root).unwrap();
        let m = Machine {
            root,
            state,
            config: tmp.path().join("accessd.toml"),
            log: tmp.path().join("accessd.log"),
            cp: key(1),
            agent: std::cell::OnceCell::new(),
            tmp,
        };
        m.write_config(&[("cp", &b64(&m.cp))]);
        let out = m.apply(&[m.sign("setup-user", "create_user", json!({"user": USER}))]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].code.as_str(), "ok", "{}", out[0].message);
        m
    }

    pub fn config_text(&self, trust: &[(&str, &str)]) -> String {
        let mut t = format!(
            "instance_id = \"{INSTANCE}\"\nstate_dir = \"{}\"\nroot = \"{}\"\n\n[trust]\n",
            self.state.display(),
            self.root.display()
        );
        for (id, k) in trust {
            t.push_str(&format!("{id} = \"{k}\"\n"));
        }
        t
    }

    /// Replace the config atomically (a reader never sees half a file).
    pub fn write_raw_config(&self, text: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn write_config(&self, trust: &[(&str, &str)]) {
        self.write_raw_config(&self.config_text(trust));
    }

    pub fn sign_with(
        &self,
        k: &SigningKey,
        keyid: &str,
        id: &str,
        op: &str,
        args: Value,
    ) -> Vec<u8> {
        CommandSpec {
            id: id.into(),
            ..CommandSpec::new(INSTANCE, op, args, Duration::from_secs(900))
        }
        .sign(k, keyid)
        .into_bytes()
    }

    pub fn sign(&self, id: &str, op: &str, args: Value) -> Vec<u8> {
        self.sign_with(&self.cp, "cp", id, op, args)
    }

    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_accessd")
    }

    pub fn agent_key(&self) -> VerifyingKey {
        *self.agent.get_or_init(|| self.read_agent_key())
    }

    fn read_agent_key(&self) -> VerifyingKey {
        let out = Command::new(Self::bin())
            .arg("identity")
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .unwrap();
        VerifyingKey::from_bytes(&bytes.try_into().unwrap()).unwrap()
    }

    /// `accessd apply` on envelope files; returns the verified results.
    pub fn apply(&self, envs: &[Vec<u8>]) -> Vec<ResultPayload> {
        let (out, _) = self.apply_status(envs);
        out
    }

    pub fn apply_status(&self, envs: &[Vec<u8>]) -> (Vec<ResultPayload>, ExitStatus) {
        let dir = tempfile::tempdir_in(self.tmp.path()).unwrap();
        let mut files = Vec::new();
        for (i, e) in envs.iter().enumerate() {
            let p = dir.path().join(format!("{i}.json"));
            std::fs::write(&p, e).unwrap();
            files.push(p);
        }
        let out = Command::new(Self::bin())
            .arg("apply")
            .arg("--config")
            .arg(&self.config)
            .args(&files)
            .output()
            .unwrap();
        let agent = self.agent_key();
        let text = String::from_utf8(out.stdout).unwrap();
        let results = text
            .lines()
            .map(|l| verify_result(&agent, l.as_bytes()).unwrap())
            .collect();
        (results, out.status)
    }

    pub fn inbox(&self) -> PathBuf {
        self.state.join("inbox")
    }

    pub fn outbox(&self) -> PathBuf {
        self.state.join("outbox")
    }

    /// Drop a command the way the protocol asks (accessctl's own routine).
    pub fn drop_cmd(&self, name: &str, env: &[u8]) {
        Inbox::of_state_dir(&self.state)
            .drop_envelope(name, env)
            .unwrap();
    }

    /// Start `accessd --config` and wait for READY=1 on a notify socket of
    /// our own, exactly as systemd would.
    pub fn start(&self) -> Daemon {
        let sock_path = self
            .tmp
            .path()
            .join(format!("notify-{}.sock", rand_suffix()));
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(Self::bin())
            .arg("--config")
            .arg(&self.config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut buf = [0u8; 512];
        loop {
            let n = sock.recv(&mut buf).unwrap_or_else(|e| {
                panic!("no READY=1 from accessd: {e}; log:\n{}", self.log_text())
            });
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
        Daemon {
            child,
            log: self.log.clone(),
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            f.read_to_string(&mut s).unwrap();
        }
        s
    }

    /// Wait until the log contains `needle` `count` times.
    pub fn wait_log(&self, needle: &str, count: usize) {
        wait_until(&format!("{needle:?} x{count} in the log"), PATIENCE, || {
            self.log_text().matches(needle).count() >= count
        });
    }

    pub fn result(&self, name: &str) -> ResultPayload {
        let agent = self.agent_key();
        let bytes = Inbox::of_state_dir(&self.state)
            .wait_result(name, PATIENCE)
            .unwrap();
        verify_result(&agent, &bytes).unwrap()
    }

    pub fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.retain(|n| !n.starts_with('.'));
        v.sort();
        v
    }

    pub fn authorized_keys(&self) -> String {
        std::fs::read_to_string(
            self.root
                .join("home")
                .join(USER)
                .join(".ssh/authorized_keys"),
        )
        .unwrap_or_default()
    }

    pub fn shadow_line(&self, user: &str) -> String {
        std::fs::read_to_string(self.root.join("etc/shadow"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap()
            .to_owned()
    }
}

/// `add_keys` for alice with a key derived from `n` (distinct per n).
pub fn key_line(n: u32) -> String {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    format!(
        "{} k{n}",
        accessd::demo::ssh_ed25519_line(&SigningKey::from_bytes(&seed).verifying_key())
    )
}

pub struct Daemon {
    pub child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    pub fn wait(mut self) -> ExitStatus {
        let mut status = None;
        wait_until("accessd to exit", PATIENCE, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.expect("wait_until returned, so accessd exited")
    }

    pub fn stop(self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A boot id other than this machine's, as the kernel would make one.
pub const NEXT_BOOT_ID: &str = "5d1c7a0e-93b2-4c4e-8f07-2b6f1e9a4c31";

impl Machine {
    /// `accessd ARGS --config CONFIG`, with the kernel's boot id reading as
    /// `boot_id` (a bind mount over /proc/sys/kernel/random/boot_id in a
    /// private mount namespace: what the agent sees after a reboot), or
    /// this machine's real one with `None`.
    pub fn run_in_boot(&self, boot_id: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut script = String::from("set -e; ");
        if let Some(id) = boot_id {
            let f = self.tmp.path().join("boot_id");
            std::fs::write(&f, format!("{id}\n")).unwrap();
            script.push_str(&format!(
                "mount --bind {} /proc/sys/kernel/random/boot_id; ",
                f.display()
            ));
        }
        script.push_str("exec \"$@\"");
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .arg(Self::bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }
}

// Many users with keys, written straight into the temp root (fast, as
// useradd would leave them): for the inventory bounds tests.

/// A syntactically valid ed25519 key line (any 32 bytes are a blob sshd
/// parses), distinct per `n`, with `comment`.
pub fn fake_key(n: u64, comment: &str) -> String {
    let mut blob = Vec::new();
    let mut key = [0x5au8; 32];
    key[..8].copy_from_slice(&n.to_be_bytes());
    for part in [b"ssh-ed25519".as_slice(), key.as_slice()] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    if comment.is_empty() {
        format!("ssh-ed25519 {b64}")
    } else {
        format!("ssh-ed25519 {b64} {comment}")
    }
}

/// Write `text` as `user`'s authorized_keys, owned by them, 0600 in a 0700 ~/.ssh.
pub fn write_keys(root: &Path, user: &str, uid: u32, text: &[u8]) {
    let ssh = root.join("home").join(user).join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let f = ssh.join("authorized_keys");
    std::fs::write(&f, text).unwrap();
    for (p, mode) in [(&ssh, 0o700), (&f, 0o600)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    }
    let home = root.join("home").join(user);
    std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
}

pub fn uid_of(root: &Path, user: &str) -> u32 {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| f[2].parse().unwrap())
        })
        .unwrap()
}

/// Add `n` users `u00000`.. to the temp root's passwd/shadow/group (as
/// useradd would leave them), each with `keys` keys; returns their names.
pub fn add_users(root: &Path, n: usize, keys: usize) -> Vec<String> {
    let mut passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let mut shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    let mut group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("u{i:05}");
        let uid = 20_000 + i as u32;
        passwd.push_str(&format!("{name}:x:{uid}:{uid}::/home/{name}:/bin/sh\n"));
        shadow.push_str(&format!("{name}:!:20000:0:99999:7:::\n"));
        group.push_str(&format!("{name}:x:{uid}:\n"));
        names.push(name);
    }
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    std::fs::write(root.join("etc/shadow"), shadow).unwrap();
    std::fs::write(root.join("etc/group"), group).unwrap();
    for (i, name) in names.iter().enumerate() {
        let mut text = String::new();
        for k in 0..keys {
            text.push_str(&fake_key(
                (i * 1000 + k) as u64,
                &format!("{name}-key{k}@laptop"),
            ));
            text.push('\n');
        }
        write_keys(root, name, 20_000 + i as u32, text.as_bytes());
    }
    names
}
