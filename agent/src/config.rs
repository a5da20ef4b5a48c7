//! `accessd.toml` (PROTOCOL §6), parsed strictly: an unknown key is an error
//! that names the key and the file. Defaults are documented in
//! `config/accessd.toml`.
//!
//! Errors are startup errors: they carry the file's path and say what to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::protocol::{parse_public_key, valid_key_id};
use serde::Deserialize;

use crate::accounts::{AccountsConfig, PasswordPolicy};
use crate::error::{Error, Result};
use crate::fsx::Private;
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
    /// No result envelope is larger (PROTOCOL §4): inventory pages, and any
    /// other result is shrunk (engine `finish`).
    #[serde(default = "default_max_result")]
    pub max_result_bytes: usize,
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
fn default_max_result() -> usize {
    60 * 1024
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

/// What is read of accessd.toml at most: a configuration with a thousand
/// trusted keys is ~100 KiB.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Largest accepted `max_envelope_bytes`: commands are small; a bigger limit
/// only helps a flood.
const MAX_ENVELOPE_CAP: usize = 16 * 1024 * 1024;

/// `max_result_bytes` bounds: below the minimum not even one user with a
/// few keys fits an inventory page; above the maximum a result would no
/// longer fit the MQTT transport's 1 MiB packet limit.
pub const MIN_RESULT_BYTES: usize = 8 * 1024;
pub const MAX_RESULT_BYTES: usize = 1000 * 1024;

/// A config or key error: a startup problem, reported with the file it is in.
fn config_error(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        message: msg.to_string(),
    }
}

impl Config {
    /// Read, parse and validate `path` (permissions, trusted keys, values).
    pub fn load(path: &Path) -> Result<Config> {
        let text = crate::fsx::read_private_file(
            path,
            "configuration file",
            Private::Settings,
            MAX_CONFIG_BYTES,
        )?;
        let text = String::from_utf8(text.to_vec())
            .map_err(|_| config_error(path, "the file is not valid UTF-8"))?;
        Config::parse_str(&text, path)
    }

    /// Parse and validate configuration text; `origin` names it in errors.
    /// (No permission check: that is [`Config::load`]'s job.)
    pub fn parse_str(text: &str, origin: &Path) -> Result<Config> {
        // toml's message names the unknown key, its line and column, and the
        // keys that are allowed; prefixing the path names the file.
        let cfg: Config = toml::from_str(text).map_err(|e| config_error(origin, e))?;
        cfg.validate().map_err(|msg| config_error(origin, msg))?;
        Ok(cfg)
    }

