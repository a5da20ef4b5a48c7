//! Where log lines go, and the audit events every command leaves behind.
//!
//! Under systemd (`JOURNAL_STREAM` set) events go to journald natively, each
//! field its own journal field, so `journalctl COMMAND_ID=c-123` (without
//! `-u`: the daemon, `accessd apply` and the boot unit's `apply-staged` all
//! write it) finds a verified command's whole story and `MESSAGE_ID=` finds
//! every event of one kind. Elsewhere, human-readable lines on stderr.
//! Filtering follows `RUST_LOG` (default `info`).
//!
//! `COMMAND_ID` is written only once the command's signature has verified.
//! Before that — the `received` event, and the outcome of an envelope that
//! does not verify — the id the bytes claim is `CLAIMED_COMMAND_ID`: anyone
//! who can deliver bytes could otherwise write events under a real
//! command's id. A field with no value is left out, not written empty.
//!
//! What is logged is what [`Handled`] carries (ids, op, user name, codes and a
//! message the engine wrote for humans) — never an envelope, a payload or a
//! password: those fields simply do not exist here.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::protocol::result::{Handled, Status};

/// journald `MESSAGE_ID`s (128-bit, fixed forever: tools filter on them).
pub mod message_id {
    /// An envelope was picked up (inbox file read or MQTT message received).
    pub const RECEIVED: &str = "5c0a4f1e2b7d4c8e9a3f6b1d0e2c7a41";
    /// A command was applied (`status: ok`).
    pub const APPLIED: &str = "8e3b2d7c1a6f4e0b9c5d3a2f1e7b6c42";
    /// A command was refused before anything was attempted (`status: rejected`).
    pub const REJECTED: &str = "b71f4a9c3e2d4b6a8f0c1d5e7a3b9c43";
    /// A command was attempted and failed; nothing was changed (`status: failed`).
    pub const FAILED: &str = "d24c8e1b6a3f4d7c9b2e0a5f8c1d3e44";
    /// A key bound with `expires_at` reached its time and accessd removed
    /// its line (`COMMAND_ID` is the command that bound it).
    pub const KEY_EXPIRED: &str = "3f9d2a6c8b1e4f07a5c3d9e2b6f1a845";
    /// Due keys could not be removed now; retried later (sshd refuses them
    /// meanwhile through their `expiry-time`).
    pub const KEY_EXPIRY_FAILED: &str = "a6e1c3f8d2b94a5e8c7f0b3d1e9a2c46";
}

/// Install the global subscriber. `default_level` applies when `RUST_LOG` is
/// unset. Safe to call once; a second call is ignored.
pub fn init(default_level: &str) {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(layer) => {
                // No prefix: our fields are the journal fields (COMMAND_ID, not F_COMMAND_ID).
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("accessd".into());
                let _ = tracing_subscriber::registry()
                    .with(layer.with_filter(filter()))
                    .try_init();
                return;
            }
            Err(e) => eprintln!("accessd: journald unavailable ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only for a person at a terminal, never in files.
                .with_ansi(
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
                )
                .with_target(false)
                .with_filter(filter()),
        )
        .try_init();
}

/// Audit: an envelope arrived from `source` (an inbox file name, an MQTT
/// message, an `accessd apply` argument). `claimed_id` is what the envelope
/// claims before verification (see [`crate::protocol::command::claimed_id`]); the outcome
/// event carries the verified one as `COMMAND_ID`.
pub fn received(source: &str, claimed_id: Option<&str>, bytes: usize) {
    tracing::info!(
        message_id = message_id::RECEIVED,
        claimed_command_id = claimed_id,
        source,
        bytes,
        "received {source} ({bytes} bytes)"
    );
}

