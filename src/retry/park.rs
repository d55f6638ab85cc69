//! Parking: the write side of the durable retry path. After a failed attempt, the delivery is
//! produced to the retry tier of its next attempt (or, after the last attempt, to the dead-letter
//! topic), and [`Parker::after_failure`] returns only once Kafka has acknowledged the write. The
//! caller settles the source offset (or the tier offset) only after that, so a crash at any
//! instant leaves the delivery either in its source/tier position or in its next tier: never
//! nowhere.
//!
//! The producer must be configured for durability (`acks=all`, idempotence); see
//! [`producer_config`]. A failed write (broker down past `message.timeout.ms`) is retried with a
//! capped backoff until it succeeds or the caller drops the future (shutdown): losing the delivery
//! is never an option, and a dropped future leaves the offset unsettled, so the delivery is
//! attempted again after the restart.

use super::placement::Placement;
use super::record::{AttemptLog, DeadLetter, ParkedDelivery, SourcePosition, FORMAT};
use super::schedule::{Next, Schedule};
use crate::deliver::{Request, Try};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::time::{Duration, SystemTime};

/// The topic prefix of the retry tiers by default: tiers are `hookpipe-retry-1m`, ...
pub const DEFAULT_TIER_PREFIX: &str = "hookpipe-retry";

/// The overflow tier of `tier_prefix`: `<tier_prefix>-overflow`. Its records wait for their
/// *first* attempt (`next_attempt = 1`, due at once): the pipeline hands a delivery here instead
/// of waiting when its destination has no free in-flight permit.
pub fn overflow_topic(tier_prefix: &str) -> String {
    format!("{tier_prefix}-overflow")
}

/// Where a failed delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parked {
    /// Into a retry tier, waiting for its next attempt.
    Tier {
        /// The tier topic.
        topic: String,
        /// The attempt it waits for (1-based).
        attempt: u32,
        /// When that attempt is due, unix ms.
        due_unix_ms: u64,
    },
    /// Into the dead-letter topic: no attempt left.
    DeadLettered {
        /// The dead-letter topic.
        topic: String,
    },
}

/// Adds the settings the retry path's producer needs for durability to a base config (which
/// carries `bootstrap.servers` and any security settings).
pub fn producer_config(base: &ClientConfig) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("linger.ms", "5");
    config
}

/// Writes failed deliveries to their next tier or the dead-letter topic. Cloning is shallow.
#[derive(Clone)]
pub struct Parker {
    producer: FutureProducer,
    schedule: Schedule,
    tier_topics: Vec<String>,
    overflow_topic: String,
    dead_letter_topic: String,
    /// The partition of each destination in each tier (see [`super::placement`]); a topic or
    /// destination it does not know is left to the key hash.
    placement: Placement,
}

impl std::fmt::Debug for Parker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parker")
            .field("tier_topics", &self.tier_topics)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

impl Parker {
    /// A parker writing to the tiers of `schedule` named `<tier_prefix>-<wait>`, and to
    /// `dead_letter_topic`.
    pub fn new(
        producer: FutureProducer,
        schedule: Schedule,
        tier_prefix: &str,
        dead_letter_topic: impl Into<String>,
    ) -> Parker {
        let tier_topics = schedule.tier_topics(tier_prefix);
        Parker {
            producer,
            schedule,
            tier_topics,
            overflow_topic: overflow_topic(tier_prefix),
            dead_letter_topic: dead_letter_topic.into(),
            placement: Placement::default(),
        }
    }

    /// Writes each destination's tier records (retry tiers and overflow tier) to the partition
    /// `placement` gives it, so destinations do not share partitions and a tier can pause one
    /// destination's partition without holding up the others. Without it (or for a topic or
    /// destination it does not know) the partition follows the key, the destination name.
    pub fn with_placement(mut self, placement: Placement) -> Parker {
        self.placement = placement;
        self
    }

