use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before the runtime's threads start (see `archive::allocator`).
    archive::allocator::return_freed_memory_at_once();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("cce-export could not start its runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
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
