//! `cce-admin verify`: archives checked offline against their manifests, their signatures
//! against the public keys given, and several scheduled archives as a chain. Needs nothing but
//! the files: no token, no service.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use archive::signing::PublicKey;
use archive::verify::chain::{self, ChainArchive};
use sha2::Digest;

/// Verifies every archive; with several, checks the chain they form. Fails if anything is
/// wrong, after reporting all of it (on stderr, one `problem:` line each).
pub fn run(files: &[PathBuf], key_files: &[PathBuf]) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for path in key_files {
        read_keys(path, &mut keys)?;
    }
    let mut failed = 0usize;
    let mut chained = Vec::new();
    for file in files {
        match verify_one(file, &keys) {
            Ok((archive, problems)) => {
                failed += problems;
                chained.push(archive);
            }
            Err(error) => {
                eprintln!("problem: {}: {error:#}", file.display());
                failed += 1;
            }
        }
    }
    if files.len() > 1 {
        failed += check_chain(&chained);
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} problem{} found (see above)",
        if failed == 1 { "" } else { "s" }
    );
    Ok(())
}

/// The key in `path`, or every `*.pem` key in it if it is a folder (as `cce-admin keys` fills).
fn read_keys(path: &Path, keys: &mut Vec<PublicKey>) -> anyhow::Result<()> {
    if !path.is_dir() {
        keys.push(read_key(path)?);
        return Ok(());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let file = entry?.path();
        if file.extension().is_some_and(|e| e == "pem") {
            files.push(file);
        }
    }
    anyhow::ensure!(
        !files.is_empty(),
        "no *.pem public keys in {} (fetch them with `cce-admin keys -o {}`)",
        path.display(),
        path.display()
    );
    files.sort();
    for file in files {
        keys.push(read_key(&file)?);
    }
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<PublicKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the public key {}", path.display()))?;
    PublicKey::from_pem(&pem).with_context(|| format!("reading the public key {}", path.display()))
}

/// Verifies one archive; returns what the chain check needs and how many problems it had.
fn verify_one(file: &Path, keys: &[PublicKey]) -> anyhow::Result<(ChainArchive, usize)> {
    let shown = file.display();
    let sha256 = sha256_of(file)?;
    let mut reader =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let report = archive::verify::verify(&mut reader).context("reading the archive")?;
    let mut problems = report.problems.len();
    for problem in &report.problems {
        eprintln!("problem: {shown}: {problem}");
    }
    let signed = if keys.is_empty() {
        if let Some(info) = &report.head.signature {
            eprintln!(
                "note: {shown} is signed with key {}; pass --public-key (from `cce-admin keys`) \
                 to check the signature",
                info.key_id
            );
        }
        String::new()
    } else {
        match report.check_signature(keys) {
            Ok(key_id) => format!(", signature of key {key_id} verified"),
            Err(error) => {
                eprintln!("problem: {shown}: {error}");
                problems += 1;
                String::new()
            }
        }
    };
    if problems == 0 {
        println!(
            "{shown}: OK, {} files ({} bytes) match manifest.json{signed}",
            report.files_checked, report.bytes_checked
        );
    } else {
        eprintln!("{shown}: {problems} problems");
    }
    let archive = ChainArchive {
        name: file.display().to_string(),
        sha256,
        head: report.head,
    };
    Ok((archive, problems))
}

/// Checks the chain of the archives that were read; returns how many problems it found.
fn check_chain(archives: &[ChainArchive]) -> usize {
    if archives.iter().all(|a| a.head.schedule.is_none()) {
        eprintln!("note: none of the archives is a scheduled run's: no chain to check");
        return 0;
    }
    let report = chain::check(archives);
    let mut problems = report.problems.len();
    for problem in &report.problems {
        eprintln!("problem: {problem}");
    }
    for chain in &report.chains {
        for problem in &chain.problems {
            eprintln!("problem: schedule {}: {problem}", chain.schedule_id);
        }
        problems += chain.problems.len();
        println!("{}", chain.summary());
    }
    problems
}

/// The SHA-256 of the whole file: what the next run's manifest names.
fn sha256_of(file: &Path) -> anyhow::Result<String> {
    let mut reader =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buffer)
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
