//! `cce-admin`: the compliance export API from a terminal or a script.
//!
//!   export CCE_TOKEN=$(cce-admin token --company acme --admin ann)   # development only
//!   cce-admin enable
//!   cce-admin grant bob
//!   job=$(cce-admin create --from 2026-11-01 --to 2026-11-08 --watch)
//!   cce-admin download "$job" -o export.zip
//!   cce-admin keys -o keys/                           # the service's public signing keys
//!   cce-admin verify export.zip --public-key keys/    # a key file, or a folder of them
//!   cce-admin verify run-1.zip run-2.zip run-3.zip     # and the chain of a schedule's runs
//!
//! Results go to stdout (one line per item, ids first, for scripts); progress and messages go
//! to stderr. Every error says what to do next; the exit code is 1 on any error.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: stdout is its output

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use proto::v1 as pb;
use proto::v1::compliance_export_service_client::ComplianceExportServiceClient;
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

mod keys;
mod schedules;
mod token;
mod verify;

#[derive(Debug, Parser)]
#[command(
    name = "cce-admin",
    version,
    about = "Compliance exports: access, exports, downloads"
)]
struct Cli {
    /// The export service's gRPC endpoint.
    #[arg(
        long,
        env = "CCE_EXPORT_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    endpoint: String,
    /// The admin portal's token for you (`authorization: Bearer`).
    #[arg(long, env = "CCE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Prints a token signed with the portal's key. For development and tests: in production
    /// the admin portal issues tokens.
    Token(token::TokenArgs),
    /// Turns exports on for your company (you become the first admin with access).
    Enable,
    /// Shows whether exports are enabled.
    Settings,
    /// Gives another admin of your company access.
    Grant { admin_id: String },
    /// Takes an admin's access away.
    Revoke { admin_id: String },
    /// Lists the admins with access.
    Access,
    /// Requests an export and prints its id.
    Create {
        /// Start (inclusive): RFC 3339 or YYYY-MM-DD (UTC midnight). Omit for all history.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive): RFC 3339 or YYYY-MM-DD. Omit for now.
        #[arg(long)]
        to: Option<String>,
        /// Only conversations with this person (repeatable).
        #[arg(long = "person")]
        person_ids: Vec<String>,
        /// Only this conversation (repeatable).
        #[arg(long = "conversation")]
        conversation_ids: Vec<String>,
        /// IANA zone for day files, e.g. Europe/London. Default UTC.
        #[arg(long, default_value = "")]
        time_zone: String,
        /// json (the seed's layout), eml (one RFC 5322 message per post) or csv (one row per
        /// event); docs/export-format.md.
        #[arg(long, default_value = "json", value_parser = ["json", "eml", "csv"])]
        format: String,
        /// Idempotency key: repeating the command with it returns the same export.
        #[arg(long, default_value = "")]
        request_id: String,
        /// Watch it until it finishes.
        #[arg(long)]
        watch: bool,
    },
    /// Shows one export.
    Get { id: String },
    /// Lists exports, newest first.
    List {
        /// Only these statuses (accepted, in-progress, completed, failed, cancelled, expired).
        #[arg(long = "status")]
        statuses: Vec<String>,
        #[arg(long, default_value_t = 50)]
        page_size: u32,
    },
    /// Cancels a waiting or running export.
    Cancel { id: String },
    /// Follows an export with a progress bar until it finishes (exit 1 unless it completes).
    Watch { id: String },
    /// Prints a fresh download link (each one is audited).
    Url { id: String },
    /// Downloads the archive through a fresh link and checks its SHA-256.
    Download {
        id: String,
        /// Where to write it. Default: `<id>.zip`.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Checks archives offline against their manifest.json (sizes, SHA-256, every CRC), their
    /// signatures against the public keys given, and several of a schedule's runs as a chain
    /// (consecutive, each naming the previous one's end and SHA-256).
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A public key (PEM, from `cce-admin keys`), or a folder of `*.pem` keys, to check
        /// signatures with; repeatable (each archive names its key's id). Without it
        /// signatures are not checked.
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
    },
    /// Saves the service's archive signing keys (active and retired) as `<key id>.pem`.
    Keys {
        /// The folder to write them to.
        #[arg(short, long, default_value = ".")]
        output_dir: PathBuf,
    },
    /// Scheduled exports: create, list, get, pause, resume, delete.
    #[command(subcommand)]
    Schedule(schedules::ScheduleCmd),
    /// Shows the audit trail, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        page_size: u32,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

struct Client {
    inner: ComplianceExportServiceClient<Channel>,
    token: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl Client {
    async fn connect(endpoint: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let token = token.filter(|t| !t.trim().is_empty()).context(
            "no token: pass --token or set CCE_TOKEN to the token the admin portal gave you",
        )?;
        let token = format!("Bearer {}", token.trim())
            .parse()
            .context("the token contains characters that cannot be sent")?;
        let channel = Channel::from_shared(endpoint.to_owned())
            .with_context(|| format!("{endpoint:?} is not a URL like http://host:50051"))?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the export service at {endpoint}: is it running? (set \
                     --endpoint or CCE_EXPORT_ENDPOINT)"
                )
            })?;
        Ok(Self {
            inner: ComplianceExportServiceClient::new(channel),
            token,
        })
    }

    fn request<T>(&self, body: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(body);
        request
            .metadata_mut()
            .insert("authorization", self.token.clone());
        request
    }
}

