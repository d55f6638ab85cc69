//! Telemetry: Prometheus metrics, end-to-end latency percentiles, structured logs, and the
//! `/metrics`, `/healthz`, `/readyz` endpoint.
//!
//! Every thing worth counting is emitted by exactly one method of [`Telemetry`] (or of a
//! per-destination [`DestinationMetrics`]) that writes both the metric and the DEBUG log line,
//! so the two never drift apart. Telemetry is reached from everywhere and reaches into nothing.
//!
//! Metric names follow `hookpipe_<noun>_<unit>`; labels have bounded cardinality (topic,
//! destination, outcome, reason), never user ids.

mod http;
mod logging;

pub use http::{serve, ServeError};
pub use logging::init as init_logging;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tracing::debug;

/// Amplitude's latency target: an event delivered within a minute of being received.
pub const LATENCY_TARGET: Duration = Duration::from_secs(60);

type Labels = Vec<(&'static str, String)>;

/// Number of HDR histogram shards; deliveries pick one at random so threads rarely contend.
const HDR_SHARDS: usize = 8;

/// All of hookpipe's metrics. Cheap to share (`Arc<Telemetry>`); recording never blocks on I/O.
pub struct Telemetry {
    registry: Registry,
    messages_consumed: Family<Labels, Counter>,
    malformed: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    delivery_duration: Family<Labels, Histogram>,
    in_flight: Family<Labels, Gauge>,
    filter_errors: Family<Labels, Counter>,
    overflowed: Family<Labels, Counter>,
    end_to_end: Histogram,
    end_to_end_over_target: Counter,
    end_to_end_percentiles: [Gauge<f64, AtomicU64>; 3],
    hdr: Vec<Mutex<hdrhistogram::Histogram<u64>>>,
    consumer_lag: Family<Labels, Gauge>,
    partitions_assigned: Gauge,
    partitions_paused: Gauge,
    commits: Family<Labels, Counter>,
    rebalances: Family<Labels, Counter>,
    ready: AtomicBool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 1 ms .. ~65 s.
    exponential_buckets(0.001, 2.0, 17)
}

impl Telemetry {
    /// Creates and registers every metric.
    pub fn new() -> Telemetry {
        let mut registry = Registry::default();
        let messages_consumed = Family::<Labels, Counter>::default();
        registry.register(
            "hookpipe_messages_consumed",
            "Kafka messages consumed, by topic",
            messages_consumed.clone(),
        );
        let malformed = Family::<Labels, Counter>::default();
        registry.register(
            "hookpipe_messages_malformed",
            "Messages that were not JSON or lacked what their topic requires, by topic",
            malformed.clone(),
        );
        let dead_letters = Family::<Labels, Counter>::default();
        registry.register(
            "hookpipe_dead_letters",
            "Records durably written to the dead-letter topic, by reason",
            dead_letters.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "hookpipe_deliveries",
            "First attempts finished, by destination and outcome (delivered, failed, skipped: circuit open)",
            deliveries.clone(),
        );
        let delivery_duration =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(seconds_buckets()));
        registry.register(
            "hookpipe_delivery_duration_seconds",
            "Duration of one delivery attempt (all its tries), by destination",
            delivery_duration.clone(),
        );
        let in_flight = Family::<Labels, Gauge>::default();
        registry.register(
            "hookpipe_in_flight",
            "Deliveries in flight (admitted, not yet settled), by destination",
            in_flight.clone(),
        );
        let filter_errors = Family::<Labels, Counter>::default();
        registry.register(
            "hookpipe_filter_errors",
            "Filter expressions that failed to evaluate (the event is not sent), by destination",
            filter_errors.clone(),
        );
        let overflowed = Family::<Labels, Counter>::default();
        registry.register(
            "hookpipe_deliveries_overflowed",
            "Deliveries handed to the overflow tier before their first attempt (destination saturated), by destination",
            overflowed.clone(),
        );
        let end_to_end = Histogram::new(seconds_buckets());
        registry.register(
            "hookpipe_end_to_end_latency_seconds",
            "Kafka message timestamp to successful delivery",
            end_to_end.clone(),
        );
        let end_to_end_over_target = Counter::default();
        registry.register(
            "hookpipe_end_to_end_over_target",
            "Deliveries that took longer than the one-minute target from Kafka timestamp",
            end_to_end_over_target.clone(),
        );
        let end_to_end_percentiles: [Gauge<f64, AtomicU64>; 3] = Default::default();
        for (name, g) in PERCENTILES.iter().zip(&end_to_end_percentiles) {
            registry.register(
                format!("hookpipe_end_to_end_latency_{}_seconds", name.0),
                format!(
                    "End-to-end latency {} since start (HDR histogram, 3 significant digits)",
                    name.0
                ),
                g.clone(),
            );
        }
        let consumer_lag = Family::<Labels, Gauge>::default();
        registry.register(
            "hookpipe_consumer_lag_messages",
            "Messages behind the partition high watermark (librdkafka statistics), by topic",
            consumer_lag.clone(),
        );
        let partitions_assigned = Gauge::default();
        registry.register(
            "hookpipe_partitions_assigned",
            "Partitions currently assigned to this process",
            partitions_assigned.clone(),
        );
        let partitions_paused = Gauge::default();
        registry.register(
            "hookpipe_partitions_paused",
            "Partitions paused because their worker is full (backpressure)",
            partitions_paused.clone(),
        );
        let commits = Family::<Labels, Counter>::default();
        registry.register(
            "hookpipe_offset_commits",
            "Offset commits, by outcome (ok, error)",
            commits.clone(),
        );
        let rebalances = Family::<Labels, Counter>::default();
        registry.register(
            "hookpipe_rebalances",
            "Consumer group rebalances, by kind (assign, revoke)",
            rebalances.clone(),
        );
        let hdr = (0..HDR_SHARDS)
            .map(|_| {
                // 1 µs .. 1 day at 3 significant digits.
                let h = hdrhistogram::Histogram::new_with_bounds(1, 86_400_000_000, 3)
                    .expect("static HDR bounds are valid");
                Mutex::new(h)
            })
            .collect();
        Telemetry {
            registry,
            messages_consumed,
            malformed,
            dead_letters,
            deliveries,
            delivery_duration,
            in_flight,
            filter_errors,
            overflowed,
            end_to_end,
            end_to_end_over_target,
            end_to_end_percentiles,
            hdr,
            consumer_lag,
            partitions_assigned,
            partitions_paused,
            commits,
            rebalances,
            ready: AtomicBool::new(false),
        }
    }

    /// Handles for one destination, resolved once so the hot path skips label lookups.
    pub fn destination(&self, name: &str) -> DestinationMetrics {
        let l = |outcome: &str| -> Labels {
            vec![
                ("destination", name.to_string()),
                ("outcome", outcome.to_string()),
            ]
        };
        let dest: Labels = vec![("destination", name.to_string())];
        // One statement per handle: a Family read guard lives until the end of its statement,
        // and a second get_or_create in the same statement would wait for it forever.
        let delivered = self.deliveries.get_or_create(&l("delivered")).clone();
        let failed = self.deliveries.get_or_create(&l("failed")).clone();
        let skipped = self.deliveries.get_or_create(&l("skipped")).clone();
        let duration = self.delivery_duration.get_or_create(&dest).clone();
        let in_flight = self.in_flight.get_or_create(&dest).clone();
        let filter_errors = self.filter_errors.get_or_create(&dest).clone();
        let overflowed = self.overflowed.get_or_create(&dest).clone();
        DestinationMetrics {
            name: name.to_string(),
            delivered,
            failed,
            skipped,
            duration,
            in_flight,
            filter_errors,
            overflowed,
        }
    }

    /// Handles for one input topic, resolved once so the per-message path skips label lookups.
    pub fn topic(&self, topic: &str) -> TopicMetrics {
        let labels: Labels = vec![("topic", topic.to_string())];
        // One statement per handle (see `destination`).
        let consumed = self.messages_consumed.get_or_create(&labels).clone();
        let malformed = self.malformed.get_or_create(&labels).clone();
        TopicMetrics {
            consumed,
            malformed,
        }
    }

    /// A message was consumed from `topic` (for topics without cached [`TopicMetrics`]).
    pub fn message_consumed(&self, topic: &str, partition: i32, offset: i64) {
        self.topic(topic).consumed(topic, partition, offset);
    }

    /// A record was durably written to the dead-letter topic.
    pub fn dead_lettered(&self, reason: &'static str, source: &str, id: &str) {
        self.dead_letters
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
        debug!(reason, source, delivery_id = id, "dead-lettered");
    }

    /// A delivery succeeded `latency` after its Kafka timestamp.
    pub fn end_to_end(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        self.end_to_end.observe(secs);
        if latency > LATENCY_TARGET {
            self.end_to_end_over_target.inc();
        }
        let shard = fastrand::usize(..self.hdr.len());
        if let Ok(mut h) = self.hdr[shard].lock() {
            h.saturating_record((latency.as_micros() as u64).max(1));
        }
    }

    /// End-to-end latency at quantile `q` (0..=1) since start, over all shards.
    pub fn end_to_end_quantile(&self, q: f64) -> Option<Duration> {
        let mut merged =
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 86_400_000_000, 3).ok()?;
        for shard in &self.hdr {
            if let Ok(h) = shard.lock() {
                merged.add(&*h).ok()?;
            }
        }
        (!merged.is_empty()).then(|| Duration::from_micros(merged.value_at_quantile(q)))
    }

    /// Consumer lag of `topic` summed over this process's partitions.
    pub fn consumer_lag(&self, topic: &str, lag: i64) {
        self.consumer_lag
            .get_or_create(&vec![("topic", topic.to_string())])
            .set(lag);
    }

    /// Partitions were assigned (positive) or revoked (negative).
    pub fn rebalanced(&self, kind: &'static str, partitions: i64) {
        self.rebalances
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
        self.partitions_assigned.inc_by(partitions);
        debug!(kind, partitions, "rebalance");
    }

    /// The number of paused partitions changed.
    pub fn paused_partitions(&self, paused: usize) {
        self.partitions_paused.set(paused as i64);
    }

    /// An offset commit finished.
    pub fn committed(&self, ok: bool, partitions: usize) {
        let outcome = if ok { "ok" } else { "error" };
        self.commits
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
        debug!(outcome, partitions, "offset commit");
    }

    /// Marks the process ready (consuming) or not (starting, draining), for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric, percentile gauges
    /// refreshed first.
    pub fn encode(&self) -> String {
        for ((_, q), g) in PERCENTILES.iter().zip(&self.end_to_end_percentiles) {
            if let Some(d) = self.end_to_end_quantile(*q) {
                g.set(d.as_secs_f64());
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        openmetrics_to_prometheus(&out)
    }
}

/// The percentiles exported as gauges: name suffix and quantile.
const PERCENTILES: [(&str, f64); 3] = [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)];

