//! Result payloads (PROTOCOL §4).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Code;

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
    /// The command's id, once its signature has verified (`COMMAND_ID`).
    pub id: Option<String>,
    /// The id an envelope claims when it was not verified (bad signature,
    /// unknown key, malformed): for `CLAIMED_COMMAND_ID` only, never in the
    /// result.
    pub claimed_id: Option<String>,
    pub op: Option<String>,
    pub target_user: Option<String>,
    pub status: Status,
    pub code: Code,
    pub message: String,
}

/// Exactly the fields of PROTOCOL §4, in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultPayload {
    pub v: u32,
    /// Null when the command's id could not be read (or was not verified).
    pub id: Option<String>,
    pub instance_id: String,
    /// Null when the op could not be read.
    pub op: Option<String>,
    pub status: Status,
    pub code: Code,
    pub message: String,
    /// Op-specific details (`{}` when there are none).
    pub data: Value,
    pub received_at: String,
    pub finished_at: String,
}

impl ResultPayload {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a result always serializes")
    }
}

/// The status a code implies: `ok`, `rejected` (never attempted), `failed`
/// (attempted and rolled back).
pub fn status_of(code: Code) -> Status {
    if code == Code::Ok {
        Status::Ok
    } else if code.is_rejection() {
        Status::Rejected
    } else {
        Status::Failed
    }
}
