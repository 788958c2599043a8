//! Signing an archive's manifest (Ed25519), so that anyone holding the archive and the
//! service's public key can check offline that the service made it and nothing was changed.

use ed25519_dalek::{Signer as _, SigningKey};

/// A signing key and its published id.
pub struct Signer {
    key_id: String,
    key: SigningKey,
}

impl Signer {
    pub fn new(key_id: impl Into<String>, key: SigningKey) -> Self {
        Self {
            key_id: key_id.into(),
            key,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// Never prints the private key.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Signer {
    fn eq(&self, other: &Self) -> bool {
        self.key_id == other.key_id && self.verifying_key() == other.verifying_key()
    }
}

impl Eq for Signer {}