    /// [`Parker::with_placement`] for `destinations` in every tier of this parker (the retry
    /// tiers and the overflow tier), with the partition counts read from the broker (waiting up
    /// to `timeout` for topics that are not ready yet).
    pub async fn placed<S: AsRef<str>>(
        self,
        destinations: &[S],
        timeout: Duration,
    ) -> Result<Parker, super::topics::TopicsError> {
        let topics: Vec<String> = self
            .tier_topics
            .iter()
            .cloned()
            .chain([self.overflow_topic.clone()])
            .collect();
        let counts = super::topics::partition_counts(&self.producer, &topics, timeout).await?;
        let placement = Placement::new(destinations, &counts);
        Ok(self.with_placement(placement))
    }

    /// The placement this parker writes by.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The schedule this parker follows.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The tier topics, one per distinct wait, ascending.
    pub fn tier_topics(&self) -> &[String] {
        &self.tier_topics
    }

    /// The overflow tier topic (see [`overflow_topic`]).
    pub fn overflow_topic(&self) -> &str {
        &self.overflow_topic
    }

    /// Hands a delivery over *before* its first attempt: writes it to the overflow tier with
    /// `next_attempt = 1`, due now, no attempts yet; the returned future resolves once Kafka
    /// acknowledged it (retrying until it does). The record is queued in the producer **before**
    /// this returns, so records of one destination (one key, one partition, idempotent producer)
    /// reach the tier in the order of the calls. The overflow tier's consumer makes attempt 1 at
    /// the destination's own pace; a failure there follows the schedule from attempt 2, exactly
    /// as a failed first attempt in the pipeline does.
    pub fn overflow(
        &self,
        destination: &str,
        request: &Request,
        source: Option<SourcePosition>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let delivery = ParkedDelivery {
            format: FORMAT,
            delivery_id: request.id.clone(),
            destination: destination.to_string(),
            kind: request.kind,
            body: request.body.clone(),
            source,
            next_attempt: 1,
            due_unix_ms: unix_ms(SystemTime::now()),
            attempts: Vec::new(),
        };
        let headers = delivery_headers(&delivery).insert(Header {
            key: "hookpipe.attempt",
            value: Some("1"),
        });
        let payload = delivery.to_json();
        let key = delivery.destination;
        let mut record = FutureRecord::to(&self.overflow_topic)
            .key(&key)
            .payload(&payload)
            .headers(headers.clone());
        record.partition = self.placement.partition(&self.overflow_topic, &key);
        let queued = self.producer.send_result(record).map_err(|(e, _)| e);
        let this = self.clone();
        async move {
            let error = match queued {
                Ok(ack) => match ack.await {
                    Ok(Ok(_)) => return,
                    Ok(Err((e, _))) => e.to_string(),
                    Err(_) => "producer dropped the record".to_string(),
                },
                Err(e) => e.to_string(),
            };
            tracing::warn!(topic = %this.overflow_topic, %error, "overflow: write to Kafka failed; retrying");
            this.write(&this.overflow_topic, &key, &payload, headers)
                .await;
        }
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// After a failed *first* attempt (the pipeline's): builds the parked record and parks it.
    pub async fn first_attempt_failed(
        &self,
        destination: &str,
        request: &Request,
        source: Option<SourcePosition>,
        tries: Vec<Try>,
    ) -> Parked {
        let delivery = ParkedDelivery {
            format: FORMAT,
            delivery_id: request.id.clone(),
            destination: destination.to_string(),
            kind: request.kind,
            body: request.body.clone(),
            source,
            next_attempt: 1,
            due_unix_ms: 0,
            attempts: Vec::new(),
        };
        self.after_failure(delivery, tries).await
    }

    /// After attempt `delivery.next_attempt` failed with `tries`: appends the attempt to the
    /// record's history and writes it to the next tier or the dead-letter topic. Returns once Kafka
    /// acknowledged the write (retrying until it does).
    pub async fn after_failure(&self, mut delivery: ParkedDelivery, tries: Vec<Try>) -> Parked {
        let failed = delivery.next_attempt;
        delivery.attempts.push(AttemptLog {
            attempt: failed,
            tries,
        });
        let now = unix_ms(SystemTime::now());
        match self.schedule.after_failed(failed) {
            Next::Retry {
                attempt,
                wait,
                tier,
            } => {
                delivery.next_attempt = attempt;
                delivery.due_unix_ms =
                    now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                let topic = &self.tier_topics[tier];
                let headers = delivery_headers(&delivery)
                    .insert(Header {
                        key: "hookpipe.attempt",
                        value: Some(&attempt.to_string()),
                    })
                    .insert(Header {
                        key: "hookpipe.due_unix_ms",
                        value: Some(&delivery.due_unix_ms.to_string()),
                    });
                self.write(topic, &delivery.destination, &delivery.to_json(), headers)
                    .await;
                Parked::Tier {
                    topic: topic.clone(),
                    attempt,
                    due_unix_ms: delivery.due_unix_ms,
                }
            }
            Next::DeadLetter => {
                let reason = if failed == 1 {
                    "1 attempt failed".to_string()
                } else {
                    format!("{failed} attempts failed")
                };
                let letter = DeadLetter {
                    format: FORMAT,
                    reason,
                    dead_lettered_unix_ms: now,
                    delivery: Some(delivery),
                    raw: None,
                };
                self.dead_letter(letter).await;
                Parked::DeadLettered {
                    topic: self.dead_letter_topic.clone(),
                }
            }
        }
    }

    /// Writes a dead letter (retrying until Kafka acknowledges it), with the headers the
    /// pipeline's dead letters carry: `hookpipe.reason` (`attempts_exhausted` for a delivery,
    /// `unreadable_retry_record` otherwise), the source position, destination and delivery id.
    pub async fn dead_letter(&self, letter: DeadLetter) {
        let code = if letter.delivery.is_some() {
            "attempts_exhausted"
        } else {
            "unreadable_retry_record"
        };
        self.dead_letter_with(letter, code).await
    }

    /// Like [`Parker::dead_letter`] with an explicit `hookpipe.reason` header (a short fixed
    /// string such as `destination_removed`).
    pub async fn dead_letter_with(&self, letter: DeadLetter, code: &'static str) {
        let reason = Header {
            key: "hookpipe.reason",
            value: Some(code),
        };
        let (key, headers) = match &letter.delivery {
            Some(d) => (d.destination.clone(), delivery_headers(d).insert(reason)),
            None => (String::new(), OwnedHeaders::new().insert(reason)),
        };
        self.write(&self.dead_letter_topic, &key, &letter.to_json(), headers)
            .await;
    }

    /// Produces one record and waits for its acknowledgement, retrying with a capped backoff.
    async fn write(&self, topic: &str, key: &str, payload: &[u8], headers: OwnedHeaders) {
        let mut backoff = Duration::from_millis(100);
        let partition = self.placement.partition(topic, key);
        loop {
            let mut record = FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers.clone());
            record.partition = partition;
            match self.producer.send(record, Timeout::Never).await {
                Ok(_) => return,
                Err((e, _)) => {
                    tracing::warn!(topic, error = %e, retry_in = ?backoff, "retry path: write to Kafka failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// The headers every retry-path record of a delivery carries, for tools that only read headers:
/// `hookpipe.destination`, `hookpipe.delivery_id`, and the source position when known.
fn delivery_headers(d: &ParkedDelivery) -> OwnedHeaders {
    let mut h = OwnedHeaders::new()
        .insert(Header {
            key: "hookpipe.destination",
            value: Some(&d.destination),
        })
        .insert(Header {
            key: "hookpipe.delivery_id",
            value: Some(&d.delivery_id),
        });
    if let Some(s) = &d.source {
        h = h
            .insert(Header {
                key: "hookpipe.source.topic",
                value: Some(&s.topic),
            })
            .insert(Header {
                key: "hookpipe.source.partition",
                value: Some(&s.partition.to_string()),
            })
            .insert(Header {
                key: "hookpipe.source.offset",
                value: Some(&s.offset.to_string()),
            });
    }
    h
}

/// Unix milliseconds of a wall-clock time (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
