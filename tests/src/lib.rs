//! Shared harness for the integration tests: the local stack's endpoints and unique names.
//!
//! The stack is started by `deploy/local/up.sh`, which writes its endpoints to an env file; the
//! test command (`deploy/local/test.sh`) points `CCE_STACK_ENV` at it. Tests fail, rather than
//! skip, when it is missing: a test suite that silently skips its real servers proves nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

pub mod faults;
pub mod faults_export;
pub mod membership;
pub mod seed;

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

    /// The services' S3 flags for this stack.
    pub fn s3_args(&self) -> Vec<String> {
        [
            ("--s3-endpoint", "CCE_S3_ENDPOINT"),
            ("--s3-region", "CCE_S3_REGION"),
            ("--s3-bucket", "CCE_S3_BUCKET"),
            ("--s3-access-key-id", "AWS_ACCESS_KEY_ID"),
            ("--s3-secret-access-key", "AWS_SECRET_ACCESS_KEY"),
        ]
        .into_iter()
        .flat_map(|(flag, var)| [flag.to_owned(), self.var(var).to_owned()])
        .collect()
    }

    /// Puts an object into `company`'s log whose body does not match its header: reading it
    /// must fail, never skip it.
    pub async fn put_corrupt_log_object(&self, company: &str) {
        use storage::ObjectStore;
        self.s3_store()
            .await
            .put(
                &format!("log/v1/{company}/events/2026-01-05/10/t.00000.00000000000000000000-00000000000000000001.jsonl"),
                bytes::Bytes::from_static(b"{\"format\":\"cce-compliance-log\",\"version\":1}\nnot what the header says\n"),
            )
            .await
            .unwrap();
    }
}

/// Whether the ingestion service publishes the log's watermark pointers (format 2 ingestion
/// does). While it did not, the tests that export what ingestion wrote published them themselves
/// ([`put_watermarks`], [`idle_watermarks`]), only once the log held everything below them.
pub const INGESTION_PUBLISHES_WATERMARKS: bool = true;

