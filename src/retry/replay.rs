//! Replay: re-sends dead-lettered deliveries, for when a customer has fixed their endpoint.
//!
//! Reads the dead-letter topic from the beginning up to its end as of the start (records that
//! arrive later are left for the next run), keeps the deliveries matching a [`ReplayFilter`]
//! (destinations, and a range of dead-letter times), and sends each through the same path as a
//! new delivery: a fresh first attempt with the same delivery id (so receivers that did get it
//! de-duplicate), and on failure the retry tiers from attempt 2 on, exactly as the pipeline does.
//! The dead-letter topic itself is never modified: replaying the same range twice sends twice.
//! Records of the dead-letter topic that are not delivery dead letters (malformed source messages
//! the pipeline dead-lettered, unreadable tier records) are counted and skipped.

use super::park::{Parked, Parker};
use super::record::DeadLetter;
use crate::deliver::Client;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinSet;

/// Which dead letters to replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayFilter {
    /// Destination names; empty: every destination.
    pub destinations: Vec<String>,
    /// Only letters dead-lettered at or after this time (unix ms).
    pub since_unix_ms: Option<u64>,
    /// Only letters dead-lettered before this time (unix ms).
    pub until_unix_ms: Option<u64>,
}

impl ReplayFilter {
    /// Whether a dead letter is selected. Letters without a delivery never are.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let Some(delivery) = &letter.delivery else {
            return false;
        };
        let t = letter.dead_lettered_unix_ms;
        (self.destinations.is_empty() || self.destinations.contains(&delivery.destination))
            && self.since_unix_ms.is_none_or(|s| t >= s)
            && self.until_unix_ms.is_none_or(|u| t < u)
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records read from the dead-letter topic.
    pub scanned: u64,
    /// Records that are not delivery dead letters (skipped).
    pub not_deliveries: u64,
    /// Dead letters the filter left out.
    pub filtered_out: u64,
    /// Selected dead letters whose destination is not configured (skipped).
    pub unknown_destination: u64,
    /// Re-sent and delivered on the fresh first attempt.
    pub delivered: u64,
    /// Re-sent, failed the fresh first attempt, and parked in the retry tiers.
    pub parked: u64,
    /// Re-sent, failed, and dead-lettered again at once (a schedule with a single attempt).
    pub dead_lettered: u64,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The dead-letter topic could not be read.
    #[error("replay: reading dead-letter topic {topic:?}: {source}")]
    Kafka {
        /// The dead-letter topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The topic did not reach its end within the time allowed.
    #[error("replay: reading dead-letter topic {topic:?} did not finish within {timeout:?}")]
    Timeout {
        /// The dead-letter topic.
        topic: String,
        /// The time allowed.
        timeout: Duration,
    },
}

/// Replays the dead letters of `dead_letter_topic` selected by `filter`, at most `concurrency` at
/// a time. `read_timeout` bounds reading the topic to its end.
pub async fn replay(
    base: &ClientConfig,
    dead_letter_topic: &str,
    filter: &ReplayFilter,
    clients: &HashMap<String, Client>,
    parker: &Parker,
    concurrency: usize,
    read_timeout: Duration,
) -> Result<ReplayReport, ReplayError> {
    let kafka = |source| ReplayError::Kafka {
        topic: dead_letter_topic.to_string(),
        source,
    };
    let consumer: StreamConsumer = base
        .clone()
        .set("group.id", "hookpipe-replay")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .map_err(kafka)?;
    let metadata = consumer
        .fetch_metadata(Some(dead_letter_topic), Duration::from_secs(10))
        .map_err(kafka)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == dead_letter_topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    // The end of each partition as of now: what this run replays.
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(dead_letter_topic, p, Duration::from_secs(10))
            .map_err(kafka)?;
        if high > low {
            remaining.insert(p, high);
            tpl.add_partition_offset(dead_letter_topic, p, Offset::Beginning)
                .map_err(kafka)?;
        }
    }
    let mut report = ReplayReport::default();
    if remaining.is_empty() {
        return Ok(report);
    }
    consumer.assign(&tpl).map_err(kafka)?;

    let concurrency = concurrency.max(1);
    let mut tasks: JoinSet<Fate> = JoinSet::new();
    let deadline = tokio::time::Instant::now() + read_timeout;
    while !remaining.is_empty() {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| ReplayError::Timeout {
                topic: dead_letter_topic.to_string(),
                timeout: read_timeout,
            })?
            .map_err(kafka)?;
        let (partition, offset) = (message.partition(), message.offset());
        let Some(end) = remaining.get(&partition).copied() else {
            continue;
        };
        if offset + 1 >= end {
            remaining.remove(&partition);
        }
        if offset >= end {
            continue;
        }
        report.scanned += 1;
        let letter = match message.payload().map(DeadLetter::from_json) {
            Some(Ok(letter)) if letter.delivery.is_some() => letter,
            _ => {
                report.not_deliveries += 1;
                continue;
            }
        };
        drop(message);
        if !filter.matches(&letter) {
            report.filtered_out += 1;
            continue;
        }
        let delivery = letter.delivery.expect("checked above");
        let Some(client) = clients.get(&delivery.destination).cloned() else {
            report.unknown_destination += 1;
            continue;
        };
        while tasks.len() >= concurrency {
            if let Some(done) = tasks.join_next().await {
                count(&mut report, done);
            }
        }
        let parker = parker.clone();
        tasks.spawn(async move {
            let request = delivery.request();
            let outcome = client.attempt(&request).await;
            if outcome.is_delivered() {
                return Fate::Delivered;
            }
            let parked = parker
                .first_attempt_failed(
                    &delivery.destination,
                    &request,
                    delivery.source.clone(),
                    outcome.tries().to_vec(),
                )
                .await;
            Fate::Failed(parked)
        });
    }
    while let Some(done) = tasks.join_next().await {
        count(&mut report, done);
    }
    Ok(report)
}

