//! Signed archives end to end, against the real broker and object store: the export service
//! with two keys configured (a new one and a retired one) signs with the first, publishes both
//! by ListSigningKeys, and `cce-admin keys` + `cce-admin verify --public-key` check the
//! downloaded archive offline; the retired key alone is refused, and so is a key file every
//! user can read, at start-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use export::SystemClock;
use proto::v1 as pb;
use storage::ObjectStore;
use tests::exports::{
    ACTIVE_ARCHIVE_KEY, RETIRED_ARCHIVE_KEY, Replica, TokenSpec, admin_cli, authed, create_topics,
    key_file,
};
use tests::{Stack, binary, unique, write_generated_log};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_archive_is_checked_offline_with_the_published_key() {
    let stack = Stack::from_env();
    let prefix = format!("{}-", unique("sign"));
    let store: Arc<dyn ObjectStore> = Arc::new(stack.s3_store().await);
    write_generated_log(store, &prefix, 300).await;
    let state_topic = unique("state");
    create_topics(&stack, &state_topic).await;
    let keys_dir = tempfile::tempdir().unwrap();
    let active = key_file(keys_dir.path(), "active.pem", ACTIVE_ARCHIVE_KEY, 0o600);
    let retired = key_file(keys_dir.path(), "retired.pem", RETIRED_ARCHIVE_KEY, 0o640);
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
    let expected_active = archive::signing::Signer::from_pkcs8_pem(ACTIVE_ARCHIVE_KEY).unwrap();
    assert_eq!(active_id, expected_active.key_id());

    // An auditor's path: export, download, fetch the keys, verify offline.
    let dir = tempfile::tempdir().unwrap();
    let endpoint = replica.endpoint.clone();
    let run = |args: &[&str]| {
        tokio::task::block_in_place(|| admin_cli(&endpoint, Some(&token), args, dir.path()))
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
    let open = key_file(keys_dir.path(), "open.pem", ACTIVE_ARCHIVE_KEY, 0o644);
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

/// Run `run` of a daily schedule over January `[from, to)`, exported by the engine from `log`
/// and signed by `signer`, naming the previous run's end and archive.
async fn scheduled_run(
    log: &compliance_log::LogReader,
    company: &str,
    signer: &Arc<archive::signing::Signer>,
    (run, from, to): (u64, u32, u32),
    previous: Option<(u32, &[u8])>,
) -> Vec<u8> {
    use sha2::Digest;
    let day = |d: u32| format!("2026-01-{d:02}T00:00:00Z").parse().unwrap();
    let request = archive::ExportRequest {
        company_id: company.to_owned(),
        from: Some(day(from)),
        to: day(to),
        person_ids: Default::default(),
        conversation_ids: Default::default(),
        time_zone: String::new(),
        position: None,
        limits: archive::ExportLimits::default(),
        format: archive::DataFormat::Json,
        schedule: Some(archive::manifest::ScheduleLink {
            schedule_id: "daily".into(),
            run,
            previous: previous.map(|(d, bytes)| archive::manifest::PreviousRun {
                to: day(d),
                archive_sha256: hex::encode(sha2::Sha256::digest(bytes)),
            }),
        }),
        signer: Some(signer.clone()),
    };
    archive::export_to_sink(&request, log, Vec::new(), |_| {})
        .await
        .unwrap()
        .0
}

/// Runs `cce-admin verify` with `args` in `dir`; returns (success, stdout, stderr).
fn verify_cli(args: &[&str], dir: &Path) -> (bool, String, String) {
    let out = Command::new(binary("cce-admin"))
        .arg("verify")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cce_admin_verify_checks_a_chain_of_signed_scheduled_archives() {
    // Made by the engine in process from a log in memory: the chain check needs no service.
    let store: Arc<dyn ObjectStore> = Arc::new(storage::MemoryStore::new());
    let prefix = format!("{}-", unique("chain"));
    write_generated_log(store.clone(), &prefix, 400).await;
    let log = compliance_log::LogReader::new(store);
    let company = format!("{prefix}acme");
    let signer = Arc::new(archive::signing::Signer::from_pkcs8_pem(ACTIVE_ARCHIVE_KEY).unwrap());
    let one = scheduled_run(&log, &company, &signer, (1, 1, 2), None).await;
    let two = scheduled_run(&log, &company, &signer, (2, 2, 3), Some((2, &one))).await;
    let three = scheduled_run(&log, &company, &signer, (3, 3, 4), Some((3, &two))).await;
    // A run 3 that starts a day late, naming run 2 truthfully: a gap.
    let late = scheduled_run(&log, &company, &signer, (3, 4, 5), Some((4, &two))).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("1.zip", &one),
        ("2.zip", &two),
        ("3.zip", &three),
        ("late.zip", &late),
    ] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    std::fs::write(dir.path().join("pub.pem"), signer.public_key().to_pem()).unwrap();

    let (ok, out, err) = verify_cli(
        &["--public-key", "pub.pem", "3.zip", "1.zip", "2.zip"],
        dir.path(),
    );
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("signature of key"))
            .count(),
        3,
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "schedule daily (company {company}): runs 1 to 3 [2026-01-01T00:00:00Z, \
             2026-01-04T00:00:00Z) covers every instant exactly once"
        )),
        "{out}"
    );

    let (ok, out, err) = verify_cli(
        &["--public-key", "pub.pem", "1.zip", "2.zip", "late.zip"],
        dir.path(),
    );
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains(
            "problem: schedule daily: gap: [2026-01-03T00:00:00Z, 2026-01-04T00:00:00Z) is in \
             no archive"
        ),
        "{err}"
    );
    assert!(
        out.contains("does NOT cover every instant exactly once"),
        "{out}"
    );

    // Run 2's file replaced by another archive of the same range and run (one naming another
    // predecessor): run 3 names the real run 2's SHA-256, which the file given does not have.
    let forged_two = scheduled_run(&log, &company, &signer, (2, 2, 3), Some((2, &three))).await;
    std::fs::write(dir.path().join("2.zip"), &forged_two).unwrap();
    let (ok, _, err) = verify_cli(&["1.zip", "2.zip", "3.zip"], dir.path());
    assert!(
        !ok && err.contains("3.zip (run 3): names run 2's archive SHA-256"),
        "{err}"
    );
}
