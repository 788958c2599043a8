use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = export::Config::parse();
    telemetry::init_tracing(config.log_format);
    let shutdown = telemetry::shutdown_on_signal();
    export::run(config, shutdown).await
}

/// The export engine's allocator, as in `cce-archive` (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
