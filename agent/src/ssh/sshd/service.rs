//! Restarting the ssh service after a validated change.
//!
//! The unit is `ssh.service` on Debian/Ubuntu and `sshd.service` on the RHEL
//! family, SUSE and Alibaba Cloud Linux; it is detected with `systemctl show`
//! rather than guessed from the distribution. `try-reload-or-restart` makes
//! a running sshd re-read its configuration (SIGHUP via ExecReload, which on
//! Debian runs `sshd -t` first) and leaves a stopped one stopped. With
//! Ubuntu's socket activation (22.10+), when `ssh.socket` is active and no
//! sshd runs yet, nothing needs restarting: the next connection starts sshd,
//! which reads the new configuration.

use crate::error::{Error, Result};
use crate::sys::{Cmd, System};

use super::SshdOptions;

const CANDIDATES: &[&str] = &["ssh.service", "sshd.service"];

/// `systemctl show -p ...` output as key/value pairs.
fn show(sys: &System, unit: &str, props: &str) -> Result<Vec<(String, String)>> {
    let cmd = Cmd::new("systemctl").args(["show", "-p", props, unit]);
    let out = run(sys, &cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn prop<'a>(props: &'a [(String, String)], key: &str) -> &'a str {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

fn run(sys: &System, cmd: &Cmd) -> Result<std::process::Output> {
    let out = sys
        .runner
        .run(cmd)
        .map_err(|e| Error::RestartFailed(format!("{}: {e}", cmd.display())))?;
    if !out.status.success() {
        return Err(Error::RestartFailed(format!(
            "{} exited with {}: {}",
            cmd.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// The loaded ssh unit and whether it is running.
fn detect(sys: &System) -> Result<(String, bool)> {
    for unit in CANDIDATES {
        let props = show(sys, unit, "Id,ActiveState,LoadState")?;
        if prop(&props, "LoadState") == "loaded" {
            // An alias (sshd.service → ssh.service on Debian) reports the real Id.
            let id = match prop(&props, "Id") {
                "" => unit.to_string(),
                id => id.to_owned(),
            };
            return Ok((id, prop(&props, "ActiveState") == "active"));
        }
    }
    Err(Error::RestartFailed(format!(
        "none of {} is loaded; set [sshd] restart_command",
        CANDIDATES.join(", ")
    )))
}

/// Restart (or reload) sshd on the live system; describe what was done.
pub fn restart(sys: &System, opts: &SshdOptions) -> Result<String> {
    if !sys.is_live() {
        return Ok(format!(
            "no service restarted: root is {}, not the running system",
            sys.root.display()
        ));
    }
    if let Some(argv) = &opts.restart_command {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::RestartFailed("restart_command is empty".into()));
        };
        let cmd = Cmd::new(program).args(args);
        run(sys, &cmd)?;
        return Ok(format!("ran {}", cmd.display()));
    }
    let (unit, active) = detect(sys)?;
    if !active {
        let socket = unit.replace(".service", ".socket");
        let sprops = show(sys, &socket, "ActiveState")?;
        if prop(&sprops, "ActiveState") == "active" {
            return Ok(format!(
                "{unit} is not running and {socket} is active: the next connection starts sshd with the new configuration"
            ));
        }
    }
    let cmd = Cmd::new("systemctl").args(["try-reload-or-restart", unit.as_str()]);
    run(sys, &cmd)?;
    Ok(if active {
        format!("reloaded {unit}")
    } else {
        format!("{unit} is not running; nothing to reload")
    })
}
