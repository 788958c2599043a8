//! Shared harness for the integration tests: the local stack's endpoints and unique names.
//!
//! The stack is started by `deploy/local/up.sh`, which writes its endpoints to an env file; the
//! test command (`deploy/local/test.sh`) points `CCE_STACK_ENV` at it. Tests fail, rather than
//! skip, when it is missing: a test suite that silently skips its real servers proves nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The running local stack, as its env file describes it.
#[derive(Debug, Clone)]
pub struct Stack {
    pub vars: BTreeMap<String, String>,
}

impl Stack {
    /// Reads the env file named by `CCE_STACK_ENV`, or panics with what to do.
    pub fn from_env() -> Self {
        let path = std::env::var_os("CCE_STACK_ENV").map(PathBuf::from).unwrap_or_else(|| {
            panic!(
                "CCE_STACK_ENV is not set: run the integration tests with `bash deploy/local/test.sh`, \
                 which starts the broker and the object store and points CCE_STACK_ENV at their env file"
            )
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read the stack env file {}: {e}", path.display()));
        Self {
            vars: parse_env_file(&text),
        }
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("the stack env file has no {name}"))
    }

    pub fn kafka_brokers(&self) -> &str {
        self.var("CCE_KAFKA_BROKERS")
    }

    /// The S3 settings, as the services would read them from the environment.
    pub fn s3_config(&self) -> storage::S3Config {
        storage::S3Config {
            endpoint: Some(self.var("CCE_S3_ENDPOINT").to_owned()),
            region: self.var("CCE_S3_REGION").to_owned(),
            bucket: self.var("CCE_S3_BUCKET").to_owned(),
            force_path_style: true,
            access_key_id: Some(self.var("AWS_ACCESS_KEY_ID").to_owned()),
            secret_access_key: Some(self.var("AWS_SECRET_ACCESS_KEY").to_owned()),
            timeout_secs: 30,
        }
    }

    pub async fn s3_store(&self) -> storage::S3Store {
        storage::S3Store::connect(&self.s3_config()).await
    }
}

/// `KEY=VALUE` lines; blank lines and `#` comments ignored; no quoting.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// A name no other test (or earlier run) uses, e.g. for a topic or key prefix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
