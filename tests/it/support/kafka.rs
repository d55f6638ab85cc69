//! One real Kafka broker per test binary, plus the few client operations tests need: fresh
//! topics, producing with delivery confirmed, and reading a topic back from the beginning.
//!
//! The broker is the single-node Apache Kafka started by `scripts/kafka` on a fixed test port
//! (`127.0.0.1:39092`, or `HOOKPIPE_TEST_KAFKA_PORT`); a broker already answering there is reused,
//! and `HOOKPIPE_TEST_BOOTSTRAP=host:port` points every test at an external broker instead.
//! The broker does not auto-create topics: tests create every topic they use, with
//! [`unique_topic`] (a fresh name per test, so tests run in parallel) or [`create_topic`].
//! The free functions act on that shared broker; the same operations are [`Broker`] methods, so a
//! fault test can run them against a [`PrivateBroker`] it may stop and restart.
//!
//! Every wait here is bounded; a helper that cannot do its job panics with what it was doing,
//! which fails the calling test with a message that says why.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The port `scripts/kafka` serves the test broker on, unless `HOOKPIPE_TEST_KAFKA_PORT` says
/// otherwise. Far from Kafka's usual 9092 so the demo and the tests can run side by side.
pub const DEFAULT_TEST_PORT: u16 = 39092;

/// How long any single helper waits for the broker before failing the test.
const WAIT: Duration = Duration::from_secs(30);

/// A Kafka broker and the clients the helpers use on it (created on first use, shared by every
/// test that uses this broker). [`broker()`] is the shared one; [`PrivateBroker`] gives a fault
/// test its own.
pub struct Broker {
    bootstrap: String,
    admin: OnceLock<AdminClient<DefaultClientContext>>,
    producer: OnceLock<FutureProducer>,
    metadata: OnceLock<Arc<BaseConsumer>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl Broker {
    fn at(bootstrap: String) -> Broker {
        Broker {
            bootstrap,
            admin: OnceLock::new(),
            producer: OnceLock::new(),
            metadata: OnceLock::new(),
        }
    }

    /// The `host:port` to give Kafka clients (and hookpipe's `kafka.bootstrap_servers`).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// A librdkafka config for this broker, for tests that build their own clients.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("socket.connection.setup.timeout.ms", "10000")
            .set("broker.address.family", "v4");
        config
    }

    fn admin(&self) -> &AdminClient<DefaultClientContext> {
        self.admin.get_or_init(|| {
            self.client_config()
                .create()
                .unwrap_or_else(|e| panic!("creating the Kafka admin client: {e}"))
        })
    }

    /// The producer behind [`Broker::produce_many`]: idempotent (so per-partition order holds
    /// even when librdkafka retries), acks from all replicas, small linger.
    pub fn producer(&self) -> &FutureProducer {
        self.producer.get_or_init(|| {
            self.client_config()
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("message.timeout.ms", "30000")
                .set("queue.buffering.max.messages", "1000000")
                .create()
                .unwrap_or_else(|e| panic!("creating the Kafka producer: {e}"))
        })
    }

    fn metadata_client(&self) -> Arc<BaseConsumer> {
        self.metadata
            .get_or_init(|| {
                Arc::new(
                    self.client_config()
                        .set("group.id", unique_name("hookpipe-test-metadata"))
                        .create()
                        .unwrap_or_else(|e| panic!("creating the Kafka metadata client: {e}")),
                )
            })
            .clone()
    }
}

/// Ensures one broker is running for the whole test binary and returns it.
///
/// The first call runs `scripts/kafka --port P start` (which installs Kafka on first use and waits
/// until it answers); later calls return at once. Blocking, so call it before serving anything on
/// a current-thread runtime.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(bootstrap) = std::env::var("HOOKPIPE_TEST_BOOTSTRAP") {
            if !bootstrap.trim().is_empty() {
                return Broker::at(bootstrap.trim().to_owned());
            }
        }
        let port = match std::env::var("HOOKPIPE_TEST_KAFKA_PORT") {
            Ok(p) => p
                .parse::<u16>()
                .unwrap_or_else(|_| panic!("HOOKPIPE_TEST_KAFKA_PORT={p:?} is not a port number")),
            Err(_) => DEFAULT_TEST_PORT,
        };
        Broker::at(run_script(port, "start"))
    })
}

/// Path of `scripts/kafka` in this checkout.
pub fn kafka_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka")
}

/// Runs `scripts/kafka --port PORT COMMAND`, panics with its output if it fails, and returns the
/// last line it printed on stdout (the bootstrap address, for `start`).
fn run_script(port: u16, command: &str) -> String {
    run_script_with(port, command, &[])
}

