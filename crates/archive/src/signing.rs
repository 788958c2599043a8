//! Signing an archive's manifest (Ed25519), so that anyone holding the archive and the
//! service's public key can check offline that the service made it and nothing was changed.
//!
//! Ed25519 signs a whole message in two passes, so a manifest that is streamed into the
//! archive (it can be large) is not signed itself: the signed message is the short line
//! [`message`] that commits to the manifest's SHA-256, which the ZIP writer computes anyway.
//! The manifest in turn lists the SHA-256 of every other file, so the signature covers the
//! whole archive once `verify` has checked those (`docs/export-format.md`, "Signature"):
//!
//! ```text
//! cce-export-manifest-v1 sha256:<64 lowercase hex digits of SHA-256(manifest.json)>\n
//! ```
//!
//! The signature is the entry [`SIGNATURE_ENTRY`] next to `manifest.json`: the raw 64 bytes,
//! as `openssl pkeyutl -verify -rawin -sigfile` reads them. A key's id is the first 16 hex
//! digits of the SHA-256 of its public key in DER (SubjectPublicKeyInfo), so a verifier derives
//! it from the public key it holds and nothing has to be named by hand.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::manifest::SignatureInfo;

/// The algorithm archives are signed with, as the manifest and `ListSigningKeys` name it.
pub const ALGORITHM: &str = "Ed25519";

/// The signature's entry, in the archive's top-level folder next to `manifest.json`. Not in
/// the manifest's `files` (a manifest cannot list the signature made over it).
pub const SIGNATURE_ENTRY: &str = "manifest.json.sig";

/// The signed message before the manifest's hex SHA-256 (and a final `\n`).
pub const MESSAGE_PREFIX: &str = "cce-export-manifest-v1 sha256:";

/// Why a key could not be read or a signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error(
        "not an Ed25519 private key in PKCS#8 PEM (\"-----BEGIN PRIVATE KEY-----\", as \
         `openssl genpkey -algorithm ed25519` writes): {0}"
    )]
    PrivateKey(String),
    #[error(
        "not an Ed25519 public key in PEM (\"-----BEGIN PUBLIC KEY-----\", as `openssl pkey \
         -pubout` or `cce-admin keys` writes): {0}"
    )]
    PublicKey(String),
    /// A key was given to check with, but the archive is not signed.
    #[error(
        "the archive is not signed: its manifest.json names no signing key and it has no \
         {SIGNATURE_ENTRY} (archives made before signing was configured are unsigned)"
    )]
    Unsigned,
    #[error("manifest.json names signing key {key_id} but the archive has no {SIGNATURE_ENTRY}")]
    MissingSignature { key_id: String },
    #[error("the archive has a {SIGNATURE_ENTRY} but its manifest.json names no signing key")]
    UnnamedKey,
    #[error("manifest.json names signature algorithm {0:?}; only {ALGORITHM} is known")]
    Algorithm(String),
    #[error("{SIGNATURE_ENTRY} is {0} bytes; an Ed25519 signature is 64")]
    Malformed(usize),
    #[error(
        "the archive is signed with key {key_id}, which is not among the public keys given \
         ({given}): fetch the service's keys with `cce-admin keys`"
    )]
    UnknownKey { key_id: String, given: String },
    #[error(
        "the signature does not match (key {key_id}): manifest.json was changed after it was \
         signed, or the signature is not this key's"
    )]
    Mismatch { key_id: String },
}

/// The message signed for a manifest whose SHA-256 is `manifest_sha256` (lowercase hex).
pub fn message(manifest_sha256: &str) -> Vec<u8> {
    format!("{MESSAGE_PREFIX}{}\n", manifest_sha256.to_ascii_lowercase()).into_bytes()
}

/// A public key's id: the first 16 hex digits of the SHA-256 of its DER SubjectPublicKeyInfo
/// (`openssl pkey -pubin -in pub.pem -outform DER | sha256sum | cut -c1-16`).
pub fn key_id(key: &VerifyingKey) -> String {
    // Encoding a 32-byte key into a fixed 44-byte structure cannot fail; the raw key is the
    // fallback only to keep this total.
    let der = key
        .to_public_key_der()
        .map_or_else(|_| key.as_bytes().to_vec(), |der| der.as_bytes().to_vec());
    hex::encode(Sha256::digest(der))[..16].to_owned()
}

/// A signing key and its published id.
pub struct Signer {
    key_id: String,
    key: SigningKey,
}

impl Signer {
    /// A signer with an id of the caller's choosing (tests); [`Signer::from_pkcs8_pem`] derives
    /// the id from the key, as verifiers do.
    pub fn new(key_id: impl Into<String>, key: SigningKey) -> Self {
        Self {
            key_id: key_id.into(),
            key,
        }
    }