/// A status as a sentence that says what to do.
fn explain(status: tonic::Status) -> anyhow::Error {
    let advice = match status.code() {
        tonic::Code::Unauthenticated => {
            " — get a fresh token from the admin portal (tokens expire)"
        }
        tonic::Code::PermissionDenied => "",
        tonic::Code::Unavailable => " — the service or its Kafka/S3 is unavailable; retry shortly",
        tonic::Code::DeadlineExceeded => " — the service is slow; retry shortly",
        _ => "",
    };
    anyhow::anyhow!("{}{advice}", status.message())
}

fn parse_time(field: &str, raw: &str) -> anyhow::Result<prost_types::Timestamp> {
    let at: DateTime<Utc> = match DateTime::parse_from_rfc3339(raw) {
        Ok(at) => at.with_timezone(&Utc),
        Err(_) => NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
            .with_context(|| {
                format!("--{field} {raw:?}: use 2026-11-01 or 2026-11-01T09:30:00Z")
            })?,
    };
    Ok(timestamp(at))
}

/// A time as the API's timestamp.
fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn show_time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map_or_else(|| "-".into(), |t| t.to_rfc3339())
}

fn status_name(status: i32) -> &'static str {
    match pb::ExportStatus::try_from(status) {
        Ok(pb::ExportStatus::Accepted) => "ACCEPTED",
        Ok(pb::ExportStatus::InProgress) => "IN_PROGRESS",
        Ok(pb::ExportStatus::Completed) => "COMPLETED",
        Ok(pb::ExportStatus::Failed) => "FAILED",
        Ok(pb::ExportStatus::Cancelled) => "CANCELLED",
        Ok(pb::ExportStatus::Expired) => "EXPIRED",
        _ => "UNKNOWN",
    }
}

fn parse_status(raw: &str) -> anyhow::Result<i32> {
    let status = match raw.to_ascii_lowercase().replace('_', "-").as_str() {
        "accepted" => pb::ExportStatus::Accepted,
        "in-progress" => pb::ExportStatus::InProgress,
        "completed" => pb::ExportStatus::Completed,
        "failed" => pb::ExportStatus::Failed,
        "cancelled" => pb::ExportStatus::Cancelled,
        "expired" => pb::ExportStatus::Expired,
        _ => anyhow::bail!(
            "--status {raw:?}: use accepted, in-progress, completed, failed, cancelled or expired"
        ),
    };
    Ok(status as i32)
}

fn job_line(job: &pb::ExportJob) -> String {
    let range = job.request.as_ref().map_or_else(String::new, |r| {
        if r.all_history {
            format!("all history to {}", show_time(r.to.as_ref()))
        } else {
            format!(
                "{} to {}",
                show_time(r.from.as_ref()),
                show_time(r.to.as_ref())
            )
        }
    });
    let mut line = format!(
        "{}\t{}\t{}\tby {}\tcreated {}",
        job.id,
        status_name(job.status),
        range,
        job.requested_by,
        show_time(job.created_at.as_ref())
    );
    if !job.schedule_id.is_empty() {
        line.push_str(&format!(
            "\tschedule {} run {}",
            job.schedule_id, job.schedule_run
        ));
    }
    if job.queue_position > 0 {
        line.push_str(&format!("\tqueue position {}", job.queue_position));
    }
    if let Some(progress) = job.progress.as_ref().filter(|p| !p.detail.is_empty()) {
        line.push_str(&format!("\t{}", progress.detail));
    }
    if job.archive_size > 0 {
        line.push_str(&format!(
            "\t{} bytes\tsha256 {}\texpires {}",
            job.archive_size,
            job.archive_sha256,
            show_time(job.expires_at.as_ref())
        ));
    }
    if !job.error.is_empty() {
        line.push_str(&format!("\terror: {}", job.error));
    }
    if job.notification() == pb::NotificationStatus::GivenUp {
        line.push_str(&format!(
            "\tnotification given up after {} failed attempts (see the audit trail)",
            job.notification_failures
        ));
    }
    line
}

