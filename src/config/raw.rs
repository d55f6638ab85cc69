//! The config file exactly as written: serde structs with `deny_unknown_fields`, no checks beyond
//! types. [`super::validate`] turns a [`RawConfig`] into the trusted [`super::Config`].
//!
//! Every field is documented for users in `docs/configuration.md`; keep the two in step.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[kafka]`: how to reach the cluster.
    pub kafka: RawKafka,
    /// `[topics]`: what to read and where dead letters go.
    pub topics: RawTopics,
    /// `[pipeline]`: concurrency, memory bounds and shutdown.
    #[serde(default)]
    pub pipeline: RawPipeline,
    /// `[telemetry]`: metrics endpoint and log format.
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// `[retry]`: the durable retry tiers after a failed first attempt.
    #[serde(default)]
    pub retry: RawRetry,
    /// `[[destinations]]`: the webhooks.
    #[serde(default)]
    pub destinations: Vec<RawDestination>,
}

/// `[kafka]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `group.id` of the consumer group.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// librdkafka properties passed as-is (`security.protocol`, `sasl.*`, `ssl.*`, ...).
    #[serde(default)]
    pub settings: BTreeMap<String, RawSetting>,
}

fn default_group_id() -> String {
    "hookpipe".into()
}

/// One librdkafka property value: written inline, or read from an environment variable.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSetting {
    /// `"value"`.
    Text(String),
    /// `10000` (written as a TOML integer).
    Integer(i64),
    /// `true` / `false`.
    Bool(bool),
    /// `{ env = "NAME" }`: the value of an environment variable (for secrets).
    Env(RawEnvRef),
}

/// `{ env = "NAME" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvRef {
    /// The environment variable's name.
    pub env: String,
}

/// `[topics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopics {
    /// Topics of Amplitude export-format events.
    #[serde(default)]
    pub events: Vec<String>,
    /// Topics of identify (user) updates.
    #[serde(default)]
    pub identify: Vec<String>,
    /// Topics of computed cohort change chunks (`docs/cohorts.md`).
    #[serde(default)]
    pub cohort_changes: Vec<String>,
    /// Topics of per-user cohort membership events, aggregated over each destination's window
    /// (`docs/cohorts.md`).
    #[serde(default)]
    pub cohort_memberships: Vec<String>,
    /// Where malformed messages and undeliverable payloads go.
    pub dead_letter: String,
}

/// `[pipeline]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// Worker tasks decoding and rendering; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// Deliveries in flight in total.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Deliveries in flight to one destination.
    #[serde(default = "default_max_in_flight_per_destination")]
    pub max_in_flight_per_destination: usize,
    /// How long SIGTERM waits for in-flight deliveries before committing and exiting.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: String,
    /// How often settled offsets are committed.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: String,
    /// Consecutive failed attempts that open a destination's circuit; 0 = never.
    #[serde(default = "default_breaker_failures")]
    pub circuit_breaker_failures: u32,
    /// How long an open circuit skips attempts before one probe.
    #[serde(default = "default_breaker_cooldown")]
    pub circuit_breaker_cooldown: String,
    /// Hand a delivery whose destination is saturated to the retry path's overflow tier instead
    /// of waiting for a permit (ignored when `[retry] enabled = false`).
    #[serde(default = "default_overflow")]
    pub overflow: bool,
    /// How long a delivery may wait for a permit before it overflows, when its destination is
    /// not already overflowing.
    #[serde(default = "default_overflow_after")]
    pub overflow_after: String,
}

fn default_overflow_after() -> String {
    "20ms".into()
}

fn default_overflow() -> bool {
    true
}

fn default_breaker_failures() -> u32 {
    10
}
fn default_breaker_cooldown() -> String {
    "5s".into()
}

fn default_max_in_flight() -> usize {
    10_000
}
fn default_max_in_flight_per_destination() -> usize {
    1_000
}
fn default_drain_timeout() -> String {
    "30s".into()
}
fn default_commit_interval() -> String {
    "1s".into()
}

impl Default for RawPipeline {
    fn default() -> Self {
        RawPipeline {
            workers: 0,
            max_in_flight: default_max_in_flight(),
            max_in_flight_per_destination: default_max_in_flight_per_destination(),
            drain_timeout: default_drain_timeout(),
            commit_interval: default_commit_interval(),
            circuit_breaker_failures: default_breaker_failures(),
            circuit_breaker_cooldown: default_breaker_cooldown(),
            overflow: default_overflow(),
            overflow_after: default_overflow_after(),
        }
    }
}

/// `[telemetry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Address of the `/metrics`, `/healthz`, `/readyz` endpoint.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `"text"` or `"json"`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
}

fn default_listen() -> String {
    "0.0.0.0:9464".into()
}
fn default_log_format() -> String {
    "text".into()
}

impl Default for RawTelemetry {
    fn default() -> Self {
        RawTelemetry {
            listen: default_listen(),
            log_format: default_log_format(),
        }
    }
}

