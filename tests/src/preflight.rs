//! Preflight: root, tools, namespaces. Fail loudly in CI, skip loudly
//! outside (through [`crate::gate`]).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::gate;
use crate::sandbox::Sandbox;
use crate::sshd::SSHD;

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

pub(crate) fn which(tool: &str) -> Option<PathBuf> {
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

#[cfg(test)]
mod unit {
    use crate::gate;

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
}