/// Audit: the outcome of one command. `COMMAND_ID`, `OP` and `TARGET_USER`
/// come from verified bytes only; an unverified envelope's claim is
/// `CLAIMED_COMMAND_ID`.
pub fn outcome(source: &str, h: &Handled) {
    let id = h.id.as_deref();
    let claimed = h.claimed_id.as_deref();
    let op = h.op.as_deref();
    let user = h.target_user.as_deref();
    let code = h.code.as_str();
    let msg = &h.message;
    let shown_id = id.unwrap_or("-");
    let shown_op = op.unwrap_or("-");
    match h.status {
        Status::Ok => tracing::info!(
            message_id = message_id::APPLIED,
            command_id = id,
            op,
            target_user = user,
            result_code = code,
            source,
            "applied {shown_op} {shown_id} from {source}: {msg}"
        ),
        Status::Rejected => tracing::warn!(
            message_id = message_id::REJECTED,
            command_id = id,
            claimed_command_id = claimed,
            op,
            target_user = user,
            result_code = code,
            source,
            "rejected {source} ({code}): {msg}"
        ),
        Status::Failed => tracing::error!(
            message_id = message_id::FAILED,
            command_id = id,
            op,
            target_user = user,
            result_code = code,
            source,
            "failed {shown_op} {shown_id} from {source} ({code}): {msg}"
        ),
    }
}

/// Audit: a key bound with `expires_at` was removed at its time.
/// `COMMAND_ID` is the (verified) command that bound it. `sessions`, for a
/// key whose command asked for `terminate_sessions`: what ending the live
/// sessions of the user's keys expired in this sweep did. The event lists
/// those of this key (`SESSIONS_ENDED`, the JSON list results carry) and
/// how many of them all are still open (`SESSIONS_OPEN`), or why none
/// could be ended (`SESSIONS_ERROR`).
pub fn key_expired(
    k: &crate::ssh::authkeys::ExpiredKey,
    sessions: Option<&crate::error::Result<crate::sessions::by_key::Outcome>>,
) {
    let user = k.user.as_str();
    let at =
        crate::protocol::format_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(k.at));
    let what = if k.lines_removed > 0 {
        "removed its line"
    } else {
        "its line was no longer there"
    };
    let (ended, open, error) = match sessions {
        None => (None, None, None),
        Some(Ok(o)) => {
            let mine: Vec<_> = o
                .ended
                .iter()
                .filter(|e| e.fingerprint.as_deref() == Some(k.fingerprint.as_str()))
                .collect();
            let list = serde_json::to_string(&mine).expect("a list of sessions serializes");
            (
                Some((mine.len(), list)),
                Some(o.open),
                o.unmatched_error(k.user.as_str()),
            )
        }
        Some(Err(e)) => (None, None, Some(e.to_string())),
    };
    let told = match (&ended, open, &error) {
        (Some((n, _)), Some(open), Some(e)) => {
            format!("; ended {n} of its session(s), {open} still open; {e}")
        }
        (Some((n, _)), Some(0), _) => format!("; ended {n} of its session(s)"),
        (Some((n, _)), Some(open), _) => {
            format!("; ended {n} of its session(s), {open} still open")
        }
        (_, _, Some(e)) => format!("; its sessions could not be ended: {e}"),
        _ => String::new(),
    };
    tracing::info!(
        message_id = message_id::KEY_EXPIRED,
        command_id = k.command_id.as_str(),
        target_user = user,
        fingerprint = k.fingerprint.as_str(),
        expired_at = at.as_str(),
        lines_removed = k.lines_removed,
        sessions_ended = ended.as_ref().map(|(_, l)| l.as_str()),
        sessions_open = open,
        sessions_error = error.as_deref(),
        "key {} of {user} expired at {at} (bound by {}): {what}{told}",
        k.fingerprint,
        k.command_id
    );
}

/// Audit: due keys of `user` (or, with `None`, the whole record) could not
/// be removed now.
pub fn key_expiry_failed(
    user: Option<&crate::names::UserName>,
    fingerprints: &[String],
    e: &crate::error::Error,
) {
    let user = user.map(|u| u.as_str());
    let fps = fingerprints.join(",");
    tracing::error!(
        message_id = message_id::KEY_EXPIRY_FAILED,
        target_user = user,
        fingerprint = (!fps.is_empty()).then_some(fps.as_str()),
        result_code = e.code().as_str(),
        "expired key(s) {fps} of {} not removed yet, will retry: {e}",
        user.unwrap_or("-")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_128_bit_hex_and_distinct() {
        let ids = [
            message_id::RECEIVED,
            message_id::APPLIED,
            message_id::REJECTED,
            message_id::FAILED,
            message_id::KEY_EXPIRED,
            message_id::KEY_EXPIRY_FAILED,
        ];
        for id in ids {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        let set: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
    }
}
