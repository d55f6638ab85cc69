//! Cohort change chunks in the pipeline: decode ([`crate::cohort::Chunk`]), cut and render the
//! batches of every destination that syncs the chunk's cohort ([`crate::cohort::Renderer`]),
//! admit and send each like any delivery (`cohorts.computed`, the destination's cohort request
//! timeout). The chunk's offset settles once every one of its batches is settled, so a crash
//! replays whole chunks, and a replayed chunk yields the same batches, message ids and delivery
//! ids (`docs/cohorts.md`).

use super::settle::{FailedDelivery, Failure, Rejected};
use super::worker::{admit, admit_total, Delivery};
use super::Shared;
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
        Err(e) => {
            if let Some((_, metrics)) = shared.topic_kinds.get(&*msg.topic) {
                metrics.malformed(&msg.topic, msg.partition, msg.offset, INVALID);
            }
            let settlements = msg.tracker.register(msg.offset, 1);
            let rejected = Rejected {
                source,
                reason: INVALID,
                detail: e.to_string(),
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
            return;
        }
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
            if let Some(error) = rendered.error {
                let failed = FailedDelivery {
                    destination: route.destination.clone(),
                    request: rendered.request,
                    source: source.clone(),
                    failure: Failure::Render {
                        error: format!("{}: {error}", rendered.message_id),
                    },
                };
                let Some(permit) = admit_total(shared).await else {
                    return;
                };
                let failure = shared.failure.clone();
                tokio::spawn(async move {
                    failure.park(failed).await;
                    settlement.settle();
                    drop(permit);
                });
                continue;
            }
            let Some(permits) = admit(shared, i).await else {
                // Shutting down: the rest of this chunk stays unsettled and is read again.
                return;
            };
            let delivery = Delivery {
                shared: shared.clone(),
                destination: i,
                request: rendered.request,
                source: source.clone(),
                timestamp_ms: msg.timestamp_ms,
                settlement,
                _permits: permits,
            };
            tokio::spawn(delivery.run());
        }
    }
}