    /// Check values that the types alone do not constrain.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let id = &self.instance_id;
        if id.is_empty()
            || id.len() > 128
            || id.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "instance_id {:?} must be 1 to 128 printable characters without spaces",
                crate::names::truncate_for_message(id)
            ));
        }
        for (what, p) in [
            ("state_dir", &self.state_dir),
            ("root", &self.root),
            ("sshd.config", &self.sshd.config),
            ("sshd.binary", &self.sshd.binary),
        ] {
            if !p.is_absolute() {
                return Err(format!(
                    "{what} = {:?} must be an absolute path",
                    p.display()
                ));
            }
        }
        if self.max_envelope_bytes < 1024 || self.max_envelope_bytes > MAX_ENVELOPE_CAP {
            return Err(format!(
                "max_envelope_bytes = {} must be between 1024 and {MAX_ENVELOPE_CAP}",
                self.max_envelope_bytes
            ));
        }
        if !(MIN_RESULT_BYTES..=MAX_RESULT_BYTES).contains(&self.max_result_bytes) {
            return Err(format!(
                "max_result_bytes = {} must be between {MIN_RESULT_BYTES} and {MAX_RESULT_BYTES}",
                self.max_result_bytes
            ));
        }
        if self.max_ttl_secs == 0 {
            return Err("max_ttl_secs must be at least 1".into());
        }
        if self.clock_skew_secs > 86_400 {
            return Err("clock_skew_secs must be at most 86400 (one day)".into());
        }
        // libxcrypt's minimum, and the bound every accepted hash keeps to
        // (a login attempt pays the rounds; docs/running.md "Limits").
        let max = crate::accounts::hash::MAX_SHA_CRYPT_ROUNDS;
        if !(1000..=max).contains(&self.passwords.rounds) {
            return Err(format!(
                "passwords.rounds = {} must be between 1000 and {max}",
                self.passwords.rounds
            ));
        }
        let pol = &self.passwords.policy;
        if pol.min_len == 0 || pol.min_len > pol.max_len || pol.min_classes > 4 {
            return Err(format!(
                "passwords: need 1 <= min_len ({}) <= max_len ({}) and min_classes ({}) <= 4",
                pol.min_len, pol.max_len, pol.min_classes
            ));
        }
        if let Some(cmd) = &self.sshd.restart_command {
            if cmd.is_empty() || !Path::new(&cmd[0]).is_absolute() {
                return Err(
                    "sshd.restart_command must be a list starting with an absolute program path"
                        .into(),
                );
            }
        }
        self.trusted_keys()?;
        Ok(())
    }

    /// The `[trust]` table decoded: key id → Ed25519 public key.
    /// An error names the offending key id.
    pub fn trusted_keys(&self) -> std::result::Result<BTreeMap<String, VerifyingKey>, String> {
        let mut out = BTreeMap::new();
        for (id, b64) in &self.trust {
            if !valid_key_id(id) {
                return Err(format!(
                    "[trust] key id {:?} is not valid: use 1 to 64 characters of A-Z a-z 0-9 . _ -",
                    crate::names::truncate_for_message(id)
                ));
            }
            let key = parse_public_key(b64).map_err(|e| format!("[trust] key {id:?}: {e}"))?;
            out.insert(id.clone(), key);
        }
        Ok(out)
    }

    /// The accounts layer's settings from `[passwords]`.
    pub fn accounts(&self) -> AccountsConfig {
        AccountsConfig {
            policy: self.passwords.policy.clone(),
            rounds: self.passwords.rounds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    const KEY: &str = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";

    fn parse(text: &str) -> Result<Config> {
        Config::parse_str(text, Path::new("/etc/accessd/accessd.toml"))
    }

    #[test]
    fn a_bad_config_file_error_names_the_file_and_line_and_is_not_an_io_error() {
        let e = parse("instance_id = \"i\"\nbogus = 1\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("configuration /etc/accessd/accessd.toml: "),
            "{msg}"
        );
        assert!(msg.contains("line 2"), "{msg}");
        // A config mistake is not an I/O failure: no synthesised io::Error under it.
        assert!(std::error::Error::source(&e).is_none(), "{e:?}");
        assert_eq!(e.code(), Code::IoError);
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = parse("instance_id = \"i-1\"\n").unwrap();
        assert_eq!(c.state_dir, Path::new("/var/lib/accessd"));
        assert_eq!(c.root, Path::new("/"));
        assert_eq!(c.max_envelope_bytes, 65536);
        assert_eq!(c.max_result_bytes, 61440);
        assert_eq!((c.clock_skew_secs, c.max_ttl_secs), (300, 3600));
        assert_eq!(c.passwords.rounds, 5000);
        assert_eq!(c.passwords.policy, PasswordPolicy::default());
        assert!(c.mqtt.is_none());
    }

    #[test]
    fn the_example_config_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/accessd.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::parse_str(&text, &path).unwrap();
        assert_eq!(c.instance_id, "i-0abc123");
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        for text in [
            "instance_id = \"i\"\nbogus = 1\n",
            "instance_id = \"i\"\n[sshd]\nbogus = 1\n",
            "instance_id = \"i\"\n[passwords]\nbogus = 1\n",
            "instance_id = \"i\"\n[outbox]\nbogus = 1\n",
            "instance_id = \"i\"\n[mqtt]\nurl = \"mqtt://x\"\nbogus = 1\n",
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("bogus"), "{e}");
            assert!(e.contains("/etc/accessd/accessd.toml"), "{e}");
        }
    }

    #[test]
    fn password_policy_keys_are_read_from_the_passwords_table() {
        let c = parse("instance_id = \"i\"\n[passwords]\nmin_len = 12\nrounds = 10000\n").unwrap();
        assert_eq!(c.passwords.policy.min_len, 12);
        assert_eq!(c.passwords.rounds, 10000);
        assert_eq!(c.accounts().rounds, 10000);
    }

    #[test]
    fn trusted_keys_are_validated_at_load() {
        let ok = parse(&format!(
            "instance_id = \"i\"\n[trust]\nconsole-2026 = \"{KEY}\"\n"
        ))
        .unwrap();
        assert_eq!(ok.trusted_keys().unwrap().len(), 1);
        for (id, val, needle) in [
            ("short", "AAAA", "short"),
            ("notb64", "!!!!", "notb64"),
            ("bad id", KEY, "bad id"),
            (
                "weak",
                "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "weak",
            ),
        ] {
            let e = parse(&format!(
                "instance_id = \"i\"\n[trust]\n\"{id}\" = \"{val}\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(needle), "{e}");
        }
        let long = "k".repeat(65);
        assert!(parse(&format!(
            "instance_id = \"i\"\n[trust]\n{long} = \"{KEY}\"\n"
        ))
        .is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for text in [
            "instance_id = \"\"\n",
            "instance_id = \"i\"\nstate_dir = \"relative\"\n",
            "instance_id = \"i\"\nmax_envelope_bytes = 10\n",
            "instance_id = \"i\"\nmax_result_bytes = 4096\n",
            "instance_id = \"i\"\nmax_result_bytes = 2000000\n",
            "instance_id = \"i\"\nmax_ttl_secs = 0\n",
            "instance_id = \"i\"\n[passwords]\nrounds = 10\n",
            "instance_id = \"i\"\n[sshd]\nrestart_command = []\n",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_configuration_file_swapped_for_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "instance_id = \"i\"\n").unwrap();
        assert!(Config::load(&real).is_ok());
        let link = dir.path().join("accessd.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = Config::load(&link).unwrap_err();
        assert_eq!(e.code(), Code::UnsafePath, "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn group_or_world_writable_config_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("accessd.toml");
        std::fs::write(&p, "instance_id = \"i\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Config::load(&p).is_ok());
        for mode in [0o664, 0o646] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Config::load(&p).unwrap_err().to_string();
            assert!(e.contains("writable by group or others"), "{e}");
        }
    }
}
