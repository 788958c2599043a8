//! The key the admin portal's tokens are verified with, and the rules it must pass at start-up.
//!
//! Exactly one source is configured: a shared HMAC key (HS256, for development and for portals
//! that cannot sign otherwise), the portal's public key in a PEM file (EdDSA with Ed25519, or
//! RS256), or a JWKS document file whose keys a token picks by `kid`. The algorithm a token
//! must carry is fixed by the configured key's type, never taken from the token, so a token
//! cannot choose to be checked as HS256 with a public key's bytes as the secret.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The shortest HMAC key accepted, in bytes (HS256's output size, RFC 7518 §3.2).
pub const MIN_HMAC_KEY_BYTES: usize = 32;

/// The fewest distinct bytes an HMAC key may have: a hex string of 32 random bytes has about 16,
/// a placeholder such as 40 times `x` has one.
const MIN_DISTINCT_KEY_BYTES: usize = 8;

/// The shortest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Keys that have been published (in this repository, its compose file and docs, or as the
/// well-known examples of JWT tools) and so sign tokens for anyone. Refused even when long
/// enough; compared exactly and trimmed.
pub const PUBLISHED_KEYS: &[&str] = &[
    // docker-compose.yml's default until Step 8.
    "dev-only-change-me",
    // The unit tests' keys.
    "portal-signing-key-for-tests-only",
    "key-for-unit-tests",
    // jwt.io's example keys, old and new.
    "your-256-bit-secret",
    "a-string-secret-at-least-256-bits-long",
    "secret",
    "changeme",
    "change-me",
];

/// Why the configured token key was refused. The service does not start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no token key is configured: set exactly one of CCE_TOKEN_SIGNING_KEY (an HMAC key \
         shared with the admin portal, e.g. `openssl rand -hex 32`), CCE_TOKEN_PUBLIC_KEY_FILE \
         (the portal's Ed25519 or RSA public key, PEM) or CCE_TOKEN_JWKS_FILE (the portal's \
         JWKS document)"
    )]
    None,
    #[error("several token keys are configured ({0}): set exactly one")]
    Several(String),
    #[error(
        "CCE_TOKEN_SIGNING_KEY is {0} bytes; it must be at least {MIN_HMAC_KEY_BYTES} bytes of \
         random data: generate one with `openssl rand -hex 32` and give the same to the admin portal"
    )]
    TooShort(usize),
    #[error(
        "CCE_TOKEN_SIGNING_KEY is a published example key ({0:?}) with which anyone can sign \
         tokens: generate your own with `openssl rand -hex 32` and give the same to the admin portal"
    )]
    Published(String),
    #[error(
        "CCE_TOKEN_SIGNING_KEY has only {0} distinct characters and does not look random: \
         generate one with `openssl rand -hex 32` and give the same to the admin portal"
    )]
    NotRandom(usize),
    #[error("reading the token key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the token key file {path} holds a private key: configure the portal's public key only (`openssl pkey -in <key> -pubout`)"
    )]
    Private { path: PathBuf },
    #[error(
        "the token key file {path} is not an Ed25519 or RSA public key in PEM (`-----BEGIN PUBLIC KEY-----`)"
    )]
    NotPublicKey { path: PathBuf },
    #[error("the token key {what} is an RSA key of {bits} bits; at least 2048 are required")]
    WeakRsa { what: String, bits: usize },
    #[error("the JWKS document {path} is invalid: {reason}")]
    Jwks { path: PathBuf, reason: String },
}

/// A verifying key and the one algorithm tokens checked with it must use.
#[derive(Clone)]
pub struct PinnedKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

impl std::fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The configured keys.
#[derive(Debug, Clone)]
pub enum Keys {
    /// One key: the HMAC key or the PEM public key.
    Single(PinnedKey),
    /// A JWKS document's keys by `kid` (a document with one key may also have none).
    Set(Vec<(Option<String>, PinnedKey)>),
}