    /// A signer from a PKCS#8 PEM private key, its id derived with [`key_id`].
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SigningError> {
        let key = SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| SigningError::PrivateKey(e.to_string()))?;
        Ok(Self::from_key(key))
    }

    /// A signer for `key`, its id derived with [`key_id`].
    pub fn from_key(key: SigningKey) -> Self {
        Self::new(key_id(&key.verifying_key()), key)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public half with its id, to publish.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id.clone(),
            key: self.verifying_key(),
        }
    }

    /// What the manifest says of the signature.
    pub fn info(&self) -> SignatureInfo {
        SignatureInfo {
            algorithm: ALGORITHM.into(),
            key_id: self.key_id.clone(),
        }
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The signature of the manifest whose SHA-256 is `manifest_sha256` (hex): the content of
    /// [`SIGNATURE_ENTRY`].
    pub fn sign_manifest(&self, manifest_sha256: &str) -> [u8; 64] {
        self.sign(&message(manifest_sha256))
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

/// A public key a signature is checked with, and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_id: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// A public key from SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), its id
    /// derived with [`key_id`].
    pub fn from_pem(pem: &str) -> Result<Self, SigningError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| SigningError::PublicKey(e.to_string()))?;
        Ok(Self {
            key_id: key_id(&key),
            key,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// SubjectPublicKeyInfo PEM, as `openssl pkey -pubout` writes it.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }
}

/// Checks a manifest's signature: `info` is the manifest's `signature`, `manifest_sha256` the
/// SHA-256 of `manifest.json` as read, `signature` the content of [`SIGNATURE_ENTRY`] if the
/// archive has one; the key is picked by id from `keys` (several after a rotation). Returns
/// the id of the key that verified it.
pub fn check(
    info: Option<&SignatureInfo>,
    manifest_sha256: &str,
    signature: Option<&[u8]>,
    keys: &[PublicKey],
) -> Result<String, SigningError> {
    let (info, signature) = match (info, signature) {
        (None, None) => return Err(SigningError::Unsigned),
        (None, Some(_)) => return Err(SigningError::UnnamedKey),
        (Some(info), None) => {
            return Err(SigningError::MissingSignature {
                key_id: info.key_id.clone(),
            });
        }
        (Some(info), Some(signature)) => (info, signature),
    };
    if info.algorithm != ALGORITHM {
        return Err(SigningError::Algorithm(info.algorithm.clone()));
    }
    let bytes: [u8; 64] = signature
        .try_into()
        .map_err(|_| SigningError::Malformed(signature.len()))?;
    let key = keys
        .iter()
        .find(|k| k.key_id == info.key_id)
        .ok_or_else(|| SigningError::UnknownKey {
            key_id: info.key_id.clone(),
            given: if keys.is_empty() {
                "none".into()
            } else {
                keys.iter()
                    .map(|k| k.key_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })?;
    // Strict: refuses the malleable and small-order forms plain `verify` lets through.
    key.key
        .verify_strict(&message(manifest_sha256), &Signature::from_bytes(&bytes))
        .map_err(|_| SigningError::Mismatch {
            key_id: info.key_id.clone(),
        })?;
    Ok(info.key_id.clone())
}

/// Adds the signature of the entry written last — `manifest.json`, which the caller has just
/// added — as the entry `name`, so it directly follows the manifest.
pub(crate) async fn add_signature<S: crate::zip::Sink>(
    zip: &mut crate::zip::ZipWriter<S>,
    signer: &Signer,
    name: String,
) -> Result<(), crate::ArchiveError> {
    let written = zip.take_written();
    let manifest = written
        .last()
        .filter(|entry| entry.name.ends_with("/manifest.json"))
        .ok_or_else(|| {
            crate::ArchiveError::Internal("the entry written last is not manifest.json".into())
        })?;
    let signature = signer.sign_manifest(&manifest.sha256);
    zip.add(name, bytes::Bytes::copy_from_slice(&signature))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key as `openssl genpkey -algorithm ed25519` writes it (RFC 8410's example key).
    const OPENSSL_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";
    /// Its public half, as `openssl pkey -pubout` writes it.
    const OPENSSL_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----
";

    fn signer(seed: u8) -> Signer {
        Signer::from_key(SigningKey::from_bytes(&[seed; 32]))
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn the_message_is_one_ascii_line_naming_the_manifests_hash() {
        let hash = sha(b"{}\n");
        assert_eq!(
            message(&hash),
            format!("cce-export-manifest-v1 sha256:{hash}\n").into_bytes()
        );
    }

    #[test]
    fn an_openssl_key_reads_and_its_public_half_round_trips_through_pem() {
        let signer = Signer::from_pkcs8_pem(OPENSSL_KEY).unwrap();
        let public = PublicKey::from_pem(OPENSSL_PUB).unwrap();
        assert_eq!(signer.public_key(), public);
        assert_eq!(public.to_pem(), OPENSSL_PUB);
        assert_eq!(signer.key_id().len(), 16);
        assert_eq!(
            signer.key_id(),
            &sha(&signer.verifying_key().to_public_key_der().unwrap().to_vec())[..16]
        );
    }

    #[test]
    fn keys_that_are_not_ed25519_pkcs8_are_refused_saying_what_is_expected() {
        // An EC P-256 key, a public key where a private one is wanted, and rubbish.
        let ec = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxmcQsS5oj9XsGtFd
xDLHE1P2VYUG/sfp0UF3nmq8m52hRANCAARs85RYWJAD0lgMn90L4woYbFV9XPgX
ltwqIvrfaF4OwJWUQRYbODay8tlymTaMtOwPV+9Vx4L80hX0rlXLOvGP
-----END PRIVATE KEY-----";
        for pem in [ec, OPENSSL_PUB, "rubbish"] {
            let error = Signer::from_pkcs8_pem(pem).unwrap_err();
            assert!(matches!(error, SigningError::PrivateKey(_)), "{error}");
            assert!(error.to_string().contains("openssl genpkey"), "{error}");
        }
        let error = PublicKey::from_pem(OPENSSL_KEY).unwrap_err();
        assert!(matches!(error, SigningError::PublicKey(_)), "{error}");
    }

    #[test]
    fn a_signature_round_trips_and_any_change_or_other_key_fails() {
        let signer = signer(1);
        let hash = sha(b"manifest");
        let signature = signer.sign_manifest(&hash);
        let keys = [signer.public_key()];
        assert_eq!(
            check(Some(&signer.info()), &hash, Some(&signature), &keys),
            Ok(signer.key_id().to_owned())
        );
        // One byte of the manifest changed: its hash differs.
        assert_eq!(
            check(
                Some(&signer.info()),
                &sha(b"manifesT"),
                Some(&signature),
                &keys
            ),
            Err(SigningError::Mismatch {
                key_id: signer.key_id().into()
            })
        );
        // One bit of the signature changed.
        let mut flipped = signature;
        flipped[10] ^= 1;
        assert!(matches!(
            check(Some(&signer.info()), &hash, Some(&flipped), &keys),
            Err(SigningError::Mismatch { .. })
        ));
        // Another key claiming the same id (a forged manifest naming the real key).
        let other = Signer::new(signer.key_id(), SigningKey::from_bytes(&[2; 32]));
        let forged = other.sign_manifest(&hash);
        assert!(matches!(
            check(Some(&signer.info()), &hash, Some(&forged), &keys),
            Err(SigningError::Mismatch { .. })
        ));
    }

    #[test]
    fn after_a_rotation_the_key_is_picked_by_id() {
        let (old, new) = (signer(1), signer(2));
        let keys = [new.public_key(), old.public_key()];
        let hash = sha(b"manifest");
        for signer in [&old, &new] {
            let signature = signer.sign_manifest(&hash);
            assert_eq!(
                check(Some(&signer.info()), &hash, Some(&signature), &keys),
                Ok(signer.key_id().to_owned())
            );
        }
        // Only the new key given: the old archive's key is named as missing.
        let signature = old.sign_manifest(&hash);
        let error = check(
            Some(&old.info()),
            &hash,
            Some(&signature),
            &[new.public_key()],
        )
        .unwrap_err();
        assert_eq!(
            error,
            SigningError::UnknownKey {
                key_id: old.key_id().into(),
                given: new.key_id().into()
            }
        );
        assert!(error.to_string().contains("cce-admin keys"), "{error}");
    }

    #[test]
    fn unsigned_or_half_signed_archives_fail_saying_what_is_missing() {
        let signer = signer(1);
        let hash = sha(b"manifest");
        let keys = [signer.public_key()];
        let signature = signer.sign_manifest(&hash);
        assert_eq!(check(None, &hash, None, &keys), Err(SigningError::Unsigned));
        assert_eq!(
            check(None, &hash, Some(&signature), &keys),
            Err(SigningError::UnnamedKey)
        );
        assert_eq!(
            check(Some(&signer.info()), &hash, None, &keys),
            Err(SigningError::MissingSignature {
                key_id: signer.key_id().into()
            })
        );
        assert_eq!(
            check(Some(&signer.info()), &hash, Some(&signature[..63]), &keys),
            Err(SigningError::Malformed(63))
        );
        let mut info = signer.info();
        info.algorithm = "RSA".into();
        assert_eq!(
            check(Some(&info), &hash, Some(&signature), &keys),
            Err(SigningError::Algorithm("RSA".into()))
        );
    }
}