/// `[retry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Park failed first attempts in retry tiers; false: straight to the dead-letter topic.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Waits before attempts 2, 3, ...; absent = Amplitude's (1m 2m 4m 8m 15m 30m 45m 60m 75m).
    pub waits: Option<Vec<String>>,
    /// Tier topics are `<tier_prefix>-<wait>`.
    #[serde(default = "default_tier_prefix")]
    pub tier_prefix: String,
    /// Consumer group of the tier consumers; absent = `<kafka.group_id>-retry`.
    pub group_id: Option<String>,
    /// Create missing tier topics at start.
    #[serde(default = "yes")]
    pub create_topics: bool,
    /// Partitions of tier topics hookpipe creates; absent = max(6, enabled destinations).
    pub tier_partitions: Option<i32>,
    /// Replication factor of tier topics hookpipe creates.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Attempts in flight per tier consumer, in all.
    #[serde(default = "default_tier_max_in_flight")]
    pub tier_max_in_flight: usize,
    /// Attempts in flight per tier consumer, per destination.
    #[serde(default = "default_tier_max_in_flight_per_destination")]
    pub tier_max_in_flight_per_destination: usize,
    /// Due records queued per tier consumer, per destination, before its partition pauses.
    #[serde(default = "default_tier_max_queued_per_destination")]
    pub tier_max_queued_per_destination: usize,
    /// Due records queued per tier consumer in all before every partition pauses (last resort).
    #[serde(default = "default_tier_max_queued")]
    pub tier_max_queued: usize,
    /// librdkafka prefetch per partition of a tier topic, KiB.
    #[serde(default = "default_tier_prefetch_kbytes")]
    pub tier_prefetch_kbytes: usize,
}

fn default_tier_prefix() -> String {
    "hookpipe-retry".into()
}
fn default_tier_max_in_flight() -> usize {
    crate::retry::TierLimits::default().in_flight
}
fn default_tier_max_in_flight_per_destination() -> usize {
    crate::retry::TierLimits::default().in_flight_per_destination
}
fn default_tier_max_queued_per_destination() -> usize {
    crate::retry::TierLimits::default().queued_per_destination
}
fn default_tier_max_queued() -> usize {
    crate::retry::TierLimits::default().queued
}
fn default_tier_prefetch_kbytes() -> usize {
    crate::retry::TierLimits::default().prefetch_kbytes
}
fn default_replication() -> i32 {
    1
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            enabled: true,
            waits: None,
            tier_prefix: default_tier_prefix(),
            group_id: None,
            create_topics: true,
            tier_partitions: None,
            replication_factor: default_replication(),
            tier_max_in_flight: default_tier_max_in_flight(),
            tier_max_in_flight_per_destination: default_tier_max_in_flight_per_destination(),
            tier_max_queued_per_destination: default_tier_max_queued_per_destination(),
            tier_max_queued: default_tier_max_queued(),
            tier_prefetch_kbytes: default_tier_prefetch_kbytes(),
        }
    }
}

/// `[[destinations]]`: one webhook (an Amplitude "sync").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// Unique name, used in metrics, logs, delivery ids and dead letters.
    pub name: String,
    /// A disabled destination is validated but receives nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// http or https URL.
    pub url: String,
    /// TCP + TLS connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Timeout of one HTTP try.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
    /// Up to five custom headers.
    #[serde(default)]
    pub headers: Vec<RawHeader>,
    /// Standard Webhooks signing.
    pub signing: Option<RawSigning>,
    /// The "Send events" toggle.
    pub events: Option<RawEvents>,
    /// The "Send users" toggle.
    pub users: Option<RawUsers>,
    /// Cohort syncs (`docs/cohorts.md`).
    pub cohorts: Option<crate::cohort::RawCohortSettings>,
}

fn yes() -> bool {
    true
}
fn default_connect_timeout() -> String {
    "2s".into()
}
fn default_request_timeout() -> String {
    "5s".into()
}

/// `{ name = "...", value = "..." }` or `{ name = "...", value_env = "NAME" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    /// Header name.
    pub name: String,
    /// Inline value.
    pub value: Option<String>,
    /// Environment variable holding the value.
    pub value_env: Option<String>,
}

/// `[destinations.signing]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    /// Environment variables holding `whsec_...` secrets, newest first.
    pub secrets_env: Vec<String>,
}

/// `[destinations.events]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    /// Whether events are sent.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Event types to send; empty = all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Boolean FTL expression over `input`.
    pub filter: Option<String>,
    /// Template file, relative to the config file.
    pub template: Option<String>,
    /// Template text.
    pub template_inline: Option<String>,
    /// Several events per request (off when absent).
    pub batch: Option<RawBatch>,
}

/// `[destinations.users]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsers {
    /// Whether users are sent.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Template file, relative to the config file.
    pub template: Option<String>,
    /// Template text.
    pub template_inline: Option<String>,
    /// Several users per request (off when absent).
    pub batch: Option<RawBatch>,
}

/// `batch = { ... }` of `[destinations.events]` / `[destinations.users]`: several payloads per
/// request (beyond Amplitude, which sends one per request).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// A batch is sent once it holds this many payloads.
    #[serde(default = "default_batch_max_events")]
    pub max_events: i64,
    /// ...or once its payloads add up to this many bytes.
    #[serde(default = "default_batch_max_bytes")]
    pub max_bytes: i64,
    /// ...or once its oldest payload waited this long.
    #[serde(default = "default_batch_max_wait_ms")]
    pub max_wait_ms: i64,
    /// Batch template file (sees the list as `inputs`), relative to the config file.
    pub template: Option<String>,
    /// Batch template text.
    pub template_inline: Option<String>,
}

fn default_batch_max_events() -> i64 {
    100
}
fn default_batch_max_bytes() -> i64 {
    1 << 20
}
fn default_batch_max_wait_ms() -> i64 {
    1_000
}
