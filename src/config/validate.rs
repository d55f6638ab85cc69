//! Turns a [`RawConfig`] into a [`Config`], collecting every problem with its path in the file
//! (`destinations[1] "braze".headers: 6 custom headers, at most 5`) and failing once.
//!
//! Templates and filters are compiled here, so a broken template is a start-up error with
//! file:line:column and a caret, never a surprise at the first event. Environment variables are
//! resolved here; an unset one is named, a value is never printed.

use super::raw::{RawBatch, RawConfig, RawDestination, RawEvents, RawHeader, RawSetting, RawUsers};
use super::{
    duration, Batching, Config, Destination, EventsRoute, Kafka, LogFormat, Pipeline, Retry,
    Secret, Telemetry, Topics, UsersRoute,
};
use crate::template::{self, Condition, Template};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// At most this many custom headers per destination (Amplitude's limit).
pub const MAX_CUSTOM_HEADERS: usize = 5;

/// Largest `batch.max_events`.
pub const MAX_BATCH_EVENTS: i64 = 10_000;

/// Largest `batch.max_bytes` (the engine's default limit on one render's output).
pub const MAX_BATCH_BYTES: i64 = 16 << 20;

/// Largest `batch.max_wait_ms`: Amplitude's latency target is one minute.
pub const MAX_BATCH_WAIT_MS: i64 = 60_000;

/// Headers hookpipe always sends itself; a custom header may not override them.
pub const PRESET_HEADERS: [&str; 2] = ["content-type", "user-agent"];

/// Headers a custom header may not set because the HTTP client or the delivery protocol owns
/// them (framing, the delivery id and type, signatures): the delivery client's own list, so
/// `hookpipe check` refuses exactly what `hookpipe run` would.
use crate::deliver::request::RESERVED_HEADERS;

/// librdkafka properties hookpipe sets itself: setting them in `[kafka.settings]` would break
/// the offset-commit contract or contradict `[kafka]`.
const OWNED_KAFKA_SETTINGS: [&str; 5] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `destinations[1] "braze".headers[0]`, `pipeline.drain_timeout`, ...
    pub path: String,
    /// What is wrong (may span lines, e.g. a template caret snippet).
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{}", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  - {}", e.to_string().replace('\n', "\n    "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems while validation walks the file.
struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Validates `raw`: `base` is the directory template paths are relative to, `env` looks up
/// environment variables. Returns the trusted config, or every problem at once.
pub fn validate(
    raw: RawConfig,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut p = Problems(Vec::new());
    let kafka = kafka(&raw.kafka, env, &mut p);
    let topics = topics(&raw.topics, &mut p);
    let pipeline = pipeline(&raw.pipeline, &mut p);
    let telemetry = telemetry(&raw.telemetry, &mut p);
    let enabled = raw.destinations.iter().filter(|d| d.enabled).count();
    let retry = retry(
        &raw.retry,
        &raw.kafka.group_id,
        &raw.topics,
        enabled,
        &mut p,
    );

    let mut names = HashSet::new();
    let mut destinations = Vec::new();
    let mut disabled = Vec::new();
    if raw.destinations.is_empty() {
        p.add(
            "destinations",
            "no [[destinations]]: nothing would be delivered",
        );
    }
    for (i, d) in raw.destinations.iter().enumerate() {
        let path = format!("destinations[{i}] {:?}", d.name);
        if d.name.trim().is_empty() {
            p.add(format!("destinations[{i}].name"), "empty name");
        } else if !names.insert(d.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("duplicate destination name {:?}", d.name),
            );
        } else if d.name.chars().any(|c| c.is_control()) {
            p.add(format!("{path}.name"), "control character in name");
        }
        if let Some(dest) = destination(d, &path, base, env, &mut p) {
            if d.enabled {
                destinations.push(Arc::new(dest));
            } else {
                disabled.push(d.name.clone());
            }
        }
    }
    batch_budget(&raw, &mut p);
    if !raw.destinations.is_empty() && raw.destinations.iter().all(|d| !d.enabled) {
        p.add(
            "destinations",
            "every destination is disabled: nothing would be delivered",
        );
    }

    match (kafka, topics, pipeline, telemetry, retry) {
        (Some(kafka), Some(topics), Some(pipeline), Some(telemetry), Some(retry))
            if p.0.is_empty() =>
        {
            Ok(Config {
                kafka,
                topics,
                pipeline,
                telemetry,
                retry,
                destinations,
                disabled,
            })
        }
        _ => Err(ConfigErrors(p.0)),
    }
}

