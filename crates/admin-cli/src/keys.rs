//! `cce-admin keys`: the service's archive signing keys (ListSigningKeys) saved as PEM files,
//! for `cce-admin verify --public-key` or `openssl pkeyutl -verify` offline.

use std::path::Path;

use anyhow::Context;
use archive::signing::PublicKey;
use proto::v1 as pb;

use crate::{Client, explain};

/// Writes each published key to `<dir>/<key id>.pem`; prints one line per key: id, algorithm,
/// active or retired, path.
pub async fn fetch(client: &mut Client, dir: &Path) -> anyhow::Result<()> {
    let keys = client
        .inner
        .list_signing_keys(client.request(pb::ListSigningKeysRequest {}))
        .await
        .map_err(explain)?
        .into_inner()
        .keys;
    if keys.is_empty() {
        eprintln!("the service signs no archives: it has no signing key configured");
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for key in keys {
        // The id is derived from the key: a key whose id does not match is not written.
        let public = PublicKey::from_pem(&key.public_key_pem)
            .with_context(|| format!("the service's key {}", key.key_id))?;
        anyhow::ensure!(
            public.key_id() == key.key_id,
            "the service names key {} but its public key has id {}: not saved",
            key.key_id,
            public.key_id()
        );
        // Ids are hex digits, so the name is safe; checked anyway, it names a file.
        anyhow::ensure!(
            key.key_id.chars().all(|c| c.is_ascii_alphanumeric()),
            "key id {:?} is not a plain name",
            key.key_id
        );
        let path = dir.join(format!("{}.pem", key.key_id));
        std::fs::write(&path, public.to_pem())
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "{}\t{}\t{}\t{}",
            key.key_id,
            key.algorithm,
            if key.active { "active" } else { "retired" },
            path.display()
        );
    }
    Ok(())
}
