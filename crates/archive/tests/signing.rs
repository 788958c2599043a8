//! Signed archives made by the engine: the signature entry follows the manifest and checks out
//! with the public key; a changed manifest, another key, a missing or stray signature fail; the
//! documented `openssl` and Python recipes accept the signature (openssl refuses a changed
//! manifest); and a chain of scheduled archives is checked, each kind of break reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::io::Cursor;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use archive::ZipWriter;
use archive::export_to_sink;
use archive::manifest::{PreviousRun, ScheduleLink};
use archive::signing::{PublicKey, SIGNATURE_ENTRY, Signer, SigningError};
use archive::verify::chain::{ChainArchive, check};
use archive::verify::{Report, read_entries, verify};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sha2::Digest;
use support::{ev, log_of, request};

fn new_signer(seed: u8) -> Arc<Signer> {
    Arc::new(Signer::from_key(SigningKey::from_bytes(&[seed; 32])))
}

fn events() -> Vec<Value> {
    (0..6)
        .map(|i| {
            ev(
                &format!("e{i}"),
                &format!("2026-02-0{}T1{i}:00:00Z", 1 + i % 2),
                "post.created",
                json!({"post_id": format!("p{i}"), "author_id": "ann", "text": "hello"}),
            )
        })
        .collect()
}

/// The archive of [`events`] for `[from, to)` of February, signed by `signer` when given.
async fn export(
    from: u32,
    to: u32,
    signer: Option<Arc<Signer>>,
    schedule: Option<ScheduleLink>,
) -> Vec<u8> {
    let reader = log_of(&events()).await;
    let mut request = request("");
    request.from = Some(format!("2026-02-{from:02}T00:00:00Z").parse().unwrap());
    request.to = format!("2026-02-{to:02}T00:00:00Z").parse().unwrap();
    request.signer = signer;
    request.schedule = schedule;
    export_to_sink(&request, &reader, Vec::new(), |_| {})
        .await
        .unwrap()
        .0
}

