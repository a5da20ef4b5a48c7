//! `accessd demo`: the README's first command. Builds a throwaway machine in
//! a temp directory (its own /etc and /home), a control-plane key, starts the
//! daemon on it in this process, sends real signed commands through the
//! inbox, verifies each signed result and shows what changed on disk.
//! It never touches this machine's /etc: every path is under the sandbox root.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::config::Config;
use crate::daemon::{self, Control, Spool};
use crate::engine::Engine;
use crate::error::{Error, IoContext, Result};
use crate::inbox::Inbox;
use crate::names::UserName;
use crate::protocol::client::{seal_password, verify_result, CommandSpec};
use crate::protocol::command::{self, Args};
use crate::state_dir::{StateDir, INBOX, OUTBOX};
use crate::sys::System;

const INSTANCE: &str = "i-demo";
const USER: &str = "alice";

/// Minimal Debian-like system files: enough for useradd-style account
/// creation, sudo and sshd's configuration, nothing copied from the host.
const FILES: &[(&str, u32, &str)] = &[
    ("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
    ("etc/shadow", 0o640, "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nsshd:!:20000::::::\nnobody:*:20000:0:99999:7:::\n"),
    ("etc/group", 0o644, "root:x:0:\ndaemon:x:1:\nsudo:x:27:\nshadow:x:42:\nusers:x:100:\nnogroup:x:65534:\n"),
    ("etc/gshadow", 0o640, "root:*::\ndaemon:*::\nsudo:*::\nshadow:*::\nusers:*::\nnogroup:*::\n"),
    ("etc/subuid", 0o644, ""),
    ("etc/subgid", 0o644, ""),
    ("etc/shells", 0o644, "/bin/sh\n/bin/bash\n"),
    ("etc/login.defs", 0o644, "UID_MIN 1000\nUID_MAX 60000\nSYS_UID_MIN 100\nSYS_UID_MAX 999\nGID_MIN 1000\nGID_MAX 60000\nSYS_GID_MIN 100\nSYS_GID_MAX 999\nUMASK 022\nHOME_MODE 0700\nUSERGROUPS_ENAB yes\nENCRYPT_METHOD SHA512\n"),
    ("etc/default/useradd", 0o644, "SHELL=/bin/bash\n"),
    ("etc/skel/.profile", 0o644, "# ~/.profile (demo skeleton)\n"),
    ("etc/skel/.bashrc", 0o644, "# ~/.bashrc (demo skeleton)\n"),
    ("etc/sudoers", 0o440, "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n"),
    ("etc/ssh/sshd_config", 0o644, "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n"),
];
const DIRS: &[(&str, u32)] = &[
    ("etc/sudoers.d", 0o750),
    ("etc/ssh/sshd_config.d", 0o755),
    ("home", 0o755),
    ("root", 0o700),
    ("var/mail", 0o2775),
];

/// Run the demo, telling the story on `out`.
pub fn run(out: &mut dyn Write) -> Result<()> {
    let w = |out: &mut dyn Write, s: String| {
        out.write_all(s.as_bytes())
            .ctx(|| "writing to stdout".into())
    };
    let base = make_temp_dir()?;
    let root = base.join("root");
    let state = base.join("state");
    w(out, format!("accessd demo — sandbox in {}\n(this machine's /etc is never touched; remove the sandbox with: rm -rf {})\n\n", base.display(), base.display()))?;
    if !nix::unistd::geteuid().is_root() {
        w(out, "note: not running as root; creating a user needs chown and will fail. Run with sudo for the full demo.\n\n".into())?;
    }
    build_root(&root)?;
    w(out, format!("1. built a minimal system under {}/ (etc/passwd, shadow, group, login.defs, skel, sudoers, ssh/sshd_config)\n", root.display()))?;

    let cp = SigningKey::from_bytes(&random32());
    let cp_pub = B64.encode(cp.verifying_key().as_bytes());
    let cfg_text = format!(
        "instance_id = \"{INSTANCE}\"\nstate_dir = \"{}\"\nroot = \"{}\"\n\n[trust]\ndemo-console = \"{cp_pub}\"\n",
        state.display(),
        root.display()
    );
    let cfg_path = base.join("accessd.toml");
    std::fs::write(&cfg_path, &cfg_text).ctx(|| format!("writing {}", cfg_path.display()))?;
    w(
        out,
        format!(
            "2. control-plane key generated; trusted as `demo-console` in {}\n",
            cfg_path.display()
        ),
    )?;

    let cfg = Config::parse_str(&cfg_text, &cfg_path)?;
    let engine = Engine::new(cfg.clone(), System::new(&root, &state))?;
    let agent_pub = engine.public_key();
    w(out, format!("3. agent identity: {agent_pub}\n"))?;

    // The daemon runs on its own thread, exactly as `accessd --config` would.
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let daemon_cfg = cfg.clone();
    let daemon = std::thread::spawn(move || -> Result<()> {
        let mut engine = engine;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ctx(|| "starting the async runtime".into())?;
        rt.block_on(async move {
            let state = StateDir::open(&daemon_cfg.state_dir)?;
            let mut spool = Spool::open(&state, daemon_cfg.outbox.clone())?;
            let _ = ready_tx.send(());
            let mut reload = || Err(Error::invalid("the demo does not reload"));
            daemon::run(&mut engine, &mut spool, daemon_cfg, &mut reload, ctl_rx).await
        })
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(10));
    w(
        out,
        format!(
            "4. daemon started, watching {}\n\n",
            state.join(INBOX).display()
        ),
    )?;

    let agent_key = crate::protocol::parse_public_key(&agent_pub)
        .map_err(|e| Error::invalid(format!("the agent key {e}")))?;
    let user_key = SigningKey::from_bytes(&random32());
    let key_line = format!(
        "{} alice@laptop",
        ssh_ed25519_line(&user_key.verifying_key())
    );
    let password = seal_password(&agent_key, b"Demo-Passw0rd!");
    let user = UserName::parse(USER).expect("the demo user name is valid");

    let steps: Vec<(&str, Args)> = vec![
        (
            "create a user with sudo",
            Args::CreateUser(command::CreateUser {
                user: user.clone(),
                sudo: true,
                shell: None,
                password: None,
                keys: None,
                keys_expire_at: None,
            }),
        ),
        (
            "bind an SSH key",
            Args::AddKeys(command::AddKeys {
                user: user.clone(),
                keys: vec![key_line],
                expires_at: None,
            }),
        ),
        (
            "set a password (sealed to the agent's key)",
            Args::SetPassword(command::SetPassword {
                user,
                password,
                apply_at: command::ApplyAt::Now,
                must_change: false,
            }),
        ),
        (
            "turn PasswordAuthentication off",
            Args::SetSshd(command::SetSshd {
                pubkey_authentication: None,
                password_authentication: Some(false),
                permit_root_login: None,
                restart: true,
            }),
        ),
    ];
    let mut last_env = Vec::new();
    for (n, (what, args)) in steps.into_iter().enumerate() {
        let op = args.op();
        let id = format!("demo-{}-{op}", n + 1);
        let spec = CommandSpec {
            id: id.clone(),
            ..CommandSpec::from_args(INSTANCE, &args, Duration::from_secs(600))
        };
        let env = spec.sign(&cp, "demo-console").into_bytes();
        w(out, format!("→ {what}: {op} (command {id})\n"))?;
        let result = send(&state, &format!("{:04}-{op}.json", n + 1), &env)?;
        w(out, format!("  ← {}\n", describe(&result, &agent_key)?))?;
        last_env = env;
    }
    w(out, "→ send the last command again (replay)\n".into())?;
    let result = send(&state, "0005-replay.json", &last_env)?;
    w(out, format!("  ← {}\n\n", describe(&result, &agent_key)?))?;

    w(out, "What changed in the sandbox:\n".into())?;
    show_changes(out, &root)?;

    let _ = ctl_tx.send(Control::Shutdown);
    match daemon.join() {
        Ok(r) => r?,
        Err(_) => return Err(Error::invalid("the daemon thread panicked")),
    }
    w(out, format!("\ndaemon stopped. Results are in {}; the audit log went to stderr (journald under systemd).\n", state.join(OUTBOX).display()))?;
    Ok(())
}

fn make_temp_dir() -> Result<PathBuf> {
    let name = format!("accessd-demo-{}", crate::hex::encode(&random32()[..6]));
    let p = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&p)
        .ctx(|| format!("creating {}", p.display()))?;
    Ok(p)
}

/// Lay out the demo's minimal system under `root` (also used by the daemon's
/// integration tests as their machine).
pub fn build_root(root: &Path) -> Result<()> {
    let root_user = nix::unistd::geteuid().is_root();
    for (rel, mode, text) in FILES {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .ctx(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&p, text).ctx(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .ctx(|| format!("chmod {}", p.display()))?;
        if root_user && rel.ends_with("shadow") {
            // root:shadow, as Debian ships them.
            std::os::unix::fs::chown(&p, Some(0), Some(42))
                .ctx(|| format!("chown {}", p.display()))?;
        }
    }
    for (rel, mode) in DIRS {
        let p = root.join(rel);
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&p)
            .ctx(|| format!("creating {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .ctx(|| format!("chmod {}", p.display()))?;
    }
    Ok(())
}

/// Drop `env` in the inbox and wait for its answer in the outbox.
fn send(state: &Path, name: &str, env: &[u8]) -> Result<Vec<u8>> {
    Inbox::of_state_dir(state).send(name, env, Duration::from_secs(60))
}

/// Verify a result envelope with the agent's key and summarise it.
fn describe(result: &[u8], agent: &VerifyingKey) -> Result<String> {
    let p = verify_result(agent, result)?;
    Ok(format!(
        "signature verified; status {}, code {}: {}",
        serde_json::to_value(p.status)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("?"),
        p.code.as_str(),
        p.message
    ))
}

fn show_changes(out: &mut dyn Write, root: &Path) -> Result<()> {
    let mut w = |s: String| {
        out.write_all(s.as_bytes())
            .ctx(|| "writing to stdout".into())
    };
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
    let prefix = format!("{USER}:");
    for rel in ["etc/passwd", "etc/shadow", "etc/group"] {
        for line in read(rel).lines() {
            let mine = line.starts_with(&prefix)
                || (rel == "etc/group"
                    && line
                        .split(':')
                        .nth(3)
                        .is_some_and(|m| m.split(',').any(|u| u == USER)));
            if !mine {
                continue;
            }
            let shown = if rel == "etc/shadow" {
                // Never print a hash: show its scheme only.
                let mut f: Vec<String> = line.split(':').map(str::to_owned).collect();
                if f.len() > 1 {
                    let scheme = f[1]
                        .split('$')
                        .nth(1)
                        .map(|s| format!("${s}$…"))
                        .unwrap_or_else(|| f[1].clone());
                    f[1] = format!("{scheme}(hash elided)");
                }
                f.join(":")
            } else {
                line.to_owned()
            };
            w(format!("  /{rel}: {shown}\n"))?;
        }
    }
    let ak = format!("home/{USER}/.ssh/authorized_keys");
    for line in read(&ak).lines() {
        w(format!("  /{ak}: {line}\n"))?;
    }
    for dir in ["etc/sudoers.d", "etc/ssh/sshd_config.d"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for p in files {
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            for line in std::fs::read_to_string(&p).unwrap_or_default().lines() {
                w(format!("  /{rel}: {line}\n"))?;
            }
        }
    }
    for line in read("etc/ssh/sshd_config")
        .lines()
        .filter(|l| l.contains("PasswordAuthentication"))
    {
        w(format!("  /etc/ssh/sshd_config: {line}\n"))?;
    }
    Ok(())
}

/// `ssh-ed25519 AAAA…` for a public key (RFC 8709 wire format).
pub fn ssh_ed25519_line(k: &VerifyingKey) -> String {
    let mut blob = Vec::new();
    for part in [b"ssh-ed25519".as_slice(), k.as_bytes().as_slice()] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    format!("ssh-ed25519 {}", B64.encode(blob))
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the OS random number generator failed");
    b
}
