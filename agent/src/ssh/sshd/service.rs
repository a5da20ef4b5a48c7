//! Making the running sshd serve the configuration on disk, and checking
//! afterwards that it runs.
//!
//! The unit is `ssh.service` on Debian/Ubuntu and `sshd.service` on the RHEL
//! family, SUSE and Alibaba Cloud Linux; it is detected with `systemctl show`
//! rather than guessed from the distribution. What is run, and said:
//! - after `set_sshd`, a running unit that can reload is **reloaded**
//!   (`systemctl reload`: on Debian ExecReload runs `sshd -t`, then SIGHUP,
//!   on which sshd re-executes itself with the new files); one that cannot
//!   is **restarted**;
//! - `restart_sshd` **restarts** a running unit, after `sshd -t` passed
//!   (a restart with a configuration sshd refuses would leave it down);
//! - a stopped unit is **started**, for both;
//! - with Ubuntu's socket activation (22.10+), when `ssh.socket` is active
//!   and no sshd runs yet, nothing is run: the next connection starts sshd,
//!   which reads the files then.
//!
//! Afterwards the unit must be `active` (`systemctl show -p ActiveState`),
//! or the result is `restart_failed`. A configured `restart_command` is the
//! operator's; after it, the sshd named by sshd_config's `PidFile` must be
//! a live process called sshd.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fsx::Dir;
use crate::sys::{Cmd, System};

use super::config::Config;
use super::SshdOptions;

const CANDIDATES: &[&str] = &["ssh.service", "sshd.service"];

/// How long a unit may stay `activating`/`reloading`, and how long a
/// restart command's sshd may take to write its pid file after it exits.
const SETTLE: Duration = Duration::from_secs(10);
const PID_SETTLE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

/// Why sshd is being restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// After `set_sshd`: a reload is enough when sshd runs.
    Apply,
    /// `restart_sshd`: the operator asked for a restart.
    Restart,
}

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

/// The loaded ssh unit, whether it runs, and whether it can reload.
fn detect(sys: &System) -> Result<(String, bool, bool)> {
    for unit in CANDIDATES {
        let props = show(sys, unit, "Id,ActiveState,LoadState,CanReload")?;
        if prop(&props, "LoadState") == "loaded" {
            // An alias (sshd.service → ssh.service on Debian) reports the real Id.
            let id = match prop(&props, "Id") {
                "" => unit.to_string(),
                id => id.to_owned(),
            };
            return Ok((
                id,
                prop(&props, "ActiveState") == "active",
                prop(&props, "CanReload") == "yes",
            ));
        }
    }
    Err(Error::RestartFailed(format!(
        "none of {} is loaded; set [sshd] restart_command",
        CANDIDATES.join(", ")
    )))
}

/// Wait while the unit is between states; then it must be `active`.
fn check_active(sys: &System, unit: &str, done: &str) -> Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let props = show(sys, unit, "ActiveState,SubState")?;
        let state = prop(&props, "ActiveState");
        match state {
            "active" => return Ok(()),
            "activating" | "reloading" | "deactivating" if Instant::now() < deadline => {
                std::thread::sleep(POLL);
            }
            _ => {
                return Err(Error::RestartFailed(format!(
                "{done}, but {unit} is not running afterwards (ActiveState={state}, SubState={})",
                prop(&props, "SubState")
            )))
            }
        }
    }
}

/// Make sshd serve the files on disk (live system only); say what was done.
pub fn restart(sys: &System, opts: &SshdOptions, why: Why) -> Result<String> {
    restart_acted(sys, opts, why).map(|(what, _)| what)
}

/// [`restart`], and whether anything was run (a socket-activated sshd that
/// is not running yet needs nothing, and nothing runs off the live system).
pub fn restart_acted(sys: &System, opts: &SshdOptions, why: Why) -> Result<(String, bool)> {
    if !sys.is_live() {
        return Ok((
            format!(
                "no service restarted: root is {}, not the running system",
                sys.root.display()
            ),
            false,
        ));
    }
    if let Some(argv) = &opts.restart_command {
        return run_restart_command(sys, opts, argv).map(|w| (w, true));
    }
    let (unit, active, can_reload) = detect(sys)?;
    if !active {
        let socket = unit.replace(".service", ".socket");
        let sprops = show(sys, &socket, "ActiveState")?;
        if prop(&sprops, "ActiveState") == "active" {
            return Ok((
                format!(
                    "{unit} is not running and {socket} is active: the next connection starts sshd, which reads the configuration then"
                ),
                false,
            ));
        }
    }
    if active && why == Why::Restart {
        // A restart stops the listener before ExecStartPre's `sshd -t`:
        // with files sshd refuses, it would stay down.
        super::check_config(sys, opts).map_err(|e| {
            Error::RestartFailed(format!(
                "{unit} was not restarted, and keeps serving the configuration it read before: {e}"
            ))
        })?;
    }
    let (verb, done) = match (active, why, can_reload) {
        (true, Why::Apply, true) => ("reload", "reloaded"),
        (true, _, _) => ("restart", "restarted"),
        (false, _, _) => ("start", "started"),
    };
    run(sys, &Cmd::new("systemctl").args([verb, unit.as_str()]))?;
    let what = if active {
        format!("{done} {unit}")
    } else {
        format!("{done} {unit} (it was not running)")
    };
    check_active(sys, &unit, &what)?;
    Ok((format!("{what}; it is running"), true))
}

/// The operator's command, then: does an sshd run?
fn run_restart_command(sys: &System, opts: &SshdOptions, argv: &[String]) -> Result<String> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::RestartFailed("restart_command is empty".into()));
    };
    let cmd = Cmd::new(program).args(args);
    run(sys, &cmd)?;
    let ran = format!("ran {}", cmd.display());
    let Some(pid_file) = pid_file(sys, opts) else {
        return Ok(format!(
            "{ran}; whether sshd runs was not checked: sshd_config says PidFile none"
        ));
    };
    let deadline = Instant::now() + PID_SETTLE;
    loop {
        if let Some(pid) = running_sshd(sys, &pid_file) {
            return Ok(format!(
                "{ran}; sshd is running (pid {pid} in {})",
                pid_file.display()
            ));
        }
        if Instant::now() >= deadline {
            return Err(Error::RestartFailed(format!(
                "{ran}, but sshd is not running afterwards: {} names no live sshd",
                pid_file.display()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// sshd_config's `PidFile` (default /run/sshd.pid); `None` for `none`.
fn pid_file(sys: &System, opts: &SshdOptions) -> Option<PathBuf> {
    let configured = Dir::open(&sys.root)
        .and_then(|root| Config::load(&root, &opts.config))
        .ok()
        .and_then(|cfg| cfg.value(&["pidfile"]));
    match configured {
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some(v) if v.starts_with('/') => Some(PathBuf::from(v)),
        _ => Some(PathBuf::from("/run/sshd.pid")),
    }
}

/// The pid in `pid_file` (under the root), if it is a live process whose
/// name is sshd.
fn running_sshd(sys: &System, pid_file: &Path) -> Option<u32> {
    let (dir, name) = (pid_file.parent()?, pid_file.file_name()?.to_str()?);
    let root = Dir::open(&sys.root).ok()?;
    let data = root.try_open_dir(dir).ok()??.read(name).ok()??;
    let pid: u32 = String::from_utf8_lossy(&data.bytes).trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim_end() == "sshd").then_some(pid)
}
