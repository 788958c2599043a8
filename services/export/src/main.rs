use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = export::Config::parse();
    telemetry::init_tracing(config.log_format);
    let shutdown = telemetry::shutdown_on_signal();
    match export::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line for a person (what failed, then why), not a backtrace.
            tracing::error!("cce-export stopped: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The export engine's allocator, as in `cce-archive` (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