fn resolve_env(
    name: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Secret> {
    if name.is_empty() {
        p.add(path, "empty environment variable name");
        return None;
    }
    match env(name) {
        Some(v) => Some(Secret::new(v)),
        None => {
            p.add(path, format!("environment variable {name} is not set"));
            None
        }
    }
}

fn kafka(
    raw: &super::raw::RawKafka,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Kafka> {
    let before = p.0.len();
    if raw.bootstrap_servers.trim().is_empty() {
        p.add("kafka.bootstrap_servers", "empty");
    }
    if raw.group_id.trim().is_empty() {
        p.add("kafka.group_id", "empty");
    }
    let mut settings = Vec::new();
    for (key, value) in &raw.settings {
        let path = format!("kafka.settings.{key:?}");
        if key.trim().is_empty() {
            p.add(&path, "empty property name");
            continue;
        }
        if OWNED_KAFKA_SETTINGS.contains(&key.as_str()) {
            p.add(
                &path,
                "set by hookpipe itself (bootstrap.servers and group.id come from [kafka]; \
                 offsets are committed by hookpipe)",
            );
            continue;
        }
        let value = match value {
            RawSetting::Text(s) => Some(Secret::new(s.clone())),
            RawSetting::Integer(n) => Some(Secret::new(n.to_string())),
            RawSetting::Bool(b) => Some(Secret::new(b.to_string())),
            RawSetting::Env(r) => resolve_env(&r.env, &path, env, p),
        };
        if let Some(v) = value {
            settings.push((key.clone(), v));
        }
    }
    (p.0.len() == before).then(|| Kafka {
        bootstrap_servers: raw.bootstrap_servers.clone(),
        group_id: raw.group_id.clone(),
        settings,
    })
}

/// Kafka's own rule for topic names.
fn topic_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty topic name".into());
    }
    if name.len() > 249 {
        return Some(format!("topic name longer than 249 characters: {name:?}"));
    }
    if name == "." || name == ".." {
        return Some(format!("invalid topic name {name:?}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "invalid character {c:?} in topic name {name:?} (allowed: a-z A-Z 0-9 . _ -)"
        ));
    }
    None
}

fn topics(raw: &super::raw::RawTopics, p: &mut Problems) -> Option<Topics> {
    let before = p.0.len();
    let mut seen = HashSet::new();
    for (field, list) in [
        ("events", &raw.events),
        ("identify", &raw.identify),
        ("cohort_changes", &raw.cohort_changes),
        ("cohort_memberships", &raw.cohort_memberships),
    ] {
        for (i, t) in list.iter().enumerate() {
            let path = format!("topics.{field}[{i}]");
            if let Some(m) = topic_name_problem(t) {
                p.add(path, m);
            } else if !seen.insert(t.as_str()) {
                p.add(path, format!("topic {t:?} is listed twice"));
            }
        }
    }
    if raw.events.is_empty()
        && raw.identify.is_empty()
        && raw.cohort_changes.is_empty()
        && raw.cohort_memberships.is_empty()
    {
        p.add(
            "topics",
            "no input topics: set topics.events, topics.identify, topics.cohort_changes and/or \
             topics.cohort_memberships",
        );
    }
    if let Some(m) = topic_name_problem(&raw.dead_letter) {
        p.add("topics.dead_letter", m);
    } else if seen.contains(raw.dead_letter.as_str()) {
        p.add(
            "topics.dead_letter",
            format!("{:?} is also an input topic", raw.dead_letter),
        );
    }
    (p.0.len() == before).then(|| Topics {
        events: raw.events.clone(),
        identify: raw.identify.clone(),
        cohort_changes: raw.cohort_changes.clone(),
        cohort_memberships: raw.cohort_memberships.clone(),
        dead_letter: raw.dead_letter.clone(),
    })
}

