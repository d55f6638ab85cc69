//! `hookpipe check`: validates a config file and compiles its templates and filters without
//! connecting to anything; prints every problem, or "ok" and a summary.

use crate::config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `hookpipe check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file (TOML).
    #[arg(long, env = "HOOKPIPE_CONFIG")]
    pub config: PathBuf,
}

/// Runs the command: exit 0 and a summary on stdout, or exit 1 and every problem on stderr.
pub fn main(args: Args) -> ExitCode {
    match config::load(&args.config) {
        Ok(c) => {
            println!("{}", summary(&c));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hookpipe check: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The one-screen summary printed by `check` (no secret values: only header names).
pub fn summary(c: &config::Config) -> String {
    let mut s = format!(
        "ok: {} destination{} enabled",
        c.destinations.len(),
        if c.destinations.len() == 1 { "" } else { "s" }
    );
    if !c.disabled.is_empty() {
        s.push_str(&format!(
            " ({} disabled: {})",
            c.disabled.len(),
            c.disabled.join(", ")
        ));
    }
    s.push_str(&format!(
        "\n  kafka: {} group {:?}, {} extra setting(s)\n  topics: events {:?}, identify {:?}, cohort changes {:?}, cohort memberships {:?}, dead letters {:?}\n  pipeline: {} workers, {} in flight ({} per destination), drain {:?}",
        c.kafka.bootstrap_servers,
        c.kafka.group_id,
        c.kafka.settings.len(),
        c.topics.events,
        c.topics.identify,
        c.topics.cohort_changes,
        c.topics.cohort_memberships,
        c.topics.dead_letter,
        c.pipeline.workers,
        c.pipeline.max_in_flight,
        c.pipeline.max_in_flight_per_destination,
        c.pipeline.drain_timeout,
    ));
    match &c.retry {
        Some(r) => s.push_str(&format!(
            "\n  retry: {} attempts over {:?}, tiers {}-* consumed by group {:?}",
            r.schedule.attempts(),
            r.schedule.span(),
            r.tier_prefix,
            r.group_id
        )),
        None => s.push_str("\n  retry: off (a failed first attempt is dead-lettered)"),
    }
    for d in &c.destinations {
        s.push_str(&format!("\n  destination {:?} -> {}", d.name, d.url));
        if let Some(e) = &d.events {
            let types = if e.event_types.is_empty() {
                "all event types".to_string()
            } else {
                format!("event types {:?}", e.event_types)
            };
            s.push_str(&format!(
                "\n    events: {types}{}, {} payload",
                if e.filter.is_some() { " + filter" } else { "" },
                if e.template.is_some() {
                    "templated"
                } else {
                    "as-is"
                }
            ));
        }
        if let Some(u) = &d.users {
            s.push_str(&format!(
                "\n    users: {} payload",
                if u.template.is_some() {
                    "templated"
                } else {
                    "as-is"
                }
            ));
        }
        if let Some(co) = &d.cohorts {
            let which = match &co.cohorts {
                crate::cohort::config::CohortFilter::All => "all cohorts".to_string(),
                crate::cohort::config::CohortFilter::Only(ids) => format!("cohorts {ids:?}"),
            };
            s.push_str(&format!(
                "\n    cohorts: {which}, batches of {}, window {}, request timeout {:?}, {} payload",
                co.batch_size.get(),
                co.window,
                co.request_timeout,
                if co.template.is_some() {
                    "templated"
                } else {
                    "default"
                }
            ));
        }
        if !d.headers.is_empty() {
            let names: Vec<&str> = d.headers.iter().map(|(n, _)| n.as_str()).collect();
            s.push_str(&format!("\n    custom headers: {}", names.join(", ")));
        }
        if !d.signing_secrets.is_empty() {
            s.push_str(&format!(
                "\n    signed ({} secret(s))",
                d.signing_secrets.len()
            ));
        }
    }
    s
}
