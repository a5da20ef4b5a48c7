//! Result payloads (PROTOCOL §4).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::Status;
use crate::error::Code;

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
