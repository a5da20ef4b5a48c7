//! `accessd.toml` (PROTOCOL §6), parsed strictly: an unknown key is an error
//! that names the key and the file. Defaults are documented in
//! `config/accessd.toml`.
//!
//! SKELETON: the struct is fixed so that every part can rely on it; loading
//! and validation are filled in by the command-path work (issue 4).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::accounts::PasswordPolicy;
use crate::error::Result;
use crate::ssh::sshd::SshdOptions;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Commands must name this instance (PROTOCOL §3).
    pub instance_id: String,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Envelopes larger than this are rejected unread (`bad_envelope`).
    #[serde(default = "default_max_envelope")]
    pub max_envelope_bytes: usize,
    /// Tolerated clock difference with the control plane, in seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Longest accepted `expires_at - issued_at`, in seconds.
    #[serde(default = "default_max_ttl")]
    pub max_ttl_secs: u64,
    /// Key id → base64 Ed25519 public key. Raw strings here; validated at load.
    #[serde(default)]
    pub trust: BTreeMap<String, String>,
    #[serde(default)]
    pub sshd: SshdOptions,
    #[serde(default)]
    pub passwords: PasswordsConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordsConfig {
    #[serde(flatten)]
    pub policy: PasswordPolicy,
    pub rounds: u32,
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        PasswordsConfig {
            policy: PasswordPolicy::default(),
            rounds: 5000,
        }
    }
}

/// Pruning of answered results in `<state_dir>/outbox`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Results older than this many seconds are deleted.
    pub max_age_secs: u64,
    /// At most this many results are kept (oldest deleted first).
    pub max_files: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_age_secs: 7 * 86_400,
            max_files: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Defaults to the instance id (a stable id keeps the broker session).
    #[serde(default)]
    pub client_id: Option<String>,
    /// PEM CA bundle for `mqtts://` (default: none, which is an error for mqtts).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the broker password (mode 0600), never the password itself.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/accessd")
}
fn default_root() -> PathBuf {
    PathBuf::from("/")
}
fn default_max_envelope() -> usize {
    64 * 1024
}
fn default_skew() -> u64 {
    300
}
fn default_max_ttl() -> u64 {
    3600
}
fn default_topic_prefix() -> String {
    "accessd".into()
}
fn default_keep_alive() -> u64 {
    60
}

pub const DEFAULT_PATH: &str = "/etc/accessd/accessd.toml";

impl Config {
    /// Read, parse and validate `path` (permissions, trusted keys, values).
    pub fn load(path: &Path) -> Result<Config> {
        todo!("issue 4 {}", path.display())
    }
}
