//! The Kafka source: a consumer-group member that feeds each assigned partition, in order, to
//! the one worker that owns it, and commits per-partition watermarks of settled offsets.
//!
//! - Offsets: `enable.auto.commit=false`; hookpipe commits each partition's watermark (see
//!   [`watermark`]) every `commit_interval`, synchronously on revoke, and once more at shutdown.
//!   An offset is committed only when it and every earlier offset are settled.
//! - Sharding: partition → worker by a stable hash, over bounded per-worker queues (no global
//!   lock). One partition always goes to the same worker, so first attempts keep partition order.
//! - Backpressure: when a worker's queue is full, the message waits in its partition's stash
//!   (later messages of that partition queue behind it, so order holds) and polling goes on for
//!   the other partitions. Once the stash holds [`STASH_MESSAGES`] messages or [`STASH_BYTES`]
//!   bytes, the source stops polling until a worker frees room: librdkafka keeps its own bounded
//!   prefetch (`queued.max.messages.kbytes`) meanwhile, so a backlog drain never pauses a
//!   partition and never throws prefetched, decompressed messages away. Only a stash that stays
//!   full for [`PAUSE_AFTER`] (a worker stuck behind a slow destination) gets its partitions
//!   paused (Kafka is the buffer), so polling resumes for the others and the consumer never
//!   overruns `max.poll.interval.ms`; a paused partition resumes once its stash is through.
//! - End of partition: with every statistics report (`statistics.interval.ms`, 5 s by default)
//!   the source records each assigned, actively fetched partition's end offset (librdkafka's
//!   high watermark, refreshed by every fetch response) in its tracker, so cohort membership
//!   windows can tell when their partition is read to its end. No broker call, no extra timer;
//!   `enable.partition.eof` is not used because its event names the partition but not the topic.
//! - Rebalances: on revoke, a partition's tracker is marked revoked (its queued messages and
//!   in-flight settlements no longer count) and its watermark is committed synchronously.
//!
//! The source knows nothing of templates or HTTP.

pub mod watermark;

pub use watermark::{PartitionTracker, Settlement};

use crate::config;
use crate::telemetry::{Telemetry, TopicMetrics};
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often stashed messages retry their worker's queue (the source also wakes as soon as the
/// worker of the first stashed partition has drained half its queue).
const STASH_RETRY: Duration = Duration::from_millis(10);

/// Stashed messages (all partitions) at which the source stops polling until a worker has room.
pub const STASH_MESSAGES: usize = 256;

/// Stashed payload bytes (all partitions) at which the source stops polling, so a few large
/// messages (cohort chunks) bound memory as well as many small ones.
pub const STASH_BYTES: usize = 8 << 20;

/// How long a full stash may stop polling before its partitions are paused. A busy worker frees
/// half its queue far sooner (128 messages take ~15 ms at 10,000/s, a descheduled one on a loaded
/// machine a few tens of ms), so it never causes a pause (each pause makes librdkafka drop the
/// partition's prefetched messages and fetch them again); a worker slower than that (a slow
/// destination without overflow) gets its partitions paused so the other workers' partitions are
/// polled again: they wait at most this long behind it. Short against `max.poll.interval.ms`
/// (5 minutes by default).
pub const PAUSE_AFTER: Duration = Duration::from_millis(200);

/// One consumed message, owned, with the tracker of the partition assignment it came from.
#[derive(Debug)]
pub struct SourceMessage {
    /// Source topic.
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The Kafka timestamp (create or log-append time), unix milliseconds.
    pub timestamp_ms: Option<i64>,
    /// The message value (empty for a null value).
    pub payload: Bytes,
    /// Settlement tracking for this partition assignment.
    pub tracker: Arc<PartitionTracker>,
}

/// Why the source could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// librdkafka refused the configuration (a bad `[kafka.settings]` property, usually).
    #[error("kafka consumer configuration: {0}")]
    Config(#[source] KafkaError),
    /// Subscribing to the input topics failed.
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        /// The topics.
        topics: Vec<String>,
        /// librdkafka's error.
        source: KafkaError,
    },
}

/// The librdkafka properties shared by hookpipe's consumer and producers: bootstrap servers and
/// the pass-through `[kafka.settings]` (security, SASL, TLS, ...).
pub fn client_config(kafka: &config::Kafka) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (k, v) in &kafka.settings {
        c.set(k, v.expose());
    }
    c
}

