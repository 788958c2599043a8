//! The keys archives are signed with (`CCE_ARCHIVE_SIGNING_KEY_FILES`): loaded and checked at
//! start-up, the first one handed to every export, all of them published by ListSigningKeys.
//!
//! Rotation: put the new key's file first and keep the old ones after it. New archives are
//! signed with the new key; the old keys stay published (not `active`) so archives they signed
//! can still be checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use archive::signing::{ALGORITHM, PublicKey, Signer};
use proto::v1 as pb;

/// Why the configured keys cannot be used; the service does not start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the archive signing key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the archive signing key file {path} is readable by every user of the machine (mode \
         {mode:o}): restrict it with `chmod 600 {path}` (or `chmod o-r`)"
    )]
    WorldReadable { path: PathBuf, mode: u32 },
    #[error("the archive signing key file {path}: {source}")]
    Key {
        path: PathBuf,
        source: archive::signing::SigningError,
    },
    #[error(
        "the archive signing key files {first} and {second} hold the same key (id {key_id}): \
         list each key once"
    )]
    Duplicate {
        first: PathBuf,
        second: PathBuf,
        key_id: String,
    },
}

/// The configured keys: the first signs, all are published.
#[derive(Debug, Clone, Default)]
pub struct SigningKeys {
    /// The active key, if any is configured.
    signer: Option<Arc<Signer>>,
    /// Every key's public half, the active one first, in the configured order.
    published: Vec<PublicKey>,
}

impl SigningKeys {
    /// Reads and checks every file (empty paths, as an empty variable gives, are skipped).
    pub fn load(paths: &[PathBuf]) -> Result<Self, KeyError> {
        let mut keys = Self::default();
        let mut seen: Vec<(&Path, String)> = Vec::new();
        for path in paths.iter().filter(|p| !p.as_os_str().is_empty()) {
            let signer = read_key(path)?;
            if let Some((first, _)) = seen.iter().find(|(_, id)| id == signer.key_id()) {
                return Err(KeyError::Duplicate {
                    first: first.to_path_buf(),
                    second: path.clone(),
                    key_id: signer.key_id().to_owned(),
                });
            }
            seen.push((path, signer.key_id().to_owned()));
            keys.published.push(signer.public_key());
            keys.signer.get_or_insert_with(|| Arc::new(signer));
        }
        Ok(keys)
    }

    /// The key new archives are signed with; `None` when no key is configured.
    pub fn signer(&self) -> Option<Arc<Signer>> {
        self.signer.clone()
    }

    /// The public keys as ListSigningKeys answers: the active one first, then the retired.
    pub fn to_proto(&self) -> pb::ListSigningKeysResponse {
        let active = self.signer.as_ref().map(|s| s.key_id());
        pb::ListSigningKeysResponse {
            keys: self
                .published
                .iter()
                .map(|key| pb::SigningKey {
                    key_id: key.key_id().to_owned(),
                    algorithm: ALGORITHM.into(),
                    public_key_pem: key.to_pem(),
                    active: Some(key.key_id()) == active,
                })
                .collect(),
        }
    }
}

fn read_key(path: &Path) -> Result<Signer, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(read_error)?
            .permissions()
            .mode();
        // Like ssh with its keys: a private key every local user can read is not private.
        if mode & 0o004 != 0 {
            return Err(KeyError::WorldReadable {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
    }
    let pem = std::fs::read_to_string(path).map_err(read_error)?;
    Signer::from_pkcs8_pem(&pem).map_err(|source| KeyError::Key {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";
    const OTHER: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f
-----END PRIVATE KEY-----
";

    fn write(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn the_first_key_signs_and_every_key_is_published_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let new = write(dir.path(), "new.pem", OTHER, 0o600);
        let old = write(dir.path(), "old.pem", KEY, 0o640);
        let keys = SigningKeys::load(&[new, old]).unwrap();
        let published = keys.to_proto().keys;
        assert_eq!(published.len(), 2);
        assert_eq!(
            keys.signer().unwrap().key_id(),
            published[0].key_id,
            "the first file signs"
        );
        assert!(published[0].active && !published[1].active);
        for key in &published {
            assert_eq!(key.algorithm, "Ed25519");
            let public = PublicKey::from_pem(&key.public_key_pem).unwrap();
            assert_eq!(public.key_id(), key.key_id, "the id follows from the key");
        }
        assert_ne!(published[0].key_id, published[1].key_id);
    }

    #[test]
    fn no_key_configured_signs_nothing_and_publishes_nothing() {
        let keys = SigningKeys::load(&[PathBuf::new()]).unwrap();
        assert!(keys.signer().is_none());
        assert!(keys.to_proto().keys.is_empty());
    }

    #[test]
    fn unusable_key_files_stop_the_service_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "good.pem", KEY, 0o600);
        let cases = [
            (
                dir.path().join("absent.pem"),
                "cannot read the archive signing key file",
            ),
            (
                write(dir.path(), "open.pem", KEY, 0o644),
                "readable by every user of the machine (mode 644): restrict it with `chmod 600",
            ),
            (
                write(
                    dir.path(),
                    "public.pem",
                    "-----BEGIN PUBLIC KEY-----\n\
                     MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
                     -----END PUBLIC KEY-----\n",
                    0o600,
                ),
                "not an Ed25519 private key in PKCS#8 PEM",
            ),
            (
                write(dir.path(), "same.pem", KEY, 0o600),
                "hold the same key",
            ),
        ];
        for (path, expected) in cases {
            let error = SigningKeys::load(&[good.clone(), path.clone()]).unwrap_err();
            assert!(
                error.to_string().contains(expected),
                "{}: {error} lacks {expected:?}",
                path.display()
            );
        }
    }
}
