//! Per-user cohort membership events in the pipeline (`topics.cohort_memberships`): each worker
//! keeps a [`MembershipPartition`] for every membership partition it owns (partitions are
//! sharded over workers, so one worker reads all of a partition's messages, in order), adds each
//! event to its windows of every length the destinations use, and sends a closed window's net
//! change through the same path as chunk batches ([`super::cohort::send`]).
//!
//! - **Offsets**: the first event of each range (`docs/cohorts.md`, "Crashes, replays and offset
//!   commits") is *held* in the partition's tracker ([`PartitionTracker::hold`]), which stops the
//!   commit there; the range's other events need no hold, as they come after it. The hold is
//!   settled once every window of the range has closed and all its deliveries are settled, so a
//!   crash replays a window completely or not at all. A malformed or late event goes to the
//!   failure path and its own offset settles once that is durable.
//! - **Closing**: a window closes when the partition is read up to a message whose timestamp is
//!   at or past the window's end, and, once the partition is read to its end (its end offset as
//!   the source last learned it, [`PartitionTracker::end`]), when the time the end was learned,
//!   less [`GRACE`], is past the window's end. The worker checks the second on every [`TICK`].
//! - **Revocation**: a revoked partition's state (open windows, holds, windows being sent) is
//!   dropped at the next tick, or when a message of a new assignment of it arrives; the new owner
//!   re-reads from the committed offset, which is never inside a released range.
//! - **Shutdown**: open windows are not waited for (a window may be a day long): their holds
//!   are not in flight, so the drain does not count them, and their offsets stay uncommitted.