fn run_script_with(port: u16, command: &str, env: &[(&str, &str)]) -> String {
    let script = kafka_script();
    let output = Command::new("bash")
        .envs(env.iter().copied())
        .arg(&script)
        .arg("--port")
        .arg(port.to_string())
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "`{} --port {port} {command}` failed ({}):\n{stderr}\n{stdout}",
            script.display(),
            output.status
        );
    }
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .unwrap_or_default()
}

/// A broker of one test's own, on its own port and data directory, for fault tests (broker
/// restarts, outages) that must not disturb the tests sharing [`broker()`]. Stopped and its data
/// removed on drop. Each one is a JVM of up to 384 MiB; start few.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    broker: Broker,
}

impl PrivateBroker {
    /// Starts (or reuses) the script broker on `port` (its controller takes `port + 1`) and waits
    /// until it answers. Blocking: call it before serving anything on a current-thread runtime.
    pub fn start(port: u16) -> PrivateBroker {
        let bootstrap = run_script_with(port, "start", PRIVATE_ENV);
        PrivateBroker {
            port,
            broker: Broker::at(bootstrap),
        }
    }

    /// Starts a private broker on a port pair (broker, controller) that is free right now, so
    /// concurrent test runs (other checkouts on this machine) do not collide.
    pub fn start_on_free_port() -> PrivateBroker {
        PrivateBroker::start(free_port_pair())
    }

    /// The broker, for the same helpers the shared one has ([`Broker::unique_topic`], ...).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Stops the broker gracefully (data kept); clients see it go away.
    pub fn stop(&self) {
        run_script(self.port, "stop");
    }

    /// Starts it again after [`PrivateBroker::stop`] and waits until it answers.
    pub fn start_again(&self) {
        run_script_with(self.port, "start", PRIVATE_ENV);
    }

    /// Stops and starts it (data kept), as an operator's rolling restart would.
    pub fn restart(&self) {
        run_script_with(self.port, "restart", PRIVATE_ENV);
    }
}

/// A port P such that P and P + 1 are both free on 127.0.0.1 (bounded tries).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", 0)) else {
            continue;
        };
        let Ok(addr) = listener.local_addr() else {
            continue;
        };
        let port = addr.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of adjacent ports on 127.0.0.1 after 50 tries");
}

/// Private brokers hold little data: a smaller heap leaves the machine to the shared broker.
const PRIVATE_ENV: &[(&str, &str)] = &[("HOOKPIPE_KAFKA_HEAP", "384m")];

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // Best effort: a failure here must not turn a passing test into a double panic.
        for command in ["stop", "clean"] {
            let _ = Command::new("bash")
                .arg(kafka_script())
                .arg("--port")
                .arg(self.port.to_string())
                .arg(command)
                .stdin(std::process::Stdio::null())
                .output();
        }
    }
}

/// The shared broker's producer (see [`Broker::producer`]).
pub fn producer() -> &'static FutureProducer {
    broker().producer()
}

/// A name no other test (in this or a concurrent test process) will use: prefix, process id,
/// a per-process counter and the clock, restricted to Kafka's legal topic characters.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0);
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(120)
        .collect();
    format!("{clean}-{}-{n}-{nanos}", std::process::id())
}

/// Where a produced message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The partition the broker stored the message in.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

/// One message to produce; build with [`Outgoing::new`] and the chained setters.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// Message key; `None` lets the partitioner spread messages.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub payload: Vec<u8>,
    /// Headers, in order (names may repeat).
    pub headers: Vec<(String, Vec<u8>)>,
    /// A fixed partition, or `None` for the partitioner's choice.
    pub partition: Option<i32>,
}

impl Outgoing {
    /// A message with this value, no key, no headers.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Outgoing {
            payload: payload.into(),
            ..Outgoing::default()
        }
    }

    /// Sets the key (messages with one key land in one partition, in order).
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the message to this partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// A message read back from Kafka, owned so it outlives the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value (`None` for a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Its headers, in order; a header may have no value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Create or append time in milliseconds since the epoch, when the broker reports one.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// The value as UTF-8 text (lossy), or "" for a tombstone.
    pub fn payload_str(&self) -> String {
        String::from_utf8_lossy(self.payload.as_deref().unwrap_or_default()).into_owned()
    }

    /// The value parsed as JSON; panics naming the record if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.payload.as_deref().unwrap_or_default()).unwrap_or_else(|e| {
            panic!(
                "{}[{}]@{} is not JSON ({e}): {}",
                self.topic,
                self.partition,
                self.offset,
                self.payload_str()
            )
        })
    }

    /// The first header named `name` (case-sensitive, as Kafka stores it), as UTF-8 text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

