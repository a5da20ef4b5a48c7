//! Public key blobs: decode the SSH wire format (RFC 4251 §5), check that
//! the type inside the blob is the type named on the line, and compute what
//! `ssh-keygen -l` prints (bits and the SHA256 fingerprint).
//!
//! A small decoder instead of the `sshkeys` crate: `sshkeys` takes the type
//! from inside the blob and does not report when it differs from the type
//! written before it, nor when bytes trail the key or an ECDSA curve name
//! contradicts the key type — exactly the mismatches a command must be
//! refused for. The format is a handful of length-prefixed strings, so the
//! whole decoder is shorter than the glue a crate would need.

use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, STANDARD_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha2::{Digest, Sha256};

/// sshd decodes with `b64_pton`, which does not insist on padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Key types accepted in commands (PROTOCOL §3).
pub const ACCEPTED_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
    "ssh-dss",
];

/// A decoded public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_type: String,
    /// The decoded blob: what fingerprints and key matching use.
    pub blob: Vec<u8>,
    /// As `ssh-keygen -l` prints them.
    pub bits: u32,
}

impl PublicKey {
    /// Decode `b64` as a key of `key_type`. The error says what is wrong.
    pub fn decode(key_type: &str, b64: &[u8]) -> Result<PublicKey, String> {
        if !ACCEPTED_TYPES.contains(&key_type) {
            return Err(format!("key type {key_type:?} is not accepted"));
        }
        let blob = LENIENT
            .decode(b64)
            .map_err(|e| format!("the key data is not valid base64: {e}"))?;
        let bits = parse_blob(key_type, &blob)?;
        Ok(PublicKey {
            key_type: key_type.to_owned(),
            blob,
            bits,
        })
    }

    /// `SHA256:` and unpadded base64 of SHA-256 over the blob, as `ssh-keygen -l`.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.blob)
    }

    /// The canonical (padded) base64 of the blob, for lines accessd writes.
    pub fn blob_base64(&self) -> String {
        STANDARD.encode(&self.blob)
    }
}

pub fn fingerprint_of(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// Is `s` a well-formed `SHA256:` fingerprint (43 base64 characters, 32 bytes)?
pub fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:")
        .and_then(|b| STANDARD_NO_PAD.decode(b).ok())
        .is_some_and(|d| d.len() == 32)
}

/// Reads SSH wire-format fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Result<&'a [u8], String> {
        if self.0.len() < 4 {
            return Err("the key data is truncated".into());
        }
        let n = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        let rest = &self.0[4..];
        if rest.len() < n {
            return Err("the key data is truncated".into());
        }
        let (s, tail) = rest.split_at(n);
        self.0 = tail;
        Ok(s)
    }

    /// An mpint's size in bits (`BN_num_bits`); negative values are refused.
    fn mpint_bits(&mut self) -> Result<u32, String> {
        let s = self.string()?;
        if s.first().is_some_and(|&b| b & 0x80 != 0) {
            return Err("the key data holds a negative number".into());
        }
        let s = match s.iter().position(|&b| b != 0) {
            Some(i) => &s[i..],
            None => return Ok(0),
        };
        Ok((s.len() as u32 - 1) * 8 + (8 - s[0].leading_zeros()))
    }

    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("the key data has trailing bytes".into())
        }
    }
}

/// Check the blob's structure for `key_type`; return the key size in bits.
fn parse_blob(key_type: &str, blob: &[u8]) -> Result<u32, String> {
    let mut r = Reader(blob);
    let inner = r.string()?;
    if inner != key_type.as_bytes() {
        return Err(format!(
            "the key data is a {:?} key, not {key_type:?}",
            String::from_utf8_lossy(inner)
        ));
    }
    let bits = match key_type {
        "ssh-ed25519" | "sk-ssh-ed25519@openssh.com" => {
            if r.string()?.len() != 32 {
                return Err("an Ed25519 public key is 32 bytes".into());
            }
            if key_type.starts_with("sk-") {
                r.string()?; // application, e.g. "ssh:"
            }
            256
        }
        "ecdsa-sha2-nistp256"
        | "ecdsa-sha2-nistp384"
        | "ecdsa-sha2-nistp521"
        | "sk-ecdsa-sha2-nistp256@openssh.com" => {
            let (curve, bits, coord) = match key_type {
                "ecdsa-sha2-nistp384" => ("nistp384", 384, 48),
                "ecdsa-sha2-nistp521" => ("nistp521", 521, 66),
                _ => ("nistp256", 256, 32),
            };
            if r.string()? != curve.as_bytes() {
                return Err(format!("the curve in the key data is not {curve}"));
            }
            let q = r.string()?;
            if q.len() != 1 + 2 * coord || q[0] != 4 {
                return Err("the ECDSA point is not an uncompressed point of its curve".into());
            }
            if key_type.starts_with("sk-") {
                r.string()?;
            }
            bits
        }
        "ssh-rsa" => {
            let _e = r.mpint_bits()?;
            r.mpint_bits()?
        }
        "ssh-dss" => {
            let p = r.mpint_bits()?;
            for _ in 0..3 {
                r.mpint_bits()?; // q, g, y
            }
            p
        }
        other => return Err(format!("key type {other:?} is not accepted")),
    };
    r.end()?;
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(parts: &[&[u8]]) -> String {
        let mut v = Vec::new();
        for p in parts {
            v.extend_from_slice(&(p.len() as u32).to_be_bytes());
            v.extend_from_slice(p);
        }
        STANDARD.encode(v)
    }

    #[test]
    fn ed25519_decodes_and_checks_inner_type() {
        let b = wire(&[b"ssh-ed25519", &[7u8; 32]]);
        let k = PublicKey::decode("ssh-ed25519", b.as_bytes()).unwrap();
        assert_eq!(k.bits, 256);
        assert!(is_fingerprint(&k.fingerprint()));
        let e = PublicKey::decode("ssh-rsa", b.as_bytes()).unwrap_err();
        assert!(e.contains("not \"ssh-rsa\""), "{e}");
        let trailing = wire(&[b"ssh-ed25519", &[7u8; 32], b""]);
        assert!(PublicKey::decode("ssh-ed25519", trailing.as_bytes()).is_err());
        let short = wire(&[b"ssh-ed25519", &[7u8; 31]]);
        assert!(PublicKey::decode("ssh-ed25519", short.as_bytes()).is_err());
        assert!(PublicKey::decode("ssh-ed25519", b"!!!").is_err());
    }

    #[test]
    fn ecdsa_curve_must_match_type() {
        let mut q = vec![4u8];
        q.extend_from_slice(&[1u8; 64]);
        let b = wire(&[b"ecdsa-sha2-nistp384", b"nistp256", &q]);
        assert!(PublicKey::decode("ecdsa-sha2-nistp384", b.as_bytes()).is_err());
    }

    #[test]
    fn rsa_bits_count_the_modulus() {
        let mut n = vec![0u8, 0x80];
        n.extend_from_slice(&[0u8; 255]);
        let b = wire(&[b"ssh-rsa", &[1, 0, 1], &n]);
        assert_eq!(
            PublicKey::decode("ssh-rsa", b.as_bytes()).unwrap().bits,
            2048
        );
    }
}
