//! The retry path as the pipeline's failure path: [`RetryService`] implements
//! [`FailurePath`], so `pipeline::run` hands it every delivery whose first attempt failed, and
//! it parks them durably in the retry tiers (whose consumers it runs) instead of dead-lettering
//! them at once. Render failures and malformed messages cannot succeed on a later attempt (the
//! same input gives the same error), so they still go straight to the dead-letter topic through
//! the pipeline's [`DeadLetters`].
//!
//! Wiring, in `pipeline::run`: build the clients, then
//! `RetryService::start(&base, dead_letter_topic, RetrySettings::new(group_id), clients,
//! telemetry, shutdown)` instead of `DeadLetters::new(..)`, use the service as the
//! `failure` path, and `join` the returned [`RetryTasks`] after the pipeline has drained.

use super::park::{producer_config, Parked, Parker, DEFAULT_TIER_PREFIX};
use super::schedule::Schedule;
use super::tier::{Tier, TierError, TierLimits};
use super::topics::{ensure_topics, TopicsError};
use crate::deliver::Client;
use crate::pipeline::settle::{
    DeadLetters, Durable, FailedDelivery, Failure, FailurePath, Overflowed, Rejected,
};
use crate::telemetry::Telemetry;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How the retry path is set up. [`RetrySettings::new`] gives Amplitude's schedule and the
/// default tier names.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// Waits between attempts (one tier per distinct wait).
    pub schedule: Schedule,
    /// Tier topics are `<tier_prefix>-<wait>`.
    pub tier_prefix: String,
    /// Consumer group of every tier consumer (not the pipeline's group).
    pub group_id: String,
    /// Partitions of tier topics created at start (existing topics are left as they are). Give
    /// at least one per destination, so each gets a partition of its own (`hookpipe run` uses
    /// `max(6, destinations)` unless `[retry] tier_partitions` says otherwise).
    pub tier_partitions: i32,
    /// Replication factor of tier topics created at start.
    pub replication: i32,
    /// Create missing tier topics at start.
    pub create_topics: bool,
    /// Concurrency and memory bounds of each tier's consumer.
    pub limits: TierLimits,
}

impl RetrySettings {
    /// Defaults for a deployment whose pipeline consumer group is `pipeline_group`: tiers consumed
    /// by group `<pipeline_group>-retry`, Amplitude's schedule, `hookpipe-retry-*` topics with 6
    /// partitions and replication 1 when created.
    pub fn new(pipeline_group: &str) -> RetrySettings {
        RetrySettings {
            schedule: Schedule::amplitude(),
            tier_prefix: DEFAULT_TIER_PREFIX.to_string(),
            group_id: format!("{pipeline_group}-retry"),
            tier_partitions: 6,
            replication: 1,
            create_topics: true,
            limits: TierLimits::default(),
        }
    }
}