/// (topic, partition).
type PartitionKey = (Arc<str>, i32);

/// Trackers of the assigned partitions, by topic then partition (so a lookup by `&str` allocates
/// nothing).
type TrackerMap = HashMap<Arc<str>, HashMap<i32, Arc<PartitionTracker>>>;

/// The partitions currently assigned to this process, with their trackers.
#[derive(Debug, Default)]
struct Assigned {
    map: Mutex<TrackerMap>,
}

impl Assigned {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, topic: &str, partition: i32) -> Option<Arc<PartitionTracker>> {
        self.lock().get(topic)?.get(&partition).cloned()
    }

    fn all(&self) -> Vec<Arc<PartitionTracker>> {
        self.lock()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }
}

/// Commits `trackers`' moved watermarks; `Sync` waits for the broker.
fn commit<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    trackers: &[Arc<PartitionTracker>],
    mode: CommitMode,
    telemetry: &Telemetry,
) {
    let mut tpl = TopicPartitionList::new();
    let mut taken = Vec::new();
    for t in trackers {
        if let Some(wm) = t.take_commit() {
            if tpl
                .add_partition_offset(t.topic(), t.partition(), Offset::Offset(wm))
                .is_ok()
            {
                taken.push(t.clone());
            } else {
                t.commit_failed();
            }
        }
    }
    if tpl.count() == 0 {
        return;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            // Async commits report their outcome in the commit callback.
            if matches!(mode, CommitMode::Sync) {
                telemetry.committed(true, tpl.count());
            }
        }
        Err(e) => {
            warn!(error = %e, partitions = tpl.count(), "offset commit failed; will retry");
            telemetry.committed(false, tpl.count());
            taken.iter().for_each(|t| t.commit_failed());
        }
    }
}

/// The consumer's callbacks: rebalances, commit results and statistics.
struct Context {
    assigned: Arc<Assigned>,
    telemetry: Arc<Telemetry>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for (topic, t) in &statistics.topics {
            // The end as of the latest fetch response; a partition not being fetched (leader
            // unknown, offset query, stopped) says nothing about now.
            for p in t.partitions.values() {
                if p.partition >= 0 && p.hi_offset >= 0 && p.fetch_state == "active" {
                    if let Some(tracker) = self.assigned.get(topic, p.partition) {
                        tracker.set_end(p.hi_offset, now);
                    }
                }
            }
            let lag: i64 = t
                .partitions
                .values()
                .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                .map(|p| p.consumer_lag)
                .sum();
            self.telemetry.consumer_lag(topic, lag);
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut map = self.assigned.lock();
                for e in tpl.elements() {
                    map.entry(Arc::from(e.topic())).or_default().insert(
                        e.partition(),
                        Arc::new(PartitionTracker::new(e.topic(), e.partition())),
                    );
                }
                drop(map);
                self.telemetry.rebalanced("assign", tpl.count() as i64);
                info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let mut revoked = Vec::new();
                let mut map = self.assigned.lock();
                for e in tpl.elements() {
                    let removed = map
                        .get_mut(e.topic())
                        .and_then(|m| m.remove(&e.partition()));
                    if let Some(t) = removed {
                        t.revoke();
                        revoked.push(t);
                    }
                }
                drop(map);
                if !consumer.assignment_lost() {
                    commit(consumer, &revoked, CommitMode::Sync, &self.telemetry);
                }
                let outstanding: usize = revoked.iter().map(|t| t.outstanding()).sum();
                self.telemetry.rebalanced("revoke", -(revoked.len() as i64));
                info!(
                    partitions = revoked.len(),
                    abandoned_offsets = outstanding,
                    "partitions revoked; settled offsets committed, in-flight work abandoned"
                );
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A partition paused under a previous assignment must not stay paused.
            let _ = consumer.resume(tpl);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let ok = result.is_ok();
        self.telemetry.committed(ok, offsets.count());
        if let Err(e) = result {
            warn!(error = %e, "async offset commit failed; will retry");
            for el in offsets.elements() {
                if let Some(t) = self.assigned.get(el.topic(), el.partition()) {
                    t.commit_failed();
                }
            }
        }
    }
}

/// Whether `shard`'s queue has at least half its capacity free (or is closed, so a flush can
/// notice and drop the stash).
fn has_room(shard: &mpsc::Sender<SourceMessage>) -> bool {
    shard.is_closed() || shard.capacity() >= shard.max_capacity().div_ceil(2)
}

