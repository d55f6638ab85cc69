//! Kafka side of the harness: topic administration and the load generator.
//!
//! The load generator produces [`crate::gen::event`]s with a threaded librdkafka producer
//! (batched, lingering, compressed, keyed by user id so a user's events keep their order), either
//! as fast as the broker takes them or at a fixed rate, and reports what it achieved.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Creates `topic` with `partitions` partitions (replication 1) unless it exists, then waits
/// (bounded, 30 s) until its metadata shows every partition.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("admin client for {bootstrap}: {e}"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| format!("creating topic {topic}: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(format!("creating topic {t}: {code}")),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5));
        if let Ok(md) = md {
            if md.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
            }) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("topic {topic}: metadata not visible within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes `topic` (to give the disk back after a large run); errors are reported, not fatal.
pub async fn delete_topic(bootstrap: &str, topic: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("admin client for {bootstrap}: {e}"))?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .delete_topics(&[topic], &opts)
        .await
        .map_err(|e| format!("deleting topic {topic}: {e}"))?;
    for r in results {
        if let Err((t, code)) = r {
            return Err(format!("deleting topic {t}: {code}"));
        }
    }
    Ok(())
}

/// Messages currently in `topic` (sum over partitions of high minus low watermark).
pub async fn count_messages(bootstrap: &str, topic: &str) -> Result<u64, String> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "hookpipe-perf-watermarks")
            .create()
            .map_err(|e| format!("consumer for {bootstrap}: {e}"))?;
        let md = c
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let mut n = 0u64;
        for t in md.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                let (lo, hi) = c
                    .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                    .map_err(|e| format!("watermarks of {topic}/{}: {e}", p.id()))?;
                n += (hi - lo).max(0) as u64;
            }
        }
        Ok(n)
    })
    .await
    .map_err(|e| format!("watermark thread: {e}"))?
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Target topic (must exist).
    pub topic: String,
    /// Run id: the prefix of every `insert_id`.
    pub run: String,
    /// First sequence number.
    pub start_seq: u64,
    /// How many events.
    pub count: u64,
    /// Events per second; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// `compression.type` (none, lz4, zstd, ...).
    pub compression: String,
}

/// What the load generator achieved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Events acknowledged by the broker.
    pub acked: u64,
    /// Events the broker refused (must be 0).
    pub failed: u64,
    /// Bytes of event JSON produced (before compression).
    pub bytes: u64,
    /// Wall time from the first send to the last acknowledgement.
    pub seconds: f64,
    /// `acked / seconds`.
    pub events_per_second: f64,
}

#[derive(Default)]
struct Counts {
    acked: AtomicU64,
    failed: AtomicU64,
}

struct CountingContext(Arc<Counts>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                if self.0.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("loadgen: delivery failed: {e}");
                }
                0
            }
        };
    }
}

/// Produces the events of `spec` and waits (bounded: 120 s after the last send) for every
/// acknowledgement. Blocking: run it on its own thread.
pub fn produce(spec: &LoadSpec) -> Result<LoadReport, String> {
    let counts = Arc::new(Counts::default());
    let producer: ThreadedProducer<CountingContext> = ClientConfig::new()
        .set("bootstrap.servers", &spec.bootstrap)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("compression.type", &spec.compression)
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create_with_context(CountingContext(counts.clone()))
        .map_err(|e| format!("producer for {}: {e}", spec.bootstrap))?;

    let start = Instant::now();
    let mut buf = String::with_capacity(2048);
    let mut bytes = 0u64;
    let mut now_ms = crate::sink::now_ms();
    for i in 0..spec.count {
        if let Some(rate) = spec.rate {
            // Pace: event i is due at start + i / rate.
            let due = Duration::from_secs_f64(i as f64 / rate);
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
            now_ms = crate::sink::now_ms();
        } else if i % 256 == 0 {
            now_ms = crate::sink::now_ms();
        }
        let seq = spec.start_seq + i;
        crate::gen::event(&spec.run, seq, now_ms, &mut buf);
        bytes += buf.len() as u64;
        let key_start = buf.find("\"user_id\":\"").map_or(0, |p| p + 11);
        let key_end = key_start + buf[key_start..].find('"').unwrap_or(0);
        let key = buf[key_start..key_end].to_string();
        let mut record = BaseRecord::to(&spec.topic)
            .payload(buf.as_str())
            .key(key.as_str());
        let mut waited = Duration::ZERO;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                    waited += Duration::from_millis(2);
                    if waited > Duration::from_secs(120) {
                        return Err(format!(
                            "topic {}: producer queue full for 120 s at seq {seq}",
                            spec.topic
                        ));
                    }
                }
                Err((e, _)) => {
                    return Err(format!("topic {}: producing seq {seq}: {e}", spec.topic))
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("topic {}: flushing: {e}", spec.topic))?;
    let seconds = start.elapsed().as_secs_f64();
    let acked = counts.acked.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    Ok(LoadReport {
        acked,
        failed,
        bytes,
        seconds,
        events_per_second: acked as f64 / seconds.max(1e-9),
    })
}