/// prometheus-client writes OpenMetrics text; Prometheus' classic text format (what
/// `promtool check metrics` and every scraper accept) names counter families with their
/// `_total` suffix and has no `# EOF` or `# UNIT` lines.
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{kind}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// One input topic's metric handles. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct TopicMetrics {
    consumed: Counter,
    malformed: Counter,
}

impl TopicMetrics {
    /// A message was consumed.
    pub fn consumed(&self, topic: &str, partition: i32, offset: i64) {
        self.consumed.inc();
        debug!(topic, partition, offset, "message consumed");
    }

    /// A message was malformed (`reason` is a short fixed string such as `invalid_json`).
    pub fn malformed(&self, topic: &str, partition: i32, offset: i64, reason: &str) {
        self.malformed.inc();
        debug!(topic, partition, offset, reason, "malformed message");
    }
}

/// One destination's metric handles. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct DestinationMetrics {
    name: String,
    delivered: Counter,
    failed: Counter,
    skipped: Counter,
    duration: Histogram,
    in_flight: Gauge,
    filter_errors: Counter,
    overflowed: Counter,
}

impl DestinationMetrics {
    /// A delivery was admitted (holds a permit until settled).
    pub fn admitted(&self) {
        self.in_flight.inc();
    }

    /// A delivery settled (delivered, or durably handed to the failure path).
    pub fn settled(&self) {
        self.in_flight.dec();
    }