fn parse_duration(text: &str, path: &str, p: &mut Problems) -> Option<Duration> {
    match duration::parse(text) {
        Ok(d) if d.is_zero() => {
            p.add(path, "must be greater than zero");
            None
        }
        Ok(d) => Some(d),
        Err(m) => {
            p.add(path, m);
            None
        }
    }
}

fn pipeline(raw: &super::raw::RawPipeline, p: &mut Problems) -> Option<Pipeline> {
    let before = p.0.len();
    let workers = if raw.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        raw.workers
    };
    if raw.workers > 1024 {
        p.add(
            "pipeline.workers",
            format!("{} workers, at most 1024", raw.workers),
        );
    }
    if raw.max_in_flight == 0 {
        p.add("pipeline.max_in_flight", "must be at least 1");
    }
    if raw.max_in_flight_per_destination == 0 {
        p.add(
            "pipeline.max_in_flight_per_destination",
            "must be at least 1",
        );
    } else if raw.max_in_flight_per_destination > raw.max_in_flight {
        p.add(
            "pipeline.max_in_flight_per_destination",
            format!(
                "{} is more than pipeline.max_in_flight ({})",
                raw.max_in_flight_per_destination, raw.max_in_flight
            ),
        );
    }
    let drain_timeout = parse_duration(&raw.drain_timeout, "pipeline.drain_timeout", p);
    let commit_interval = parse_duration(&raw.commit_interval, "pipeline.commit_interval", p);
    let cooldown = parse_duration(
        &raw.circuit_breaker_cooldown,
        "pipeline.circuit_breaker_cooldown",
        p,
    );
    let overflow_after = parse_duration(&raw.overflow_after, "pipeline.overflow_after", p);
    match (drain_timeout, commit_interval, cooldown, overflow_after) {
        (Some(drain_timeout), Some(commit_interval), Some(cooldown), Some(overflow_after))
            if p.0.len() == before =>
        {
            Some(Pipeline {
                workers,
                max_in_flight: raw.max_in_flight,
                max_in_flight_per_destination: raw.max_in_flight_per_destination,
                drain_timeout,
                commit_interval,
                circuit_breaker_failures: raw.circuit_breaker_failures,
                circuit_breaker_cooldown: cooldown,
                overflow: raw.overflow,
                overflow_after,
            })
        }
        _ => None,
    }
}

fn telemetry(raw: &super::raw::RawTelemetry, p: &mut Problems) -> Option<Telemetry> {
    let listen = match raw.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "telemetry.listen",
                format!("{:?} is not an address like \"0.0.0.0:9464\"", raw.listen),
            );
            None
        }
    };
    let log_format = match raw.log_format.as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => {
            p.add(
                "telemetry.log_format",
                format!("{other:?}, expected \"text\" or \"json\""),
            );
            None
        }
    };
    Some(Telemetry {
        listen: listen?,
        log_format: log_format?,
    })
}

/// The largest `retry.tier_prefetch_kbytes`: 1 GiB per partition.
const MAX_PREFETCH_KBYTES: usize = 1 << 20;