/// The messages of one partition waiting for room in its worker's queue, in offset order.
#[derive(Debug, Default)]
struct Stashed {
    queue: VecDeque<SourceMessage>,
    /// The partition is paused in librdkafka (resumed once the queue is through).
    paused: bool,
}

/// Every partition's stash, with totals that decide when polling stops.
#[derive(Debug, Default)]
struct Stash {
    parts: HashMap<PartitionKey, Stashed>,
    messages: usize,
    bytes: usize,
    /// Since when the stash has been full (polling stopped), if it is.
    full_since: Option<tokio::time::Instant>,
}

impl Stash {
    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    fn is_full(&self) -> bool {
        self.messages >= STASH_MESSAGES || self.bytes >= STASH_BYTES
    }

    fn push(&mut self, key: PartitionKey, msg: SourceMessage) {
        let stashed = self.parts.entry(key).or_default();
        // A paused partition's messages (the few librdkafka had already queued) do not count:
        // nothing more of it comes until it resumes.
        if !stashed.paused {
            self.messages += 1;
            self.bytes += msg.payload.len();
        }
        stashed.queue.push_back(msg);
    }

    fn paused(&self) -> usize {
        self.parts.values().filter(|s| s.paused).count()
    }

    /// When the full stash will have stopped polling for [`PAUSE_AFTER`], if it is full.
    fn pause_deadline(&self) -> Option<tokio::time::Instant> {
        self.full_since.map(|t| t + PAUSE_AFTER)
    }
}

/// Resolves once the worker of one stashed partition has half its queue free (at once if that
/// worker is gone). The permits are given back at once: only the source sends, so the room
/// stays there for [`Source::flush`].
async fn room(stash: &Stash, shards: &[mpsc::Sender<SourceMessage>]) {
    let Some(m) = stash.parts.values().find_map(|s| s.queue.front()) else {
        return;
    };
    let shard = &shards[m.tracker.shard(shards.len())];
    let _ = shard.reserve_many(shard.max_capacity().div_ceil(2)).await;
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The consumer and its assignment. Create with [`Source::new`], feed workers with
/// [`Source::run`], then [`Source::drain`] and [`Source::commit_settled`] at shutdown.
pub struct Source {
    consumer: StreamConsumer<Context>,
    assigned: Arc<Assigned>,
    telemetry: Arc<Telemetry>,
    topic_metrics: HashMap<String, TopicMetrics>,
    commit_interval: Duration,
    /// Partition pauses and resumes since start, logged when [`Source::run`] returns: each
    /// pause makes librdkafka drop the partition's prefetched (decompressed) messages.
    pauses: AtomicU64,
    resumes: AtomicU64,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").finish_non_exhaustive()
    }
}

impl Source {
    /// Creates the consumer and subscribes to `topics`. Does not wait for an assignment.
    pub fn new(
        kafka: &config::Kafka,
        topics: &[String],
        commit_interval: Duration,
        telemetry: Arc<Telemetry>,
    ) -> Result<Source, SourceError> {
        let mut c = ClientConfig::new();
        // Defaults the user may override in [kafka.settings]...
        c.set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            .set("queued.max.messages.kbytes", "16384");
        for (k, v) in client_config(kafka).config_map() {
            c.set(k, v);
        }
        // ...and the properties the commit protocol depends on, which they may not.
        c.set("group.id", &kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let assigned = Arc::new(Assigned::default());
        let context = Context {
            assigned: assigned.clone(),
            telemetry: telemetry.clone(),
        };
        let consumer: StreamConsumer<Context> = c
            .create_with_context(context)
            .map_err(SourceError::Config)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|source| SourceError::Subscribe {
                topics: topics.to_vec(),
                source,
            })?;
        let topic_metrics = topics
            .iter()
            .map(|t| (t.clone(), telemetry.topic(t)))
            .collect();
        Ok(Source {
            consumer,
            assigned,
            telemetry,
            topic_metrics,
            commit_interval,
            pauses: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
        })
    }

