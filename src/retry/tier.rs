//! A retry tier's consumer: the read side of the durable retry path.
//!
//! Every record in a tier waits the same time, so the tier's order is its due order and the
//! consumer only ever waits for the head of each partition: when a partition's head is not due
//! yet, the partition is paused (nothing more is fetched; the consumer keeps polling, so it stays
//! in its group) and a timer on tokio-util's `DelayQueue` resumes it when the head is due. Due
//! records are attempted through [`crate::deliver::Client::attempt_numbered`] with their stable
//! delivery id; a failure is parked into the next tier or dead-lettered by [`Parker`] before the
//! tier offset is stored. Offsets are stored (and auto-committed) only up to the first record not
//! yet settled, per partition, so a crash repeats work and never skips it.
//!
//! # Isolation and memory
//! - Due records wait in one queue per destination; they are started round-robin across
//!   destinations, at most [`TierLimits::in_flight_per_destination`] per destination and
//!   [`TierLimits::in_flight`] in all, so a dead destination (each of its attempts taking up to its
//!   4 s budget plus a request timeout) uses only its share while healthy destinations keep going.
//! - Backpressure is per partition. A destination's queue holds at most
//!   [`TierLimits::queued_per_destination`] records; a due record whose destination's queue is
//!   full stays its partition's head (held, never dropped or skipped: offsets are stored only up
//!   to it) and that partition alone is paused, until the destination's queue has room again.
//!   The parker writes each destination to a partition of its own ([`super::placement`]), so a
//!   dead destination pauses only its own partition. Where destinations share a partition (more
//!   destinations than partitions, or records written under an older placement), the records
//!   behind a blocked head wait with it.
//! - Memory: queued records are at most `queued_per_destination` per destination, and as a last
//!   resort [`TierLimits::queued`] in all (past it every partition pauses until the queues drain
//!   to half; with the defaults that takes 16 destinations all stuck at once). Held records are
//!   one head per partition plus what was read before its pause took effect (librdkafka drops a
//!   paused partition's prefetch). The prefetch itself is bounded by
//!   [`TierLimits::prefetch_kbytes`] per partition ([`consumer_config`]).
//!
//! A record naming a destination that is no longer configured, or one that cannot be decoded, is
//! dead-lettered with the reason.

use super::park::{unix_ms, Parker};
use super::record::{DeadLetter, ParkedDelivery, FORMAT};
use crate::deliver::Client;
use crate::retry::park::Parked;
use crate::telemetry::Telemetry;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};

/// Concurrency and memory bounds of one tier's consumer (configured in `[retry]`, see
/// `docs/configuration.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    /// Attempts in flight in all.
    pub in_flight: usize,
    /// Attempts in flight per destination.
    pub in_flight_per_destination: usize,
    /// Due records waiting for a free slot, per destination; when a destination's queue is full,
    /// the partition whose head is its next record pauses until there is room.
    pub queued_per_destination: usize,
    /// Due records waiting for a free slot, in all: a last-resort memory bound; past it, every
    /// partition pauses until the queues drain to half.
    pub queued: usize,
    /// Records librdkafka may prefetch, in KiB per partition of the tier topic (see
    /// [`consumer_config`]).
    pub prefetch_kbytes: usize,
}

impl Default for TierLimits {
    fn default() -> Self {
        TierLimits {
            in_flight: 256,
            in_flight_per_destination: 32,
            queued_per_destination: 256,
            queued: 4096,
            prefetch_kbytes: 1024,
        }
    }
}

/// Partitions assumed for a tier topic whose partition count the parker's placement does not
/// know (only to size the prefetch): the default of created tier topics.
const ASSUMED_PARTITIONS: usize = 6;

/// librdkafka's ceiling for `queued.max.messages.kbytes`.
const MAX_QUEUED_KBYTES: usize = 2_097_151;

/// A tier consumer that cannot start or whose consumer failed.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// librdkafka refused the consumer config or the subscription.
    #[error("retry tier {topic:?}: {source}")]
    Kafka {
        /// The tier topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
}

/// Rebalance notifications from librdkafka's callback to the tier's loop.
#[derive(Debug)]
enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// The consumer context: forwards rebalances to the loop.
pub struct TierContext {
    topic: String,
    events: mpsc::UnboundedSender<Assignment>,
}

impl ClientContext for TierContext {}

