//! Client keys and logins: real `ssh -i` and `sshpass` logins from inside
//! the sandbox, counted only when the remote `id -un` prints the user.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::run::{host_ok, run_with, Out, COMMAND_TIMEOUT};
use crate::sandbox::Sandbox;

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

impl Sandbox {
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
}
