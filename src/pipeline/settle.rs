//! Settlement's failure path: where a delivery goes when its first attempt fails (or its payload
//! cannot be rendered), and where malformed messages go. A source offset is committed only after
//! every delivery it caused is delivered or handed to the failure path **durably**: the futures
//! returned here resolve only once Kafka acknowledged the write, retrying until it does. Dropping
//! such a future (shutdown) leaves the delivery unsettled, so it is attempted again after restart.
//!
//! [`FailurePath`] is the seam for the durable retry tiers: today's [`DeadLetters`] writes every
//! failure to the dead-letter topic; an implementation backed by `retry::Parker` produces failed
//! deliveries to their next retry tier instead, with no change to the pipeline.
//!
//! # Dead-letter record layout
//! The value is a [`DeadLetter`] JSON object (`retry::record`, shared with the retry path and
//! `hookpipe replay`):
//! - a failed delivery: `delivery` holds the id, destination, kind, base64 body (exactly what was
//!   POSTed), source position and `attempts: [{attempt: 1, tries: [{started_unix_ms, status,
//!   error}]}]`; `reason` says why.
//! - a render failure or a malformed message: `delivery` is null and `raw` holds the base64
//!   input (the message value, or the user object the template was given).
//!
//! Headers, for tools that only look at headers: `hookpipe.reason` (a short fixed string:
//! `attempt_failed`, `render_failed`, `invalid_json`, `not_an_object`, `missing_event_type`,
//! `missing_user`), `hookpipe.source.topic`, `hookpipe.source.partition`,
//! `hookpipe.source.offset`, and for deliveries `hookpipe.destination` and
//! `hookpipe.delivery_id`. The key is the destination name (the source topic for malformed
//! messages).

use crate::deliver::{Request, Try};
use crate::retry::park::{producer_config, unix_ms};
use crate::retry::record::{AttemptLog, DeadLetter, ParkedDelivery, SourcePosition, FORMAT};
use crate::telemetry::Telemetry;
use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A future that resolves once a hand-off is durable.
pub type Durable = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Why a delivery could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The first attempt failed; these are its tries.
    Attempt {
        /// Every try of the attempt.
        tries: Vec<Try>,
    },
    /// The destination's template failed on this input; `request.body` holds the input.
    Render {
        /// The render error, with template line and column.
        error: String,
    },
}

/// A delivery the pipeline could not complete.
#[derive(Debug, Clone)]
pub struct FailedDelivery {
    /// The destination's name.
    pub destination: String,
    /// The request (same id on every later attempt).
    pub request: Request,
    /// Where the message was read.
    pub source: SourcePosition,
    /// What went wrong.
    pub failure: Failure,
}

/// A message that does not meet its topic's requirements.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Where it was read.
    pub source: SourcePosition,
    /// Short fixed reason (`invalid_json`, `missing_event_type`, ...).
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// The message value as read.
    pub payload: Bytes,
}

/// A delivery handed over *before* its first attempt because its destination had no free
/// in-flight permit (see `pipeline` module docs, "Overflow").
#[derive(Debug, Clone)]
pub struct Overflowed {
    /// The destination's name.
    pub destination: String,
    /// The request (same id on every attempt).
    pub request: Request,
    /// Where the message was read.
    pub source: SourcePosition,
}

/// Where failures go. Implementations must make the hand-off durable before the returned future
/// resolves, and retry (never drop) on transient errors.
pub trait FailurePath: Send + Sync + 'static {
    /// Hands over a failed delivery.
    fn park(&self, failed: FailedDelivery) -> Durable;
    /// Hands over a malformed message.
    fn reject(&self, rejected: Rejected) -> Durable;
    /// Hands over a delivery whose first attempt has not been made, to be made later at the
    /// destination's own pace. The hand-off must be *ordered*: deliveries to one destination are
    /// attempted in the order of these calls. `Err` gives the delivery back: this path cannot take
    /// overflow (the caller waits for a permit instead). The default takes none.
    fn overflow(&self, overflowed: Overflowed) -> Result<Durable, Box<Overflowed>> {
        Err(Box::new(overflowed))
    }
    /// Whether deliveries to `destination` handed over by [`FailurePath::overflow`] are still
    /// waiting for their first attempt to start. While true, the caller overflows that
    /// destination's later deliveries too, so they do not overtake the earlier ones.
    fn overflowing(&self, destination: &str) -> bool {
        let _ = destination;
        false
    }
}

