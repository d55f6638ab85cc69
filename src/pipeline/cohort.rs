//! Cohort change chunks in the pipeline: decode ([`crate::cohort::Chunk`]), cut and render the
//! batches of every destination that syncs the chunk's cohort ([`crate::cohort::Renderer`]),
//! admit and send each like any delivery (`cohorts.computed`, the destination's cohort request
//! timeout). The chunk's offset settles once every one of its batches is settled, so a crash
//! replays whole chunks, and a replayed chunk yields the same batches, message ids and delivery
//! ids (`docs/cohorts.md`).
//!
//! [`send`] is the one way a cohort batch, from a chunk or from a closed membership window
//! (`super::membership`), reaches its destination: a batch whose destination has no free
//! permit overflows to the overflow tier exactly like an event delivery (same request, so same
//! message id, delivery id and bytes), instead of making the worker wait.

use super::settle::{FailedDelivery, Failure, Rejected};
use super::worker::{admit_or_overflow, admit_total, Admitted, Delivery};
use super::Shared;
use crate::cohort::route::Rendered;
use crate::cohort::{Chunk, Renderer};
use crate::retry::record::SourcePosition;
use crate::source::{Settlement, SourceMessage};
use std::sync::Arc;
use tracing::debug;

/// The dead-letter reason of a chunk that breaks the format.
const INVALID: &str = "invalid_cohort_change";

/// Handles one message of a cohort change topic.
pub(super) async fn handle(
    shared: &Arc<Shared>,
    renderer: &mut Renderer,
    msg: SourceMessage,
    source: SourcePosition,
) {
    let chunk = match Chunk::decode(&msg.payload) {
        Ok(c) => c,
        Err(e) => return reject(shared, &msg, source, INVALID, e.to_string()).await,
    };
    let total: usize = shared
        .destinations
        .iter()
        .filter_map(|d| d.cohorts.as_ref())
        .map(|r| Renderer::count(&chunk, r))
        .sum();
    debug!(
        topic = %msg.topic, partition = msg.partition, offset = msg.offset,
        change_id = %chunk.header().change_id, chunk = chunk.chunk_index(), deliveries = total,
        "cohort chunk"
    );
    let mut settlements = msg.tracker.register(msg.offset, total as u32).into_iter();
    for (i, d) in shared.destinations.iter().enumerate() {
        let Some(route) = d.cohorts.as_ref() else {
            continue;
        };
        if !route.cohorts.matches(&chunk.header().cohort_id) {
            continue;
        }
        // Render one batch at a time, then wait for room: memory stays bounded by the in-flight
        // limits, not by the chunk's batch count times the destinations.
        for batch in chunk.batches(route.batch_size) {
            let Some(settlement) = settlements.next() else {
                return;
            };
            let rendered = renderer.render(&batch, route);
            if !send(shared, i, rendered, &source, msg.timestamp_ms, settlement).await {
                // Shutting down: the rest of this chunk stays unsettled and is read again.
                return;
            }
        }
    }
}

/// Hands a message that breaks its topic's format (or arrived too late for its window) to the
/// failure path with `reason`, and settles its offset once that is durable.
pub(super) async fn reject(
    shared: &Arc<Shared>,
    msg: &SourceMessage,
    source: SourcePosition,
    reason: &'static str,
    detail: String,
) {
    if let Some((_, metrics)) = shared.topic_kinds.get(&*msg.topic) {
        metrics.malformed(&msg.topic, msg.partition, msg.offset, reason);
    }
    let settlements = msg.tracker.register(msg.offset, 1);
    let rejected = Rejected {
        source,
        reason,
        detail,
        payload: msg.payload.clone(),
    };
    // Hand-offs hold a permit of the total limit too, like the worker's.
    let Some(permit) = admit_total(shared).await else {
        return;
    };
    let failure = shared.failure.clone();
    tokio::spawn(async move {
        failure.reject(rejected).await;
        settlements.into_iter().for_each(Settlement::settle);
        drop(permit);
    });
}

/// Sends one rendered cohort batch to destination `destination`, settling `settlement` once the
/// delivery is settled: a batch its template failed on goes to the failure path; otherwise it
/// is admitted like an event delivery, and with overflow on, a destination without a free
/// permit gets it through the overflow tier (attempted there in order, with the same request)
/// rather than the worker waiting. Returns false when shutdown started (the settlement is then
/// dropped: its offset stays uncommitted and is read again).
pub(super) async fn send(
    shared: &Arc<Shared>,
    destination: usize,
    rendered: Rendered,
    source: &SourcePosition,
    timestamp_ms: Option<i64>,
    settlement: Settlement,
) -> bool {
    if let Some(error) = rendered.error {
        let failed = FailedDelivery {
            destination: shared.destinations[destination].name.clone(),
            request: rendered.request,
            source: source.clone(),
            failure: Failure::Render {
                error: format!("{}: {error}", rendered.message_id),
            },
        };
        let Some(permit) = admit_total(shared).await else {
            return false;
        };
        let failure = shared.failure.clone();
        tokio::spawn(async move {
            failure.park(failed).await;
            settlement.settle();
            drop(permit);
        });
        return true;
    }
    match admit_or_overflow(shared, destination, rendered.request, source).await {
        Admitted::Direct(permits, request) => {
            let delivery = Delivery {
                shared: shared.clone(),
                destination,
                request,
                source: source.clone(),
                timestamp_ms,
                settlement,
                _permits: permits,
            };
            tokio::spawn(delivery.run());
            true
        }
        Admitted::Overflowed(durable, permit, id) => {
            shared.metrics[destination].overflowed(&id);
            tokio::spawn(async move {
                durable.await;
                settlement.settle();
                drop(permit);
            });
            true
        }
        Admitted::ShuttingDown => false,
    }
}