/// Every partition's end offset (high watermark) of `topic`, which has `partitions`.
pub async fn end_offsets(stack: &Stack, topic: &str, partitions: i32) -> Vec<(i32, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", stack.kafka_brokers())
        .create()
        .unwrap();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        (0..partitions)
            .map(|p| {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, p, std::time::Duration::from_secs(10))
                    .unwrap();
                (p, high)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// What ingestion publishes for a topic nothing more is published to, once the log holds all
/// of it: every partition durable to its end, the time watermark moving with the clock (its
/// probes find nothing pending). Until `stop`; a no-op when ingestion publishes them itself.
pub async fn idle_watermarks(
    stack: &Stack,
    topic: &str,
    partitions: i32,
    stop: telemetry::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let ends = end_offsets(stack, topic, partitions).await;
    let store = stack.s3_store().await;
    let topic = topic.to_owned();
    tokio::spawn(async move {
        while !INGESTION_PUBLISHES_WATERMARKS && !stop.is_cancelled() {
            let now = chrono::Utc::now();
            for &(partition, end) in &ends {
                let mut pointer =
                    compliance_log::Watermark::new(&topic, partition, partitions, 1, end);
                pointer.time_watermark = Some(now);
                pointer.write(&store).await.unwrap();
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
    })
}

/// Writes the log's watermark pointers of `topic` (with `partitions` partitions), as ingestion
/// does: per `(partition, durable offset, time watermark)`, in epoch 1.
pub async fn put_watermarks(
    stack: &Stack,
    topic: &str,
    partitions: i32,
    pointers: &[(i32, i64, Option<chrono::DateTime<chrono::Utc>>)],
) {
    let store = stack.s3_store().await;
    for &(partition, durable_offset, time_watermark) in pointers {
        let mut pointer =
            compliance_log::Watermark::new(topic, partition, partitions, 1, durable_offset);
        pointer.time_watermark = time_watermark;
        pointer.write(&store).await.unwrap();
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

/// Polls `check` until it returns `Some` or `deadline` passes (then panics with `what`).
pub async fn wait_for<T, F, Fut>(what: &str, deadline: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub mod kafka {
    //! Kafka helpers for tests: topics, producing, consuming.
    use std::time::Duration;

    use rdkafka::ClientConfig;
    use rdkafka::Message;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::OwnedMessage;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    use super::Stack;

    pub async fn create_topic(stack: &Stack, name: &str, partitions: i32) {
        create_topic_with(stack, name, partitions, &[]).await;
    }

    /// Creates a topic with settings (e.g. `retention.ms`).
    pub async fn create_topic_with(
        stack: &Stack,
        name: &str,
        partitions: i32,
        settings: &[(&str, &str)],
    ) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", stack.kafka_brokers())
            .create()
            .expect("admin client");
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (key, value) in settings {
            topic = topic.set(key, value);
        }
        let created = admin
            .create_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topics");
        assert!(
            created.iter().all(Result::is_ok),
            "create topic {name}: {created:?}"
        );
    }

    pub fn producer(stack: &Stack) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", stack.kafka_brokers())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer")
    }

    /// Produces every message and waits for each delivery.
    pub async fn produce(producer: &FutureProducer, topic: &str, messages: &[(String, Vec<u8>)]) {
        let deliveries: Vec<_> = messages
            .iter()
            .map(|(key, payload)| {
                producer
                    .send_result(FutureRecord::to(topic).key(key).payload(payload))
                    .map_err(|(e, _)| e)
                    .expect("enqueue")
            })
            .collect();
        for delivery in deliveries {
            delivery
                .await
                .expect("delivery")
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    }

    /// Reads `count` messages of `topic` from the beginning (fails after `deadline`).
    pub async fn consume(
        stack: &Stack,
        topic: &str,
        count: usize,
        deadline: Duration,
    ) -> Vec<OwnedMessage> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", stack.kafka_brokers())
            .set("group.id", super::unique("reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut messages = Vec::new();
        while messages.len() < count {
            let message = tokio::time::timeout(deadline, consumer.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("only {} of {count} messages on {topic}", messages.len())
                })
                .expect("recv");
            messages.push(message.detach());
        }
        messages.sort_by_key(|m| (m.partition(), m.offset()));
        messages
    }
}

/// An ingestion service configuration for a test: its own topics and group, the stack's store,
/// an ephemeral ops port, and the given extra flags.
pub fn ingestion_config(
    stack: &Stack,
    topic: &str,
    dlq: &str,
    group: &str,
    extra: &[&str],
) -> ingestion::Config {
    use clap::Parser;
    let mut args = vec!["cce-ingestion".to_owned()];
    args.extend(ingestion_args(stack, topic, dlq, group, extra));
    ingestion::Config::try_parse_from(args).expect("ingestion config")
}

/// The command-line flags of [`ingestion_config`], for running the binary.
pub fn ingestion_args(
    stack: &Stack,
    topic: &str,
    dlq: &str,
    group: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--kafka-brokers".into(),
        stack.kafka_brokers().into(),
        "--events-topic".into(),
        topic.into(),
        "--dead-letter-topic".into(),
        dlq.into(),
        "--group-id".into(),
        group.into(),
    ];
    args.extend(stack.s3_args());
    if !extra.contains(&"--ops-addr") {
        args.extend(["--ops-addr".into(), "127.0.0.1:0".into()]);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// A binary of this workspace, built by `deploy/local/test.sh` before the tests run.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("CCE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --bins` (deploy/local/test.sh does)",
        path.display()
    );
    path
}

/// What a company's log must hold: event ids per company, computed from the produced payloads
/// with the same contract and routing rules.
pub fn expected_by_company(
    payloads: impl IntoIterator<Item = Vec<u8>>,
) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let now = chrono::Utc::now();
    let mut expected: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for payload in payloads {
        let (event, _) = event_model::parse_event(&payload, &event_model::Limits::default(), now)
            .expect("a valid generated event");
        for company in event_model::route(&event) {
            expected
                .entry(company)
                .or_default()
                .insert(event.event_id.clone());
        }
    }
    expected
}

/// Every event id in a company's log (content over the whole generator span plus metadata),
/// failing on any duplicate the reader lets through.
pub async fn log_event_ids(
    reader: &compliance_log::LogReader,
    company: &str,
) -> std::collections::BTreeSet<String> {
    let (from, to) = (
        "2000-01-01T00:00:00Z".parse().unwrap(),
        chrono::Utc::now() + chrono::Duration::days(2),
    );
    let mut ids = std::collections::BTreeSet::new();
    let mut cursor = reader.events(company, from, to);
    while let Some(hour) = cursor.next_hour().await.expect("read events") {
        for record in hour {
            assert!(
                ids.insert(record.event.event_id.clone()),
                "duplicate {}",
                record.event.event_id
            );
        }
    }
    for record in reader
        .meta_events(company, to)
        .await
        .expect("read metadata")
    {
        assert!(
            ids.insert(record.event.event_id.clone()),
            "duplicate {}",
            record.event.event_id
        );
    }
    ids
}

/// Writes the generator's events (seed 11, companies `<prefix>acme`, …) straight into the log,
/// as ingestion would, in chunks of 2,000; returns how many.
pub async fn write_generated_log(
    store: std::sync::Arc<dyn storage::ObjectStore>,
    prefix: &str,
    events: u64,
) -> usize {
    let now = chrono::Utc::now();
    let records: Vec<compliance_log::PendingRecord> = loadgen::Generator::new(loadgen::Options {
        seed: 11,
        id_prefix: prefix.to_owned(),
        content_events: events,
        ..loadgen::Options::default()
    })
    .enumerate()
    .map(|(i, m)| {
        let (event, raw) =
            event_model::parse_event(&m.payload, &event_model::Limits::default(), now).unwrap();
        compliance_log::PendingRecord {
            offset: i as i64,
            event,
            raw,
        }
    })
    .collect();
    let writer = compliance_log::V1Writer::new(store);
    for (n, chunk) in records.chunks(2_000).enumerate() {
        let source = compliance_log::SourceRange {
            topic: "archive-test".into(),
            partition: 0,
            first_offset: chunk[0].offset,
            last_offset: chunk[chunk.len() - 1].offset,
        };
        writer
            .write(&source, chunk)
            .await
            .unwrap_or_else(|e| panic!("chunk {n}: {e}"));
    }
    records.len()
}

/// Running the export service and calling it, for the end-to-end tests.
pub mod exports {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use proto::v1 as pb;
    use proto::v1::compliance_export_service_client::ComplianceExportServiceClient;
    use telemetry::CancellationToken;
    use tonic::transport::Channel;

    use super::Stack;

    /// RFC 8410's example Ed25519 key, as `openssl genpkey -algorithm ed25519` writes a key:
    /// an archive signing key for tests.
    pub const RETIRED_ARCHIVE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";
    /// Another archive signing key for tests (seed bytes 0..=31).
    pub const ACTIVE_ARCHIVE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f
-----END PRIVATE KEY-----
";

    /// Writes `pem` to `dir/name` with permissions `mode` (the service refuses a key file every
    /// user can read).
    pub fn key_file(dir: &Path, name: &str, pem: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write key file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("set key file permissions");
        path
    }

    /// Runs `cce-admin` with `args` in `dir` against `endpoint`, with `token` as `CCE_TOKEN`
    /// (none: unset); returns (success, stdout, stderr).
    pub fn admin_cli(
        endpoint: &str,
        token: Option<&str>,
        args: &[&str],
        dir: &Path,
    ) -> (bool, String, String) {
        let mut command = std::process::Command::new(super::binary("cce-admin"));
        command
            .args(args)
            .current_dir(dir)
            .env("CCE_EXPORT_ENDPOINT", endpoint)
            .env_remove("CCE_TOKEN");
        if let Some(token) = token {
            command.env("CCE_TOKEN", token);
        }
        let out = command.output().expect("run cce-admin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The stack's token signing key (up.sh writes a fresh one).
    pub fn signing_key(stack: &Stack) -> String {
        stack.var("CCE_TOKEN_SIGNING_KEY").to_owned()
    }

    /// A free loopback port (bound then released).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// The export service's flags for a test: its own state and notification topics, and its
    /// own events topic (empty, its log durable forever: [`create_topics`]), unless `extra`
    /// names one.
    pub fn args(stack: &Stack, state_topic: &str, grpc_port: u16, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--kafka-brokers".into(),
            stack.kafka_brokers().into(),
            "--state-topic".into(),
            state_topic.into(),
            "--notifications-topic".into(),
            format!("{state_topic}-notifications"),
            "--liveness-topic".into(),
            format!("{state_topic}-liveness"),
            "--token-signing-key".into(),
            signing_key(stack),
            "--grpc-addr".into(),
            format!("127.0.0.1:{grpc_port}"),
            "--ops-addr".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(stack.s3_args());
        // Short leases so takeovers in tests take seconds, unless a test sets its own.
        if !extra.contains(&"--lease-secs") {
            args.extend(["--lease-secs".into(), "3".into()]);
        }
        if !extra.contains(&"--events-topic") {
            args.extend(["--events-topic".into(), format!("{state_topic}-events")]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Creates a test's state topic (one partition, kept forever), liveness topic, notification
    /// topic and events topic (the default one of [`args`]). Nothing is published to that events
    /// topic and no ingestion reads it, so its log's watermarks say it is durable forever:
    /// exports of logs the test writes itself never wait.
    pub async fn create_topics(stack: &Stack, state_topic: &str) {
        super::kafka::create_topic_with(stack, state_topic, 1, &[("retention.ms", "-1")]).await;
        super::kafka::create_topic(stack, &format!("{state_topic}-liveness"), 1).await;
        super::kafka::create_topic(stack, &format!("{state_topic}-notifications"), 1).await;
        let events = format!("{state_topic}-events");
        super::kafka::create_topic(stack, &events, 2).await;
        let forever = chrono::DateTime::<chrono::Utc>::MAX_UTC;
        super::put_watermarks(
            stack,
            &events,
            2,
            &[(0, 0, Some(forever)), (1, 0, Some(forever))],
        )
        .await;
    }

    /// An export service running in this process.
    #[derive(Debug)]
    pub struct Replica {
        pub stop: CancellationToken,
        pub endpoint: String,
        pub running: export::Running,
    }

    impl Replica {
        pub async fn start(
            stack: &Stack,
            state_topic: &str,
            clock: Arc<dyn export::Clock>,
            extra: &[&str],
        ) -> Self {
            use clap::Parser;
            let mut argv = vec!["cce-export".to_owned()];
            argv.extend(args(stack, state_topic, 0, extra));
            let config = export::Config::try_parse_from(argv).expect("export config");
            let stop = CancellationToken::new();
            let running = export::start_with_clock(config, clock, stop.clone())
                .await
                .expect("start the export service");
            Self {
                endpoint: format!("http://{}", running.grpc_addr),
                stop,
                running,
            }
        }

        pub async fn client(&self) -> ComplianceExportServiceClient<Channel> {
            client(&self.endpoint).await
        }

        pub async fn shutdown(self) {
            self.stop.cancel();
            tokio::time::timeout(Duration::from_secs(30), self.running.task)
                .await
                .expect("the export service stops within 30 s")
                .unwrap()
                .unwrap();
        }
    }

    pub async fn client(endpoint: &str) -> ComplianceExportServiceClient<Channel> {
        let channel = super::wait_for(
            &format!("the export service at {endpoint}"),
            Duration::from_secs(60),
            || async {
                Channel::from_shared(endpoint.to_owned())
                    .unwrap()
                    .connect()
                    .await
                    .ok()
            },
        )
        .await;
        ComplianceExportServiceClient::new(channel)
    }

    /// A token as the admin portal would sign it.
    #[derive(Debug, Clone)]
    pub struct TokenSpec {
        pub key: String,
        pub company: String,
        pub admin: String,
        pub role: String,
        pub ttl_secs: i64,
        pub issuer: String,
        pub audience: String,
        pub email: Option<String>,
    }

    impl TokenSpec {
        pub fn admin(stack: &Stack, company: &str, admin: &str) -> Self {
            Self {
                key: signing_key(stack),
                company: company.into(),
                admin: admin.into(),
                role: "admin".into(),
                ttl_secs: 600,
                issuer: "admin-portal".into(),
                audience: "compliance-exports".into(),
                email: None,
            }
        }

        pub fn sign(&self) -> String {
            let claims = export::auth::Claims {
                sub: self.admin.clone(),
                company_id: self.company.clone(),
                role: self.role.clone(),
                exp: u64::try_from(chrono::Utc::now().timestamp() + self.ttl_secs).unwrap_or(0),
                iss: self.issuer.clone(),
                aud: self.audience.clone(),
                email: self.email.clone(),
            };
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(self.key.as_bytes()),
            )
            .unwrap()
        }
    }

    /// A request carrying `authorization: Bearer <token>`.
    pub fn authed<T>(token: &str, body: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(body);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    pub async fn get(
        client: &mut ComplianceExportServiceClient<Channel>,
        token: &str,
        id: &str,
    ) -> pb::ExportJob {
        client
            .get_export(authed(token, pb::GetExportRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner()
    }

    /// Polls a job until `done` holds.
    pub async fn wait_job(
        client: &mut ComplianceExportServiceClient<Channel>,
        token: &str,
        id: &str,
        what: &str,
        deadline: Duration,
        done: impl Fn(&pb::ExportJob) -> bool,
    ) -> pb::ExportJob {
        let start = tokio::time::Instant::now();
        loop {
            let job = get(client, token, id).await;
            if done(&job) {
                return job;
            }
            assert!(
                start.elapsed() < deadline,
                "export {id} not {what} within {deadline:?}: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Job `id`'s archive, through a fresh presigned URL fetched with a plain HTTP client (no
    /// credentials: the URL is all it needs).
    pub async fn download(
        client: &mut ComplianceExportServiceClient<Channel>,
        token: &str,
        id: &str,
    ) -> (pb::DownloadUrl, Vec<u8>) {
        let link = client
            .get_download_url(authed(token, pb::GetDownloadUrlRequest { id: id.into() }))
            .await
            .expect("GetDownloadUrl")
            .into_inner();
        let response = reqwest::get(&link.url).await.expect("GET the archive");
        assert_eq!(response.status(), 200, "GET {}", link.url);
        let bytes = response
            .bytes()
            .await
            .expect("the archive's bytes")
            .to_vec();
        (link, bytes)
    }

    /// The ids of the posts created in a JSON archive's range, from its day files, in archive
    /// order (a post archived twice is listed twice).
    pub fn archived_post_ids(bytes: &[u8]) -> Vec<String> {
        let mut ids = Vec::new();
        for (name, content) in archive::verify::read_entries(bytes).expect("a readable archive") {
            if !(name.contains("_Chats/") && name.ends_with(".json")) {
                continue;
            }
            let day: serde_json::Value = serde_json::from_slice(&content).expect("a day file");
            for item in day["items"].as_array().expect("items") {
                if item["kind"] == "post" && item.get("created_elsewhere").is_none() {
                    ids.push(item["id"].as_str().expect("an id").to_owned());
                }
            }
        }
        ids
    }

    /// Hex SHA-256 of `bytes`.
    pub fn sha256(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    pub fn is(status: pb::ExportStatus) -> impl Fn(&pb::ExportJob) -> bool {
        move |job| job.status == status as i32
    }

    /// An RFC 3339 instant as a protobuf timestamp.
    pub fn timestamp(rfc3339: &str) -> prost_types::Timestamp {
        export::service::timestamp(rfc3339.parse().unwrap())
    }

    pub fn time(t: Option<&prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
        let t = t.expect("a timestamp");
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap()).unwrap()
    }
}
