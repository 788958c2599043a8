//! `cce-faults`: the fault suite against a running local stack (`deploy/local/faults.sh`
//! starts one and calls this).
//!
//!   cce-faults --stack-env DIR/stack.env all [--short]
//!   cce-faults --stack-env DIR/stack.env ingest-kills --kills 200
//!   cce-faults --stack-env DIR/stack.env broker | store | network
//!
//! Prints one line per scenario (PASS/FAIL and its figures) and writes them as JSON lines to
//! `--report`; exits 1 when any scenario failed.

#![allow(clippy::print_stdout)] // the report goes to stdout

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tests::Stack;
use tests::faults::{self, Outcome, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "cce-faults",
    about = "Injects faults into the local stack and checks nothing is lost or doubled"
)]
struct Args {
    /// The stack's env file (deploy/local/up.sh prints its path).
    #[arg(long, env = "CCE_STACK_ENV")]
    stack_env: PathBuf,
    /// Where the JSON-lines report goes.
    #[arg(long, default_value = "faults-report.jsonl")]
    report: PathBuf,
    /// Where ingestion's logs go (default: a new temporary directory).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Companies per producer.
    #[arg(long, default_value_t = 20)]
    companies: usize,
    /// Events per second per producer.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Ingestion's session timeout in ms (a killed instance is restarted only after it).
    #[arg(long, default_value_t = 6000)]
    session_timeout_ms: u64,
    /// Companies exported for the archive check per scenario (default: all).
    #[arg(long)]
    archive_sample: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every scenario group in a row.
    All {
        /// The CI version: 20 kills and one or two of each other fault.
        #[arg(long)]
        short: bool,
        /// SIGKILLs in the kill scenario (default 200; 20 with --short).
        #[arg(long)]
        kills: Option<usize>,
        /// Independent topics killed side by side in the kill scenario.
        #[arg(long, default_value_t = 2)]
        lanes: usize,
    },
    /// SIGKILLs of ingestion at random moments under continuous production.
    IngestKills {
        #[arg(long, default_value_t = 200)]
        kills: usize,
        #[arg(long, default_value_t = 2)]
        lanes: usize,
    },
    /// The broker stopped, killed and paused.
    Broker {
        #[arg(long)]
        short: bool,
    },
    /// The store stopped and killed during flushes.
    Store {
        #[arg(long)]
        short: bool,
    },
    /// The network to the store cut and blackholed.
    Network {
        #[arg(long)]
        short: bool,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber_init();
    // SAFETY of the harness: it reads the same env file the tests do.
    let text = std::fs::read_to_string(&args.stack_env)
        .with_context(|| format!("reading {}", args.stack_env.display()))?;
    let stack = Stack {
        vars: tests::parse_env_file(&text),
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let log_dir = match &args.log_dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new()
            .prefix("cce-faults-logs.")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&log_dir)?;
    println!(
        "[faults] seed {seed}; ingestion logs in {}",
        log_dir.display()
    );
    let mut settings = Settings {
        kills: 200,
        companies: args.companies,
        rate: args.rate,
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        seed,
        log_dir,
        archive_sample: args.archive_sample,
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    let record = |outcome: Outcome, outcomes: &mut Vec<Outcome>| {
        println!("[faults] {}", outcome.summary());
        outcomes.push(outcome);
    };
    match args.command {
        Command::All {
            short,
            kills,
            lanes,
        } => {
            settings.kills = kills.unwrap_or(if short { 20 } else { 200 });
            record(
                faults::ingest::kills(&stack, &settings, lanes).await?,
                &mut outcomes,
            );
            record(
                faults::ingest::broker(&stack, &settings, short).await?,
                &mut outcomes,
            );
            record(
                faults::ingest::store(&stack, &settings, short).await?,
                &mut outcomes,
            );
            record(
                faults::ingest::network(&stack, &settings, short).await?,
                &mut outcomes,
            );
        }
        Command::IngestKills { kills, lanes } => {
            settings.kills = kills;
            record(
                faults::ingest::kills(&stack, &settings, lanes).await?,
                &mut outcomes,
            );
        }
        Command::Broker { short } => {
            record(
                faults::ingest::broker(&stack, &settings, short).await?,
                &mut outcomes,
            );
        }
        Command::Store { short } => {
            record(
                faults::ingest::store(&stack, &settings, short).await?,
                &mut outcomes,
            );
        }
        Command::Network { short } => {
            record(
                faults::ingest::network(&stack, &settings, short).await?,
                &mut outcomes,
            );
        }
    }
    faults::write_report(&args.report, &outcomes)?;
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    println!(
        "[faults] {} scenarios, {failed} failed; report in {}",
        outcomes.len(),
        args.report.display()
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Warnings and the harness's progress on stderr (`RUST_LOG`; faults.sh silences librdkafka's
/// complaints while the broker is down, which are expected).
fn tracing_subscriber_init() {
    telemetry::init_tracing(telemetry::LogFormat::default());
}
