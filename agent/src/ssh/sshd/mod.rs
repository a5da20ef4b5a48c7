//! sshd_config: make the *effective* value of an option what a command asks,
//! with backup, `sshd -t` validation, rollback and a service restart.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sys::System;

/// `[sshd]` in accessd.toml (PROTOCOL §6).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshdOptions {
    /// Main config file, an absolute system path (resolved under the root).
    pub config: PathBuf,
    /// The sshd binary used for `sshd -t` and `sshd -T`.
    pub binary: PathBuf,
    /// Run instead of `systemctl try-reload-or-restart <detected unit>`.
    pub restart_command: Option<Vec<String>>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            config: PathBuf::from("/etc/ssh/sshd_config"),
            binary: PathBuf::from("/usr/sbin/sshd"),
            restart_command: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PermitRootLogin {
    Yes,
    No,
    ProhibitPassword,
}

/// The settings a `set_sshd` command asks for; `None` leaves one alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshdChange {
    pub pubkey_authentication: Option<bool>,
    pub password_authentication: Option<bool>,
    pub permit_root_login: Option<PermitRootLogin>,
}

/// Effective values (as `sshd -T` prints them: `yes`, `no`, `prohibit-password`...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Effective {
    pub pubkey_authentication: Option<String>,
    pub password_authentication: Option<String>,
    pub permit_root_login: Option<String>,
    /// `sshd -T` when sshd could be asked, `parsed` when read from the files.
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SshdOutcome {
    pub changed_files: Vec<PathBuf>,
    pub backups: Vec<PathBuf>,
    pub validated: bool,
    pub restarted: bool,
    pub message: String,
}

pub fn set_sshd(
    sys: &System,
    opts: &SshdOptions,
    change: &SshdChange,
    restart: bool,
) -> Result<SshdOutcome> {
    todo!("issue 3 {sys:?} {opts:?} {change:?} {restart}")
}

/// Restart the ssh service (detected unit, or the configured command).
/// Returns a short description of what was run.
pub fn restart_sshd(sys: &System, opts: &SshdOptions) -> Result<String> {
    todo!("issue 3 {sys:?} {opts:?}")
}

pub fn effective(sys: &System, opts: &SshdOptions) -> Result<Effective> {
    todo!("issue 3 {sys:?} {opts:?}")
}
