//! The agent's identity: one Ed25519 key pair whose seed lives in
//! `<state_dir>/identity.key` (base64, mode 0600, directory 0700). It signs
//! results; its X25519 form opens sealed passwords.
//!
//! Creation is race-free: the key is written under a temporary name and
//! published with `link()`, which fails if the name exists, so two agents
//! starting at once end with one key (the loser reads the winner's).

use std::path::Path;

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use crate::error::{random_failed, Error, Result};
use crate::fsx::{Private, MAX_SECRET_BYTES};
use crate::state_dir::{private_file_meta, write_new, StateDir, IDENTITY_KEY};

fn state_error(path: &Path, message: String) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        message,
    }
}

pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// Load `identity.key` from `state`, creating it on first use.
    pub fn load_or_create(state: &StateDir) -> Result<Identity> {
        let state = state.dir();
        if let Some(id) = Self::load(state)? {
            return Ok(id);
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut())
            .map_err(|e| random_failed("generating the agent identity", e))?;
        let text = Zeroizing::new(format!(
            "{}\n",
            crate::protocol::dsse::encode_b64(seed.as_ref())
        ));
        write_new(state, IDENTITY_KEY, text.as_bytes(), &private_file_meta())?;
        // Whether we won the race or not, the file on disk is the identity.
        Self::load(state)?.ok_or_else(|| {
            Error::Internal(format!(
                "{} is gone right after it was written (who removes it?)",
                state.display(IDENTITY_KEY).display()
            ))
        })
    }

    fn load(state: &crate::fsx::Dir) -> Result<Option<Identity>> {
        let path = state.display(IDENTITY_KEY);
        let Some(bytes) = state.read_private(
            IDENTITY_KEY,
            "identity key",
            Private::Secret,
            MAX_SECRET_BYTES,
        )?
        else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| state_error(&path, "the identity key is not base64 text".into()))?;
        let key = crate::protocol::client::signing_key_from_b64(text)
            .map_err(|m| state_error(&path, m))?;
        Ok(Some(Identity { key }))
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Base64 of the Ed25519 public key.
    pub fn public_key_b64(&self) -> String {
        crate::protocol::dsse::encode_b64(self.key.verifying_key().as_bytes())
    }

    /// Open a libsodium sealed box addressed to this agent's X25519 key.
    /// The X25519 secret is derived as libsodium's
    /// `crypto_sign_ed25519_sk_to_curve25519` does: the first half of
    /// SHA-512(seed), clamped (crypto_box clamps when it multiplies).
    pub fn unseal(&self, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let sk = crypto_box::SecretKey::from_bytes(*Zeroizing::new(self.key.to_scalar_bytes()));
        sk.unseal(sealed).ok().map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn identity_is_created_once_0600_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(&tmp.path().join("state")).unwrap();
        let a = Identity::load_or_create(&state).unwrap();
        let b = Identity::load_or_create(&state).unwrap();
        assert_eq!(a.public_key_b64(), b.public_key_b64());
        let md = std::fs::metadata(tmp.path().join("state/identity.key")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        let md = std::fs::metadata(tmp.path().join("state")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o700);
        // No temporary files are left behind.
        assert_eq!(state.dir().list().unwrap(), vec![IDENTITY_KEY.to_string()]);
    }

    #[test]
    fn racing_starts_end_with_one_key() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let keys: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let d = StateDir::open(&path).unwrap();
                        Identity::load_or_create(&d).unwrap().public_key_b64()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    }

    #[test]
    fn a_readable_identity_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        Identity::load_or_create(&state).unwrap();
        let p = tmp.path().join(IDENTITY_KEY);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Identity::load_or_create(&state).err().unwrap();
        assert_eq!(e.code(), crate::error::Code::UnsafePath, "{e}");
        assert!(e.to_string().contains("0644"), "{e}");
    }

    #[test]
    fn an_identity_key_swapped_for_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        Identity::load_or_create(&state).unwrap();
        let p = tmp.path().join(IDENTITY_KEY);
        std::fs::rename(&p, tmp.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &p).unwrap();
        let e = Identity::load_or_create(&state).err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
