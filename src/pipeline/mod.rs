//! The pipeline: the one place that wires source → route → render → deliver → settle.
//!
//! [`run`] builds one HTTP client per destination, the failure path (the durable retry tiers of
//! `retry::RetryService`, or with `[retry] enabled = false` the dead-letter topic), the Kafka
//! source and `pipeline.workers` workers, then consumes until the shutdown token fires, drains
//! in-flight deliveries within `drain_timeout`, commits what is settled, stops the tier consumers
//! and returns.
//!
//! # Ordering, limits and a slow destination: overflow
//! Each partition is handled by one worker, message after message, so first attempts to a
//! destination start in partition order. A delivery needs a permit of its destination
//! (`max_in_flight_per_destination`) and of the process (`max_in_flight`), held until settled.
//!
//! With the retry tiers on and `pipeline.overflow` (the default), the worker never waits for one
//! destination: when a delivery finds its destination's permits all busy and the destination
//! finishes no attempt for two `overflow_after` windows in a row (it is stalled or slow, not merely
//! busy with a backlog bigger than its concurrency, which frees a permit every few milliseconds;
//! and never before its first attempt finished), it is handed,
//! not yet attempted, to the failure path's overflow tier
//! ([`settle::FailurePath::overflow`]: produced and acknowledged, then the offset settles), whose
//! consumer makes attempt 1 at that destination's own pace; a slow or dead destination then costs
//! the healthy ones sharing its partitions nothing but the hand-offs. While a destination has
//! overflowed deliveries whose first attempt has not started ([`settle::FailurePath::overflowing`]),
//! its later deliveries overflow too, so within one process first attempts to it still start in
//! partition order (not across a restart or across processes: see docs/configuration.md). The
//! total limit still applies to everything (overflow hand-offs included) and is the back-pressure
//! that pauses partitions: a destination holds at most its own share of it.
//!
//! With `[retry] enabled = false` or `overflow = false`, a saturated destination makes the worker
//! wait: its queue fills, the source pauses those partitions (Kafka is the buffer), and a
//! destination that is slow (not failing) slows the other destinations fed by the same
//! partitions down to its own throughput (`max_in_flight_per_destination / latency`). A *failing*
//! destination holds a permit for one attempt only and then hands the delivery to the failure
//! path; after `circuit_breaker_failures` consecutive failed attempts its [`breaker`] opens and
//! its deliveries are parked without an attempt.

mod batch;
pub mod breaker;
mod cohort;
pub mod id;
mod membership;
pub mod settle;
pub mod user;
mod worker;

use crate::config::{Config, Destination};
use crate::deliver::{self, Client, Endpoint};
use crate::retry::service::RetryStartError;
use crate::retry::{RetryService, RetrySettings, RetryTasks};
use crate::route::TopicKind;
use crate::source::{self, Source, SourceError};
use crate::telemetry::{DestinationMetrics, Telemetry, TopicMetrics};
use settle::{DeadLetters, FailurePath};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Messages queued per worker before its partitions are paused.
const WORKER_QUEUE: usize = 256;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A destination's HTTP client could not be built.
    #[error("destination {destination:?}: {source}")]
    Client {
        /// The destination.
        destination: String,
        /// Why.
        source: deliver::BuildError,
    },
    /// The dead-letter producer could not be created.
    #[error("dead-letter producer: {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
    /// The consumer could not be created or subscribed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The retry tiers could not start (topics, producer, tier consumers).
    #[error(transparent)]
    Retry(#[from] RetryStartError),
}

/// What a finished run left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Offsets whose deliveries were still in flight at the drain deadline (not committed,
    /// redelivered after restart).
    pub abandoned: usize,
}

/// Everything the workers and delivery tasks share. Built once; read-only afterwards.
pub(crate) struct Shared {
    destinations: Vec<Arc<Destination>>,
    clients: Vec<Client>,
    metrics: Vec<DestinationMetrics>,
    breakers: Vec<breaker::Breaker>,
    permits: Vec<Arc<Semaphore>>,
    total: Arc<Semaphore>,
    failure: Arc<dyn FailurePath>,
    /// Saturated destinations overflow to the retry path instead of waiting for a permit.
    overflow: bool,
    /// Longest wait for a permit before overflowing a destination that is not overflowing yet.
    overflow_after: Duration,
    /// Per destination: its last delivery overflowed for want of a permit, so the next one
    /// overflows at once if there is still none (no `overflow_after` wait).
    overflow_mode: Vec<std::sync::atomic::AtomicBool>,
    /// Per destination: deliveries settled so far, so a saturated destination that still makes
    /// progress is told from a stalled one (see `worker::wait_while_progressing`).
    finished: Vec<std::sync::atomic::AtomicU64>,
    telemetry: Arc<Telemetry>,
    topic_kinds: HashMap<String, (TopicKind, TopicMetrics)>,
    shutdown: CancellationToken,
}

/// The delivery client's view of a destination (secrets exposed here, and only here).
pub fn endpoint(d: &Destination) -> Endpoint {
    Endpoint {
        name: d.name.clone(),
        url: d.url.clone(),
        headers: d
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.expose().to_string()))
            .collect(),
        connect_timeout: d.connect_timeout,
        request_timeout: d.request_timeout,
        signing_secrets: d
            .signing_secrets
            .iter()
            .map(|s| s.expose().to_string())
            .collect(),
    }
}

