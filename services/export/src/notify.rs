//! Telling people an export has finished: a mail to the requester (SMTP through lettre) and an
//! event on a Kafka topic for the platform. Delivery is at least once: a replica that dies
//! between sending and recording it leaves the job to be notified again by another.
//!
//! The runner sends through the [`Notify`] trait, so its bounded retries can be tested with a
//! relay that refuses.

use std::time::Duration;

use anyhow::Context;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::metrics::Metrics;

/// Sends the notifications of a finished job; an error means "try again later" (the runner
/// records each failure and gives up after `state::MAX_NOTIFY_ATTEMPTS`).
#[async_trait::async_trait]
pub trait Notify: Send + Sync + std::fmt::Debug + 'static {
    async fn notify(&self, company_id: &str, job: &Job) -> anyhow::Result<()>;
}

#[async_trait::async_trait]
impl Notify for Notifier {
    async fn notify(&self, company_id: &str, job: &Job) -> anyhow::Result<()> {
        Notifier::notify(self, company_id, job).await
    }
}
use crate::state::{Job, JobStatus, RETENTION_DAYS};

/// Sends the notifications of finished exports.
#[derive(Clone)]
pub struct Notifier {
    mailer: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    admin_url: String,
    producer: FutureProducer,
    topic: String,
    metrics: Metrics,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("mail", &self.mailer.is_some())
            .field("from", &self.from)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(config: &crate::Config, metrics: Metrics) -> anyhow::Result<Self> {
        let mailer = config
            .smtp_url
            .as_deref()
            .map(|url| {
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map(|b| b.timeout(Some(Duration::from_secs(30))).build())
                    .context(
                        "CCE_SMTP_URL is not a valid SMTP URL (e.g. smtp://127.0.0.1:25 or \
                         smtps://user:password@mail.example.com)",
                    )
            })
            .transpose()?;
        let from: Mailbox = config.smtp_from.parse().with_context(|| {
            format!(
                "CCE_SMTP_FROM {:?} is not a mail address (e.g. \"Compliance <cce@example.com>\")",
                config.smtp_from
            )
        })?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka_brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self {
            mailer,
            from,
            admin_url: config.admin_url.trim_end_matches('/').to_owned(),
            producer,
            topic: config.notifications_topic.clone(),
            metrics,
        })
    }

    fn page(&self, job: &Job) -> String {
        format!("{}/{}", self.admin_url, job.id)
    }

    /// Sends both notifications of a finished job; an error means "try again later".
    pub async fn notify(&self, company_id: &str, job: &Job) -> anyhow::Result<()> {
        let status = match job.stored_status() {
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            _ => return Ok(()),
        };
        let event = serde_json::json!({
            "type": "compliance_export.finished",
            "company_id": company_id,
            "job_id": job.id,
            "status": status,
            "requested_by": job.requested_by,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
            "archive_size": job.archive.as_ref().map(|a| a.size),
            "archive_sha256": job.archive.as_ref().map(|a| a.sha256.clone()),
            "expires_at": job.archive.as_ref().map(|a| a.expires_at),
            "error": job.error,
            "admin_url": self.page(job),
        });
        let payload = serde_json::to_vec(&event)?;
        let sent = self
            .producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(company_id)
                    .payload(&payload),
                Timeout::After(Duration::from_secs(30)),
            )
            .await;
        self.count("kafka", sent.is_ok());
        sent.map_err(|(e, _)| anyhow::anyhow!("publishing to {}: {e}", self.topic))?;
        self.mail(job, status).await
    }

    async fn mail(&self, job: &Job, status: &str) -> anyhow::Result<()> {
        let Some(mailer) = &self.mailer else {
            self.metrics
                .notifications
                .with_label_values(&["email", "skipped"])
                .inc();
            return Ok(());
        };
        let Some(to) = job.requester_email.as_deref() else {
            tracing::warn!(job = %job.id, "the requester's token carried no email address; no mail sent");
            self.metrics
                .notifications
                .with_label_values(&["email", "skipped"])
                .inc();
            return Ok(());
        };
        let to: Mailbox = match to.parse() {
            Ok(to) => to,
            Err(error) => {
                tracing::warn!(job = %job.id, %error, "the requester's email address is invalid; no mail sent");
                return Ok(());
            }
        };
        let range = match job.spec.from {
            Some(from) => format!("{} to {}", from.to_rfc3339(), job.spec.to.to_rfc3339()),
            None => format!("all history until {}", job.spec.to.to_rfc3339()),
        };
        let body = match status {
            "completed" => format!(
                "Your compliance export {id} ({range}) has completed.\n\n\
                 Size: {size} bytes\nSHA-256: {sha}\n\n\
                 Download it from the admin page (links are issued there and audited):\n{page}\n\n\
                 The archive is kept for {RETENTION_DAYS} days, until {expires}.\n",
                id = job.id,
                size = job.archive.as_ref().map_or(0, |a| a.size),
                sha = job.archive.as_ref().map_or("", |a| a.sha256.as_str()),
                page = self.page(job),
                expires = job
                    .archive
                    .as_ref()
                    .map_or_else(String::new, |a| a.expires_at.to_rfc3339()),
            ),
            _ => format!(
                "Your compliance export {id} ({range}) has failed:\n\n  {error}\n\n\
                 See the admin page, and request it again once the cause is fixed:\n{page}\n",
                id = job.id,
                error = job.error.as_deref().unwrap_or("unknown error"),
                page = self.page(job),
            ),
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("Compliance export {status}: {}", job.id))
            .header(ContentType::TEXT_PLAIN)
            .body(body)?;
        let sent = mailer.send(message).await;
        self.count("email", sent.is_ok());
        sent.context("sending the notification mail")?;
        Ok(())
    }

    fn count(&self, channel: &str, ok: bool) {
        self.metrics
            .notifications
            .with_label_values(&[channel, if ok { "sent" } else { "failed" }])
            .inc();
    }
}