use super::cohort::{reject, send};
use super::Shared;
use crate::cohort::{
    close_watermark, ClosedWindow, Membership, MembershipPartition, Renderer, Window,
};
use crate::retry::record::SourcePosition;
use crate::source::{PartitionTracker, Settlement, SourceMessage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::debug;

/// How often a worker that owns membership partitions closes windows on the wall clock and
/// collects windows whose deliveries have all settled.
pub(super) const TICK: Duration = Duration::from_millis(250);

/// How far behind the moment a partition was known to be read to its end windows close on the
/// wall clock: covers the age of librdkafka's end offset (one fetch wait, 500 ms by default)
/// and clock skew between hookpipe and the broker (or, with CreateTime, the producers).
pub const GRACE: Duration = Duration::from_secs(5);

/// The dead-letter reason of an event that breaks the format.
const INVALID: &str = "invalid_cohort_membership";

/// The dead-letter reason of an event whose window had already closed.
const LATE: &str = "late_cohort_membership";

/// (topic, partition).
type Key = (Arc<str>, i32);

/// One worker's membership partitions.
pub(super) struct Memberships {
    /// The distinct windows of the destinations with cohorts; empty: events are only checked.
    windows: Vec<Window>,
    partitions: HashMap<Key, Partition>,
    renderer: Renderer,
}

/// The state of one assignment of one partition.
struct Partition {
    /// The assignment's tracker: holds and reject settlements go there.
    tracker: Arc<PartitionTracker>,
    windows: MembershipPartition<Settlement>,
    /// The last offset read.
    last_offset: i64,
    /// The greatest timestamp read.
    last_ts: i64,
    /// Closed windows being delivered: change id and the counter their deliveries settle.
    sending: Vec<(String, Arc<PartitionTracker>)>,
}

impl Memberships {
    /// A worker's membership state for `shared`'s destinations.
    pub(super) fn new(shared: &Shared) -> Memberships {
        let mut windows: Vec<Window> = shared
            .destinations
            .iter()
            .filter_map(|d| d.cohorts.as_ref().map(|c| c.window))
            .collect();
        windows.sort_by_key(|w| w.length_ms());
        windows.dedup();
        Memberships {
            windows,
            partitions: HashMap::new(),
            renderer: Renderer::default(),
        }
    }

    /// Whether the worker owns membership partitions, so it needs [`Self::tick`].
    pub(super) fn active(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// Handles one message of a membership topic.
    pub(super) async fn handle(
        &mut self,
        shared: &Arc<Shared>,
        msg: SourceMessage,
        source: SourcePosition,
    ) {
        let event = match Membership::decode(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                if let Some(p) = self.partitions.get_mut(&(msg.topic.clone(), msg.partition)) {
                    p.last_offset = p.last_offset.max(msg.offset);
                }
                return reject(shared, &msg, source, INVALID, e.to_string()).await;
            }
        };
        if self.windows.is_empty() {
            // No destination syncs cohorts: nothing to aggregate, nothing to hold.
            let _ = msg.tracker.register(msg.offset, 0);
            return;
        }
        let key = (msg.topic.clone(), msg.partition);
        let fresh = self
            .partitions
            .get(&key)
            .is_none_or(|p| !Arc::ptr_eq(&p.tracker, &msg.tracker));
        if fresh {
            // First message of this assignment (a previous one's state, if any, is stale).
            let scope = format!("{}/{}", msg.topic, msg.partition);
            self.partitions.insert(
                key.clone(),
                Partition {
                    tracker: msg.tracker.clone(),
                    windows: MembershipPartition::new(&scope, &self.windows),
                    last_offset: msg.offset,
                    last_ts: i64::MIN,
                    sending: Vec::new(),
                },
            );
        }
        let Some(p) = self.partitions.get_mut(&key) else {
            return;
        };
        // A message without a timestamp (pre-0.10 format) falls in the window of its own time.
        let ts = msg.timestamp_ms.unwrap_or(event.time);
        p.last_offset = p.last_offset.max(msg.offset);
        p.last_ts = p.last_ts.max(ts);
        // Read up to `ts`: every window ending by then is complete.
        let watermark = p.last_ts;
        if !close(shared, &mut self.renderer, &key, p, watermark).await {
            return;
        }
        let tracker = msg.tracker.clone();
        let mut held = false;
        let added = p.windows.add(ts, event, || {
            held = true;
            tracker.hold(msg.offset)
        });
        match added {
            Ok(()) if held => {}
            // Behind its range's held first offset: nothing to settle later.
            Ok(()) => drop(msg.tracker.register(msg.offset, 0)),
            Err(late) => reject(shared, &msg, source, LATE, late.to_string()).await,
        }
    }

    /// Drops revoked partitions, releases ranges whose windows are all settled, and closes the
    /// windows of partitions read to their end on the wall clock.
    pub(super) async fn tick(&mut self, shared: &Arc<Shared>) {
        if shared.shutdown.is_cancelled() {
            return;
        }
        self.partitions.retain(|(topic, partition), p| {
            let keep = !p.tracker.is_revoked();
            if !keep {
                debug!(
                    %topic, partition, open_users = p.windows.pending_users(),
                    "membership partition revoked: open windows dropped"
                );
            }
            keep
        });
        let Memberships {
            partitions,
            renderer,
            ..
        } = self;
        let now = unix_ms();
        for (key, p) in partitions.iter_mut() {
            let mut released = Vec::new();
            let windows = &mut p.windows;
            p.sending.retain(|(change_id, deliveries)| {
                let done = deliveries.outstanding() == 0;
                if done {
                    released.extend(windows.settled(change_id));
                }
                !done
            });
            released.into_iter().for_each(Settlement::settle);
            let watermark = tick_watermark(p.last_offset, p.last_ts, p.tracker.end(), now);
            if !close(shared, renderer, key, p, watermark).await {
                return;
            }
        }
    }
}

/// Closes `p`'s windows up to `watermark`, settles the holds this releases, and sends every
/// closed window's batches. False when shutdown started.
async fn close(
    shared: &Arc<Shared>,
    renderer: &mut Renderer,
    key: &Key,
    p: &mut Partition,
    watermark: i64,
) -> bool {
    let (closed, released) = p.windows.close(watermark);
    released.into_iter().for_each(Settlement::settle);
    for w in closed {
        if !dispatch(shared, renderer, key, p, w).await {
            return false;
        }
    }
    true
}

/// Renders and sends one closed window to every destination of its length that syncs its
/// cohort. Its deliveries settle a counter of their own; the tick reports the window settled
/// once the counter is.
async fn dispatch(
    shared: &Arc<Shared>,
    renderer: &mut Renderer,
    key: &Key,
    p: &mut Partition,
    w: ClosedWindow<()>,
) -> bool {
    let length = u64::try_from(w.end_ms - w.start_ms).unwrap_or(0);
    let routes: Vec<(usize, &crate::cohort::CohortRoute)> = shared
        .destinations
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.cohorts.as_ref().map(|r| (i, r)))
        .filter(|(_, r)| r.window.length_ms() == length)
        .collect();
    let total: usize = routes
        .iter()
        .map(|(_, r)| Renderer::count(&w.chunk, r))
        .sum();
    let change_id = w.chunk.header().change_id.clone();
    debug!(
        topic = %key.0, partition = key.1, %change_id, cohort_id = %w.chunk.header().cohort_id,
        start_ms = w.start_ms, end_ms = w.end_ms, entered = w.chunk.entered().len(),
        exited = w.chunk.exited().len(), deliveries = total,
        "membership window closed"
    );
    if total == 0 {
        p.windows
            .settled(&change_id)
            .into_iter()
            .for_each(Settlement::settle);
        return true;
    }
    let deliveries = Arc::new(PartitionTracker::new(&change_id, key.1));
    let mut settlements = deliveries.register(0, total as u32).into_iter();
    p.sending.push((change_id, deliveries));
    // Dead letters and retry records of a window name the partition's last offset read when it
    // closed: a window has no single source message.
    let source = SourcePosition {
        topic: key.0.to_string(),
        partition: key.1,
        offset: p.last_offset,
    };
    for (i, route) in routes {
        if !route.cohorts.matches(&w.chunk.header().cohort_id) {
            continue;
        }
        for batch in w.chunk.batches(route.batch_size) {
            let Some(settlement) = settlements.next() else {
                return true;
            };
            let rendered = renderer.render(&batch, route);
            if !send(shared, i, rendered, &source, None, settlement).await {
                return false;
            }
        }
    }
    true
}