/// A destination's client: its endpoint, with cohort batches (`cohorts.computed`) timed out by
/// the destination's cohort request timeout. The retry tiers and `hookpipe replay` attempt
/// through the same clients, so a parked cohort batch keeps its timeout.
pub fn client(d: &Destination) -> Result<Client, deliver::BuildError> {
    let mut options = deliver::ClientOptions::default();
    if let Some(c) = &d.cohorts {
        options
            .kind_timeouts
            .push((deliver::Kind::Cohort, c.request_timeout));
    }
    Client::with_options(endpoint(d), options)
}

/// Runs the pipeline until `shutdown` fires, then drains and commits. See the module docs.
pub async fn run(
    config: Config,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<Summary, PipelineError> {
    let mut clients = Vec::new();
    for d in &config.destinations {
        let client = client(d).map_err(|source| PipelineError::Client {
            destination: d.name.clone(),
            source,
        })?;
        clients.push(client);
    }
    let base = source::client_config(&config.kafka);
    let dead_letters = DeadLetters::new(&base, &config.topics.dead_letter, telemetry.clone())
        .map_err(PipelineError::Producer)?;
    let (failure, retry_tasks): (Arc<dyn FailurePath>, Option<RetryTasks>) = match &config.retry {
        None => (Arc::new(dead_letters.clone()), None),
        Some(r) => {
            let settings = RetrySettings {
                schedule: r.schedule.clone(),
                tier_prefix: r.tier_prefix.clone(),
                group_id: r.group_id.clone(),
                tier_partitions: r.tier_partitions,
                replication: r.replication_factor,
                create_topics: r.create_topics,
                limits: r.limits,
            };
            let by_name = config
                .destinations
                .iter()
                .zip(&clients)
                .map(|(d, c)| (d.name.clone(), c.clone()))
                .collect();
            let (service, tasks) = RetryService::start_sharing(
                &base,
                dead_letters.clone(),
                settings,
                by_name,
                telemetry.clone(),
                shutdown.clone(),
            )
            .await?;
            info!(
                attempts = r.schedule.attempts(),
                tiers = ?service.parker().tier_topics(),
                "retry tiers running"
            );
            (Arc::new(service), Some(tasks))
        }
    };
    let mut topic_kinds = HashMap::new();
    for t in &config.topics.events {
        topic_kinds.insert(t.clone(), (TopicKind::Events, telemetry.topic(t)));
    }
    for t in &config.topics.identify {
        topic_kinds.insert(t.clone(), (TopicKind::Identify, telemetry.topic(t)));
    }
    for t in &config.topics.cohort_changes {
        topic_kinds.insert(t.clone(), (TopicKind::CohortChanges, telemetry.topic(t)));
    }
    for t in &config.topics.cohort_memberships {
        topic_kinds.insert(
            t.clone(),
            (TopicKind::CohortMemberships, telemetry.topic(t)),
        );
    }
    let inputs: Vec<String> = topic_kinds.keys().cloned().collect();
    let source = Source::new(
        &config.kafka,
        &inputs,
        config.pipeline.commit_interval,
        telemetry.clone(),
    )?;
    let shared = Arc::new(Shared {
        metrics: config
            .destinations
            .iter()
            .map(|d| telemetry.destination(&d.name))
            .collect(),
        breakers: config
            .destinations
            .iter()
            .map(|_| {
                breaker::Breaker::new(
                    config.pipeline.circuit_breaker_failures,
                    config.pipeline.circuit_breaker_cooldown,
                )
            })
            .collect(),
        permits: config
            .destinations
            .iter()
            .map(|_| {
                Arc::new(Semaphore::new(
                    config.pipeline.max_in_flight_per_destination,
                ))
            })
            .collect(),
        total: Arc::new(Semaphore::new(config.pipeline.max_in_flight)),
        destinations: config.destinations.clone(),
        clients,
        failure,
        overflow: config.pipeline.overflow && config.retry.is_some(),
        overflow_after: config.pipeline.overflow_after,
        overflow_mode: config
            .destinations
            .iter()
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
        finished: config
            .destinations
            .iter()
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        telemetry: telemetry.clone(),
        topic_kinds,
        shutdown: shutdown.clone(),
    });
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..config.pipeline.workers {
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        senders.push(tx);
        workers.push(tokio::spawn(worker::Worker::new(shared.clone()).run(rx)));
    }
    info!(
        destinations = config.destinations.len(),
        workers = config.pipeline.workers,
        topics = ?inputs,
        "pipeline running"
    );
    telemetry.set_ready(true);
    source.run(&senders, &shutdown).await;
    telemetry.set_ready(false);

    info!(timeout = ?config.pipeline.drain_timeout, "shutting down: draining in-flight deliveries");
    drop(senders);
    // One deadline for the whole shutdown: the tier consumers drain concurrently (they watch
    // the same token) and get what is left of it.
    let drain_started = tokio::time::Instant::now();
    let abandoned = source.drain(config.pipeline.drain_timeout).await;
    source.commit_settled(rdkafka::consumer::CommitMode::Sync);
    if abandoned > 0 {
        warn!(
            abandoned,
            "drain deadline passed; unsettled offsets will be redelivered"
        );
    }
    for w in workers {
        let _ = w.await;
    }
    source.close();
    if let Some(tasks) = retry_tasks {
        let left = config
            .pipeline
            .drain_timeout
            .saturating_sub(drain_started.elapsed())
            .max(Duration::from_secs(1));
        for problem in tasks.join(left).await {
            warn!(%problem, "retry tier shutdown");
        }
    }
    dead_letters.flush(Duration::from_secs(5));
    info!(abandoned, "pipeline stopped");
    Ok(Summary { abandoned })
}