/// The proto format for `--format` (json, eml or csv; clap has checked it is one of them).
pub fn export_format(name: &str) -> pb::ExportFormat {
    match name {
        "eml" => pb::ExportFormat::Eml,
        "csv" => pb::ExportFormat::Csv,
        _ => pb::ExportFormat::Json,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::Token(args) = &cli.command {
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        println!("{}", token::mint(args, now)?);
        return Ok(());
    }
    if let Cmd::Verify { files, public_keys } = &cli.command {
        return verify::run(files, public_keys);
    }
    let mut client = Client::connect(&cli.endpoint, cli.token.as_deref()).await?;
    match cli.command {
        Cmd::Token(_) | Cmd::Verify { .. } => unreachable!("handled above"),
        Cmd::Keys { output_dir } => keys::fetch(&mut client, &output_dir).await?,
        Cmd::Enable => {
            let settings = client
                .inner
                .enable_exports(client.request(pb::EnableExportsRequest {}))
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "enabled\tsince {}\tby {}",
                show_time(settings.enabled_at.as_ref()),
                settings.enabled_by
            );
        }
        Cmd::Settings => {
            let s = client
                .inner
                .get_settings(client.request(pb::GetSettingsRequest {}))
                .await
                .map_err(explain)?
                .into_inner();
            if s.enabled {
                println!(
                    "enabled\tsince {}\tby {}",
                    show_time(s.enabled_at.as_ref()),
                    s.enabled_by
                );
            } else {
                println!("not enabled\t(run `cce-admin enable`)");
            }
        }
        Cmd::Grant { admin_id } => {
            let grant = client
                .inner
                .grant_access(client.request(pb::GrantAccessRequest { admin_id }))
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "{}\tgranted by {}\tat {}",
                grant.admin_id,
                grant.granted_by,
                show_time(grant.granted_at.as_ref())
            );
        }
        Cmd::Revoke { admin_id } => {
            client
                .inner
                .revoke_access(client.request(pb::RevokeAccessRequest {
                    admin_id: admin_id.clone(),
                }))
                .await
                .map_err(explain)?;
            eprintln!("revoked access of {admin_id}");
        }
        Cmd::Access => {
            let list = client
                .inner
                .list_access(client.request(pb::ListAccessRequest {}))
                .await
                .map_err(explain)?
                .into_inner();
            for grant in list.grants {
                println!(
                    "{}\tgranted by {}\tat {}",
                    grant.admin_id,
                    grant.granted_by,
                    show_time(grant.granted_at.as_ref())
                );
            }
        }
        Cmd::Create {
            from,
            to,
            person_ids,
            conversation_ids,
            time_zone,
            format,
            request_id,
            watch,
        } => {
            let request = pb::CreateExportRequest {
                from: from.as_deref().map(|f| parse_time("from", f)).transpose()?,
                to: to.as_deref().map(|t| parse_time("to", t)).transpose()?,
                person_ids,
                conversation_ids,
                format: export_format(&format).into(),
                time_zone,
                request_id,
            };
            let job = client
                .inner
                .create_export(client.request(request))
                .await
                .map_err(explain)?
                .into_inner();
            println!("{}", job.id);
            eprintln!("export {} {}", job.id, status_name(job.status));
            if watch {
                watch_job(&mut client, &job.id).await?;
            }
        }
        Cmd::Get { id } => {
            let job = client
                .inner
                .get_export(client.request(pb::GetExportRequest { id }))
                .await
                .map_err(explain)?
                .into_inner();
            println!("{}", job_line(&job));
        }
        Cmd::List {
            statuses,
            page_size,
        } => {
            let statuses = statuses
                .iter()
                .map(|s| parse_status(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut page_token = String::new();
            loop {
                let page = client
                    .inner
                    .list_exports(client.request(pb::ListExportsRequest {
                        statuses: statuses.clone(),
                        page_size,
                        page_token,
                    }))
                    .await
                    .map_err(explain)?
                    .into_inner();
                for job in &page.jobs {
                    println!("{}", job_line(job));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        Cmd::Cancel { id } => {
            let job = client
                .inner
                .cancel_export(client.request(pb::CancelExportRequest { id }))
                .await
                .map_err(explain)?
                .into_inner();
            println!("{}", job_line(&job));
        }
        Cmd::Watch { id } => watch_job(&mut client, &id).await?,
        Cmd::Schedule(command) => schedules::run(command, &mut client).await?,
        Cmd::Url { id } => {
            let link = client
                .inner
                .get_download_url(client.request(pb::GetDownloadUrlRequest { id }))
                .await
                .map_err(explain)?
                .into_inner();
            println!("{}", link.url);
            eprintln!(
                "link valid until {} ({} bytes, sha256 {})",
                show_time(link.expires_at.as_ref()),
                link.size,
                link.sha256
            );
        }
        Cmd::Download { id, output } => {
            let link = client
                .inner
                .get_download_url(client.request(pb::GetDownloadUrlRequest { id: id.clone() }))
                .await
                .map_err(explain)?
                .into_inner();
            let output = output.unwrap_or_else(|| PathBuf::from(format!("{id}.zip")));
            download(&link, &output).await?;
            println!("{}", output.display());
        }
        Cmd::Audit { page_size } => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .inner
                    .list_audit_events(client.request(pb::ListAuditEventsRequest {
                        page_size,
                        page_token,
                    }))
                    .await
                    .map_err(explain)?
                    .into_inner();
                for event in page.events {
                    let details: Vec<String> = event
                        .details
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        show_time(event.at.as_ref()),
                        event.actor_id,
                        event.action,
                        event.subject,
                        details.join(" ")
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
    }
    Ok(())
}

async fn watch_job(client: &mut Client, id: &str) -> anyhow::Result<()> {
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:30}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    // Without a terminal (scripts, CI logs) the bar is hidden: print a line per change instead.
    let plain = !std::io::stderr().is_terminal();
    let mut printed: Option<(i32, u32, bool)> = None;
    let mut last: Option<pb::ExportJob> = None;
    // A watch ends when the job finishes; a dropped stream (a replica restarting) is resumed.
    for _ in 0..100 {
        let stream = client
            .inner
            .watch_export(client.request(pb::WatchExportRequest { id: id.to_owned() }))
            .await;
        let mut stream = match stream {
            Ok(stream) => stream.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(status) => {
                bar.abandon();
                return Err(explain(status));
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(job)) => {
                    let progress = job.progress.clone().unwrap_or_default();
                    bar.set_position(u64::from(progress.percent));
                    let mut msg = format!(
                        "{} · {} events · {} files",
                        status_name(job.status),
                        progress.events_read,
                        progress.files_written
                    );
                    if job.queue_position > 0 {
                        msg.push_str(&format!(" · queue position {}", job.queue_position));
                    }
                    if !progress.detail.is_empty() {
                        msg.push_str(&format!(" · {}", progress.detail));
                    }
                    let step = (
                        job.status,
                        progress.percent / 10,
                        progress.detail.is_empty(),
                    );
                    if plain && printed != Some(step) {
                        printed = Some(step);
                        eprintln!("  {:>3}% {msg}", progress.percent);
                    }
                    bar.set_message(msg);
                    last = Some(job);
                }
                Ok(None) => break,
                // A replica restarting ends the stream with UNAVAILABLE: watch again.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                    ) =>
                {
                    break;
                }
                Err(status) => {
                    bar.abandon();
                    return Err(explain(status));
                }
            }
        }
        if let Some(job) = &last
            && !matches!(
                pb::ExportStatus::try_from(job.status),
                Ok(pb::ExportStatus::Accepted | pb::ExportStatus::InProgress)
            )
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let job = last.context("the watch ended before any update; run `cce-admin get`")?;
    match pb::ExportStatus::try_from(job.status) {
        Ok(pb::ExportStatus::Completed) => {
            bar.set_position(100);
            bar.finish_with_message(format!(
                "COMPLETED · {} bytes · sha256 {}",
                job.archive_size, job.archive_sha256
            ));
            Ok(())
        }
        _ => {
            bar.abandon_with_message(status_name(job.status).to_string());
            anyhow::bail!(
                "export {} ended {}{}",
                job.id,
                status_name(job.status),
                if job.error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", job.error)
                }
            )
        }
    }
}

async fn download(link: &pb::DownloadUrl, output: &PathBuf) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .build()?;
    let mut response = http
        .get(&link.url)
        .send()
        .await
        .context("fetching the archive through its link")?;
    anyhow::ensure!(
        response.status().is_success(),
        "the store answered {} for the download link: ask for a new link (`cce-admin url`)",
        response.status()
    );
    let bar = ProgressBar::new(link.size);
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let partial = output.with_extension("zip.partial");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = response.chunk().await.context("reading the archive")? {
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().await?;
    bar.finish_and_clear();
    let sha256 = hex::encode(hasher.finalize());
    if sha256 != link.sha256 {
        let _ = tokio::fs::remove_file(&partial).await;
        anyhow::bail!(
            "the download's SHA-256 {sha256} is not the archive's {}: download again",
            link.sha256
        );
    }
    tokio::fs::rename(&partial, output).await?;
    eprintln!(
        "downloaded {} bytes to {} (sha256 {sha256} matches)",
        link.size,
        output.display()
    );
    Ok(())
}
