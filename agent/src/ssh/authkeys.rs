//! `~/.ssh/authorized_keys`: parse as sshd(8) does, change only what a command
//! names, keep every other line byte for byte.

use serde::Serialize;

use crate::error::Result;
use crate::names::UserName;
use crate::sys::System;

/// One validated authorized_keys line from a command: optional options,
/// an accepted key type, a blob that decodes to that type, optional comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    _todo: (),
}

impl KeyLine {
    pub fn parse(line: &str) -> Result<KeyLine> {
        todo!("issue 3 {line}")
    }

    /// `SHA256:...` exactly as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        todo!("issue 3")
    }

    /// Warnings to pass on in the result (e.g. ssh-dss is refused by current OpenSSH).
    pub fn warnings(&self) -> Vec<String> {
        todo!("issue 3")
    }
}

/// What `remove_keys` matches: a key line or a `SHA256:` fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelector {
    Key(KeyLine),
    Fingerprint(String),
}

impl KeySelector {
    pub fn parse(s: &str) -> Result<KeySelector> {
        todo!("issue 3 {s}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    #[serde(rename = "type")]
    pub key_type: String,
    pub bits: u32,
    pub fingerprint: String,
    pub comment: Option<String>,
    pub options: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeysOutcome {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub warnings: Vec<String>,
}

pub fn add_keys(sys: &System, user: &UserName, keys: &[KeyLine]) -> Result<KeysOutcome> {
    todo!("issue 3 {sys:?} {user} {keys:?}")
}

pub fn remove_keys(sys: &System, user: &UserName, keys: &[KeySelector]) -> Result<KeysOutcome> {
    todo!("issue 3 {sys:?} {user} {keys:?}")
}

pub fn replace_keys(sys: &System, user: &UserName, keys: &[KeyLine]) -> Result<KeysOutcome> {
    todo!("issue 3 {sys:?} {user} {keys:?}")
}

pub fn list_keys(sys: &System, user: &UserName) -> Result<Vec<KeyInfo>> {
    todo!("issue 3 {sys:?} {user}")
}
