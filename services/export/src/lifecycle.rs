//! The bucket's lifecycle rules, installed at start-up: archives expire 30 days after they are
//! made, and multipart uploads left incomplete (a worker that died mid-export) are aborted after
//! a day. Idempotent: rules of other owners are kept; ours are replaced only when they differ.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};
use storage::{ObjectStore, S3Store};

use crate::state::RETENTION_DAYS;

/// Where archives live: `exports/<company>/<job>/…`.
pub const EXPORTS_PREFIX: &str = "exports/";
pub const EXPIRE_RULE_ID: &str = "cce-exports-expire";
pub const ABORT_RULE_ID: &str = "cce-abort-incomplete-uploads";

fn our_rules() -> anyhow::Result<Vec<LifecycleRule>> {
    Ok(vec![
        LifecycleRule::builder()
            .id(EXPIRE_RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(
                LifecycleRuleFilter::builder()
                    .prefix(EXPORTS_PREFIX)
                    .build(),
            )
            .expiration(
                LifecycleExpiration::builder()
                    .days(i32::try_from(RETENTION_DAYS)?)
                    .build(),
            )
            .build()?,
        LifecycleRule::builder()
            .id(ABORT_RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(
                LifecycleRuleFilter::builder()
                    .prefix(EXPORTS_PREFIX)
                    .build(),
            )
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(1)
                    .build(),
            )
            .build()?,
    ])
}

fn prefix(rule: &LifecycleRule) -> Option<&str> {
    rule.filter().and_then(|f| f.prefix())
}

/// Whether `have` does what `want` does (stores normalise rules when they store them).
fn same(want: &LifecycleRule, have: &LifecycleRule) -> bool {
    want.id() == have.id()
        && have.status() == &ExpirationStatus::Enabled
        && prefix(want) == prefix(have)
        && want.expiration().and_then(|e| e.days()) == have.expiration().and_then(|e| e.days())
        && want
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation())
            == have
                .abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation())
}

/// The bucket's current rules (none when it has no configuration).
pub async fn current(store: &S3Store) -> anyhow::Result<Vec<LifecycleRule>> {
    match store
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(store.bucket())
        .send()
        .await
    {
        Ok(out) => Ok(out.rules.unwrap_or_default()),
        Err(error) if error.code() == Some("NoSuchLifecycleConfiguration") => Ok(Vec::new()),
        Err(error) => Err(anyhow::anyhow!(
            "reading the lifecycle rules of bucket {}: {}",
            store.bucket(),
            aws_sdk_s3::error::DisplayErrorContext(error)
        )),
    }
}

/// Installs our rules; returns whether anything changed.
pub async fn install(store: &S3Store) -> anyhow::Result<bool> {
    let existing = current(store).await?;
    let ours = our_rules()?;
    if ours
        .iter()
        .all(|want| existing.iter().any(|have| same(want, have)))
    {
        return Ok(false);
    }
    let mut rules: Vec<LifecycleRule> = existing
        .into_iter()
        .filter(|r| !ours.iter().any(|o| o.id() == r.id()))
        .collect();
    rules.extend(ours);
    store
        .client()
        .put_bucket_lifecycle_configuration()
        .bucket(store.bucket())
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()?,
        )
        .send()
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "installing the lifecycle rules of bucket {}: {}; the service needs \
                 s3:PutLifecycleConfiguration on it",
                store.bucket(),
                aws_sdk_s3::error::DisplayErrorContext(error)
            )
        })?;
    tracing::info!(bucket = store.bucket(), "lifecycle rules installed");
    Ok(true)
}

/// Deletes every object under a finished job's prefix (`exports/<company>/<job>/`) but `keep`,
/// the archive its result names (none for a failed job). Each attempt uploads to its own key,
/// so a worker that died between completing its upload and recording its result left a whole
/// archive nobody will ever name; the worker whose result is recorded removes it, instead of
/// it lying next to the real one for the 30 days of the expiry rule. Failures are logged and
/// left to that rule. Returns how many were deleted.
pub async fn delete_other_attempts(
    store: &dyn ObjectStore,
    company: &str,
    job_id: &str,
    keep: Option<&str>,
) -> usize {
    let prefix = format!("{EXPORTS_PREFIX}{company}/{job_id}/");
    let objects = match storage::list_all(store, &prefix).await {
        Ok(objects) => objects,
        Err(error) => {
            tracing::warn!(%prefix, %error, "listing a finished job's archives");
            return 0;
        }
    };
    let mut deleted = 0;
    for object in objects.iter().filter(|o| Some(o.key.as_str()) != keep) {
        match store.delete(&object.key).await {
            Ok(()) => {
                tracing::info!(key = %object.key, job = %job_id, "deleted an earlier attempt's unrecorded archive");
                deleted += 1;
            }
            Err(error) => {
                tracing::warn!(key = %object.key, %error, "deleting an earlier attempt's archive");
            }
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use storage::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn a_finished_job_keeps_only_its_recorded_archive() {
        let store = MemoryStore::new();
        let key = |job: &str, attempt: u32| format!("exports/acme/{job}/attempt-{attempt}/a.zip");
        for k in [key("j1", 1), key("j1", 2), key("j10", 1), key("j2", 1)] {
            store.put(&k, Bytes::from_static(b"zip")).await.unwrap();
        }
        let keep = key("j1", 2);
        assert_eq!(
            delete_other_attempts(&store, "acme", "j1", Some(&keep)).await,
            1
        );
        let left: Vec<String> = storage::list_all(&store, "exports/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        // j1's dead attempt is gone; other jobs (even j10, whose id j1 prefixes) are untouched.
        assert_eq!(left, [keep, key("j10", 1), key("j2", 1)]);
        // A failed job keeps nothing.
        assert_eq!(delete_other_attempts(&store, "acme", "j2", None).await, 1);
    }
}