/// Today's failure path: everything to the dead-letter topic. Cloning is shallow.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: Arc<str>,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A dead-letter writer to `topic`; `base` carries bootstrap servers and security settings.
    pub fn new(
        base: &rdkafka::ClientConfig,
        topic: &str,
        telemetry: Arc<Telemetry>,
    ) -> Result<DeadLetters, rdkafka::error::KafkaError> {
        let producer: FutureProducer = producer_config(base).create()?;
        Ok(DeadLetters::with_producer(producer, topic, telemetry))
    }

    /// A dead-letter writer to `topic` over an existing producer, so one librdkafka producer
    /// (one set of threads and broker connections) serves the dead-letter topic and every retry
    /// tier of the process. The producer must have [`producer_config`]'s settings.
    pub fn with_producer(
        producer: FutureProducer,
        topic: &str,
        telemetry: Arc<Telemetry>,
    ) -> DeadLetters {
        DeadLetters {
            producer,
            topic: topic.into(),
            telemetry,
        }
    }

    /// The producer this writer uses. Cloning it is shallow: clones share its queue.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Flushes queued writes (shutdown), waiting at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        let _ = self.producer.flush(Timeout::After(timeout));
    }
}

fn source_headers(source: &SourcePosition, reason: &'static str) -> OwnedHeaders {
    let partition = source.partition.to_string();
    let offset = source.offset.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: "hookpipe.reason",
            value: Some(reason),
        })
        .insert(Header {
            key: "hookpipe.source.topic",
            value: Some(&source.topic),
        })
        .insert(Header {
            key: "hookpipe.source.partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "hookpipe.source.offset",
            value: Some(&offset),
        })
}

/// Produces until Kafka acknowledges, with a capped backoff.
async fn write(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: OwnedHeaders,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(headers.clone());
        match producer.send(record, Timeout::Never).await {
            Ok(_) => return,
            Err((e, _)) => {
                tracing::warn!(topic, error = %e, retry_in = ?backoff, "dead-letter write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

impl FailurePath for DeadLetters {
    fn park(&self, failed: FailedDelivery) -> Durable {
        let this = self.clone();
        Box::pin(async move {
            let now = unix_ms(SystemTime::now());
            let (reason, letter) = match failed.failure {
                Failure::Attempt { tries } => (
                    "attempt_failed",
                    DeadLetter {
                        format: FORMAT,
                        reason: "first attempt failed (retry tiers not enabled)".into(),
                        dead_lettered_unix_ms: now,
                        delivery: Some(ParkedDelivery {
                            format: FORMAT,
                            delivery_id: failed.request.id.clone(),
                            destination: failed.destination.clone(),
                            kind: failed.request.kind,
                            body: failed.request.body.clone(),
                            source: Some(failed.source.clone()),
                            next_attempt: 2,
                            due_unix_ms: 0,
                            attempts: vec![AttemptLog { attempt: 1, tries }],
                        }),
                        raw: None,
                    },
                ),
                Failure::Render { error } => (
                    "render_failed",
                    DeadLetter {
                        format: FORMAT,
                        reason: format!(
                            "render failed for destination {:?}: {error}",
                            failed.destination
                        ),
                        dead_lettered_unix_ms: now,
                        delivery: None,
                        raw: Some(failed.request.body.clone()),
                    },
                ),
            };
            let headers = source_headers(&failed.source, reason)
                .insert(Header {
                    key: "hookpipe.destination",
                    value: Some(&failed.destination),
                })
                .insert(Header {
                    key: "hookpipe.delivery_id",
                    value: Some(&failed.request.id),
                });
            write(
                &this.producer,
                &this.topic,
                &failed.destination,
                &letter.to_json(),
                headers,
            )
            .await;
            this.telemetry
                .dead_lettered(reason, &failed.source.topic, &failed.request.id);
        })
    }

    fn reject(&self, rejected: Rejected) -> Durable {
        let this = self.clone();
        Box::pin(async move {
            let letter = DeadLetter {
                format: FORMAT,
                reason: format!("malformed message: {}", rejected.detail),
                dead_lettered_unix_ms: unix_ms(SystemTime::now()),
                delivery: None,
                raw: Some(rejected.payload.clone()),
            };
            let headers = source_headers(&rejected.source, rejected.reason);
            write(
                &this.producer,
                &this.topic,
                &rejected.source.topic,
                &letter.to_json(),
                headers,
            )
            .await;
            this.telemetry
                .dead_lettered(rejected.reason, &rejected.source.topic, "");
        })
    }
}
