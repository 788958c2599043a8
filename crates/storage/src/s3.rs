//! [`ObjectStore`] over any S3-API store, through `aws-sdk-s3`.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as S3Part};
use bytes::Bytes;
use clap::ArgAction;

use crate::{CompletedPart, ErrorKind, ListPage, ObjectMeta, ObjectStore, Result, StorageError};

/// Where the object store is and how to reach it. Credentials come from the flags below when
/// given, else from the standard AWS chain (environment, profile, instance role).
#[derive(Debug, Clone, clap::Args)]
pub struct S3Config {
    /// S3 endpoint URL, e.g. `http://127.0.0.1:3900`. Unset: AWS's endpoint for the region.
    #[arg(long = "s3-endpoint", env = "CCE_S3_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Region of the bucket (garage's default is `garage`).
    #[arg(long = "s3-region", env = "CCE_S3_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Bucket holding the compliance logs, service state and export archives.
    #[arg(long = "s3-bucket", env = "CCE_S3_BUCKET")]
    pub bucket: String,
    /// Path-style addressing (`endpoint/bucket/key`), which MinIO and garage need.
    #[arg(long = "s3-force-path-style", env = "CCE_S3_FORCE_PATH_STYLE", default_value_t = true, action = ArgAction::Set)]
    pub force_path_style: bool,
    /// Access key id. Unset: the standard AWS credential chain.
    #[arg(long = "s3-access-key-id", env = "AWS_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Secret access key, used with `--s3-access-key-id`.
    #[arg(
        long = "s3-secret-access-key",
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,
    /// Deadline for one S3 request attempt, in seconds.
    #[arg(
        long = "s3-timeout-secs",
        env = "CCE_S3_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub timeout_secs: u64,
}

/// An S3 bucket seen as an [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    pub async fn connect(config: &S3Config) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            // Checksums only where S3 requires them: the default (a CRC on every request, sent
            // as an aws-chunked trailer) is not understood by every S3-API store. Integrity of
            // what we store is checked by our own SHA-256 in each object instead.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(config.timeout_secs))
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader =
                loader.credentials_provider(Credentials::new(id, secret, None, None, "config"));
        }
        let shared = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .build();
        Self {
            client: Client::from_conf(s3),
            bucket: config.bucket.clone(),
        }
    }

    /// The SDK client, for what the trait does not cover (bucket lifecycle rules).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

fn storage_error<E, R>(op: &'static str, key: &str, err: SdkError<E, R>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ErrorKind::Unavailable,
        SdkError::ServiceError(service) => match service.raw().status_code() {
            404 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::AccessDenied,
            // A failed `If-None-Match: *` (412), or a concurrent conditional write (409).
            409 | 412 => ErrorKind::Conflict,
            500..=599 => ErrorKind::Unavailable,
            _ => ErrorKind::Other,
        },
        SdkError::ResponseError(_) => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    };
    StorageError::new(kind, op, key, DisplayErrorContext(&err).to_string())
}

/// The HTTP status of a raw response, whatever its type.
trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| storage_error("put", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| storage_error("get", key, e))?;
        let body = response.body.collect().await.map_err(|e| {
            StorageError::new(
                ErrorKind::Unavailable,
                "get",
                key,
                format!("reading body: {e}"),
            )
        })?;
        Ok(body.into_bytes())
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes> {
        if end <= start {
            return Ok(Bytes::new());
        }
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(|e| storage_error("get range", key, e))?;
        let body = response.body.collect().await.map_err(|e| {
            StorageError::new(
                ErrorKind::Unavailable,
                "get range",
                key,
                format!("reading body: {e}"),
            )
        })?;
        Ok(body.into_bytes())
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| storage_error("put if absent", key, e))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: u64::try_from(head.content_length().unwrap_or(0)).unwrap_or(0),
            })),
            Err(err) => {
                let err = storage_error("head", key, err);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: i32,
    ) -> Result<ListPage> {
        let response = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(max_keys)
            .send()
            .await
            .map_err(|e| storage_error("list", prefix, e))?;
        let objects: Vec<ObjectMeta> = response
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta {
                    key: o.key()?.to_owned(),
                    size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                })
            })
            .collect();
        let next_start_after = if response.is_truncated().unwrap_or(false) {
            objects.last().map(|o| o.key.clone())
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_start_after,
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| storage_error("delete", key, e))?;
        Ok(())
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| storage_error("create multipart", key, e))?;
        created.upload_id().map(str::to_owned).ok_or_else(|| {
            StorageError::new(
                ErrorKind::Other,
                "create multipart",
                key,
                "no upload id returned",
            )
        })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String> {
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| storage_error("upload part", key, e))?;
        uploaded.e_tag().map(str::to_owned).ok_or_else(|| {
            StorageError::new(ErrorKind::Other, "upload part", key, "no ETag returned")
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<()> {
        let parts = parts
            .into_iter()
            .map(|p| {
                S3Part::builder()
                    .part_number(p.number)
                    .e_tag(p.etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| storage_error("complete multipart", key, e))?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| storage_error("abort multipart", key, e))?;
        Ok(())
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String> {
        let presigning = PresigningConfig::expires_in(ttl).map_err(|e| {
            StorageError::new(
                ErrorKind::Other,
                "presign",
                key,
                format!("bad ttl {ttl:?}: {e}"),
            )
        })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|e| storage_error("presign", key, e))?;
        Ok(request.uri().to_owned())
    }
}
