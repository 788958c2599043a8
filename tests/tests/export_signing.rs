//! Signed archives end to end, against the real broker and object store: the export service
//! with two keys configured (a new one and a retired one) signs with the first, publishes both
//! by ListSigningKeys, and `cce-admin keys` + `cce-admin verify --public-key` check the
//! downloaded archive offline; the retired key alone is refused, and so is a key file every
//! user can read, at start-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use export::SystemClock;
use proto::v1 as pb;
use storage::ObjectStore;
use tests::exports::{Replica, TokenSpec, authed, create_topics};
use tests::{Stack, binary, unique, write_generated_log};

/// RFC 8410's example key, as `openssl genpkey -algorithm ed25519` writes a key.
const RETIRED_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";
const ACTIVE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f
-----END PRIVATE KEY-----
";

fn key_file(dir: &Path, name: &str, pem: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Runs `cce-admin` with `args` in `dir`; returns (success, stdout, stderr).
fn admin_cli(endpoint: &str, token: &str, args: &[&str], dir: &Path) -> (bool, String, String) {
    let out = Command::new(binary("cce-admin"))
        .args(args)
        .current_dir(dir)
        .env("CCE_EXPORT_ENDPOINT", endpoint)
        .env("CCE_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_archive_is_checked_offline_with_the_published_key() {
    let stack = Stack::from_env();
    let prefix = format!("{}-", unique("sign"));
    let store: Arc<dyn ObjectStore> = Arc::new(stack.s3_store().await);
    write_generated_log(store, &prefix, 300).await;
    let state_topic = unique("state");
    create_topics(&stack, &state_topic).await;
    let keys_dir = tempfile::tempdir().unwrap();
    let active = key_file(keys_dir.path(), "active.pem", ACTIVE_KEY, 0o600);
    let retired = key_file(keys_dir.path(), "retired.pem", RETIRED_KEY, 0o640);
    let key_files = format!("{},{}", active.display(), retired.display());
    let replica = Replica::start(
        &stack,
        &state_topic,
        Arc::new(SystemClock),
        &["--archive-signing-key-files", &key_files],
    )
    .await;
    let company = format!("{prefix}acme");
    let token = TokenSpec::admin(&stack, &company, "ann").sign();
    let mut client = replica.client().await;
    client
        .enable_exports(authed(&token, pb::EnableExportsRequest {}))
        .await
        .unwrap();

    // Both keys published, the first configured one active.
    let published = client
        .list_signing_keys(authed(&token, pb::ListSigningKeysRequest {}))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published[0].active && !published[1].active, "{published:?}");
    let (active_id, retired_id) = (published[0].key_id.clone(), published[1].key_id.clone());
    let expected_active = archive::signing::Signer::from_pkcs8_pem(ACTIVE_KEY).unwrap();
    assert_eq!(active_id, expected_active.key_id());

    // An auditor's path: export, download, fetch the keys, verify offline.
    let dir = tempfile::tempdir().unwrap();
    let endpoint = replica.endpoint.clone();
    let run = |args: &[&str]| {
        tokio::task::block_in_place(|| admin_cli(&endpoint, &token, args, dir.path()))
    };
    let (ok, out, err) = run(&[
        "create",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-08",
        "--watch",
    ]);
    assert!(ok, "create --watch: {err}");
    let id = out.trim().to_owned();
    let (ok, out, err) = run(&["download", &id, "-o", "export.zip"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["keys", "-o", "keys"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "{active_id}\tEd25519\tactive\tkeys/{active_id}.pem\n\
             {retired_id}\tEd25519\tretired\tkeys/{retired_id}.pem\n"
        )
    );
    let active_pem = format!("keys/{active_id}.pem");
    let retired_pem = format!("keys/{retired_id}.pem");

    // The manifest names the active key, and the signature follows it.
    let bytes = std::fs::read(dir.path().join("export.zip")).unwrap();
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.head.signature.as_ref().unwrap().key_id, active_id);

    // Both keys given (as after a rotation), as files or as the folder `keys` filled: the
    // archive's key is picked by its id.
    let verified = format!("signature of key {active_id} verified");
    for keys in [
        vec!["--public-key", &retired_pem, "--public-key", &active_pem],
        vec!["--public-key", "keys"],
    ] {
        let (ok, out, err) = run(&[&["verify", "export.zip"], &keys[..]].concat());
        assert!(
            ok && out.contains("export.zip: OK, ") && out.contains(&verified),
            "{keys:?}: {out}{err}"
        );
    }
    // Only the retired key: refused, naming the key needed.
    let (ok, _, err) = run(&["verify", "export.zip", "--public-key", &retired_pem]);
    assert!(
        !ok && err.contains(&format!("signed with key {active_id}, which is not among")),
        "{err}"
    );
    // No key: verified against the manifest, with a note that the signature was not checked.
    let (ok, _, err) = run(&["verify", "export.zip"]);
    assert!(ok && err.contains("pass --public-key"), "{err}");
    replica.shutdown().await;

    // A key file every user can read stops the service before it connects to anything.
    let open = key_file(keys_dir.path(), "open.pem", ACTIVE_KEY, 0o644);
    let mut argv = vec!["cce-export".to_owned()];
    argv.extend(tests::exports::args(
        &stack,
        &state_topic,
        0,
        &["--archive-signing-key-files", open.to_str().unwrap()],
    ));
    let config = <export::Config as clap::Parser>::try_parse_from(argv).unwrap();
    let error = export::start_with_clock(
        config,
        Arc::new(SystemClock),
        telemetry::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("readable by every user"),
        "{error:#}"
    );
}
