//! One partition of a membership topic: its windows of every length in use, when they close, and
//! which input offsets may be committed once their windows' batches are settled.
//!
//! The rule that makes a window replay whole or not at all: offsets are released (may be
//! committed) per *range*, a span of the least common multiple of the window lengths in use (the
//! longest length when they nest, such as hourly and daily), and all of a range's offsets are
//! released together, once every window of every length inside it has closed and every delivery
//! of those windows is settled. Window lengths divide a day, so the range does too, and every
//! window lies inside one range; with broker-assigned (LogAppendTime) timestamps a range is a contiguous
//! run of offsets, so the committed offset never falls inside a released range, and a crash
//! replays each range, hence each window, completely or not at all.

use std::collections::{BTreeMap, HashMap};

use super::config::Window;
use super::input::Membership;
use super::window::{ClosedWindow, Late, WindowAggregator};

/// The membership windows of one partition (see the module doc). The pipeline owns one per
/// assigned partition of a membership topic and drops it when the partition is revoked.
#[derive(Debug)]
pub struct MembershipPartition {
    aggregators: Vec<WindowAggregator<()>>,
    range_ms: i64,
    ranges: BTreeMap<i64, Range>,
    /// Closed windows not yet settled: change id → (range start, deliveries outstanding, or
    /// `None` while not yet rendered).
    windows: HashMap<String, (i64, Option<usize>)>,
    /// The greatest watermark windows were closed at.
    watermark: i64,
}

#[derive(Debug, Default)]
struct Range {
    offsets: Vec<u64>,
    unsettled_windows: usize,
}

/// The timestamp up to which a partition's windows may close. `last_ts_ms` is the greatest
/// timestamp read from the partition; once it is read to its end (`caught_up`), time has also
/// moved on to `now_ms - grace_ms` (the grace covers clock skew with the broker).
pub fn close_watermark(last_ts_ms: i64, caught_up: bool, now_ms: i64, grace_ms: i64) -> i64 {
    if caught_up {
        last_ts_ms.max(now_ms.saturating_sub(grace_ms))
    } else {
        last_ts_ms
    }
}