    /// An attempt finished.
    pub fn attempt(&self, id: &str, delivered: bool, tries: usize, took: Duration) {
        if delivered {
            self.delivered.inc();
        } else {
            self.failed.inc();
        }
        self.duration.observe(took.as_secs_f64());
        debug!(
            destination = %self.name,
            delivery_id = id,
            outcome = if delivered { "delivered" } else { "failed" },
            tries,
            took_ms = took.as_millis() as u64,
            "delivery attempt"
        );
    }

    /// A delivery was handed to the overflow tier before its first attempt.
    pub fn overflowed(&self, id: &str) {
        self.overflowed.inc();
        debug!(destination = %self.name, delivery_id = id, "destination saturated: delivery overflowed to the overflow tier");
    }

    /// A first attempt was skipped because the destination's circuit is open.
    pub fn skipped(&self, id: &str) {
        self.skipped.inc();
        debug!(destination = %self.name, delivery_id = id, outcome = "skipped", "circuit open: attempt skipped");
    }

    /// The destination's circuit opened or closed: a state change, logged at WARN / INFO.
    pub fn circuit(&self, open: bool) {
        if open {
            tracing::warn!(destination = %self.name, "circuit open: attempts skipped (parked for retry) until a probe succeeds");
        } else {
            tracing::info!(destination = %self.name, "circuit closed: destination delivering again");
        }
    }

    /// A filter expression failed to evaluate; the event is not sent to this destination.
    pub fn filter_error(&self, error: &dyn std::fmt::Display) {
        self.filter_errors.inc();
        debug!(destination = %self.name, %error, "filter error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_conventions_and_quantiles_appear() {
        let t = Telemetry::new();
        t.message_consumed("events", 0, 1);
        let d = t.destination("braze");
        d.admitted();
        d.attempt("id", true, 1, Duration::from_millis(12));
        d.settled();
        for ms in 1..=1000 {
            t.end_to_end(Duration::from_millis(ms));
        }
        let p50 = t.end_to_end_quantile(0.5).unwrap();
        assert!((495..=505).contains(&p50.as_millis()), "{p50:?}");
        let text = t.encode();
        assert!(!text.contains("# EOF"));
        for line in [
            "hookpipe_messages_consumed_total{topic=\"events\"} 1",
            "hookpipe_deliveries_total{destination=\"braze\",outcome=\"delivered\"} 1",
            "hookpipe_deliveries_total{destination=\"braze\",outcome=\"failed\"} 0",
            "hookpipe_in_flight{destination=\"braze\"} 0",
            "hookpipe_end_to_end_latency_seconds_count 1000",
            "hookpipe_end_to_end_latency_p50_seconds 0.5",
            "# HELP hookpipe_deliveries_total First attempts finished",
            "# TYPE hookpipe_deliveries_total counter",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
