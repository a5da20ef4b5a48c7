//! Local accounts: /etc/passwd, /etc/shadow, /etc/group, /etc/gshadow,
//! /etc/subuid, /etc/subgid and home directories — changed exactly as
//! shadow-utils (`chpasswd -e`, `useradd -m`, `userdel -r`) would change them.
//!
//! SKELETON: signatures are fixed (the command path codes against them);
//! bodies are filled in by the accounts work (issue 2).

use std::path::PathBuf;

use serde::Serialize;

use crate::error::Result;
use crate::names::UserName;
use crate::secret::Secret;
use crate::sys::System;

/// Password policy for plaintext passwords (PROTOCOL §3 "Secrets").
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    pub min_len: usize,
    pub max_len: usize,
    /// How many of: upper case, lower case, digit, other.
    pub min_classes: u8,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_len: 8,
            max_len: 72,
            min_classes: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsConfig {
    pub policy: PasswordPolicy,
    /// SHA-512 crypt rounds (5000 = libxcrypt's default, written without `rounds=`).
    pub rounds: u32,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            policy: PasswordPolicy::default(),
            rounds: 5000,
        }
    }
}

/// A validated crypt(3) string: `$6$`, `$5$` or `$y$`, with no `:`,
/// whitespace or control characters.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptHash(String);

impl CryptHash {
    pub fn parse(s: &str) -> Result<CryptHash> {
        todo!("issue 2: validate {}", s.len())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CryptHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is not a plaintext, but it is still nothing to log.
        f.write_str("CryptHash(<redacted>)")
    }
}

/// What `set_password` / `create_user` are given.
#[derive(Debug)]
pub enum Password {
    /// Checked against the policy, then hashed with SHA-512 crypt.
    Plain(Secret),
    /// Stored as given.
    Crypt(CryptHash),
}

#[derive(Debug)]
pub struct NewUser {
    pub name: UserName,
    pub sudo: bool,
    /// Must be listed in /etc/shells; default from /etc/default/useradd.
    pub shell: Option<String>,
    pub password: Option<Password>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedUser {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
    /// How sudo was granted: `group:sudo`, `group:wheel` or `dropin:/etc/sudoers.d/NAME`.
    pub sudo: Option<String>,
}

/// One /etc/passwd entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordState {
    Set,
    Locked,
    Empty,
}

/// A local user as the inventory reports it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    #[serde(flatten)]
    pub record: UserRecord,
    pub sudo: bool,
    pub password: PasswordState,
}

/// Check `pw` against the policy and hash it (SHA-512 crypt, 16-char salt).
pub fn hash_password(cfg: &AccountsConfig, pw: &Secret) -> Result<CryptHash> {
    todo!("issue 2 {cfg:?} {pw:?}")
}

/// Replace the user's hash in /etc/shadow and set lastchg to today.
pub fn set_password(
    sys: &System,
    cfg: &AccountsConfig,
    user: &UserName,
    pw: &Password,
) -> Result<()> {
    todo!("issue 2 {sys:?} {cfg:?} {user} {pw:?}")
}

pub fn create_user(sys: &System, cfg: &AccountsConfig, spec: &NewUser) -> Result<CreatedUser> {
    todo!("issue 2 {sys:?} {cfg:?} {spec:?}")
}

pub fn delete_user(sys: &System, user: &UserName, remove_home: bool) -> Result<()> {
    todo!("issue 2 {sys:?} {user} {remove_home}")
}

/// The user's passwd entry (`user_not_found` if absent).
pub fn lookup(sys: &System, user: &UserName) -> Result<UserRecord> {
    todo!("issue 2 {sys:?} {user}")
}

/// Users with uid 0 or uid >= UID_MIN, in passwd order.
pub fn list_users(sys: &System) -> Result<Vec<UserSummary>> {
    todo!("issue 2 {sys:?}")
}
