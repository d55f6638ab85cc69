//! `hookpipe render`: renders a template on a JSON input and prints the payload, as a
//! destination would. Template errors go to stderr with name:line:column (and a caret for
//! compile errors) and exit code 3, like the reference oracle; usage and I/O errors exit 2.

use std::io::Write;
use std::process::ExitCode;

use bytes::BytesMut;

use crate::template::{Options, RenderState, Template};

/// Arguments of `hookpipe render`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The FreeMarker template file.
    #[arg(long)]
    pub template: std::path::PathBuf,
    /// The JSON input, exposed to the template as `input`.
    #[arg(long)]
    pub input: std::path::PathBuf,
    /// A FreeMarker setting applied before the template runs, e.g. `number_format=0.##`.
    #[arg(long = "setting", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
    /// Escape interpolations inside JSON strings and validate the output as JSON.
    #[arg(long)]
    pub json_mode: bool,
    /// Render N times after a warm-up and print `renders_per_s=<number>` last.
    #[arg(long, value_name = "N")]
    pub bench: Option<u64>,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let source = match std::fs::read_to_string(&args.template) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "hookpipe render: cannot read {}: {e}",
                args.template.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut input = match std::fs::read(&args.input) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hookpipe render: cannot read {}: {e}", args.input.display());
            return ExitCode::from(2);
        }
    };
    let mut options = Options {
        json_mode: args.json_mode,
        ..Options::default()
    };
    for s in &args.settings {
        match s.split_once('=') {
            Some((k, v)) => options.settings.push((k.trim().to_string(), v.to_string())),
            None => {
                eprintln!("hookpipe render: --setting needs NAME=VALUE, got {s:?}");
                return ExitCode::from(2);
            }
        }
    }
    let name = args.template.display().to_string();
    let template = match Template::compile(&name, &source, &options) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return ExitCode::from(3);
        }
    };
    let tape = match simd_json::to_tape(&mut input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "hookpipe render: {} is not valid JSON: {e}",
                args.input.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut state = RenderState::default();
    let mut out = BytesMut::with_capacity(4096);
    if let Err(e) = template.render(&mut state, tape.as_value(), &mut out) {
        eprintln!("ERROR: {e}");
        return ExitCode::from(3);
    }
    let mut stdout = std::io::stdout().lock();
    if let Some(n) = args.bench {
        // Warm-up, then N timed renders reusing the state and buffer.
        for _ in 0..n.min(10_000) {
            out.clear();
            let _ = template.render(&mut state, tape.as_value(), &mut out);
        }
        let start = std::time::Instant::now();
        for _ in 0..n {
            out.clear();
            if let Err(e) = template.render(&mut state, tape.as_value(), &mut out) {
                eprintln!("ERROR: {e}");
                return ExitCode::from(3);
            }
        }
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let _ = writeln!(stdout, "renders_per_s={:.0}", n as f64 / secs);
        return ExitCode::SUCCESS;
    }
    if stdout.write_all(&out).and_then(|_| stdout.flush()).is_err() {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