/// Where a partition's windows may close on a tick: the greatest timestamp read (`last_ts`), or,
/// once the last offset read is the partition's end as learned at some moment (`end`: end
/// offset and that moment), that moment less [`GRACE`]: every message appended before it was
/// read. A moment in the future (clock jumps) counts as `now`.
fn tick_watermark(last_offset: i64, last_ts: i64, end: Option<(i64, i64)>, now: i64) -> i64 {
    let caught_up_at = match end {
        Some((end, at)) if last_offset + 1 >= end => Some(at.min(now)),
        _ => None,
    };
    close_watermark(
        last_ts,
        caught_up_at.is_some(),
        caught_up_at.unwrap_or(now),
        GRACE.as_millis() as i64,
    )
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: i64 = GRACE.as_millis() as i64;

    #[test]
    fn windows_close_on_the_wall_clock_only_when_read_to_the_end() {
        let now = 1_000_000;
        // End unknown, or messages left to read: only message timestamps count.
        assert_eq!(tick_watermark(9, 500, None, now), 500);
        assert_eq!(tick_watermark(9, 500, Some((11, now)), now), 500);
        // Read to the end as learned at `now - 2000`: that moment, less the grace.
        assert_eq!(
            tick_watermark(10, 500, Some((11, now - 2000)), now),
            now - 2000 - G
        );
        // Never behind what was read, and never ahead of the clock.
        assert_eq!(tick_watermark(10, now, Some((11, now - 2000)), now), now);
        assert_eq!(
            tick_watermark(10, 500, Some((11, now + 60_000)), now),
            now - G
        );
        // An end below what was read (learned before the last fetch) still means caught up.
        assert_eq!(tick_watermark(10, 500, Some((5, now)), now), now - G);
    }
}