impl ConsumerContext for TierContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let _ = self
                .events
                .send(Assignment::Revoked(partitions_of(tpl, &self.topic)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let _ = self
                .events
                .send(Assignment::Assigned(partitions_of(tpl, &self.topic)));
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// The consumer settings a tier needs on top of the base config, for a topic of `partitions`
/// partitions with `prefetch_kbytes` of prefetch per partition.
///
/// The high-level consumer has one prefetch queue for all its partitions, bounded by
/// `queued.max.messages.kbytes` (set to `prefetch_kbytes × partitions`) and overshot by at most
/// one fetch per partition, `fetch.message.max.bytes` (set to `prefetch_kbytes`; librdkafka
/// still grows a fetch to take one record larger than that). So a tier consumer prefetches at
/// most about `2 × prefetch_kbytes × partitions` KiB (plus one oversized record per partition).
pub fn consumer_config(
    base: &ClientConfig,
    group_id: &str,
    partitions: usize,
    prefetch_kbytes: usize,
) -> ClientConfig {
    let per_partition = prefetch_kbytes.clamp(1, MAX_QUEUED_KBYTES);
    let queue = per_partition
        .saturating_mul(partitions.max(1))
        .min(MAX_QUEUED_KBYTES);
    let mut config = base.clone();
    config
        .set("group.id", group_id)
        // A new group must start at the beginning: everything parked must be attempted.
        .set("auto.offset.reset", "earliest")
        // Offsets are stored by hand, only up to the first unsettled record.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Prefetch little: a paused partition's prefetch is thrown away and fetched again.
        .set("queued.max.messages.kbytes", queue.to_string())
        .set(
            "fetch.message.max.bytes",
            per_partition.saturating_mul(1024).to_string(),
        );
    config
}

/// What a started task does.
enum Work {
    Attempt(ParkedDelivery),
    /// A dead letter and its `hookpipe.reason` code.
    DeadLetter(DeadLetter, &'static str),
}

struct Job {
    partition: i32,
    offset: i64,
    work: Work,
}

impl Work {
    /// The queue it waits in: its destination's; dead letters share one under a name no
    /// destination can have.
    fn queue(&self) -> &str {
        match self {
            Work::Attempt(d) => &d.destination,
            Work::DeadLetter(..) => "",
        }
    }
}

/// A record read and not yet queued: not due yet, or due while its destination's queue is full.
struct Held {
    offset: i64,
    due_unix_ms: u64,
    work: Work,
}

#[derive(Default)]
struct Partition {
    /// Read and not yet queued, in order; the first one is the head: waited for by the timer
    /// (not due yet) or blocked on its destination's full queue.
    held: VecDeque<Held>,
    timer: Option<delay_queue::Key>,
    paused: bool,
    /// Offsets read and not yet settled (held, queued or in flight).
    unsettled: BTreeSet<i64>,
    /// One past the last offset read.
    next: Option<i64>,
    /// The last offset stored for commit.
    stored: Option<i64>,
}

/// One tier's consumer loop. Build with [`Tier::new`], run with [`Tier::run`].
pub struct Tier {
    topic: String,
    consumer: StreamConsumer<TierContext>,
    events: mpsc::UnboundedReceiver<Assignment>,
    clients: Arc<HashMap<String, Client>>,
    parker: Parker,
    limits: TierLimits,
    parts: HashMap<i32, Partition>,
    timers: DelayQueue<i32>,
    queues: HashMap<String, VecDeque<Job>>,
    /// Per destination: partitions whose due head waits for room in its queue.
    blocked: HashMap<String, BTreeSet<i32>>,
    /// Destinations with queued jobs, in round-robin order.
    turn: VecDeque<String>,
    busy: HashMap<String, usize>,
    queued: usize,
    saturated: bool,
    tasks: JoinSet<(i32, i64, String)>,
    telemetry: Option<Arc<Telemetry>>,
    /// Set on the overflow tier: lowered as each first attempt starts.
    backlog: Option<Arc<super::service::OverflowBacklog>>,
}

impl Tier {
    /// A consumer of `topic` in group `group_id` (use one group per deployment, shared by all its
    /// tiers), attempting through `clients` (by destination name) and parking failures with
    /// `parker`.
    pub fn new(
        base: &ClientConfig,
        group_id: &str,
        topic: &str,
        clients: Arc<HashMap<String, Client>>,
        parker: Parker,
        limits: TierLimits,
    ) -> Result<Tier, TierError> {
        let kafka = |source| TierError::Kafka {
            topic: topic.to_string(),
            source,
        };
        let (tx, events) = mpsc::unbounded_channel();
        let context = TierContext {
            topic: topic.to_string(),
            events: tx,
        };
        let partitions = parker
            .placement()
            .partitions(topic)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(ASSUMED_PARTITIONS);
        let consumer: StreamConsumer<TierContext> =
            consumer_config(base, group_id, partitions, limits.prefetch_kbytes)
                .create_with_context(context)
                .map_err(kafka)?;
        consumer.subscribe(&[topic]).map_err(kafka)?;
        Ok(Tier {
            topic: topic.to_string(),
            consumer,
            events,
            clients,
            parker,
            limits,
            parts: HashMap::new(),
            timers: DelayQueue::new(),
            queues: HashMap::new(),
            blocked: HashMap::new(),
            turn: VecDeque::new(),
            busy: HashMap::new(),
            queued: 0,
            saturated: false,
            tasks: JoinSet::new(),
            telemetry: None,
            backlog: None,
        })
    }

    /// Counts every re-attempt in the destination's delivery metrics (`outcome` delivered or
    /// failed, duration) and every delivery dead-lettered after its last attempt.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Tier {
        self.telemetry = Some(telemetry);
        self
    }

    /// Makes this the overflow tier: every first attempt it starts lowers `backlog` for its
    /// destination, so the pipeline knows when a destination's overflowed deliveries have all
    /// started and its later ones may go direct again without overtaking them.
    pub fn with_overflow_backlog(mut self, backlog: Arc<super::service::OverflowBacklog>) -> Tier {
        self.backlog = Some(backlog);
        self
    }

    /// Runs until `shutdown` fires, then finishes the attempts in flight, stores their offsets and
    /// commits. Records held or queued at shutdown are left unsettled (attempted after restart).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), TierError> {
        loop {
            self.apply_assignments();
            self.start_jobs();
            self.sync_pauses();
            // Always awaiting `recv`, even with every partition paused: the stream consumer's
            // wake-ups keep librdkafka's max.poll.interval.ms satisfied during long waits, so
            // the tier stays in its group while it holds a head for 75 minutes.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => match message {
                    Ok(m) => {
                        let (partition, offset) = (m.partition(), m.offset());
                        let payload = m.payload().unwrap_or_default().to_vec();
                        drop(m);
                        self.apply_assignments();
                        self.read(partition, offset, &payload);
                    }
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, error = %e, "retry tier: consumer error");
                    }
                },
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    let partition = expired.into_inner();
                    if let Some(p) = self.parts.get_mut(&partition) {
                        p.timer = None;
                    }
                    self.release(partition);
                }
                Some(done) = self.tasks.join_next() => self.finished(done),
            }
        }
        while let Some(done) = self.tasks.join_next().await {
            self.finished(done);
        }
        if let Err(e) = self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            tracing::debug!(topic = %self.topic, error = %e, "retry tier: final commit");
        }
        Ok(())
    }

    fn apply_assignments(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                Assignment::Assigned(parts) => {
                    // A fresh assignment starts unpaused, from the committed offset. librdkafka
                    // keeps a partition's pause flag across a revoke and re-assignment (a tier
                    // joining the group rebalances it at start), so a partition paused for a
                    // head not yet due would otherwise stay paused with no timer to resume it.
                    let mut resume = TopicPartitionList::new();
                    for p in parts {
                        self.drop_partition(p);
                        self.parts.insert(p, Partition::default());
                        resume.add_partition(&self.topic, p);
                    }
                    if resume.count() > 0 {
                        if let Err(e) = self.consumer.resume(&resume) {
                            tracing::warn!(topic = %self.topic, error = %e, "retry tier: resume on assignment");
                        }
                    }
                }
                Assignment::Revoked(parts) => {
                    for p in parts {
                        self.drop_partition(p);
                    }
                }
            }
        }
    }

    /// Forgets a partition's held and queued records (their new owner reads them again).
    fn drop_partition(&mut self, partition: i32) {
        if let Some(mut p) = self.parts.remove(&partition) {
            if let Some(key) = p.timer.take() {
                self.timers.remove(&key);
            }
        }
        for queue in self.queues.values_mut() {
            let before = queue.len();
            queue.retain(|j| j.partition != partition);
            self.queued -= before - queue.len();
        }
        for waiting in self.blocked.values_mut() {
            waiting.remove(&partition);
        }
        self.blocked.retain(|_, w| !w.is_empty());
        // Its queued records are gone: partitions waiting for room behind them may move.
        let roomy: Vec<String> = self
            .blocked
            .keys()
            .filter(|d| !self.queue_full(d))
            .cloned()
            .collect();
        for destination in roomy {
            self.unblock(&destination);
        }
        let queues = &self.queues;
        self.turn
            .retain(|d| queues.get(d).is_some_and(|q| !q.is_empty()));
    }

    /// Takes in one record read from the tier.
    fn read(&mut self, partition: i32, offset: i64, payload: &[u8]) {
        let now = unix_ms(SystemTime::now());
        let (work, due) = match ParkedDelivery::from_json(payload) {
            Ok(d) if self.clients.contains_key(&d.destination) => {
                let due = d.due_unix_ms;
                (Work::Attempt(d), due)
            }
            Ok(d) => {
                let reason = format!("destination {:?} is no longer configured", d.destination);
                let dead = letter(reason, Some(d), None, now);
                (Work::DeadLetter(dead, "destination_removed"), 0)
            }
            Err(e) => {
                let reason = format!("unreadable retry record in {}: {e}", self.topic);
                let raw = Some(bytes::Bytes::copy_from_slice(payload));
                let dead = letter(reason, None, raw, now);
                (Work::DeadLetter(dead, "unreadable_retry_record"), 0)
            }
        };
        let p = self.parts.entry(partition).or_default();
        p.unsettled.insert(offset);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
        let behind_a_head = !p.held.is_empty();
        p.held.push_back(Held {
            offset,
            due_unix_ms: due,
            work,
        });
        // Behind a head, it moves only when the head does (partition order is due order).
        if !behind_a_head {
            self.release(partition);
        }
    }

    /// Moves on the partitions whose head waited for room in `destination`'s queue (those that
    /// fill it again are noted as blocked again).
    fn unblock(&mut self, destination: &str) {
        if let Some(waiting) = self.blocked.remove(destination) {
            for partition in waiting {
                self.release(partition);
            }
        }
    }

    /// Whether `destination`'s queue is at its cap.
    fn queue_full(&self, destination: &str) -> bool {
        self.queues
            .get(destination)
            .is_some_and(|q| q.len() >= self.limits.queued_per_destination)
    }

    /// Moves a partition's heads to their destinations' queues while they are due and their
    /// queue has room. A head that is not due gets the timer; a due head whose queue is full is
    /// noted as blocked on that destination and moves when the queue drains ([`Tier::start_jobs`]).
    /// Either way the partition stays paused while it has a head ([`Tier::sync_pauses`]).
    fn release(&mut self, partition: i32) {
        let now = unix_ms(SystemTime::now());
        loop {
            let Some(p) = self.parts.get(&partition) else {
                return;
            };
            let Some(head) = p.held.front() else {
                return;
            };
            if head.due_unix_ms > now {
                let wait = Duration::from_millis(head.due_unix_ms - now);
                let p = self.parts.get_mut(&partition).expect("looked up above");
                if p.timer.is_none() {
                    p.timer = Some(self.timers.insert(partition, wait));
                }
                return;
            }
            let dest = head.work.queue();
            if self.queue_full(dest) {
                let dest = dest.to_string();
                tracing::debug!(
                    topic = %self.topic,
                    partition,
                    destination = %dest,
                    "retry tier: destination queue full; partition paused at its head"
                );
                self.blocked.entry(dest).or_default().insert(partition);
                return;
            }
            let p = self.parts.get_mut(&partition).expect("looked up above");
            let h = p.held.pop_front().expect("head exists");
            self.enqueue(Job {
                partition,
                offset: h.offset,
                work: h.work,
            });
        }
    }

    fn enqueue(&mut self, job: Job) {
        let dest = job.work.queue().to_string();
        let queue = self.queues.entry(dest.clone()).or_default();
        if queue.is_empty() {
            self.turn.push_back(dest);
        }
        queue.push_back(job);
        self.queued += 1;
    }

    /// Starts queued jobs round-robin across destinations within the limits.
    fn start_jobs(&mut self) {
        let mut skipped = 0;
        while self.tasks.len() < self.limits.in_flight && skipped < self.turn.len() {
            let Some(dest) = self.turn.pop_front() else {
                break;
            };
            let busy = self.busy.get(&dest).copied().unwrap_or(0);
            if busy >= self.limits.in_flight_per_destination {
                self.turn.push_back(dest);
                skipped += 1;
                continue;
            }
            let Some(queue) = self.queues.get_mut(&dest) else {
                continue;
            };
            let Some(job) = queue.pop_front() else {
                // Emptied by a revocation: it no longer takes a turn.
                continue;
            };
            let room = queue.len() < self.limits.queued_per_destination;
            if !queue.is_empty() {
                self.turn.push_back(dest.clone());
            }
            skipped = 0;
            self.queued -= 1;
            if room {
                // Partitions whose head waited for room in this queue move on (and may queue
                // more for it, started by later turns of this loop).
                self.unblock(&dest);
            }
            *self.busy.entry(dest.clone()).or_default() += 1;
            let parker = self.parker.clone();
            let client = self.clients.get(&dest).cloned();
            let telemetry = self.telemetry.clone();
            if let (Some(b), Work::Attempt(d)) = (&self.backlog, &job.work) {
                if d.next_attempt == 1 {
                    b.lower(&d.destination);
                }
            }
            self.tasks.spawn(async move {
                match job.work {
                    Work::Attempt(delivery) => {
                        let client = client.expect("destination checked when read");
                        let began = tokio::time::Instant::now();
                        let outcome = client
                            .attempt_numbered(&delivery.request(), delivery.next_attempt)
                            .await;
                        if let Some(t) = &telemetry {
                            t.destination(&delivery.destination).attempt(
                                &delivery.delivery_id,
                                outcome.is_delivered(),
                                outcome.tries().len(),
                                began.elapsed(),
                            );
                        }
                        if !outcome.is_delivered() {
                            let tries = match outcome {
                                crate::deliver::Outcome::Failed { tries }
                                | crate::deliver::Outcome::Delivered { tries } => tries,
                            };
                            let source = delivery.source.as_ref().map(|s| s.topic.clone());
                            let id = delivery.delivery_id.clone();
                            let parked = parker.after_failure(delivery, tries).await;
                            if let (Some(t), Parked::DeadLettered { .. }) = (&telemetry, parked) {
                                t.dead_lettered(
                                    "attempts_exhausted",
                                    source.as_deref().unwrap_or(""),
                                    &id,
                                );
                            }
                        }
                    }
                    Work::DeadLetter(letter, code) => parker.dead_letter_with(letter, code).await,
                }
                (job.partition, job.offset, dest)
            });
        }
        self.saturated = if self.saturated {
            self.queued > self.limits.queued / 2
        } else {
            self.queued >= self.limits.queued
        };
    }

    fn finished(&mut self, done: Result<(i32, i64, String), tokio::task::JoinError>) {
        let (partition, offset, dest) = match done {
            Ok(done) => done,
            Err(e) => {
                // A panicking attempt leaves its offset unsettled: retried after a restart.
                tracing::error!(topic = %self.topic, error = %e, "retry tier: attempt task failed");
                return;
            }
        };
        if let Some(b) = self.busy.get_mut(&dest) {
            *b = b.saturating_sub(1);
        }
        let Some(p) = self.parts.get_mut(&partition) else {
            return;
        };
        p.unsettled.remove(&offset);
        let settled_to = p.unsettled.first().copied().or(p.next);
        if let Some(next) = settled_to {
            if p.stored.is_none_or(|s| s < next) {
                let mut tpl = TopicPartitionList::new();
                if tpl
                    .add_partition_offset(&self.topic, partition, Offset::Offset(next))
                    .is_ok()
                {
                    match self.consumer.store_offsets(&tpl) {
                        Ok(()) => p.stored = Some(next),
                        Err(e) => {
                            tracing::debug!(topic = %self.topic, partition, error = %e, "retry tier: store offset")
                        }
                    }
                }
            }
        }
    }

    /// Pauses partitions with a held head (or all, when saturated), resumes the others.
    fn sync_pauses(&mut self) {
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for (partition, p) in self.parts.iter_mut() {
            let want = self.saturated || !p.held.is_empty();
            if want != p.paused {
                let list = if want { &mut pause } else { &mut resume };
                list.add_partition(&self.topic, *partition);
                p.paused = want;
            }
        }
        if pause.count() > 0 {
            if let Err(e) = self.consumer.pause(&pause) {
                tracing::warn!(topic = %self.topic, error = %e, "retry tier: pause");
            }
        }
        if resume.count() > 0 {
            if let Err(e) = self.consumer.resume(&resume) {
                tracing::warn!(topic = %self.topic, error = %e, "retry tier: resume");
            }
        }
    }
}

fn letter(
    reason: String,
    delivery: Option<ParkedDelivery>,
    raw: Option<bytes::Bytes>,
    now: u64,
) -> DeadLetter {
    DeadLetter {
        format: FORMAT,
        reason,
        dead_lettered_unix_ms: now,
        delivery,
        raw,
    }
}