/// `Some(None)`: valid and disabled; `None`: problems were recorded.
fn retry(
    raw: &super::raw::RawRetry,
    group_id: &str,
    topics: &super::raw::RawTopics,
    destinations: usize,
    p: &mut Problems,
) -> Option<Option<Retry>> {
    let before = p.0.len();
    let schedule = match &raw.waits {
        None => Some(crate::retry::Schedule::amplitude()),
        Some(waits) => {
            let mut parsed = Vec::new();
            for (i, w) in waits.iter().enumerate() {
                if let Some(d) = parse_duration(w, &format!("retry.waits[{i}]"), p) {
                    parsed.push(d);
                }
            }
            if parsed.len() == waits.len() {
                match crate::retry::Schedule::new(parsed) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        p.add("retry.waits", e.to_string());
                        None
                    }
                }
            } else {
                None
            }
        }
    };
    // One partition per destination keeps destinations from sharing one (docs/retries.md).
    let default_partitions = i32::try_from(destinations).unwrap_or(i32::MAX).max(6);
    let tier_partitions = raw.tier_partitions.unwrap_or(default_partitions);
    if tier_partitions < 1 {
        p.add("retry.tier_partitions", "must be at least 1");
    }
    let limits = crate::retry::TierLimits {
        in_flight: raw.tier_max_in_flight,
        in_flight_per_destination: raw.tier_max_in_flight_per_destination,
        queued_per_destination: raw.tier_max_queued_per_destination,
        queued: raw.tier_max_queued,
        prefetch_kbytes: raw.tier_prefetch_kbytes,
    };
    for (field, value) in [
        ("retry.tier_max_in_flight", limits.in_flight),
        (
            "retry.tier_max_in_flight_per_destination",
            limits.in_flight_per_destination,
        ),
        (
            "retry.tier_max_queued_per_destination",
            limits.queued_per_destination,
        ),
        ("retry.tier_max_queued", limits.queued),
        ("retry.tier_prefetch_kbytes", limits.prefetch_kbytes),
    ] {
        if value < 1 {
            p.add(field, "must be at least 1");
        }
    }
    if limits.in_flight_per_destination > limits.in_flight {
        p.add(
            "retry.tier_max_in_flight_per_destination",
            format!(
                "{} is more than retry.tier_max_in_flight ({})",
                limits.in_flight_per_destination, limits.in_flight
            ),
        );
    }
    if limits.queued_per_destination > limits.queued {
        p.add(
            "retry.tier_max_queued_per_destination",
            format!(
                "{} is more than retry.tier_max_queued ({})",
                limits.queued_per_destination, limits.queued
            ),
        );
    }
    if limits.prefetch_kbytes > MAX_PREFETCH_KBYTES {
        p.add(
            "retry.tier_prefetch_kbytes",
            format!(
                "{} is more than {MAX_PREFETCH_KBYTES} (1 GiB per partition)",
                limits.prefetch_kbytes
            ),
        );
    }
    if raw.replication_factor < 1 {
        p.add("retry.replication_factor", "must be at least 1");
    }
    let group = match &raw.group_id {
        Some(g) if g.trim().is_empty() => {
            p.add("retry.group_id", "empty");
            String::new()
        }
        Some(g) => {
            if g == group_id {
                p.add(
                    "retry.group_id",
                    "must differ from kafka.group_id (the tiers are consumed by their own group)",
                );
            }
            g.clone()
        }
        None => format!("{group_id}-retry"),
    };
    if let Some(s) = &schedule {
        let inputs: HashSet<&str> = topics
            .events
            .iter()
            .chain(&topics.identify)
            .chain(&topics.cohort_changes)
            .chain(&topics.cohort_memberships)
            .map(String::as_str)
            .chain([topics.dead_letter.as_str()])
            .collect();
        let overflow = crate::retry::park::overflow_topic(&raw.tier_prefix);
        for t in s
            .tier_topics(&raw.tier_prefix)
            .into_iter()
            .chain([overflow])
        {
            if let Some(m) = topic_name_problem(&t) {
                p.add("retry.tier_prefix", format!("tier topic {t:?}: {m}"));
                break;
            }
            if inputs.contains(t.as_str()) {
                p.add(
                    "retry.tier_prefix",
                    format!("tier topic {t:?} is also an input or dead-letter topic"),
                );
            }
        }
    }
    if p.0.len() != before {
        return None;
    }
    if !raw.enabled {
        return Some(None);
    }
    Some(Some(Retry {
        schedule: schedule?,
        tier_prefix: raw.tier_prefix.clone(),
        group_id: group,
        create_topics: raw.create_topics,
        tier_partitions,
        replication_factor: raw.replication_factor,
        limits,
    }))
}

fn url_problem(url: &str) -> Option<String> {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return Some(format!("{url:?} is not a valid URL: {e}")),
    };
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => {
            return Some(format!(
                "scheme {other:?} in {url:?}, expected http or https"
            ))
        }
        None => {
            return Some(format!(
                "{url:?} has no scheme, expected http:// or https://"
            ))
        }
    }
    match uri.host() {
        Some(h) if !h.is_empty() => None,
        _ => Some(format!("{url:?} has no host")),
    }
}

