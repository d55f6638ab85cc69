//! The TOML config file, parsed and validated once into types the rest of hookpipe trusts.
//!
//! [`load`] reads a file, deserializes it into [`raw::RawConfig`] (unknown fields are errors),
//! and [`validate::validate`] checks everything at once (URLs, headers, environment variables,
//! templates and filters, which it compiles) and either returns a [`Config`] or every problem,
//! each naming its path in the file. Nothing downstream re-checks what is here.

pub mod duration;
pub mod raw;
mod secret;
pub mod validate;

pub use secret::Secret;
pub use validate::{validate, ConfigError, ConfigErrors};

use crate::template::{Condition, Template};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A validated config: what `hookpipe run` runs and `hookpipe check` summarizes.
#[derive(Debug)]
pub struct Config {
    /// How to reach Kafka.
    pub kafka: Kafka,
    /// Input topics and the dead-letter topic.
    pub topics: Topics,
    /// Concurrency, memory bounds and shutdown.
    pub pipeline: Pipeline,
    /// Metrics endpoint and logs.
    pub telemetry: Telemetry,
    /// The retry tiers, or `None` when `[retry] enabled = false` (failed first attempts are
    /// dead-lettered at once).
    pub retry: Option<Retry>,
    /// Enabled destinations, in file order (disabled ones are validated, then left out).
    pub destinations: Vec<Arc<Destination>>,
    /// Names of the destinations that are validated but disabled.
    pub disabled: Vec<String>,
}

/// `[kafka]`, validated.
#[derive(Debug, Clone)]
pub struct Kafka {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `group.id`.
    pub group_id: String,
    /// librdkafka properties passed as-is; values may be secrets (SASL passwords), hence
    /// [`Secret`].
    pub settings: Vec<(String, Secret)>,
}

/// `[topics]`, validated: at least one input topic, no topic read twice, dead letters elsewhere.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Amplitude export-format event topics.
    pub events: Vec<String>,
    /// Identify (user) update topics.
    pub identify: Vec<String>,
    /// Computed cohort change topics.
    pub cohort_changes: Vec<String>,
    /// Per-user cohort membership event topics.
    pub cohort_memberships: Vec<String>,
    /// Dead-letter topic.
    pub dead_letter: String,
}

/// `[pipeline]`, validated.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Worker tasks (resolved: never 0).
    pub workers: usize,
    /// Deliveries in flight in total (≥ 1).
    pub max_in_flight: usize,
    /// Deliveries in flight per destination (≥ 1, ≤ `max_in_flight`).
    pub max_in_flight_per_destination: usize,
    /// SIGTERM drain deadline.
    pub drain_timeout: Duration,
    /// Period of offset commits.
    pub commit_interval: Duration,
    /// Consecutive failed attempts that open a destination's circuit (0: never).
    pub circuit_breaker_failures: u32,
    /// How long an open circuit skips attempts before one probe.
    pub circuit_breaker_cooldown: Duration,
    /// Overflow saturated destinations to the retry path's overflow tier instead of waiting
    /// (only with `[retry]` enabled; see `pipeline` module docs).
    pub overflow: bool,
    /// Longest wait for a permit before overflowing, paid only when the destination is not
    /// overflowing already (so a healthy destination's momentary saturation does not overflow).
    pub overflow_after: Duration,
}