fn verified(bytes: &[u8]) -> Report {
    let report = verify(&mut Cursor::new(bytes)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    report
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `entries` written again with the crate's writer.
async fn write(entries: Vec<(String, Vec<u8>)>) -> Vec<u8> {
    let mut zip = ZipWriter::new(Vec::new(), 6, 2);
    for (name, body) in entries {
        zip.add(name, body.into()).await.unwrap();
    }
    zip.finish().await.unwrap().0
}

#[tokio::test]
async fn a_signed_archive_verifies_with_its_key_and_the_signature_follows_the_manifest() {
    let signer = new_signer(1);
    let bytes = export(1, 3, Some(signer.clone()), None).await;
    let report = verified(&bytes);
    assert_eq!(
        report.check_signature(&[signer.public_key()]),
        Ok(signer.key_id().to_owned())
    );
    let entries = read_entries(&bytes).unwrap();
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let manifest_at = names
        .iter()
        .position(|n| n.ends_with("/manifest.json"))
        .unwrap();
    assert!(
        names[manifest_at + 1].ends_with(&format!("/{SIGNATURE_ENTRY}")),
        "{names:?}"
    );
    assert_eq!(manifest_at + 2, names.len(), "the last two entries");
    let manifest: Value = serde_json::from_slice(&entries[manifest_at].1).unwrap();
    assert_eq!(
        manifest["signature"],
        json!({"algorithm": "Ed25519", "key_id": signer.key_id()})
    );
    assert!(
        !manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"].as_str().unwrap().ends_with(".sig")),
        "the manifest cannot list its own signature"
    );
    // The signature is over the documented line.
    let message = format!(
        "cce-export-manifest-v1 sha256:{}\n",
        sha256(&entries[manifest_at].1)
    );
    let signature: [u8; 64] = entries[manifest_at + 1].1.clone().try_into().unwrap();
    signer
        .verifying_key()
        .verify_strict(
            message.as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .unwrap();
    // The same request gives the same bytes (Ed25519 is deterministic).
    assert_eq!(bytes, export(1, 3, Some(signer), None).await);
}

#[tokio::test]
async fn eml_and_csv_archives_are_signed_and_verify_the_same_way() {
    let signer = new_signer(3);
    for format in [archive::DataFormat::Eml, archive::DataFormat::Csv] {
        let reader = log_of(&events()).await;
        let mut request = request("");
        request.from = Some("2026-02-01T00:00:00Z".parse().unwrap());
        request.to = "2026-02-03T00:00:00Z".parse().unwrap();
        request.format = format;
        request.signer = Some(signer.clone());
        let bytes = export_to_sink(&request, &reader, Vec::new(), |_| {})
            .await
            .unwrap()
            .0;
        let report = verified(&bytes);
        assert_eq!(
            report.check_signature(&[signer.public_key()]),
            Ok(signer.key_id().to_owned()),
            "{format:?}"
        );
        assert_eq!(report.head.format, format.manifest_format(), "{format:?}");
        // A changed byte in the manifest breaks the signature in every format.
        let mut entries = read_entries(&bytes).unwrap();
        let manifest = entries
            .iter_mut()
            .find(|(n, _)| n.ends_with("/manifest.json"))
            .unwrap();
        let body = &mut manifest.1;
        let at = body
            .windows(13)
            .position(|w| w == b"\"events_read\"")
            .unwrap();
        let digit = body[at..].iter().position(u8::is_ascii_digit).unwrap() + at;
        body[digit] = if body[digit] == b'9' { b'8' } else { b'9' };
        let tampered = write(entries).await;
        let report = verify(&mut Cursor::new(&tampered)).unwrap();
        assert_eq!(
            report.check_signature(&[signer.public_key()]),
            Err(SigningError::Mismatch {
                key_id: signer.key_id().into()
            }),
            "{format:?}"
        );
    }
}

#[tokio::test]
async fn a_changed_manifest_another_key_or_a_missing_signature_fail() {
    let signer = new_signer(1);
    let bytes = export(1, 3, Some(signer.clone()), None).await;
    let keys = [signer.public_key()];

    // One byte of the manifest changed (the files it lists untouched): the archive still
    // agrees with its manifest, but the signature does not.
    let mut entries = read_entries(&bytes).unwrap();
    let (_, manifest) = entries
        .iter_mut()
        .find(|(n, _)| n.ends_with("/manifest.json"))
        .unwrap();
    let at = manifest.windows(7).position(|w| w == b"\"posts\"").unwrap();
    let digit = manifest[at..].iter().position(u8::is_ascii_digit).unwrap() + at;
    manifest[digit] = if manifest[digit] == b'9' { b'8' } else { b'9' };
    let tampered = write(entries.clone()).await;
    let report = verify(&mut Cursor::new(&tampered)).unwrap();
    assert_eq!(
        report.check_signature(&keys),
        Err(SigningError::Mismatch {
            key_id: signer.key_id().into()
        })
    );

    // Another key than the one the archive names.
    let other = new_signer(2);
    let report = verified(&bytes);
    let error = report.check_signature(&[other.public_key()]).unwrap_err();
    assert!(
        matches!(&error, SigningError::UnknownKey { key_id, .. } if key_id == signer.key_id()),
        "{error}"
    );

    // The signature entry removed: verify itself names it, and a check fails.
    let entries = read_entries(&bytes).unwrap();
    let unsigned: Vec<_> = entries
        .iter()
        .filter(|(n, _)| !n.ends_with(SIGNATURE_ENTRY))
        .cloned()
        .collect();
    let stripped = write(unsigned).await;
    let report = verify(&mut Cursor::new(&stripped)).unwrap();
    assert_eq!(
        report.problems,
        [format!(
            "manifest.json names signing key {} but the archive has no {SIGNATURE_ENTRY}",
            signer.key_id()
        )]
    );
    assert!(matches!(
        report.check_signature(&keys),
        Err(SigningError::MissingSignature { .. })
    ));
}

#[tokio::test]
async fn an_unsigned_archive_passes_verify_but_fails_a_signature_check() {
    let bytes = export(1, 3, None, None).await;
    let report = verified(&bytes);
    assert!(report.signature.is_none() && report.head.signature.is_none());
    assert_eq!(
        report.check_signature(&[new_signer(1).public_key()]),
        Err(SigningError::Unsigned)
    );
    // A stray signature in an unsigned archive is named, not taken for an unknown file.
    let mut entries = read_entries(&bytes).unwrap();
    let root = entries[0].0.split_once('/').unwrap().0.to_owned();
    entries.push((format!("{root}/{SIGNATURE_ENTRY}"), vec![0; 64]));
    let report = verify(&mut Cursor::new(write(entries).await)).unwrap();
    assert_eq!(
        report.problems,
        [format!(
            "the archive has a {SIGNATURE_ENTRY} but its manifest.json names no signing key"
        )]
    );
}

/// Runs `script` with `sh` in `dir`; returns (success, stdout + stderr).
fn sh(dir: &Path, script: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The first code block of `docs/export-format.md`'s "Signature" section that opens with
/// ```` ```<lang> ```` and contains `needle`: the recipes are run as documented, word for word.
fn documented(lang: &str, needle: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/export-format.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let section = doc.split("\n## Signature\n").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    section
        .split(&format!("```{lang}\n"))
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains(needle))
        .unwrap_or_else(|| panic!("no {lang} block with {needle:?} in the Signature section"))
        .to_owned()
}

#[tokio::test]
async fn the_documented_openssl_recipe_checks_the_signature_of_a_key_openssl_made() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: no `openssl` on PATH to run the documented recipe with");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = sh(
        dir.path(),
        "openssl genpkey -algorithm ed25519 -out key.pem && \
         openssl pkey -in key.pem -pubout -out pub.pem",
    );
    assert!(ok, "{out}");
    let signer = Arc::new(
        Signer::from_pkcs8_pem(&std::fs::read_to_string(dir.path().join("key.pem")).unwrap())
            .unwrap(),
    );
    let public =
        PublicKey::from_pem(&std::fs::read_to_string(dir.path().join("pub.pem")).unwrap()).unwrap();
    assert_eq!(public.key_id(), signer.key_id());
    // The documented key id recipe gives the id the manifest names.
    let (ok, id) = sh(
        dir.path(),
        "openssl pkey -pubin -in pub.pem -outform DER | sha256sum | cut -c1-16",
    );
    assert!(ok, "{id}");
    assert_eq!(id.trim(), signer.key_id());

    let bytes = export(1, 3, Some(signer), None).await;
    for (name, body) in read_entries(&bytes).unwrap() {
        let file = name.rsplit_once('/').unwrap().1.to_owned();
        if file == "manifest.json" || file == SIGNATURE_ENTRY {
            std::fs::write(dir.path().join(file), body).unwrap();
        }
    }
    let recipe = documented("sh", "openssl pkeyutl -verify");
    let (ok, out) = sh(dir.path(), &recipe);
    assert!(
        ok && out.contains("Signature Verified Successfully"),
        "{out}"
    );

    // The Python recipe, on the whole archive, when `cryptography` is there to run it with.
    std::fs::write(dir.path().join("export.zip"), &bytes).unwrap();
    std::fs::write(
        dir.path().join("verify.py"),
        documented("python", "zipfile"),
    )
    .unwrap();
    if sh(dir.path(), "python3 -c 'import cryptography'").0 {
        let (ok, out) = sh(dir.path(), "python3 verify.py");
        assert!(
            ok && out.contains(&format!("signed with {id}", id = id.trim())),
            "{out}"
        );
    } else {
        eprintln!("skipped the Python recipe: no python3 with the `cryptography` package");
    }

    // One byte of the manifest changed: openssl refuses it.
    let path = dir.path().join("manifest.json");
    let mut manifest = std::fs::read(&path).unwrap();
    let last = manifest.len() - 3;
    manifest[last] = b' ';
    std::fs::write(&path, manifest).unwrap();
    let (ok, out) = sh(dir.path(), &recipe);
    assert!(
        !ok && out.contains("Signature Verification Failure"),
        "{out}"
    );
}

/// Run `run` of schedule `daily`, naming `previous` (its range end and archive).
fn link(run: u64, previous: Option<(u32, &[u8])>) -> ScheduleLink {
    ScheduleLink {
        schedule_id: "daily".into(),
        run,
        previous: previous.map(|(day, bytes)| PreviousRun {
            to: format!("2026-02-{day:02}T00:00:00Z").parse().unwrap(),
            archive_sha256: sha256(bytes),
        }),
    }
}

fn chained(name: &str, bytes: &[u8]) -> ChainArchive {
    ChainArchive {
        name: name.into(),
        sha256: sha256(bytes),
        head: verified(bytes).head,
    }
}

#[tokio::test]
async fn a_chain_of_scheduled_archives_is_checked_and_each_break_named() {
    let key = new_signer(1);
    let one = export(1, 2, Some(key.clone()), Some(link(1, None))).await;
    let two = export(2, 3, Some(key.clone()), Some(link(2, Some((2, &one))))).await;
    let three = export(3, 4, Some(key.clone()), Some(link(3, Some((3, &two))))).await;
    let report = check(&[
        chained("3.zip", &three),
        chained("1.zip", &one),
        chained("2.zip", &two),
    ]);
    assert!(report.is_whole(), "{report:#?}");
    assert_eq!(
        report.chains[0].summary(),
        "schedule daily (company acme): runs 1 to 3 [2026-02-01T00:00:00Z, \
         2026-02-04T00:00:00Z) covers every instant exactly once"
    );

    // A gap: run 3 starts a day after run 2 ends (and says so).
    let late = export(4, 5, Some(key.clone()), Some(link(3, Some((4, &two))))).await;
    // An overlap: run 3 starts before run 2 ends.
    let early = export(2, 4, Some(key.clone()), Some(link(3, Some((2, &two))))).await;
    // Run 3 names another archive than run 2's as its predecessor.
    let other = export(3, 4, Some(key.clone()), Some(link(3, Some((3, &one))))).await;
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "gap",
            &late,
            "gap: [2026-02-03T00:00:00Z, 2026-02-04T00:00:00Z) is in no archive",
        ),
        (
            "overlap",
            &early,
            "overlap: [2026-02-02T00:00:00Z, 2026-02-03T00:00:00Z) is in two archives",
        ),
        (
            "wrong previous hash",
            &other,
            "3.zip (run 3): names run 2's archive SHA-256",
        ),
    ];
    for (what, third, expected) in cases {
        let report = check(&[
            chained("1.zip", &one),
            chained("2.zip", &two),
            chained("3.zip", third),
        ]);
        let problems = &report.chains[0].problems;
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{what}: {problems:#?} lacks {expected:?}"
        );
        assert!(
            report.chains[0].summary().contains("does NOT cover"),
            "{what}"
        );
    }
    // Run 2 left out: the chain names the missing run.
    let report = check(&[chained("1.zip", &one), chained("3.zip", &three)]);
    assert_eq!(
        report.chains[0].problems,
        [
            "gap: run 2 is missing between 1.zip (run 1) and 3.zip (run 3), so \
          [2026-02-02T00:00:00Z, 2026-02-03T00:00:00Z) is in none of the archives given"
        ]
    );
}