/// The fate of one replayed delivery.
enum Fate {
    Delivered,
    Failed(Parked),
}

fn count(report: &mut ReplayReport, done: Result<Fate, tokio::task::JoinError>) {
    match done {
        Ok(Fate::Delivered) => report.delivered += 1,
        Ok(Fate::Failed(Parked::Tier { .. })) => report.parked += 1,
        Ok(Fate::Failed(Parked::DeadLettered { .. })) => report.dead_lettered += 1,
        Err(e) => tracing::error!(error = %e, "replay: a delivery task failed"),
    }
}

/// Parses a time for `--since` / `--until`: unix milliseconds (all digits), or RFC 3339 in UTC
/// (`2026-11-23T04:00:00Z`, fractional seconds allowed).
pub fn parse_time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map_err(|_| format!("{t:?}: unix milliseconds out of range"));
    }
    let bad = || format!("{t:?}: want unix milliseconds or RFC 3339 UTC like 2026-11-23T04:00:00Z");
    let body = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix('z'))
        .ok_or_else(bad)?;
    let (date, time) = body.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let num = |s: &str, len: usize| -> Result<i64, String> {
        if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let mut d = date.split('-');
    let (y, mo, da) = (
        num(d.next().unwrap_or(""), 4)?,
        num(d.next().unwrap_or(""), 2)?,
        num(d.next().unwrap_or(""), 2)?,
    );
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.split(':');
    let (hh, mm, ss) = (
        num(h.next().unwrap_or(""), 2)?,
        num(h.next().unwrap_or(""), 2)?,
        num(h.next().unwrap_or(""), 2)?,
    );
    if d.next().is_some()
        || h.next().is_some()
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
    {
        return Err(bad());
    }
    if hh > 23 || mm > 59 || ss > 60 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ms: i64 = format!("{frac:0<3}")[..3].parse().map_err(|_| bad())?;
    let days = days_from_civil(y, mo, da);
    let total = ((days * 24 + hh) * 60 + mm) * 60 + ss;
    u64::try_from(total * 1000 + ms).map_err(|_| format!("{t:?}: before 1970"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::Kind;
    use crate::retry::record::{ParkedDelivery, FORMAT};
    use bytes::Bytes;

    fn letter(dest: &str, at: u64) -> DeadLetter {
        DeadLetter {
            format: FORMAT,
            reason: "10 attempts failed".into(),
            dead_lettered_unix_ms: at,
            delivery: Some(ParkedDelivery {
                format: FORMAT,
                delivery_id: "x".into(),
                destination: dest.into(),
                kind: Kind::Track,
                body: Bytes::new(),
                source: None,
                next_attempt: 11,
                due_unix_ms: 0,
                attempts: Vec::new(),
            }),
            raw: None,
        }
    }

    #[test]
    fn filter_by_destination_and_half_open_time_range() {
        let all = ReplayFilter::default();
        assert!(all.matches(&letter("a", 5)));
        let f = ReplayFilter {
            destinations: vec!["a".into(), "b".into()],
            since_unix_ms: Some(100),
            until_unix_ms: Some(200),
        };
        assert!(f.matches(&letter("a", 100)));
        assert!(f.matches(&letter("b", 199)));
        assert!(!f.matches(&letter("a", 99)));
        assert!(!f.matches(&letter("a", 200)));
        assert!(!f.matches(&letter("c", 150)));
        let mut raw = letter("a", 150);
        raw.delivery = None;
        assert!(!all.matches(&raw));
    }

    #[test]
    fn times_parse_as_unix_ms_or_rfc3339_utc() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "",
            "yesterday",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+02:00",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }
}