fn destination(
    d: &RawDestination,
    path: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Destination> {
    let before = p.0.len();
    if let Some(m) = url_problem(&d.url) {
        p.add(format!("{path}.url"), m);
    }
    let connect_timeout = parse_duration(&d.connect_timeout, &format!("{path}.connect_timeout"), p);
    let request_timeout = parse_duration(&d.request_timeout, &format!("{path}.request_timeout"), p);
    let headers = headers(&d.headers, path, env, p);

    let mut signing_secrets = Vec::new();
    if let Some(s) = &d.signing {
        if s.secrets_env.is_empty() {
            p.add(
                format!("{path}.signing.secrets_env"),
                "empty: name at least one variable",
            );
        }
        for (i, name) in s.secrets_env.iter().enumerate() {
            let spath = format!("{path}.signing.secrets_env[{i}]");
            if let Some(secret) = resolve_env(name, &spath, env, p) {
                match signing_secret_problem(secret.expose()) {
                    Some(m) => p.add(spath, format!("{name}: {m}")),
                    None => signing_secrets.push(secret),
                }
            }
        }
    }

    let events = d
        .events
        .as_ref()
        .filter(|e| e.enabled)
        .and_then(|e| events(e, &format!("{path}.events"), base, p));
    let users = d
        .users
        .as_ref()
        .filter(|u| u.enabled)
        .and_then(|u| users(u, &format!("{path}.users"), base, p));
    let cohorts_on = d
        .cohorts
        .as_ref()
        .is_some_and(|c| c.enabled.unwrap_or(true));
    let cohorts = d
        .cohorts
        .as_ref()
        .filter(|_| cohorts_on)
        .and_then(|c| cohorts(c, &d.name, &format!("{path}.cohorts"), base, p));
    let events_on = d.events.as_ref().is_some_and(|e| e.enabled);
    let users_on = d.users.as_ref().is_some_and(|u| u.enabled);
    if d.enabled && !events_on && !users_on && !cohorts_on {
        p.add(
            path,
            "neither [destinations.events] nor [destinations.users] is enabled (nor [destinations.cohorts]): nothing would be sent",
        );
    }
    if p.0.len() != before {
        return None;
    }
    Some(Destination {
        name: d.name.clone(),
        url: d.url.clone(),
        headers: headers?,
        connect_timeout: connect_timeout?,
        request_timeout: request_timeout?,
        signing_secrets,
        events,
        users,
        cohorts,
    })
}

/// `whsec_` followed by base64 (Standard Webhooks).
fn signing_secret_problem(secret: &str) -> Option<String> {
    use base64::Engine as _;
    let Some(b64) = secret.strip_prefix("whsec_") else {
        return Some("not a Standard Webhooks secret (expected \"whsec_\" + base64)".into());
    };
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(key) if !key.is_empty() => None,
        _ => Some("the part after \"whsec_\" is not valid non-empty base64".into()),
    }
}

