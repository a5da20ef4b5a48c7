//! The wire protocol (PROTOCOL §2–4), free of side effects: DSSE envelopes,
//! typed commands, result payloads, and the client half (build, sign, seal,
//! verify) that `accessctl`, the demos and the tests share.

pub mod client;
pub mod command;
pub mod dsse;
pub mod result;

/// payloadType of a command envelope.
pub const COMMAND_TYPE: &str = "application/vnd.accessd.command.v1+json";
/// payloadType of a result envelope.
pub const RESULT_TYPE: &str = "application/vnd.accessd.result.v1+json";
/// keyid on result signatures.
pub const AGENT_KEY_ID: &str = "agent";

/// The wire's time form (PROTOCOL §2), owned by [`crate::time`] so that
/// modules below `protocol` can use it without importing it.
pub use crate::time::{format_time, parse_time};

/// The fuzz target's body (fuzz/fuzz_targets/envelope.rs): every parser an
/// untrusted byte string reaches, with no I/O. It must never panic.
///
/// `data` is tried as a whole envelope, as verified payload bytes (what the
/// command parser sees after a signature verified), and wrapped in a
/// correctly signed envelope, which must verify and hand back exactly
/// `data` — the bytes parsed are the bytes signed.
pub fn fuzz_envelope(data: &[u8]) {
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    static KEY: OnceLock<ed25519_dalek::SigningKey> = OnceLock::new();
    let key = KEY.get_or_init(|| ed25519_dalek::SigningKey::from_bytes(&[1; 32]));
    let trusted = BTreeMap::from([("k".to_string(), key.verifying_key())]);

    if let Ok(env) = dsse::Envelope::parse(data) {
        let _ = env.verify(COMMAND_TYPE, &trusted);
    }
    let _ = command::peek(data);
    let _ = command::parse(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_time(s);
        let _ = parse_public_key(s);
    }

    let signed = dsse::sign(COMMAND_TYPE, data, key, "k");
    let (_, body) = dsse::Envelope::parse(signed.as_bytes())
        .and_then(|e| e.verify(COMMAND_TYPE, &trusted))
        .expect("an envelope we signed verifies");
    assert_eq!(body, data, "verified bytes differ from signed bytes");
}

/// Key ids (PROTOCOL §1): 1..64 chars of `[A-Za-z0-9._-]`.
pub fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A public key as PROTOCOL §1 writes it: standard base64 (padded) of the 32
/// raw bytes. Surrounding whitespace (a trailing newline in a .pub file) is
/// ignored. Points that are not on the curve, or of small order, are refused.
pub fn parse_public_key(b64: &str) -> std::result::Result<ed25519_dalek::VerifyingKey, String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("not standard base64 ({e})"))?;
    let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
        format!(
            "decodes to {} bytes, an Ed25519 public key is 32",
            raw.len()
        )
    })?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "is not a valid Ed25519 public key".to_string())?;
    if key.is_weak() {
        return Err("is a small-order (weak) Ed25519 point".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stand-in for the fuzzer in plain `cargo test`: every
    /// truncation and many single-byte changes of a real envelope and payload.
    #[test]
    fn mutated_envelopes_never_panic() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let payload = br#"{"v":1,"id":"c-1","instance_id":"i","issued_at":"2026-11-29T18:00:00Z","expires_at":"2026-11-29T18:10:00Z","op":"set_password","args":{"user":"root","password":{"sealed":"AAAA"},"apply_at":"next_boot"}}"#;
        let env = dsse::sign(COMMAND_TYPE, payload, &key, "k").into_bytes();
        for input in [&env[..], &payload[..]] {
            // Strided to keep an unoptimized build quick; the fuzzer proper
            // goes much further.
            for n in (0..=input.len()).step_by(11) {
                fuzz_envelope(&input[..n]);
            }
            for i in (0..input.len()).step_by(13) {
                for b in [b'"', b'}', 0xff] {
                    let mut m = input.to_vec();
                    m[i] = b;
                    fuzz_envelope(&m);
                }
            }
        }
    }
}