/// `[retry]`, validated: the schedule is usable and its tier topics are legal Kafka names that
/// collide with no input or dead-letter topic.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Waits between attempts.
    pub schedule: crate::retry::Schedule,
    /// Tier topic prefix.
    pub tier_prefix: String,
    /// The tier consumers' group.
    pub group_id: String,
    /// Create missing tier topics at start.
    pub create_topics: bool,
    /// Partitions of created tier topics (default: one per enabled destination, at least 6).
    pub tier_partitions: i32,
    /// Replication factor of created tier topics.
    pub replication_factor: i32,
    /// Concurrency and memory bounds of each tier consumer.
    pub limits: crate::retry::TierLimits,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`, validated.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
}

/// One enabled destination with its templates and filter compiled.
#[derive(Debug)]
pub struct Destination {
    /// Unique name.
    pub name: String,
    /// http(s) URL.
    pub url: String,
    /// Custom headers (at most five, none of them preset or framing headers), values secret.
    pub headers: Vec<(String, Secret)>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one HTTP try.
    pub request_timeout: Duration,
    /// Standard Webhooks secrets, newest first; empty: unsigned.
    pub signing_secrets: Vec<Secret>,
    /// "Send events", if on.
    pub events: Option<EventsRoute>,
    /// "Send users", if on.
    pub users: Option<UsersRoute>,
    /// Cohort syncs, if on.
    pub cohorts: Option<crate::cohort::CohortRoute>,
}

/// The "Send events" toggle of a destination, when enabled.
#[derive(Debug)]
pub struct EventsRoute {
    /// Event types sent, sorted and unique; empty = all.
    pub event_types: Vec<String>,
    /// Compiled boolean filter over the event.
    pub filter: Option<Condition>,
    /// Compiled payload template; `None` = the event JSON as-is.
    pub template: Option<Template>,
    /// Several events per request, if on.
    pub batch: Option<Batching>,
}

impl EventsRoute {
    /// Whether `event_type` passes the event-type list (before the filter expression).
    pub fn accepts_type(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self
                .event_types
                .binary_search_by(|t| t.as_str().cmp(event_type))
                .is_ok()
    }
}

/// The "Send users" toggle of a destination, when enabled.
#[derive(Debug)]
pub struct UsersRoute {
    /// Compiled payload template; `None` = the user JSON as-is.
    pub template: Option<Template>,
    /// Several users per request, if on.
    pub batch: Option<Batching>,
}

/// Batching of one payload kind of a destination, validated: limits in range, the batch template
/// compiled (`docs/configuration.md`, "Batching"). Without it, Amplitude's one payload per
/// request.
#[derive(Debug)]
pub struct Batching {
    /// A batch is sent once it holds this many payloads (1..=[`validate::MAX_BATCH_EVENTS`], and
    /// at most `pipeline.max_in_flight`, since every buffered payload holds a permit).
    pub max_events: usize,
    /// ...or once its payloads (as-is or rendered, the JSON array's commas and brackets
    /// included) reach this many bytes (1..=[`validate::MAX_BATCH_BYTES`]). A payload that alone
    /// exceeds it travels in a batch of one.
    pub max_bytes: usize,
    /// ...or once its oldest payload waited this long (1 ms..=[`validate::MAX_BATCH_WAIT_MS`]).
    pub max_wait: Duration,
    /// Rendered once per batch with the list of the batch's inputs bound to `inputs`; `None`:
    /// the body is the JSON array of the payloads.
    pub template: Option<Template>,
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a field of the wrong type or unknown.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// Parsed, but with problems; every one is listed.
    #[error("{path}: {errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: ConfigErrors,
    },
}

/// Reads, parses and validates the config file at `path`, resolving `{ env = .. }` and
/// `value_env` from the process environment and template paths relative to the file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    load_str(&text, base, &|name| std::env::var(name).ok()).map_err(|e| match e {
        StrError::Parse(message) => LoadError::Parse {
            path: path.to_owned(),
            message,
        },
        StrError::Invalid(errors) => LoadError::Invalid {
            path: path.to_owned(),
            errors,
        },
    })
}

/// Why [`load_str`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StrError {
    /// TOML syntax or shape.
    #[error("{0}")]
    Parse(String),
    /// Validation problems.
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// Parses and validates config text; `base` resolves template paths, `env` looks variables up.
/// Tests use it with a fake environment.
pub fn load_str(
    text: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, StrError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| StrError::Parse(e.to_string()))?;
    validate(raw, base, env).map_err(StrError::Invalid)
}

#[cfg(test)]
mod tests;
