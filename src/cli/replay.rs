//! `hookpipe replay`: re-sends dead-lettered deliveries (by destination and dead-letter time)
//! through the same path as new ones, for when a customer has fixed their endpoint. Failures go
//! through the config's retry tiers again (which `hookpipe run` consumes); the dead-letter topic
//! is left as it is.

use crate::config::Config;
use crate::retry::park::{producer_config, DEFAULT_TIER_PREFIX};
use crate::retry::replay::{parse_time, replay, ReplayFilter};
use crate::retry::{Parker, Schedule};
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `hookpipe replay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file (TOML): Kafka, the dead-letter topic and the destinations.
    #[arg(long, env = "HOOKPIPE_CONFIG")]
    pub config: PathBuf,
    /// Replay only deliveries to this destination (repeatable; default: all destinations).
    #[arg(long = "destination", value_name = "NAME")]
    pub destinations: Vec<String>,
    /// Only deliveries dead-lettered at or after this time: unix milliseconds or RFC 3339 UTC
    /// (2026-11-23T04:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<u64>,
    /// Only deliveries dead-lettered before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<u64>,
    /// Deliveries re-sent at the same time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Longest time allowed to read the dead-letter topic to its end.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    pub read_timeout_secs: u64,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let config = match crate::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookpipe replay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let unknown: Vec<&String> = args
        .destinations
        .iter()
        .filter(|d| !config.destinations.iter().any(|c| &c.name == *d))
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "hookpipe replay: --destination {unknown:?}: not an enabled destination in the config"
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookpipe replay: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&config, &args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookpipe replay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &Config, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    for (key, value) in &config.kafka.settings {
        base.set(key, value.expose());
    }
    let mut clients = HashMap::new();
    for d in &config.destinations {
        clients.insert(d.name.clone(), crate::pipeline::client(d)?);
    }
    let producer: FutureProducer = producer_config(&base).create()?;
    // Failures follow the config's retry tiers, as in `hookpipe run`; with `[retry] enabled =
    // false` a failed replay is dead-lettered again at once.
    let (schedule, prefix) = match &config.retry {
        Some(r) => (r.schedule.clone(), r.tier_prefix.as_str()),
        None => (Schedule::new(Vec::new())?, DEFAULT_TIER_PREFIX),
    };
    let mut parker = Parker::new(
        producer,
        schedule,
        prefix,
        config.topics.dead_letter.clone(),
    );
    if config.retry.is_some() {
        // Re-failures go to each destination's own partition of the tiers, as in `hookpipe run`.
        let names: Vec<&String> = clients.keys().collect();
        parker = match parker.clone().placed(&names, Duration::from_secs(10)).await {
            Ok(placed) => placed,
            Err(e) => {
                eprintln!("hookpipe replay: {e}; re-failures are partitioned by destination name");
                parker
            }
        };
    }
    let filter = ReplayFilter {
        destinations: args.destinations.clone(),
        since_unix_ms: args.since,
        until_unix_ms: args.until,
    };
    let report = replay(
        &base,
        &config.topics.dead_letter,
        &filter,
        &clients,
        &parker,
        args.concurrency,
        Duration::from_secs(args.read_timeout_secs),
    )
    .await?;
    println!(
        "replay of {}: scanned {}, replayed {} (delivered {}, parked for retry {}, dead-lettered again {}), \
         filtered out {}, not delivery records {}, destination not configured {}",
        config.topics.dead_letter,
        report.scanned,
        report.delivered + report.parked + report.dead_lettered,
        report.delivered,
        report.parked,
        report.dead_lettered,
        report.filtered_out,
        report.not_deliveries,
        report.unknown_destination,
    );
    Ok(())
}
