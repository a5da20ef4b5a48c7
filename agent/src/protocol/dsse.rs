//! DSSE v1 envelopes (PROTOCOL §2; secure-systems-lab/dsse envelope.md and
//! protocol.md v1.0.2).
//!
//! Parsing and verification are separate steps so that the order the
//! protocol fixes is visible in the engine: size → parse → payloadType →
//! signature → (only then) the payload. [`Envelope::verify`] hands back the
//! exact bytes that were verified; nothing re-reads the envelope afterwards.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// More signatures than this is not a rotation, it is a denial of service
/// (each one may be tried against every trusted key).
pub const MAX_SIGNATURES: usize = 16;

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + payload_type.len() + body.len());
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

// DSSE: "verifiers MUST accept either" alphabet. Padding is accepted present
// or absent, since both alphabets are commonly written both ways.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Decode standard or URL-safe base64.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    STD_LENIENT
        .decode(s)
        .or_else(|_| URL_LENIENT.decode(s))
        .ok()
}

/// Standard base64 with padding (how the agent writes everything).
pub fn encode_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[derive(Deserialize)]
struct WireEnvelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<WireSignature>,
}

#[derive(Deserialize, Serialize)]
struct WireSignature {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyid: Option<String>,
    sig: String,
}

#[derive(Serialize)]
struct WireEnvelopeOut<'a> {
    #[serde(rename = "payloadType")]
    payload_type: &'a str,
    payload: String,
    signatures: Vec<WireSignature>,
}

/// One signature of an envelope, decoded. `sig` is `None` when it was not
/// base64 or not 64 bytes: such a signature verifies under no key.
#[derive(Debug, Clone)]
pub struct EnvelopeSignature {
    pub keyid: Option<String>,
    pub sig: Option<Signature>,
}

/// A parsed, not yet verified envelope.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub payload_type: String,
    /// The decoded payload. Untrusted until [`Envelope::verify`] returns it.
    payload: Vec<u8>,
    pub signatures: Vec<EnvelopeSignature>,
}

impl Envelope {
    /// Parse envelope JSON. Unknown fields are ignored (DSSE requires it);
    /// a missing field, bad base64 payload or no signature is `bad_envelope`.
    pub fn parse(bytes: &[u8]) -> Result<Envelope> {
        let wire: WireEnvelope = serde_json::from_slice(bytes)
            .map_err(|e| Error::BadEnvelope(format!("not a DSSE envelope: {e}")))?;
        let payload = decode_b64(&wire.payload)
            .ok_or_else(|| Error::BadEnvelope("payload is not base64".into()))?;
        if wire.signatures.is_empty() {
            return Err(Error::BadEnvelope("the envelope has no signature".into()));
        }
        if wire.signatures.len() > MAX_SIGNATURES {
            return Err(Error::BadEnvelope(format!(
                "{} signatures; at most {MAX_SIGNATURES} are accepted",
                wire.signatures.len()
            )));
        }
        let signatures = wire
            .signatures
            .into_iter()
            .map(|s| EnvelopeSignature {
                keyid: s.keyid.filter(|k| !k.is_empty()),
                sig: decode_b64(&s.sig).and_then(|b| Signature::from_slice(&b).ok()),
            })
            .collect();
        Ok(Envelope {
            payload_type: wire.payload_type,
            payload,
            signatures,
        })
    }

    /// The payload before any signature is checked: for reading a claimed
    /// id into a log field (`command::claimed_id`), never for acting on.
    /// (The envelope layer does not read payloads itself: it sits below the
    /// command layer.)
    pub(super) fn unverified_payload(&self) -> &[u8] {
        &self.payload
    }

    /// Check that the payloadType is `expected_type` and that at least one
    /// signature verifies under a trusted key (its keyid selects the key; no
    /// keyid tries every key). Returns the key id that verified and the
    /// verified payload bytes.
    ///
    /// `unknown_key` when no signature names a trusted key (and none is
    /// anonymous); `bad_signature` when a trusted key was tried and failed.
    pub fn verify(
        self,
        expected_type: &str,
        trusted: &BTreeMap<String, VerifyingKey>,
    ) -> Result<(String, Vec<u8>)> {
        if self.payload_type != expected_type {
            return Err(Error::BadEnvelope(format!(
                "payloadType {:?} is not {expected_type:?}",
                crate::names::truncate_for_message(&self.payload_type)
            )));
        }
        let message = pae(&self.payload_type, &self.payload);
        let mut tried_a_key = false;
        for s in &self.signatures {
            let candidates: Vec<(&String, &VerifyingKey)> = match &s.keyid {
                Some(id) => trusted.get_key_value(id).into_iter().collect(),
                None => trusted.iter().collect(),
            };
            tried_a_key |= !candidates.is_empty();
            let Some(sig) = &s.sig else { continue };
            for (id, key) in candidates {
                // verify_strict: no malleable or small-order signatures.
                if key.verify_strict(&message, sig).is_ok() {
                    return Ok((id.clone(), self.payload));
                }
            }
        }
        if tried_a_key {
            Err(Error::BadSignature(
                "no signature verifies under a trusted key".into(),
            ))
        } else {
            let ids: Vec<&str> = self
                .signatures
                .iter()
                .filter_map(|s| s.keyid.as_deref())
                // Untrusted text going into a result and a log line.
                .map(|k| {
                    if super::valid_key_id(k) {
                        k
                    } else {
                        "<malformed>"
                    }
                })
                .collect();
            Err(Error::UnknownKey(format!(
                "no trusted key has the id {}",
                ids.join(", ")
            )))
        }
    }
}