/// Why the retry path could not start.
#[derive(Debug, thiserror::Error)]
pub enum RetryStartError {
    /// A Kafka producer could not be built.
    #[error("retry path: producer: {0}")]
    Producer(#[source] KafkaError),
    /// Tier topics could not be created.
    #[error(transparent)]
    Topics(#[from] TopicsError),
    /// A tier consumer could not be built.
    #[error(transparent)]
    Tier(#[from] TierError),
}

/// The running tier consumers; [`RetryTasks::join`] waits for them after shutdown fired.
#[derive(Debug)]
pub struct RetryTasks {
    tasks: JoinSet<Result<(), TierError>>,
}

impl RetryTasks {
    /// Waits (at most `timeout`) until every tier consumer has finished its in-flight attempts
    /// and committed. Returns the consumers that failed or did not stop in time, as text.
    pub async fn join(mut self, timeout: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(None) => break,
                Ok(Some(Ok(Ok(())))) => {}
                Ok(Some(Ok(Err(e)))) => problems.push(e.to_string()),
                Ok(Some(Err(e))) => problems.push(format!("retry tier task: {e}")),
                Err(_) => {
                    problems.push(format!(
                        "{} retry tier(s) did not stop within {timeout:?}",
                        self.tasks.len()
                    ));
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        problems
    }
}

/// Per destination: deliveries this process handed to the overflow tier whose first attempt has
/// not started yet. Raised by [`RetryService`]'s `overflow`, lowered by the overflow tier's
/// consumer when it starts a first attempt (saturating: a record another process overflowed may
/// be read here too).
#[derive(Debug, Default)]
pub struct OverflowBacklog {
    waiting: HashMap<String, AtomicUsize>,
}

impl OverflowBacklog {
    /// A backlog for these destinations (others are never counted).
    pub fn new<'a>(destinations: impl IntoIterator<Item = &'a String>) -> OverflowBacklog {
        OverflowBacklog {
            waiting: destinations
                .into_iter()
                .map(|d| (d.clone(), AtomicUsize::new(0)))
                .collect(),
        }
    }

    /// One more delivery to `destination` waits in the overflow tier.
    pub fn raise(&self, destination: &str) {
        if let Some(n) = self.waiting.get(destination) {
            n.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A first attempt to `destination` from the overflow tier started.
    pub fn lower(&self, destination: &str) {
        if let Some(n) = self.waiting.get(destination) {
            let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(1))
            });
        }
    }

    /// Deliveries to `destination` waiting for their first attempt in the overflow tier.
    pub fn waiting(&self, destination: &str) -> usize {
        self.waiting
            .get(destination)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }
}

/// The durable retry path behind the pipeline's [`FailurePath`]. Cloning is shallow.
#[derive(Clone, Debug)]
pub struct RetryService {
    parker: Parker,
    dead_letters: DeadLetters,
    telemetry: Arc<Telemetry>,
    backlog: Arc<OverflowBacklog>,
}

impl RetryService {
    /// Creates the tier topics (if asked), starts one consumer per tier (stopping when `shutdown`
    /// fires), and returns the failure path with the consumers' tasks. `clients` are the
    /// destinations' clients by name (the same ones the pipeline uses, sharing their pools).
    pub async fn start(
        base: &ClientConfig,
        dead_letter_topic: &str,
        settings: RetrySettings,
        clients: HashMap<String, Client>,
        telemetry: Arc<Telemetry>,
        shutdown: CancellationToken,
    ) -> Result<(RetryService, RetryTasks), RetryStartError> {
        let producer: FutureProducer = producer_config(base)
            .create()
            .map_err(RetryStartError::Producer)?;
        let dead_letters =
            DeadLetters::with_producer(producer, dead_letter_topic, telemetry.clone());
        RetryService::start_sharing(base, dead_letters, settings, clients, telemetry, shutdown)
            .await
    }

    /// [`RetryService::start`] over the caller's dead-letter writer: its producer also writes
    /// the retry tiers, so the process runs one producer instead of one per path.
    pub async fn start_sharing(
        base: &ClientConfig,
        dead_letters: DeadLetters,
        settings: RetrySettings,
        clients: HashMap<String, Client>,
        telemetry: Arc<Telemetry>,
        shutdown: CancellationToken,
    ) -> Result<(RetryService, RetryTasks), RetryStartError> {
        let mut parker = Parker::new(
            dead_letters.producer().clone(),
            settings.schedule.clone(),
            &settings.tier_prefix,
            dead_letters.topic(),
        );
        let topics: Vec<String> = parker
            .tier_topics()
            .iter()
            .cloned()
            .chain([parker.overflow_topic().to_string()])
            .collect();
        if settings.create_topics {
            ensure_topics(
                base,
                &topics,
                settings.tier_partitions,
                settings.replication,
                Duration::from_secs(30),
            )
            .await?;
        }
        // Each destination gets a partition of its own in every tier (while partitions suffice),
        // so a tier pauses only a full destination's partition (see `placement`).
        let names: Vec<&String> = clients.keys().collect();
        parker = parker.placed(&names, Duration::from_secs(30)).await?;
        let placement = parker.placement();
        for topic in &topics {
            let shared = placement.shared(topic);
            if !shared.is_empty() {
                tracing::warn!(
                    %topic,
                    partitions = placement.partitions(topic).unwrap_or(0),
                    destinations = names.len(),
                    ?shared,
                    "retry tier has fewer partitions than destinations: destinations sharing a \
                     partition wait behind each other when one of them is stuck (add partitions \
                     to the topic and restart to isolate them)"
                );
            }
        }
        let backlog = Arc::new(OverflowBacklog::new(clients.keys()));
        let clients = Arc::new(clients);
        let mut tasks = JoinSet::new();
        // The overflow tier gets a group of its own (`<group_id>-overflow`), so its consumer
        // joining or leaving never rebalances the retry tiers' group (and the other way round).
        let overflow_group = format!("{}-overflow", settings.group_id);
        for topic in &topics {
            let group = if topic == parker.overflow_topic() {
                &overflow_group
            } else {
                &settings.group_id
            };
            let mut tier = Tier::new(
                base,
                group,
                topic,
                clients.clone(),
                parker.clone(),
                settings.limits,
            )?
            .with_telemetry(telemetry.clone());
            if topic == parker.overflow_topic() {
                tier = tier.with_overflow_backlog(backlog.clone());
            }
            tasks.spawn(tier.run(shutdown.clone()));
        }
        Ok((
            RetryService {
                parker,
                dead_letters,
                telemetry,
                backlog,
            },
            RetryTasks { tasks },
        ))
    }

    /// The parker (tier and dead-letter writer) this service uses.
    pub fn parker(&self) -> &Parker {
        &self.parker
    }
}

impl FailurePath for RetryService {
    fn park(&self, failed: FailedDelivery) -> Durable {
        match failed.failure {
            Failure::Attempt { tries } => {
                let this = self.clone();
                Box::pin(async move {
                    let parked = this
                        .parker
                        .first_attempt_failed(
                            &failed.destination,
                            &failed.request,
                            Some(failed.source.clone()),
                            tries,
                        )
                        .await;
                    if let Parked::DeadLettered { .. } = parked {
                        this.telemetry.dead_lettered(
                            "attempts_exhausted",
                            &failed.source.topic,
                            &failed.request.id,
                        );
                    }
                })
            }
            Failure::Render { .. } => self.dead_letters.park(failed),
        }
    }

    fn reject(&self, rejected: Rejected) -> Durable {
        self.dead_letters.reject(rejected)
    }

    fn overflow(&self, o: Overflowed) -> Result<Durable, Box<Overflowed>> {
        // Counted before the record is queued, so the caller's next delivery to this
        // destination already sees it waiting.
        self.backlog.raise(&o.destination);
        Ok(Box::pin(self.parker.overflow(
            &o.destination,
            &o.request,
            Some(o.source),
        )))
    }

    fn overflowing(&self, destination: &str) -> bool {
        self.backlog.waiting(destination) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::OverflowBacklog;

    #[test]
    fn the_overflow_backlog_counts_per_destination_and_never_goes_below_zero() {
        let names = ["slow".to_string(), "healthy".to_string()];
        let b = OverflowBacklog::new(&names);
        b.raise("slow");
        b.raise("slow");
        b.raise("unknown");
        assert_eq!(b.waiting("slow"), 2);
        assert_eq!(b.waiting("healthy"), 0);
        assert_eq!(b.waiting("unknown"), 0);
        b.lower("slow");
        assert_eq!(b.waiting("slow"), 1);
        // A record another process overflowed, started here: never below zero.
        b.lower("healthy");
        b.lower("slow");
        b.lower("slow");
        assert_eq!(b.waiting("slow"), 0);
        assert_eq!(b.waiting("healthy"), 0);
    }
}