impl Keys {
    /// Loads and checks the one configured source.
    pub fn load(
        signing_key: Option<&str>,
        public_key_file: Option<&Path>,
        jwks_file: Option<&Path>,
    ) -> Result<Self, KeyError> {
        let configured: Vec<&str> = [
            signing_key.map(|_| "CCE_TOKEN_SIGNING_KEY"),
            public_key_file.map(|_| "CCE_TOKEN_PUBLIC_KEY_FILE"),
            jwks_file.map(|_| "CCE_TOKEN_JWKS_FILE"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if configured.len() > 1 {
            return Err(KeyError::Several(configured.join(", ")));
        }
        match (signing_key, public_key_file, jwks_file) {
            (Some(secret), None, None) => Ok(Self::Single(hmac(secret)?)),
            (None, Some(path), None) => Ok(Self::Single(public_pem(path)?)),
            (None, None, Some(path)) => jwks(path),
            _ => Err(KeyError::None),
        }
    }

    /// The key a token with this `kid` is checked with, or why there is none.
    pub fn select(&self, kid: Option<&str>) -> Result<&PinnedKey, String> {
        match self {
            Self::Single(key) => Ok(key),
            Self::Set(keys) => match kid {
                Some(kid) => keys
                    .iter()
                    .find(|(k, _)| k.as_deref() == Some(kid))
                    .map(|(_, key)| key)
                    .ok_or_else(|| format!("no configured key has kid {kid:?}")),
                None if keys.len() == 1 => Ok(&keys[0].1),
                None => Err(format!(
                    "it names no key (kid) and the JWKS document has {} keys",
                    keys.len()
                )),
            },
        }
    }
}

/// The HMAC key: the bytes of the configured string as given (not hex- or base64-decoded, as
/// the portal and `cce-admin token` use it), at least 32 of them, not a published one.
fn hmac(secret: &str) -> Result<PinnedKey, KeyError> {
    if let Some(published) = PUBLISHED_KEYS
        .iter()
        .find(|p| secret == **p || secret.trim() == **p)
    {
        return Err(KeyError::Published((*published).to_owned()));
    }
    let bytes = secret.as_bytes();
    if bytes.len() < MIN_HMAC_KEY_BYTES {
        return Err(KeyError::TooShort(bytes.len()));
    }
    let distinct = bytes
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if distinct < MIN_DISTINCT_KEY_BYTES {
        return Err(KeyError::NotRandom(distinct));
    }
    Ok(PinnedKey {
        key: DecodingKey::from_secret(bytes),
        algorithm: Algorithm::HS256,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

/// An Ed25519 (EdDSA) or RSA (RS256, at least 2048 bits) public key in PEM.
fn public_pem(path: &Path) -> Result<PinnedKey, KeyError> {
    let pem = read(path)?;
    if String::from_utf8_lossy(&pem).contains("PRIVATE KEY-----") {
        return Err(KeyError::Private {
            path: path.to_owned(),
        });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok(PinnedKey {
            key,
            algorithm: Algorithm::EdDSA,
        });
    }
    let key = DecodingKey::from_rsa_pem(&pem).map_err(|_| KeyError::NotPublicKey {
        path: path.to_owned(),
    })?;
    // The PKCS#1 DER (a SEQUENCE of the modulus and the exponent) is the modulus plus about 14
    // bytes, so under 256 bytes the modulus is surely under 2048 bits.
    let der_len = key.try_get_as_bytes().map_or(0, <[u8]>::len);
    if der_len < MIN_RSA_MODULUS_BYTES {
        return Err(KeyError::WeakRsa {
            what: path.display().to_string(),
            bits: der_len.saturating_sub(14) * 8,
        });
    }
    Ok(PinnedKey {
        key,
        algorithm: Algorithm::RS256,
    })
}

/// A JWKS document: signing keys that are Ed25519 (EdDSA) or RSA (RS256), each with a distinct
/// `kid` when there are several. Keys marked for encryption are left out.
fn jwks(path: &Path) -> Result<Keys, KeyError> {
    let invalid = |reason: String| KeyError::Jwks {
        path: path.to_owned(),
        reason,
    };
    let set: JwkSet =
        serde_json::from_slice(&read(path)?).map_err(|e| invalid(format!("not a JWKS: {e}")))?;
    let mut keys: Vec<(Option<String>, PinnedKey)> = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let name = kid.as_deref().unwrap_or("without kid");
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            tracing::info!(kid = name, "jwks key for encryption left out");
            continue;
        }
        let (algorithm, declared) = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
            }
            AlgorithmParameters::RSA(p) => {
                let modulus = base64_len(&p.n);
                if modulus < MIN_RSA_MODULUS_BYTES {
                    return Err(KeyError::WeakRsa {
                        what: format!("{name} in {}", path.display()),
                        bits: modulus * 8,
                    });
                }
                (Algorithm::RS256, KeyAlgorithm::RS256)
            }
            _ => {
                return Err(invalid(format!(
                    "key {name} is neither Ed25519 nor RSA (the only types accepted)"
                )));
            }
        };
        if let Some(alg) = jwk.common.key_algorithm
            && alg != declared
        {
            return Err(invalid(format!(
                "key {name} declares alg {alg:?}; this service checks its type's {declared:?} only"
            )));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(format!("key {name}: {e}")))?;
        keys.push((kid, PinnedKey { key, algorithm }));
    }
    if keys.is_empty() {
        return Err(invalid("it has no signing key".into()));
    }
    if keys.len() > 1 {
        let mut kids: Vec<Option<&str>> = keys.iter().map(|(k, _)| k.as_deref()).collect();
        if kids.contains(&None) {
            return Err(invalid(
                "it has several keys and one has no kid (a token could not name it)".into(),
            ));
        }
        kids.sort_unstable();
        if let Some(pair) = kids.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(format!("kid {:?} names two keys", pair[0])));
        }
    }
    Ok(Keys::Set(keys))
}