/// Sign `body` as a one-signature DSSE envelope, serialized as one JSON line.
pub fn sign(payload_type: &str, body: &[u8], key: &SigningKey, keyid: &str) -> String {
    let sig = key.sign(&pae(payload_type, body));
    let env = WireEnvelopeOut {
        payload_type,
        payload: encode_b64(body),
        signatures: vec![WireSignature {
            keyid: Some(keyid.to_owned()),
            sig: encode_b64(&sig.to_bytes()),
        }],
    };
    serde_json::to_string(&env).expect("serializing strings cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn trust(pairs: &[(&str, u8)]) -> BTreeMap<String, VerifyingKey> {
        pairs
            .iter()
            .map(|(id, n)| (id.to_string(), key(*n).verifying_key()))
            .collect()
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }

    /// docs/protocol.md's worked example verifies against the example
    /// config/accessd.toml, so neither can drift from the other.
    #[test]
    fn the_documented_worked_example_verifies() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let doc = std::fs::read_to_string(base.join("docs/protocol.md")).unwrap();
        let env = doc
            .split("<!-- worked-example-envelope -->")
            .nth(1)
            .and_then(|rest| rest.lines().find(|l| l.starts_with("{\"payloadType\"")))
            .expect("the worked example is in the doc");
        // The example trusts nothing; trust the doc's key the way the
        // example's comment tells an operator to.
        let example = std::fs::read_to_string(base.join("config/accessd.toml")).unwrap();
        let placeholder = "# console-2026 = \"<base64 public key printed by accessctl keygen>\"";
        assert!(
            example.contains(placeholder),
            "the example config shows how to trust a key"
        );
        let text = example.replace(
            placeholder,
            "console-2026 = \"A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\"",
        );
        let cfg =
            crate::config::Config::parse_str(&text, std::path::Path::new("config/accessd.toml"))
                .unwrap();
        let (id, body) = Envelope::parse(env.as_bytes())
            .unwrap()
            .verify(super::super::COMMAND_TYPE, &cfg.trusted_keys().unwrap())
            .unwrap();
        assert_eq!(id, "console-2026");
        assert_eq!(body.len(), 262);
        assert!(pae(super::super::COMMAND_TYPE, &body)
            .starts_with(b"DSSEv1 39 application/vnd.accessd.command.v1+json 262 {"));
    }

    #[test]
    fn signed_envelope_verifies_and_returns_the_payload() {
        let env = sign("t", b"{\"a\":1}", &key(1), "k1");
        let (id, body) = Envelope::parse(env.as_bytes())
            .unwrap()
            .verify("t", &trust(&[("k0", 0), ("k1", 1)]))
            .unwrap();
        assert_eq!((id.as_str(), body.as_slice()), ("k1", &b"{\"a\":1}"[..]));
    }

    #[test]
    fn url_safe_and_unpadded_base64_are_accepted() {
        let body = vec![0xfbu8; 10]; // encodes with '+' / '-'
        let sig = key(1).sign(&pae("t", &body));
        let env = serde_json::json!({
            "payloadType": "t",
            "payload": URL_LENIENT.encode(&body).trim_end_matches('='),
            "signatures": [{"sig": URL_LENIENT.encode(sig.to_bytes())}],
            "extra": "ignored",
        });
        let (id, got) = Envelope::parse(env.to_string().as_bytes())
            .unwrap()
            .verify("t", &trust(&[("k1", 1)]))
            .unwrap();
        assert_eq!((id.as_str(), got), ("k1", body));
    }

    #[test]
    fn failures_have_the_protocol_codes() {
        use crate::error::Code;
        let t = trust(&[("k1", 1)]);
        let check = |env: &str| Envelope::parse(env.as_bytes()).and_then(|e| e.verify("t", &t));
        let good = sign("t", b"x", &key(1), "k1");
        assert_eq!(
            check(&sign("t", b"x", &key(2), "k1")).unwrap_err().code(),
            Code::BadSignature
        );
        assert_eq!(
            check(&sign("t", b"x", &key(2), "kx")).unwrap_err().code(),
            Code::UnknownKey
        );
        assert_eq!(
            check(&sign("t", b"x", &key(2), "")).unwrap_err().code(),
            Code::BadSignature
        );
        assert_eq!(
            check(&sign("u", b"x", &key(1), "k1")).unwrap_err().code(),
            Code::BadEnvelope
        );
        assert_eq!(check("not json").unwrap_err().code(), Code::BadEnvelope);
        assert_eq!(
            check(&good.replace("\"payload\":\"eA==\"", "\"payload\":\"eQ==\""))
                .unwrap_err()
                .code(),
            Code::BadSignature
        );
        let no_sigs = r#"{"payloadType":"t","payload":"eA==","signatures":[]}"#;
        assert_eq!(check(no_sigs).unwrap_err().code(), Code::BadEnvelope);
        assert!(check(&good).is_ok());
    }
}
