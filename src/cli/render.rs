//! `hookpipe render`: renders a template on a JSON input and prints the payload.

use std::process::ExitCode;

/// Arguments of `hookpipe render`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The FreeMarker template file.
    #[arg(long)]
    pub template: std::path::PathBuf,
    /// The JSON input, exposed to the template as `input`.
    #[arg(long)]
    pub input: std::path::PathBuf,
}

/// Runs the command.
pub fn main(_args: Args) -> ExitCode {
    eprintln!("hookpipe render: the template engine is not built yet");
    ExitCode::from(2)
}