    /// Consumes until `shutdown` is cancelled, handing each message to
    /// `shards[tracker.shard(shards.len())]`, stashing (and after [`PAUSE_AFTER`] pausing)
    /// partitions whose worker is full, and committing settled watermarks every
    /// `commit_interval`.
    pub async fn run(&self, shards: &[mpsc::Sender<SourceMessage>], shutdown: &CancellationToken) {
        let mut stash = Stash::default();
        let mut commit_tick = tokio::time::interval(self.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stash_tick = tokio::time::interval(STASH_RETRY);
        stash_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let full = stash.is_full();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = commit_tick.tick() => self.commit_settled(CommitMode::Async),
                _ = stash_tick.tick(), if !stash.is_empty() => self.flush(&mut stash, shards),
                _ = room(&stash, shards), if !stash.is_empty() => self.flush(&mut stash, shards),
                _ = sleep_until(stash.pause_deadline()), if full => self.pause_stashed(&mut stash, shards),
                received = self.consumer.recv(), if !full => {
                    let m = match received {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(error = %e, "kafka consumer error");
                            continue;
                        }
                    };
                    let Some(tracker) = self.assigned.get(m.topic(), m.partition()) else {
                        // Not (or no longer) assigned: its owner will read it.
                        continue;
                    };
                    match self.topic_metrics.get(m.topic()) {
                        Some(t) => t.consumed(m.topic(), m.partition(), m.offset()),
                        None => self.telemetry.message_consumed(m.topic(), m.partition(), m.offset()),
                    }
                    let msg = SourceMessage {
                        topic: tracker.topic().clone(),
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                        tracker,
                    };
                    drop(m);
                    self.dispatch(msg, &mut stash, shards);
                }
            }
            match (stash.is_full(), stash.full_since) {
                (true, None) => stash.full_since = Some(tokio::time::Instant::now()),
                (false, Some(_)) => stash.full_since = None,
                _ => {}
            }
        }
        info!(
            pauses = self.pauses.load(Ordering::Relaxed),
            resumes = self.resumes.load(Ordering::Relaxed),
            "source stopped"
        );
    }

    /// Hands `msg` to its worker, or stashes it behind its partition's earlier stashed messages
    /// (or when the worker's queue is full). Never waits.
    fn dispatch(
        &self,
        msg: SourceMessage,
        stash: &mut Stash,
        shards: &[mpsc::Sender<SourceMessage>],
    ) {
        let key = (msg.topic.clone(), msg.partition);
        if stash.parts.contains_key(&key) {
            // Keep partition order behind the stash.
            stash.push(key, msg);
            return;
        }
        let shard = msg.tracker.shard(shards.len());
        match shards[shard].try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => stash.push(key, msg),
            // Workers are gone: shutting down. Not registered, so never committed: read again
            // after the restart.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The stash stopped polling for [`PAUSE_AFTER`]: pauses every stashed partition whose
    /// worker is still full, so polling goes on for the others (and keeps the consumer in its
    /// group). Their messages wait in the stash; each resumes once its stash is through.
    fn pause_stashed(&self, stash: &mut Stash, shards: &[mpsc::Sender<SourceMessage>]) {
        self.flush(stash, shards);
        let mut released = 0;
        for ((topic, partition), s) in stash.parts.iter_mut() {
            if s.paused {
                continue;
            }
            s.paused = true;
            self.pause(topic, *partition, true);
            released += s.queue.len();
        }
        // Paused partitions send nothing more, so what they hold no longer stops polling.
        stash.messages = stash.messages.saturating_sub(released);
        stash.bytes = stash
            .parts
            .values()
            .filter(|s| !s.paused)
            .flat_map(|s| s.queue.iter())
            .map(|m| m.payload.len())
            .sum();
        stash.full_since = None;
        self.telemetry.paused_partitions(stash.paused());
    }

    fn flush(&self, stash: &mut Stash, shards: &[mpsc::Sender<SourceMessage>]) {
        let (mut sent_messages, mut sent_bytes) = (0usize, 0usize);
        stash.parts.retain(|(topic, partition), stashed| {
            let paused = stashed.paused;
            let queue = &mut stashed.queue;
            let count = |m: &SourceMessage, messages: &mut usize, bytes: &mut usize| {
                // Paused partitions' messages were taken off the totals when they paused.
                if !paused {
                    *messages += 1;
                    *bytes += m.payload.len();
                }
            };
            // Revoked meanwhile: whoever owns it now reads from the committed offset. Only
            // those go: a re-assignment's messages may already queue behind them, and dropping
            // one of those unregistered would let the watermark skip it.
            queue.retain(|m| {
                let keep = !m.tracker.is_revoked();
                if !keep {
                    count(m, &mut sent_messages, &mut sent_bytes);
                }
                keep
            });
            // Hysteresis: hand over only once the worker has drained half its queue, so a slow
            // worker costs one wake-up per half queue, not one per message.
            if let Some(m) = queue.front() {
                if !has_room(&shards[m.tracker.shard(shards.len())]) {
                    return true;
                }
            }
            while let Some(msg) = queue.pop_front() {
                let shard = msg.tracker.shard(shards.len());
                let (messages, bytes) = (1, msg.payload.len());
                match shards[shard].try_send(msg) {
                    Ok(()) => {
                        if !paused {
                            sent_messages += messages;
                            sent_bytes += bytes;
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(msg)) => {
                        queue.push_front(msg);
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            if paused {
                self.pause(topic, *partition, false);
            }
            false
        });
        stash.messages = stash.messages.saturating_sub(sent_messages);
        stash.bytes = stash.bytes.saturating_sub(sent_bytes);
        if stash.is_empty() {
            (stash.messages, stash.bytes) = (0, 0);
        }
        self.telemetry.paused_partitions(stash.paused());
    }

    fn pause(&self, topic: &str, partition: i32, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let result = if pause {
            self.pauses.fetch_add(1, Ordering::Relaxed);
            self.consumer.pause(&tpl)
        } else {
            self.resumes.fetch_add(1, Ordering::Relaxed);
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            warn!(topic, partition, pause, error = %e, "pause/resume failed");
        }
    }

    /// Commits every assigned partition's watermark that moved since its last commit.
    pub fn commit_settled(&self, mode: CommitMode) {
        let trackers = self.assigned.all();
        commit(&self.consumer, &trackers, mode, &self.telemetry);
    }

    /// Waits until no assigned partition has unsettled deliveries, or `timeout` passes.
    /// Returns the number of offsets still unsettled (abandoned: redelivered after restart).
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let outstanding: usize = self.assigned.all().iter().map(|t| t.outstanding()).sum();
            if outstanding == 0 || tokio::time::Instant::now() >= deadline {
                return outstanding;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leaves the group: revokes (committing what is settled) and closes the consumer.
    pub fn close(self) {
        self.consumer.unsubscribe();
        drop(self.consumer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tracker: &Arc<PartitionTracker>, offset: i64, bytes: usize) -> SourceMessage {
        SourceMessage {
            topic: tracker.topic().clone(),
            partition: tracker.partition(),
            offset,
            timestamp_ms: None,
            payload: Bytes::from(vec![b'x'; bytes]),
            tracker: tracker.clone(),
        }
    }

    #[test]
    fn the_stash_fills_by_messages_or_bytes_of_unpaused_partitions_only() {
        let a = Arc::new(PartitionTracker::new("events", 0));
        let b = Arc::new(PartitionTracker::new("events", 1));
        let mut stash = Stash::default();
        for o in 0..STASH_MESSAGES as i64 - 1 {
            stash.push((a.topic().clone(), 0), message(&a, o, 10));
        }
        assert!(!stash.is_full());
        stash.push((b.topic().clone(), 1), message(&b, 0, 10));
        assert!(stash.is_full(), "{} messages", stash.messages);
        assert_eq!(stash.bytes, STASH_MESSAGES * 10);

        // A paused partition's later messages (librdkafka's leftovers) do not count.
        stash.parts.get_mut(&(a.topic().clone(), 0)).unwrap().paused = true;
        stash.messages = 1;
        stash.bytes = 10;
        stash.push((a.topic().clone(), 0), message(&a, 1000, 10));
        assert_eq!((stash.messages, stash.bytes), (1, 10));
        assert_eq!(stash.paused(), 1);
        assert_eq!(
            stash.parts[&(a.topic().clone(), 0)].queue.len(),
            STASH_MESSAGES
        );

        // A few large messages fill it by bytes.
        let mut big = Stash::default();
        big.push((a.topic().clone(), 0), message(&a, 0, STASH_BYTES / 2));
        assert!(!big.is_full());
        big.push((a.topic().clone(), 0), message(&a, 1, STASH_BYTES / 2));
        assert!(big.is_full());
        assert_eq!(
            big.pause_deadline(),
            None,
            "not full before the source notes it"
        );
    }
}