impl Broker {
    /// Creates a fresh topic named after `prefix` with `partitions` partitions and returns its
    /// name once every partition has a leader in the broker's metadata.
    pub async fn unique_topic(&self, prefix: &str, partitions: i32) -> String {
        let name = unique_name(prefix);
        self.create_topic(&name, partitions).await;
        name
    }

    /// Creates topic `name` (an existing topic with that name is accepted as is) and waits until
    /// its metadata shows `partitions` partitions, each with a leader.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        assert!(
            partitions > 0,
            "create_topic({name}): partitions must be > 0"
        );
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(WAIT));
        let results = tokio::time::timeout(WAIT, self.admin().create_topics([&topic], &opts))
            .await
            .unwrap_or_else(|_| panic!("creating topic {name}: no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => panic!("creating topic {t}: {code}"),
            }
        }
        self.wait_for_topic(name, partitions).await;
    }

    /// Waits (bounded) until `topic` has `partitions` partitions with leaders.
    pub async fn wait_for_topic(&self, topic: &str, partitions: i32) {
        let topic = topic.to_owned();
        let consumer = self.metadata_client();
        blocking(move || {
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                let ready = consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))
                    .ok()
                    .and_then(|md| {
                        md.topics().iter().find(|t| t.name() == topic).map(|t| {
                            t.error().is_none()
                                && t.partitions().len() == partitions as usize
                                && t.partitions().iter().all(|p| p.leader() >= 0)
                        })
                    })
                    .unwrap_or(false);
                if ready {
                    return;
                }
                if std::time::Instant::now() >= deadline {
                    panic!("topic {topic}: {partitions} partitions with leaders not visible within {WAIT:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
    }

    /// The number of partitions of `topic` as the broker reports it (0 if it does not exist).
    pub async fn partition_count(&self, topic: &str) -> usize {
        let topic = topic.to_owned();
        let consumer = self.metadata_client();
        blocking(move || {
            let md = consumer
                .fetch_metadata(Some(&topic), WAIT)
                .unwrap_or_else(|e| panic!("metadata for {topic}: {e}"));
            md.topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
                .unwrap_or(0)
        })
        .await
    }

    /// Produces every message (pipelined, in order per partition) and waits (bounded) until the
    /// broker has acknowledged all of them; returns where each landed, in input order.
    pub async fn produce_many(
        &self,
        topic: &str,
        messages: impl IntoIterator<Item = Outgoing>,
    ) -> Vec<Delivered> {
        let producer = self.producer();
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut pending = Vec::new();
        for msg in messages {
            let mut headers = OwnedHeaders::new();
            for (name, value) in &msg.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                .payload(msg.payload.as_slice())
                .headers(headers);
            if let Some(key) = &msg.key {
                record = record.key(key.as_slice());
            }
            if let Some(p) = msg.partition {
                record = record.partition(p);
            }
            loop {
                match producer.send_result(record) {
                    Ok(future) => {
                        pending.push(future);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if tokio::time::Instant::now() >= deadline {
                            panic!("producing to {topic}: local queue still full after {WAIT:?}");
                        }
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => panic!("producing to {topic}: {e}"),
                }
            }
        }
        let mut delivered = Vec::with_capacity(pending.len());
        for (i, future) in pending.into_iter().enumerate() {
            let Ok(result) = tokio::time::timeout_at(deadline, future).await else {
                panic!("producing to {topic}: message {i} not acknowledged within {WAIT:?}");
            };
            match result {
                Err(_canceled) => panic!("producing to {topic}: the producer dropped message {i}"),
                Ok(Ok(d)) => delivered.push(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                }),
                Ok(Err((e, _))) => panic!("producing to {topic}: message {i}: {e}"),
            }
        }
        delivered
    }

    /// Reads `topic` from the beginning of every partition until `expected` records have arrived
    /// or `timeout` passes, and returns what was read (fewer than `expected` means the timeout
    /// passed: assert on the length). Partitions are assigned directly, so no consumer group is
    /// joined or committed. Records come in arrival order, which is offset order within each
    /// partition.
    pub async fn read_all(&self, topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
        let partitions = self.partition_count(topic).await;
        assert!(partitions > 0, "read_all: topic {topic} does not exist");
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", unique_name("hookpipe-test-reader"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create()
            .unwrap_or_else(|e| panic!("creating a reader for {topic}: {e}"));
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap_or_else(|e| panic!("assigning {topic}[{p}]: {e}"));
        }
        consumer
            .assign(&assignment)
            .unwrap_or_else(|e| panic!("assigning {topic}: {e}"));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut records = Vec::with_capacity(expected);
        while records.len() < expected {
            let msg = match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => break,
                Ok(Err(KafkaError::PartitionEOF(_))) => continue,
                Ok(Err(e)) => panic!("reading {topic}: {e}"),
                Ok(Ok(msg)) => msg,
            };
            let headers = msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                topic: msg.topic().to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key().map(<[u8]>::to_vec),
                payload: msg.payload().map(<[u8]>::to_vec),
                headers,
                timestamp_ms: msg.timestamp().to_millis(),
            });
        }
        records
    }

    /// The committed offset of `group` for each partition of `topic` (`None`: nothing
    /// committed), for tests that check what a consumer group has settled.
    pub async fn committed_offsets(&self, group: &str, topic: &str) -> HashMap<i32, Option<i64>> {
        let partitions = self.partition_count(topic).await as i32;
        let group = group.to_owned();
        let topic = topic.to_owned();
        let mut config = self.client_config();
        config
            .set("group.id", &group)
            .set("enable.auto.commit", "false");
        blocking(move || {
            let consumer: BaseConsumer = config
                .create()
                .unwrap_or_else(|e| panic!("creating a client for group {group}: {e}"));
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&topic, p);
            }
            let committed = consumer
                .committed_offsets(tpl, WAIT)
                .unwrap_or_else(|e| panic!("committed offsets of {group} on {topic}: {e}"));
            committed
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    (e.partition(), offset)
                })
                .collect()
        })
        .await
    }

    /// The high watermark (next offset to be written) of every partition of `topic`; their sum
    /// is the number of records the topic has ever held.
    pub async fn end_offsets(&self, topic: &str) -> HashMap<i32, i64> {
        let partitions = self.partition_count(topic).await as i32;
        let consumer = self.metadata_client();
        let topic = topic.to_owned();
        blocking(move || {
            (0..partitions)
                .map(|p| {
                    let (_, high) = consumer
                        .fetch_watermarks(&topic, p, WAIT)
                        .unwrap_or_else(|e| panic!("watermarks of {topic}[{p}]: {e}"));
                    (p, high)
                })
                .collect()
        })
        .await
    }
}

