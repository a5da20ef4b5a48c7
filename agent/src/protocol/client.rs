//! The control plane's half of the protocol: build and sign a command, seal
//! a password to an agent, verify a result. `accessctl`, the daemon's demo
//! and the tests use these instead of shelling out.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::Value;

use super::command::{Args, Password};
use super::dsse::{self, Envelope};
use super::result::ResultPayload;
use super::{format_time, AGENT_KEY_ID, COMMAND_TYPE, RESULT_TYPE};
use crate::error::{Error, IoContext, Result};
use crate::fsx::{read_private_file, Private, MAX_SECRET_BYTES};

/// A command before signing. `args` is the op's argument object.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub id: String,
    pub instance_id: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    pub op: String,
    pub args: Value,
}

impl CommandSpec {
    /// A command valid from now for `ttl`, with a random `c-<hex>` id.
    pub fn new(instance_id: &str, op: &str, args: Value, ttl: Duration) -> CommandSpec {
        let now = SystemTime::now();
        CommandSpec {
            id: random_id(),
            instance_id: instance_id.to_owned(),
            issued_at: now,
            expires_at: now + ttl,
            op: op.to_owned(),
            args,
        }
    }

    /// A command valid from now for `ttl`, with a random `c-<hex>` id, from
    /// typed arguments.
    pub fn from_args(instance_id: &str, args: &Args, ttl: Duration) -> CommandSpec {
        CommandSpec::new(instance_id, args.op(), args.to_value(), ttl)
    }

    /// The payload JSON (PROTOCOL §3).
    pub fn payload(&self) -> Vec<u8> {
        let mut obj = serde_json::json!({
            "v": 1,
            "id": self.id,
            "instance_id": self.instance_id,
            "issued_at": format_time(self.issued_at),
            "expires_at": format_time(self.expires_at),
            "op": self.op,
        });
        if !self.args.is_null() {
            obj["args"] = self.args.clone();
        }
        serde_json::to_vec(&obj).expect("serializing JSON values cannot fail")
    }

    /// The signed envelope, one JSON line.
    pub fn sign(&self, key: &SigningKey, keyid: &str) -> String {
        dsse::sign(COMMAND_TYPE, &self.payload(), key, keyid)
    }
}

/// `c-` and 16 random hex digits.
pub fn random_id() -> String {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("the OS random number generator failed");
    format!("c-{}", crate::hex::encode(&b))
}

/// The X25519 public key that secrets for this agent are sealed to: the
/// Edwards-to-Montgomery map of its Ed25519 key (libsodium
/// `crypto_sign_ed25519_pk_to_curve25519`).
pub fn seal_key(agent: &VerifyingKey) -> crypto_box::PublicKey {
    crypto_box::PublicKey::from_bytes(agent.to_montgomery().to_bytes())
}

/// A `{"sealed": "<base64>"}` password argument: libsodium
/// `crypto_box_seal` of the UTF-8 password to the agent's X25519 key.
pub fn seal_password(agent: &VerifyingKey, password: &[u8]) -> Password {
    let sealed = seal_key(agent)
        .seal(&mut rand_core::OsRng, password)
        .expect("sealing to a valid public key cannot fail");
    Password::sealed(&sealed)
}

/// [`seal_password`] as a JSON value, for arguments built by hand.
pub fn sealed_password(agent: &VerifyingKey, password: &[u8]) -> Value {
    seal_password(agent, password).to_value()
}

/// Verify a result envelope with the agent's public key and return its payload.
pub fn verify_result(agent: &VerifyingKey, envelope: &[u8]) -> Result<ResultPayload> {
    let trusted = BTreeMap::from([(AGENT_KEY_ID.to_owned(), *agent)]);
    let (_, body) = Envelope::parse(envelope)?.verify(RESULT_TYPE, &trusted)?;
    serde_json::from_slice(&body)
        .map_err(|e| Error::BadEnvelope(format!("result payload does not parse: {e}")))
}

/// Read a private key file (base64 of the 32-byte seed). It must be a
/// regular file (not a symlink), root's or the caller's, and not readable or
/// writable by group or others.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let bytes = read_private_file(path, "key file", Private::Secret, MAX_SECRET_BYTES)?;
    let key_error = |message: String| Error::Config {
        path: path.to_path_buf(),
        message,
    };
    let text =
        std::str::from_utf8(&bytes).map_err(|_| key_error("the key file is not text".into()))?;
    signing_key_from_b64(text).map_err(key_error)
}

/// Decode base64 of a 32-byte Ed25519 seed.
pub fn signing_key_from_b64(text: &str) -> std::result::Result<SigningKey, String> {
    use base64::Engine as _;
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "not base64 of a 32-byte Ed25519 seed".to_string())?,
    );
    let seed: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("decodes to {} bytes, an Ed25519 seed is 32", raw.len()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A public key given as base64 or as the path of a file holding it.
pub fn public_key_arg(arg: &str) -> Result<VerifyingKey> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).ctx(|| format!("reading public key file {arg}"))?
    } else {
        arg.to_owned()
    };
    super::parse_public_key(&text).map_err(|message| Error::Setting {
        setting: format!("public key {}", crate::names::truncate_for_message(arg)),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use std::os::unix::fs::PermissionsExt;

    fn key_file(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("{}\n", dsse::encode_b64(&[3; 32]))).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_signing_key_swapped_for_a_symlink_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = key_file(t.path(), "real.key", 0o600);
        assert!(load_signing_key(&real).is_ok());
        let link = t.path().join("cp.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = load_signing_key(&link).unwrap_err();
        assert_eq!(e.code(), Code::UnsafePath, "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_group_readable_signing_key_is_refused_without_quoting_it() {
        let t = tempfile::tempdir().unwrap();
        let p = key_file(t.path(), "cp.key", 0o640);
        let e = load_signing_key(&p).unwrap_err();
        assert_eq!(e.code(), Code::UnsafePath, "{e}");
        assert!(e.to_string().contains("0640"), "{e}");
        assert!(!e.to_string().contains(&dsse::encode_b64(&[3; 32])), "{e}");
    }

    #[test]
    fn a_sealed_password_opens_with_the_agents_converted_secret() {
        let agent = SigningKey::from_bytes(&[7; 32]);
        let v = sealed_password(&agent.verifying_key(), b"pw");
        let sealed = dsse::decode_b64(v["sealed"].as_str().unwrap()).unwrap();
        let sk = crypto_box::SecretKey::from_bytes(agent.to_scalar_bytes());
        assert_eq!(sk.public_key(), seal_key(&agent.verifying_key()));
        assert_eq!(sk.unseal(&sealed).unwrap(), b"pw");
    }
}