fn headers(
    raw: &[RawHeader],
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Vec<(String, Secret)>> {
    let before = p.0.len();
    if raw.len() > MAX_CUSTOM_HEADERS {
        p.add(
            format!("{path}.headers"),
            format!("{} custom headers, at most {MAX_CUSTOM_HEADERS}", raw.len()),
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, h) in raw.iter().enumerate() {
        let hpath = format!("{path}.headers[{i}]");
        let lower = h.name.to_ascii_lowercase();
        if h.name.contains(['\r', '\n']) {
            p.add(format!("{hpath}.name"), "CR or LF in header name");
        } else if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            p.add(
                format!("{hpath}.name"),
                format!("{:?} is not a valid header name", h.name),
            );
        } else if PRESET_HEADERS.contains(&lower.as_str()) {
            p.add(
                format!("{hpath}.name"),
                format!(
                    "{:?} is a preset header (Content-Type: application/json, \
                     User-Agent: Amplitude/Webhook/1.0) and cannot be overridden",
                    h.name
                ),
            );
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            p.add(
                format!("{hpath}.name"),
                format!(
                    "{:?} is set by hookpipe and cannot be a custom header",
                    h.name
                ),
            );
        } else if !seen.insert(lower) {
            p.add(
                format!("{hpath}.name"),
                format!("header {:?} is set twice", h.name),
            );
        }
        let value = match (&h.value, &h.value_env) {
            (Some(v), None) => Some(Secret::new(v.clone())),
            (None, Some(name)) => resolve_env(name, &format!("{hpath}.value_env"), env, p),
            (Some(_), Some(_)) => {
                p.add(&hpath, "both value and value_env: set exactly one");
                None
            }
            (None, None) => {
                p.add(&hpath, "neither value nor value_env: set exactly one");
                None
            }
        };
        if let Some(v) = value {
            // Never print the value: it may be a token.
            if v.expose().contains(['\r', '\n']) {
                p.add(format!("{hpath}.value"), "CR or LF in header value");
            } else if http::HeaderValue::from_str(v.expose()).is_err() {
                p.add(
                    format!("{hpath}.value"),
                    "invalid header value (control characters or non-ASCII)",
                );
            } else {
                out.push((h.name.clone(), v));
            }
        }
    }
    (p.0.len() == before).then_some(out)
}

/// Where a template's source comes from, for error messages.
struct TemplateSource {
    /// Name used in errors: the path as written, or the config path of the inline text.
    name: String,
    text: String,
}

fn template_source(
    file: &Option<String>,
    inline: &Option<String>,
    path: &str,
    base: &Path,
    p: &mut Problems,
) -> Option<TemplateSource> {
    match (file, inline) {
        (Some(_), Some(_)) => {
            p.add(path, "both template and template_inline: set at most one");
            None
        }
        (Some(f), None) => {
            let full = base.join(f);
            match std::fs::read_to_string(&full) {
                Ok(text) => Some(TemplateSource {
                    name: f.clone(),
                    text,
                }),
                Err(e) => {
                    p.add(
                        format!("{path}.template"),
                        format!("cannot read {}: {e}", full.display()),
                    );
                    None
                }
            }
        }
        (None, Some(text)) => Some(TemplateSource {
            name: format!("{path}.template_inline"),
            text: text.clone(),
        }),
        (None, None) => None,
    }
}

/// `name:line:column: message` plus the offending line and a caret under the column (the
/// engine's snippet when it gives one, else built here from the source).
fn compile_problem(e: &template::CompileError, source: &str) -> String {
    if !e.snippet.trim().is_empty() {
        return e.to_string().trim_end().to_string();
    }
    let mut m = format!("{}:{}:{}: {}", e.name, e.line, e.column, e.message);
    if let Some(line) = source.lines().nth(e.line.saturating_sub(1) as usize) {
        let caret_at: usize = line
            .chars()
            .take(e.column.saturating_sub(1) as usize)
            .map(|c| if c == '\t' { 4 } else { 1 })
            .sum();
        m.push_str(&format!(
            "\n  {}\n  {}^",
            line.replace('\t', "    "),
            " ".repeat(caret_at)
        ));
    }
    m
}

fn compile_template(src: &TemplateSource, path: &str, p: &mut Problems) -> Option<Template> {
    match Template::compile(&src.name, &src.text, &template::Options::default()) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(path, compile_problem(&e, &src.text));
            None
        }
    }
}

fn events(e: &RawEvents, path: &str, base: &Path, p: &mut Problems) -> Option<EventsRoute> {
    let before = p.0.len();
    let mut event_types = e.event_types.clone();
    for (i, t) in event_types.iter().enumerate() {
        if t.is_empty() {
            p.add(format!("{path}.event_types[{i}]"), "empty event type");
        }
    }
    event_types.sort();
    event_types.dedup();
    let filter = match &e.filter {
        Some(expr) if expr.trim().is_empty() => {
            p.add(format!("{path}.filter"), "empty filter expression");
            None
        }
        Some(expr) => {
            let name = format!("{path}.filter");
            match Condition::compile(&name, expr, &template::Options::default()) {
                Ok(c) => Some(c),
                Err(err) => {
                    p.add(&name, compile_problem(&err, expr));
                    None
                }
            }
        }
        None => None,
    };
    let template = template_source(&e.template, &e.template_inline, path, base, p)
        .and_then(|src| compile_template(&src, path, p));
    let per_event = e.template.is_some() || e.template_inline.is_some();
    let batch = e
        .batch
        .as_ref()
        .and_then(|b| batch(b, per_event, &format!("{path}.batch"), base, p));
    (p.0.len() == before).then_some(EventsRoute {
        event_types,
        filter,
        template,
        batch,
    })
}

