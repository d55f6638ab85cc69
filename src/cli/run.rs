//! `hookpipe run`: loads the config and runs the pipeline until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `hookpipe run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file (TOML).
    #[arg(long, env = "HOOKPIPE_CONFIG")]
    pub config: PathBuf,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    match crate::config::load(&args.config) {
        Ok(_) => {
            eprintln!("hookpipe run: pipeline not wired yet");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("hookpipe run: {e}");
            ExitCode::FAILURE
        }
    }
}
