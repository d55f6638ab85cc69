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
//! - Queued records are bounded by [`TierLimits::queued`]: past it, every partition is paused until
//!   the queues drain to half. Held records are bounded by what was already handed out before the
//!   pause (librdkafka purges a paused partition's prefetch; `queued.max.messages.kbytes` is set
//!   low for tiers anyway).
//! - Limit: when one dead destination alone fills [`TierLimits::queued`], the whole tier pauses
//!   until its attempts drain the queue; healthy destinations' retries in that tier wait behind it
//!   (their first attempts, in the pipeline, are not affected).
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

/// Concurrency and memory bounds of one tier's consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    /// Attempts in flight in all.
    pub in_flight: usize,
    /// Attempts in flight per destination.
    pub in_flight_per_destination: usize,
    /// Due records waiting for a free slot, in all; past it, the tier pauses.
    pub queued: usize,
}

impl Default for TierLimits {
    fn default() -> Self {
        TierLimits {
            in_flight: 256,
            in_flight_per_destination: 32,
            queued: 4096,
        }
    }
}

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

/// The consumer settings a tier needs on top of the base config.
pub fn consumer_config(base: &ClientConfig, group_id: &str) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("group.id", group_id)
        // A new group must start at the beginning: everything parked must be attempted.
        .set("auto.offset.reset", "earliest")
        // Offsets are stored by hand, only up to the first unsettled record.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Prefetch little: records beyond a paused head wait in memory.
        .set("queued.max.messages.kbytes", "8192");
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

/// A record read but not yet due, behind its partition's paused head.
struct Held {
    offset: i64,
    due_unix_ms: u64,
    work: Work,
}

#[derive(Default)]
struct Partition {
    /// Not yet due, in order; the first one is the head the timer waits for.
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
        let consumer: StreamConsumer<TierContext> = consumer_config(base, group_id)
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
                    self.release_due(partition);
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
                    for p in parts {
                        // A fresh assignment starts unpaused, from the committed offset.
                        self.drop_partition(p);
                        self.parts.insert(p, Partition::default());
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
        if p.held.is_empty() && due <= now {
            self.enqueue(Job {
                partition,
                offset,
                work,
            });
            return;
        }
        p.held.push_back(Held {
            offset,
            due_unix_ms: due,
            work,
        });
        if p.timer.is_none() {
            let wait = Duration::from_millis(due.saturating_sub(now));
            p.timer = Some(self.timers.insert(partition, wait));
        }
    }

    /// Moves a partition's due heads to the queues; re-arms its timer for the next head.
    fn release_due(&mut self, partition: i32) {
        let now = unix_ms(SystemTime::now());
        let mut ready = Vec::new();
        let Some(p) = self.parts.get_mut(&partition) else {
            return;
        };
        while p.held.front().is_some_and(|h| h.due_unix_ms <= now) {
            ready.push(p.held.pop_front().expect("front exists"));
        }
        if let Some(head) = p.held.front() {
            if p.timer.is_none() {
                let wait = Duration::from_millis(head.due_unix_ms.saturating_sub(now));
                p.timer = Some(self.timers.insert(partition, wait));
            }
        }
        for h in ready {
            self.enqueue(Job {
                partition,
                offset: h.offset,
                work: h.work,
            });
        }
    }

    fn enqueue(&mut self, job: Job) {
        let dest = match &job.work {
            Work::Attempt(d) => d.destination.clone(),
            // Dead letters share one queue under a name no destination can have.
            Work::DeadLetter(..) => String::new(),
        };
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
            if !queue.is_empty() {
                self.turn.push_back(dest.clone());
            }
            skipped = 0;
            self.queued -= 1;
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
