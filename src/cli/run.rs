//! `hookpipe run`: loads the config, serves telemetry, and runs the pipeline until SIGTERM or
//! SIGINT; then stops consuming, drains in-flight deliveries within `pipeline.drain_timeout`,
//! commits settled offsets and exits 0. A second signal exits at once (status 130); nothing
//! unsettled is committed, so it is redelivered after restart.

use crate::telemetry::{self, Telemetry};
use crate::{config, pipeline};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Arguments of `hookpipe run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file (TOML).
    #[arg(long, env = "HOOKPIPE_CONFIG")]
    pub config: PathBuf,
}

/// Runs the command: 0 after a clean shutdown, 1 on a config or start-up error.
pub fn main(args: Args) -> ExitCode {
    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookpipe run: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init_logging(config.telemetry.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.pipeline.workers.max(2))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry = Arc::new(Telemetry::new());
        let listen = config.telemetry.listen;
        let server = match telemetry::serve(listen, telemetry.clone()).await {
            Ok((addr, task)) => {
                info!(%addr, "telemetry on /metrics /healthz /readyz");
                task
            }
            Err(e) => {
                error!(error = %e, "cannot start telemetry");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        let result = pipeline::run(config, telemetry, shutdown).await;
        server.abort();
        match result {
            Ok(summary) => {
                info!(abandoned = summary.abandoned, "bye");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!(error = %e, "pipeline failed to start");
                ExitCode::FAILURE
            }
        }
    })
}

/// Cancels `shutdown` on the first SIGTERM/SIGINT; exits the process on the second.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; SIGTERM will kill without draining");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    warn!("second signal: exiting without draining");
    std::process::exit(130);
}
