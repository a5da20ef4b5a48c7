//! The sandbox's sshd: its configuration, its restart command and the
//! [`Sandbox`] methods that look at it or drive it.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::run::{run_with, COMMAND_TIMEOUT};
use crate::sandbox::Sandbox;

/// The sshd every scenario talks to (Debian's openssh-server).
pub const SSHD: &str = "/usr/sbin/sshd";

/// The cloud image layout (Debian's packaged sshd_config: the Include comes
/// first, so drop-ins win), plus where this sandbox's sshd listens.
pub(crate) fn sshd_config(port: u16) -> String {
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
pub(crate) fn restart_script(log_dir: &Path) -> String {
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

impl Sandbox {
    pub(crate) fn start_sshd(&mut self) {
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
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::gate;
    use crate::preflight::which;

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
}