/// The decoded length of base64url text without padding.
fn base64_len(text: &str) -> usize {
    text.trim_end_matches('=').len() * 3 / 4
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn hmac_error(key: &str) -> String {
        Keys::load(Some(key), None, None).unwrap_err().to_string()
    }

    #[test]
    fn hmac_keys_must_be_long_random_and_unpublished() {
        // Every published key is refused, whatever its length, and the message says what to do.
        for key in PUBLISHED_KEYS {
            let error = hmac_error(key);
            assert!(error.contains("published"), "{key}: {error}");
            assert!(error.contains("openssl rand -hex 32"), "{error}");
        }
        let error = hmac_error("0123456789abcdef0123456789abcde");
        assert!(error.contains("is 31 bytes"), "{error}");
        assert!(error.contains("openssl rand -hex 32"), "{error}");
        let error = hmac_error(&"x".repeat(64));
        assert!(error.contains("1 distinct"), "{error}");
        // `openssl rand -hex 32`: 64 characters, used as they are (64 bytes of key).
        let good = "3f7a1c9e5b2d48e06a1f9c3b7e5d2a4c8b0e6f1a3d5c7b9e2f4a6c8d0b1e3f5a";
        let keys = Keys::load(Some(good), None, None).unwrap();
        let Keys::Single(key) = keys else {
            panic!("one key")
        };
        assert_eq!(key.algorithm, Algorithm::HS256);
    }

    #[test]
    fn exactly_one_key_source_is_configured() {
        let error = Keys::load(None, None, None).unwrap_err().to_string();
        assert!(
            error.contains("CCE_TOKEN_SIGNING_KEY") && error.contains("CCE_TOKEN_JWKS_FILE"),
            "{error}"
        );
        let pem = fixture("ed25519-public.pem");
        let jwks = fixture("jwks.json");
        let secret = "3f7a1c9e5b2d48e06a1f9c3b7e5d2a4c8b0e6f1a3d5c7b9e2f4a6c8d0b1e3f5a";
        for (s, p, j) in [
            (Some(secret), Some(pem.as_path()), None),
            (None, Some(pem.as_path()), Some(jwks.as_path())),
            (Some(secret), None, Some(jwks.as_path())),
        ] {
            let error = Keys::load(s, p, j).unwrap_err().to_string();
            assert!(error.contains("several token keys"), "{error}");
        }
    }

    #[test]
    fn pem_public_keys_pin_their_algorithm() {
        for (file, algorithm) in [
            ("ed25519-public.pem", Algorithm::EdDSA),
            ("rsa-public.pem", Algorithm::RS256),
        ] {
            let Keys::Single(key) = Keys::load(None, Some(&fixture(file)), None).unwrap() else {
                panic!("one key")
            };
            assert_eq!(key.algorithm, algorithm, "{file}");
        }
        let error = Keys::load(None, Some(&fixture("ed25519-private.pem")), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("private key"), "{error}");
        let error = Keys::load(None, Some(&fixture("jwks.json")), None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not an Ed25519 or RSA public key"),
            "{error}"
        );
        let error = Keys::load(None, Some(&fixture("missing.pem")), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid() {
        let keys = Keys::load(None, None, Some(&fixture("jwks.json"))).unwrap();
        assert_eq!(
            keys.select(Some("portal-ed-2026")).unwrap().algorithm,
            Algorithm::EdDSA
        );
        assert_eq!(
            keys.select(Some("portal-rsa-2026")).unwrap().algorithm,
            Algorithm::RS256
        );
        assert!(keys.select(Some("old")).unwrap_err().contains("\"old\""));
        assert!(keys.select(None).unwrap_err().contains("2 keys"));
    }

    #[test]
    fn bad_jwks_documents_are_refused() {
        let dir = std::env::temp_dir().join(format!("cce-jwks-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            (r#"{"keys":[]}"#, "no signing key"),
            (
                r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a"}]}"#,
                "neither Ed25519 nor RSA",
            ),
            (
                r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"RS256","x":"QQnVtek5GN_gE7oEyZoums2VPM0WV8BoqQUhI8E_R1A"}]}"#,
                "declares alg",
            ),
            (
                r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"QQnVtek5GN_gE7oEyZoums2VPM0WV8BoqQUhI8E_R1A"},{"kty":"OKP","crv":"Ed25519","kid":"a","x":"QQnVtek5GN_gE7oEyZoums2VPM0WV8BoqQUhI8E_R1A"}]}"#,
                "names two keys",
            ),
            (
                r#"{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}"#,
                "at least 2048",
            ),
            ("not json", "not a JWKS"),
        ];
        for (i, (document, want)) in cases.into_iter().enumerate() {
            let path = dir.join(format!("{i}.json"));
            std::fs::write(&path, document).unwrap();
            let error = Keys::load(None, None, Some(&path)).unwrap_err().to_string();
            assert!(error.contains(want), "{document}: {error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