fn users(u: &RawUsers, path: &str, base: &Path, p: &mut Problems) -> Option<UsersRoute> {
    let before = p.0.len();
    let template = template_source(&u.template, &u.template_inline, path, base, p)
        .and_then(|src| compile_template(&src, path, p));
    let per_user = u.template.is_some() || u.template_inline.is_some();
    let batch = u
        .batch
        .as_ref()
        .and_then(|b| batch(b, per_user, &format!("{path}.batch"), base, p));
    (p.0.len() == before).then_some(UsersRoute { template, batch })
}

/// `batch = { ... }`: every limit in range, at most one of the per-payload template and the
/// batch template (a batch template renders the inputs themselves), the batch template compiled
/// with the list bound to `inputs`.
fn batch(
    b: &RawBatch,
    per_payload_template: bool,
    path: &str,
    base: &Path,
    p: &mut Problems,
) -> Option<Batching> {
    let before = p.0.len();
    for (field, value, max, unit) in [
        ("max_events", b.max_events, MAX_BATCH_EVENTS, ""),
        ("max_bytes", b.max_bytes, MAX_BATCH_BYTES, " bytes"),
        ("max_wait_ms", b.max_wait_ms, MAX_BATCH_WAIT_MS, " ms"),
    ] {
        if !(1..=max).contains(&value) {
            p.add(
                format!("{path}.{field}"),
                format!("{value} is out of range: 1 to {max}{unit}"),
            );
        }
    }
    let template =
        template_source(&b.template, &b.template_inline, path, base, p).and_then(|src| {
            match Template::compile_bound(
                &src.name,
                &src.text,
                &template::Options::default(),
                "inputs",
            ) {
                Ok(t) => Some(t),
                Err(e) => {
                    p.add(path, compile_problem(&e, &src.text));
                    None
                }
            }
        });
    if per_payload_template && (b.template.is_some() || b.template_inline.is_some()) {
        p.add(
            path,
            "both a per-payload template and a batch template: a batch template renders the \
             inputs themselves (`inputs`), so set at most one of the two",
        );
    }
    (p.0.len() == before).then(|| Batching {
        max_events: b.max_events as usize,
        max_bytes: b.max_bytes as usize,
        max_wait: Duration::from_millis(b.max_wait_ms as u64),
        template,
    })
}

/// Every buffered payload of a batch holds a permit of `pipeline.max_in_flight`, so a batch
/// larger than that total could never fill.
fn batch_budget(raw: &RawConfig, p: &mut Problems) {
    let total = raw.pipeline.max_in_flight;
    for (i, d) in raw.destinations.iter().enumerate() {
        let batches = [
            ("events", d.events.as_ref().and_then(|e| e.batch.as_ref())),
            ("users", d.users.as_ref().and_then(|u| u.batch.as_ref())),
        ];
        for (kind, b) in batches {
            if let Some(b) = b {
                if b.max_events > 0 && b.max_events as u64 > total as u64 && total > 0 {
                    p.add(
                        format!("destinations[{i}] {:?}.{kind}.batch.max_events", d.name),
                        format!(
                            "{} is more than pipeline.max_in_flight ({total}): every payload \
                             waiting in a batch holds one of those permits",
                            b.max_events
                        ),
                    );
                }
            }
        }
    }
}

fn cohorts(
    c: &crate::cohort::RawCohortSettings,
    name: &str,
    path: &str,
    base: &Path,
    p: &mut Problems,
) -> Option<crate::cohort::CohortRoute> {
    let before = p.0.len();
    let mut found = Vec::new();
    let settings = c.validate(path, &mut found);
    for (at, m) in found {
        p.add(at, m);
    }
    let template = template_source(&c.template, &c.template_inline, path, base, p)
        .and_then(|src| compile_template(&src, path, p));
    let s = settings?;
    (p.0.len() == before).then(|| crate::cohort::CohortRoute {
        destination: name.to_string(),
        cohorts: s.cohorts,
        batch_size: s.batch_size,
        template,
        request_timeout: s.request_timeout,
        window: s.window,
    })
}
