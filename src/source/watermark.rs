//! Per-partition settlement tracking: which consumed offsets still have deliveries outstanding,
//! and the watermark (the next offset to commit) of contiguous settled offsets.
//!
//! A message's offset is registered with the number of deliveries it caused; each delivery
//! settles once (delivered, or durably handed to the failure path). The watermark only moves
//! past an offset when it and every offset before it are settled, so a crash at any instant
//! redelivers, never skips.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct Entry {
    offset: i64,
    remaining: u32,
    /// Held by an aggregation ([`PartitionTracker::hold`]), not a delivery in flight.
    held: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Registered offsets not yet all settled, ascending; the front is never fully settled.
    pending: VecDeque<Entry>,
    /// One past the last registered offset; `None` before the first registration.
    next: Option<i64>,
    /// The last watermark handed to a commit; `None` = commit whatever the watermark is.
    committed: Option<i64>,
    /// The partition's end offset (high watermark) as last learned, and when (unix ms).
    end: Option<(i64, i64)>,
}

/// Settlement state of one assigned partition, for one assignment: after a revoke, a new
/// assignment of the same partition gets a fresh tracker, and settlements reaching the old one
/// are ignored (their offsets are redelivered by whoever owns the partition now).
#[derive(Debug)]
pub struct PartitionTracker {
    topic: Arc<str>,
    partition: i32,
    shard_hint: u64,
    revoked: AtomicBool,
    state: Mutex<State>,
}