/// Runs a blocking librdkafka call off the async runtime (so a current-thread runtime keeps
/// serving, e.g., the HTTP receiver), re-raising its panic in the caller.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

// The shared broker's helpers as free functions: what most tests call.

/// [`Broker::unique_topic`] on the shared broker.
pub async fn unique_topic(prefix: &str, partitions: i32) -> String {
    broker().unique_topic(prefix, partitions).await
}

/// [`Broker::create_topic`] on the shared broker.
pub async fn create_topic(name: &str, partitions: i32) {
    broker().create_topic(name, partitions).await
}

/// [`Broker::wait_for_topic`] on the shared broker.
pub async fn wait_for_topic(topic: &str, partitions: i32) {
    broker().wait_for_topic(topic, partitions).await
}

/// [`Broker::partition_count`] on the shared broker.
pub async fn partition_count(topic: &str) -> usize {
    broker().partition_count(topic).await
}

/// Produces one message to the shared broker and waits (bounded) until it is acknowledged.
pub async fn produce(
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: &[(&str, &[u8])],
) -> Delivered {
    let mut msg = Outgoing::new(payload);
    msg.key = key.map(<[u8]>::to_vec);
    for (name, value) in headers {
        msg = msg.header(*name, *value);
    }
    broker().produce_many(topic, [msg]).await[0]
}

/// [`Broker::produce_many`] on the shared broker.
pub async fn produce_many(
    topic: &str,
    messages: impl IntoIterator<Item = Outgoing>,
) -> Vec<Delivered> {
    broker().produce_many(topic, messages).await
}

/// [`Broker::read_all`] on the shared broker.
pub async fn read_all(topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    broker().read_all(topic, expected, timeout).await
}

/// [`Broker::committed_offsets`] on the shared broker.
pub async fn committed_offsets(group: &str, topic: &str) -> HashMap<i32, Option<i64>> {
    broker().committed_offsets(group, topic).await
}

/// [`Broker::end_offsets`] on the shared broker.
pub async fn end_offsets(topic: &str) -> HashMap<i32, i64> {
    broker().end_offsets(topic).await
}
