//! The `hookpipe` binary: one subcommand per job, each defined in [`hookpipe::cli`].

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Streams Amplitude-format events, users and cohorts from Kafka into webhooks.
#[derive(Parser)]
#[command(name = "hookpipe", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a FreeMarker template on a JSON input, as a destination would.
    Render(hookpipe::cli::render::Args),
    /// Validate a config file and compile its templates, without connecting to anything.
    Check(hookpipe::cli::check::Args),
    /// Run the pipeline: consume Kafka, deliver to every destination, commit settled offsets.
    Run(hookpipe::cli::run::Args),
    /// Re-send dead-lettered deliveries (by destination and time) through the same path.
    Replay(hookpipe::cli::replay::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Render(args) => hookpipe::cli::render::main(args),
        Command::Check(args) => hookpipe::cli::check::main(args),
        Command::Run(args) => hookpipe::cli::run::main(args),
        Command::Replay(args) => hookpipe::cli::replay::main(args),
    }
}