impl MembershipPartition {
    /// Windows of the given lengths (the distinct ones of the destinations reading this topic)
    /// for the partition named `scope` (`topic/partition`, part of every window's change id).
    pub fn new(scope: &str, windows: &[Window]) -> MembershipPartition {
        let mut lengths: Vec<u64> = windows.iter().map(|w| w.length_ms()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        let range_ms = lengths
            .iter()
            .fold(1, |acc, &l| acc / gcd(acc, l) * l)
            .max(1) as i64;
        MembershipPartition {
            aggregators: lengths
                .into_iter()
                .map(|l| WindowAggregator::new(scope, l))
                .collect(),
            range_ms,
            ranges: BTreeMap::new(),
            windows: HashMap::new(),
            watermark: i64::MIN,
        }
    }

    /// Adds the event read at `offset` with Kafka timestamp `ts_ms` to its window of every
    /// length. A late event (its window of some length already closed) is added to none and
    /// handed back, for the dead-letter topic; its offset is then the caller's to settle.
    #[allow(clippy::result_large_err)]
    pub fn add(&mut self, offset: u64, ts_ms: i64, event: Membership) -> Result<(), Late<u64>> {
        let range = ts_ms.div_euclid(self.range_ms) * self.range_ms;
        if let Some(closed_before) = self.aggregators.iter().find_map(|a| a.closed_before(ts_ms)) {
            return Err(Late {
                event,
                source: offset,
                at_ms: ts_ms,
                closed_before,
            });
        }
        if let Some((last, rest)) = self.aggregators.split_last_mut() {
            for agg in rest {
                agg.add(ts_ms, event.clone(), ())
                    .map_err(|l| with_source(l, offset))?;
            }
            last.add(ts_ms, event, ())
                .map_err(|l| with_source(l, offset))?;
        }
        self.ranges.entry(range).or_default().offsets.push(offset);
        Ok(())
    }

    /// Closes every window ending at or before `watermark_ms` (see [`close_watermark`]), shortest
    /// length first, and returns them to be rendered for the destinations of their length
    /// (`end_ms - start_ms`). Each must then be reported with [`Self::rendered`]. Returns also
    /// the offsets released by ranges that had nothing left to wait for.
    pub fn close(&mut self, watermark_ms: i64) -> (Vec<ClosedWindow<()>>, Vec<u64>) {
        let mut closed = Vec::new();
        for agg in &mut self.aggregators {
            for w in agg.close_until(watermark_ms) {
                let range = w.start_ms.div_euclid(self.range_ms) * self.range_ms;
                self.ranges.entry(range).or_default().unsettled_windows += 1;
                self.windows
                    .insert(w.chunk.header().change_id.clone(), (range, None));
                closed.push(w);
            }
        }
        self.watermark = self.watermark.max(watermark_ms);
        let released = self.release();
        (closed, released)
    }

    /// Reports how many deliveries a closed window produced over all destinations. Returns the
    /// offsets this releases (when it produced none and was the last thing its range awaited).
    pub fn rendered(&mut self, change_id: &str, deliveries: usize) -> Vec<u64> {
        match self.windows.get_mut(change_id) {
            Some((_, pending)) if pending.is_none() => *pending = Some(deliveries),
            _ => return Vec::new(),
        }
        if deliveries == 0 {
            self.window_done(change_id);
        }
        self.release()
    }

    /// Reports one delivery of a closed window settled (delivered, parked or dead-lettered).
    /// Returns the offsets this releases.
    pub fn settled(&mut self, change_id: &str) -> Vec<u64> {
        let done = match self.windows.get_mut(change_id) {
            Some((_, Some(n))) if *n > 0 => {
                *n -= 1;
                *n == 0
            }
            _ => false,
        };
        if !done {
            return Vec::new();
        }
        self.window_done(change_id);
        self.release()
    }

    /// Events held in open windows, per (window, user): the memory the partition needs.
    pub fn pending_users(&self) -> usize {
        self.aggregators.iter().map(|a| a.pending_users()).sum()
    }

    /// Offsets read and not yet released.
    pub fn held_offsets(&self) -> usize {
        self.ranges.values().map(|r| r.offsets.len()).sum()
    }

    fn window_done(&mut self, change_id: &str) {
        if let Some((range, _)) = self.windows.remove(change_id) {
            if let Some(r) = self.ranges.get_mut(&range) {
                r.unsettled_windows -= 1;
            }
        }
    }

    /// Releases every range that is closed (its longest window closed) with nothing unsettled.
    fn release(&mut self) -> Vec<u64> {
        let mut released = Vec::new();
        // Every window inside a range ending at or before the watermark has closed.
        let watermark = self.watermark;
        self.ranges.retain(|&start, r| {
            let closed = start.saturating_add(self.range_ms) <= watermark;
            if closed && r.unsettled_windows == 0 {
                released.append(&mut r.offsets);
                false
            } else {
                true
            }
        });
        released.sort_unstable();
        released
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn with_source(late: Late<()>, offset: u64) -> Late<u64> {
    Late {
        event: late.event,
        source: offset,
        at_ms: late.at_ms,
        closed_before: late.closed_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::{BatchSize, User};

    const H: i64 = 3_600_000;

    fn ev(user: &str, in_cohort: bool) -> Membership {
        Membership {
            cohort_id: "c".into(),
            cohort_name: "n".into(),
            user: User::new(user),
            in_cohort,
            time: 0,
        }
    }

    #[test]
    fn offsets_are_released_per_range_once_every_window_in_it_settled() {
        let mut p = MembershipPartition::new("t/0", &[Window::HOURLY, Window::DAILY]);
        p.add(0, 10, ev("a", true)).unwrap();
        p.add(1, H + 10, ev("b", true)).unwrap();
        p.add(2, H + 20, ev("b", false)).unwrap(); // b flips back within the hour and the day
        assert_eq!(p.held_offsets(), 3);

        // Two hours in: the two hourly windows close; the day is still open, nothing released.
        let (closed, released) = p.close(2 * H);
        assert!(released.is_empty());
        assert_eq!(closed.len(), 2);
        assert!(closed.iter().all(|w| w.end_ms - w.start_ms == H));
        let hour0 = closed[0].chunk.header().change_id.clone();
        let hour1 = closed[1].chunk.header().change_id.clone();
        assert_eq!(closed[0].chunk.batches(BatchSize::DEFAULT).count(), 1);
        assert_eq!(closed[1].chunk.batches(BatchSize::DEFAULT).count(), 0);
        assert!(p.rendered(&hour0, 2).is_empty());
        assert!(p.rendered(&hour1, 0).is_empty());
        assert!(p.settled(&hour0).is_empty());
        assert!(p.settled(&hour0).is_empty());

        // The day closes; its window is rendered for one destination; settling it releases
        // the whole day's offsets at once.
        let (closed, released) = p.close(24 * H + 5);
        assert!(released.is_empty());
        assert_eq!(closed.len(), 1);
        let day = closed[0].chunk.header().change_id.clone();
        assert_eq!(closed[0].chunk.entered(), &[User::new("a")]);
        assert!(p.rendered(&day, 1).is_empty());
        assert_eq!(p.settled(&day), vec![0, 1, 2]);
        assert_eq!(p.held_offsets(), 0);
        // Repeated or unknown reports change nothing.
        assert!(p.settled(&day).is_empty());
        assert!(p.rendered("nope", 0).is_empty());
    }

    #[test]
    fn a_range_waits_for_its_slowest_window() {
        let mut p = MembershipPartition::new("t/0", &[Window::HOURLY]);
        p.add(7, 5, ev("a", true)).unwrap();
        p.add(8, 6, ev("a", true)).unwrap();
        let mut other = ev("z", false);
        other.cohort_id = "d".into();
        p.add(9, 7, other).unwrap();
        let (closed, _) = p.close(H);
        assert_eq!(closed.len(), 2);
        let (c, d) = (
            closed[0].chunk.header().change_id.clone(),
            closed[1].chunk.header().change_id.clone(),
        );
        assert!(p.rendered(&c, 1).is_empty());
        assert!(p.rendered(&d, 1).is_empty());
        assert!(p.settled(&d).is_empty());
        assert_eq!(p.settled(&c), vec![7, 8, 9]);
    }

    #[test]
    fn late_events_are_refused_by_every_length() {
        let mut p = MembershipPartition::new("t/0", &[Window::REALTIME, Window::HOURLY]);
        p.add(0, 10, ev("a", true)).unwrap();
        let (closed, _) = p.close(60_000);
        assert_eq!(closed.len(), 1);
        let late = p.add(1, 59_999, ev("b", true)).unwrap_err();
        assert_eq!(late.source, 1);
        // Not added to the hourly window either.
        assert_eq!(p.pending_users(), 1);
        assert_eq!(p.held_offsets(), 1);
    }

    #[test]
    fn lengths_that_do_not_nest_share_ranges_of_their_lcm() {
        // 16 minutes and 1 hour: 16-minute windows straddle hours, so ranges are 4 hours.
        let m16 = Window::parse("16m").unwrap();
        let mut p = MembershipPartition::new("t/0", &[m16, Window::HOURLY]);
        assert_eq!(p.range_ms, 4 * H);
        p.add(0, 55 * 60_000, ev("a", true)).unwrap();
        let (closed, _) = p.close(61 * 60_000);
        assert_eq!(closed.len(), 1); // the hour; the 16-minute window 48..64 is still open
        assert_eq!(closed[0].end_ms - closed[0].start_ms, H);
        let hour = closed[0].chunk.header().change_id.clone();
        // 56 min is in the open 16-minute window but in the closed hour: late for the hour.
        assert!(p.add(1, 56 * 60_000, ev("b", true)).is_err());
        let (closed, released) = p.close(4 * H);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].start_ms, 48 * 60_000);
        assert!(released.is_empty());
        assert!(p
            .rendered(&closed[0].chunk.header().change_id, 0)
            .is_empty());
        assert_eq!(p.rendered(&hour, 0), vec![0]);
    }

    #[test]
    fn watermark_moves_with_the_wall_clock_only_when_caught_up() {
        assert_eq!(close_watermark(100, false, 10_000, 1_000), 100);
        assert_eq!(close_watermark(100, true, 10_000, 1_000), 9_000);
        assert_eq!(close_watermark(20_000, true, 10_000, 1_000), 20_000);
    }
}