impl PartitionTracker {
    /// A tracker for a newly assigned partition.
    pub fn new(topic: &str, partition: i32) -> PartitionTracker {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        topic.hash(&mut h);
        partition.hash(&mut h);
        PartitionTracker {
            topic: topic.into(),
            partition,
            shard_hint: h.finish(),
            revoked: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// The partition number.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// A stable hash of (topic, partition), to pick the worker that owns this partition.
    pub fn shard(&self, shards: usize) -> usize {
        (self.shard_hint % shards.max(1) as u64) as usize
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this file; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `offset` caused `deliveries` deliveries (0: settled at once). Offsets must be
    /// registered in ascending order, which the per-partition worker guarantees.
    pub fn register(self: &Arc<Self>, offset: i64, deliveries: u32) -> Vec<Settlement> {
        let mut s = self.lock();
        debug_assert!(
            s.next.is_none_or(|n| offset >= n),
            "offsets registered out of order"
        );
        s.next = Some(offset + 1);
        // An offset without deliveries needs no entry: the watermark stops at the first pending
        // entry anyway, and passes it only once every earlier one is settled.
        if deliveries > 0 {
            s.pending.push_back(Entry {
                offset,
                remaining: deliveries,
                held: false,
            });
        }
        drop(s);
        (0..deliveries)
            .map(|_| Settlement {
                tracker: self.clone(),
                offset,
            })
            .collect()
    }

    /// Registers `offset` as *held* by an aggregation that must see more messages before it can
    /// deliver anything (cohort membership windows): like an offset with one delivery, it stops
    /// the watermark until the returned settlement is settled, but it is not in flight, so
    /// [`Self::outstanding`] (what shutdown drains) does not count it. Same ordering rule as
    /// [`Self::register`].
    pub fn hold(self: &Arc<Self>, offset: i64) -> Settlement {
        let mut s = self.lock();
        debug_assert!(
            s.next.is_none_or(|n| offset >= n),
            "offsets registered out of order"
        );
        s.next = Some(offset + 1);
        s.pending.push_back(Entry {
            offset,
            remaining: 1,
            held: true,
        });
        drop(s);
        Settlement {
            tracker: self.clone(),
            offset,
        }
    }

    /// Records the partition's end offset (the offset the next appended message will get), as
    /// learned at `at_unix_ms`: every message appended before then has an offset below `end`.
    pub fn set_end(&self, end: i64, at_unix_ms: i64) {
        self.lock().end = Some((end, at_unix_ms));
    }

    /// The end offset and when it was learned (see [`Self::set_end`]); `None` until known.
    pub fn end(&self) -> Option<(i64, i64)> {
        self.lock().end
    }

    fn settle(&self, offset: i64) {
        let mut s = self.lock();
        let Ok(i) = s.pending.binary_search_by_key(&offset, |e| e.offset) else {
            return;
        };
        let e = &mut s.pending[i];
        e.remaining = e.remaining.saturating_sub(1);
        while s.pending.front().is_some_and(|e| e.remaining == 0) {
            s.pending.pop_front();
        }
    }

    /// The next offset to commit: the first unsettled registered offset, or one past the last
    /// registered one when all are settled. `None` before anything was registered.
    pub fn watermark(&self) -> Option<i64> {
        let s = self.lock();
        s.pending.front().map(|e| e.offset).or(s.next)
    }

    /// Registered offsets whose deliveries are not all settled (held offsets not included).
    pub fn outstanding(&self) -> usize {
        self.lock()
            .pending
            .iter()
            .filter(|e| e.remaining > 0 && !e.held)
            .count()
    }

    /// The watermark if it moved since the last call (or since [`Self::commit_failed`]), marking
    /// it as handed to a commit.
    pub fn take_commit(&self) -> Option<i64> {
        let mut s = self.lock();
        let wm = s.pending.front().map(|e| e.offset).or(s.next)?;
        if s.committed == Some(wm) {
            return None;
        }
        s.committed = Some(wm);
        Some(wm)
    }

    /// A commit including this partition failed: the next [`Self::take_commit`] retries.
    pub fn commit_failed(&self) {
        self.lock().committed = None;
    }

    /// Marks the partition revoked: its worker drops queued messages, and settlements still in
    /// flight no longer matter.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// Whether the partition was revoked from this process.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

/// The duty to settle one delivery of one offset. Settling consumes it; dropping it without
/// settling abandons the delivery, which keeps that offset (and everything after it in the
/// partition) uncommitted, so it is redelivered after a restart or rebalance.
#[derive(Debug)]
#[must_use = "an unsettled delivery holds back its partition's commits"]
pub struct Settlement {
    tracker: Arc<PartitionTracker>,
    offset: i64,
}

impl Settlement {
    /// The delivery is settled: delivered, or durably handed to the failure path.
    pub fn settle(self) {
        self.tracker.settle(self.offset);
    }

    /// The offset this settlement belongs to.
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_moves_only_over_contiguous_settled_offsets() {
        let t = Arc::new(PartitionTracker::new("t", 0));
        assert_eq!(t.watermark(), None);
        let mut a = t.register(10, 2);
        let b = t.register(11, 1);
        let none = t.register(12, 0);
        assert!(none.is_empty());
        let c = t.register(13, 1);
        assert_eq!(t.watermark(), Some(10));
        assert_eq!(t.outstanding(), 3);
        // Later offsets settle first: the watermark holds.
        c.into_iter().for_each(Settlement::settle);
        b.into_iter().for_each(Settlement::settle);
        assert_eq!(t.watermark(), Some(10));
        a.pop().unwrap().settle();
        assert_eq!(
            t.watermark(),
            Some(10),
            "one of two deliveries of 10 is still out"
        );
        a.pop().unwrap().settle();
        assert_eq!(t.watermark(), Some(14));
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn messages_without_deliveries_advance_the_watermark() {
        let t = Arc::new(PartitionTracker::new("t", 0));
        let _ = t.register(0, 0);
        assert_eq!(t.watermark(), Some(1));
        let held = t.register(1, 1);
        let _ = t.register(2, 0);
        assert_eq!(t.watermark(), Some(1));
        held.into_iter().for_each(Settlement::settle);
        assert_eq!(t.watermark(), Some(3));
    }

    #[test]
    fn abandoned_settlements_hold_the_watermark_and_commits_are_taken_once() {
        let t = Arc::new(PartitionTracker::new("t", 3));
        let abandoned = t.register(5, 1);
        drop(abandoned);
        let _ = t.register(6, 0);
        assert_eq!(t.take_commit(), Some(5));
        assert_eq!(
            t.take_commit(),
            None,
            "unchanged watermark is not recommitted"
        );
        t.commit_failed();
        assert_eq!(t.take_commit(), Some(5), "a failed commit is retried");
    }

    #[test]
    fn settling_twice_or_unknown_offsets_is_harmless() {
        let t = Arc::new(PartitionTracker::new("t", 0));
        let s = t.register(1, 1);
        t.settle(99);
        s.into_iter().for_each(Settlement::settle);
        t.settle(1);
        assert_eq!(t.watermark(), Some(2));
    }

    #[test]
    fn held_offsets_stop_the_watermark_but_are_not_in_flight() {
        let t = Arc::new(PartitionTracker::new("m", 0));
        let held = t.hold(3);
        for o in 4..1000 {
            let _ = t.register(o, 0);
        }
        let d = t.register(1000, 1);
        assert_eq!(t.watermark(), Some(3));
        assert_eq!(t.outstanding(), 1, "only the delivery of 1000");
        d.into_iter().for_each(Settlement::settle);
        assert_eq!((t.watermark(), t.outstanding()), (Some(3), 0));
        // Offsets without deliveries behind a held one take no memory: entries for 3 and
        // 1000 only.
        assert_eq!(t.lock().pending.len(), 2);
        held.settle();
        assert_eq!(t.watermark(), Some(1001));
        assert_eq!(t.end(), None);
        t.set_end(1001, 5);
        assert_eq!(t.end(), Some((1001, 5)));
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        let t = PartitionTracker::new("events", 7);
        let u = PartitionTracker::new("events", 7);
        assert_eq!(t.shard(5), u.shard(5));
        assert!(t.shard(5) < 5);
        assert_eq!(t.shard(0), 0);
    }
}
