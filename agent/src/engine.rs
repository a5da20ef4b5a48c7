//! The command path: envelope bytes in, signed result envelope out
//! (PROTOCOL §2–4). Verification, decryption, time and replay checks,
//! dispatch to the apply layer, and the signed result.
//!
//! SKELETON: the interface the daemon and `accessd apply` use is fixed here;
//! the body is filled in by the command-path work (issue 4).

use crate::config::Config;
use crate::error::{Code, Result};
use crate::sys::System;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Rejected,
    Failed,
}

/// What happened to one envelope: the signed result to deliver, and the
/// fields the daemon logs (never a secret).
#[derive(Debug, Clone)]
pub struct Handled {
    /// The signed result envelope, serialized JSON (one line, no newline).
    pub envelope: Vec<u8>,
    pub id: Option<String>,
    pub op: Option<String>,
    pub target_user: Option<String>,
    pub status: Status,
    pub code: Code,
    pub message: String,
}

pub struct Engine {
    _todo: (),
}

impl Engine {
    /// Load (or create) the agent identity in `sys.state_dir`, open the replay
    /// store, and be ready to handle envelopes.
    pub fn new(cfg: Config, sys: System) -> Result<Engine> {
        todo!("issue 4 {cfg:?} {sys:?}")
    }

    /// Replace the configuration (SIGHUP): trusted keys, limits, sshd options.
    pub fn reconfigure(&mut self, cfg: Config) {
        todo!("issue 4 {cfg:?}")
    }

    /// Handle one envelope. Never panics on input; every outcome is a signed result.
    pub fn handle(&mut self, envelope: &[u8]) -> Handled {
        todo!("issue 4 {}", envelope.len())
    }

    /// Apply what `set_password` with `apply_at: next_boot` staged; each
    /// outcome is a signed result (to be written to the outbox).
    pub fn apply_staged(&mut self) -> Vec<Handled> {
        todo!("issue 4")
    }

    /// Base64 of the agent's Ed25519 public key.
    pub fn public_key(&self) -> String {
        todo!("issue 4")
    }
}
