//! One partition of a membership topic: its windows of every length in use, when they close, and
//! which input offsets may be committed once their windows' batches are settled.
//!
//! The rule that makes a window replay whole or not at all: offsets are released (may be
//! committed) per *range*, a span of the least common multiple of the window lengths in use (the
//! longest length when they nest, such as hourly and daily), and all of a range's offsets are
//! released together, once every window of every length inside it has closed and every delivery
//! of those windows is settled. Window lengths divide a day, so the range does too, and every
//! window lies inside one range; with broker-assigned (LogAppendTime) timestamps a range is a
//! contiguous run of offsets, so the committed offset never falls inside a released range, and a
//! crash replays each range, hence each window, completely or not at all.
//!
//! Only the *first* event of a range is held (the caller's hold `H`, such as the offset's
//! settlement): every later event of the range comes after it in the partition, so a commit
//! cannot pass them before it passes the first one. Memory is one hold per open range, not one
//! per event.

use std::collections::{BTreeMap, HashMap};

use super::config::Window;
use super::input::Membership;
use super::window::{ClosedWindow, Late, WindowAggregator};

/// The membership windows of one partition (see the module doc). The pipeline owns one per
/// assigned partition of a membership topic and drops it when the partition is revoked; `H` is
/// what it holds back per range (the first offset's settlement) until the range is released.
#[derive(Debug)]
pub struct MembershipPartition<H> {
    aggregators: Vec<WindowAggregator<()>>,
    range_ms: i64,
    ranges: BTreeMap<i64, Range<H>>,
    /// Closed windows whose deliveries are not all settled: change id → range start.
    windows: HashMap<String, i64>,
    /// The greatest watermark windows were closed at.
    watermark: i64,
}

#[derive(Debug)]
struct Range<H> {
    /// The hold of the range's first event.
    hold: Option<H>,
    /// Events added to the range.
    events: usize,
    /// Closed windows of the range not yet settled.
    unsettled_windows: usize,
}

impl<H> Range<H> {
    fn new() -> Range<H> {
        Range {
            hold: None,
            events: 0,
            unsettled_windows: 0,
        }
    }
}

/// The timestamp up to which a partition's windows may close. `last_ts_ms` is the greatest
/// timestamp read from the partition; once it is read to its end (`caught_up`: everything
/// appended before `now_ms` was read), time has also moved on to `now_ms - grace_ms` (the grace
/// covers clock skew with the broker, and producers' clocks with CreateTime).
pub fn close_watermark(last_ts_ms: i64, caught_up: bool, now_ms: i64, grace_ms: i64) -> i64 {
    if caught_up {
        last_ts_ms.max(now_ms.saturating_sub(grace_ms))
    } else {
        last_ts_ms
    }
}

impl<H> MembershipPartition<H> {
    /// Windows of the given lengths (the distinct ones of the destinations reading this topic)
    /// for the partition named `scope` (`topic/partition`, part of every window's change id).
    pub fn new(scope: &str, windows: &[Window]) -> MembershipPartition<H> {
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

    /// The length of a range, in milliseconds.
    pub fn range_ms(&self) -> i64 {
        self.range_ms
    }

    /// Adds the event with Kafka timestamp `ts_ms` to its window of every length. When it is
    /// the first event of its range, `hold` is called and its result kept until the range is
    /// released (returned by [`Self::close`] or [`Self::settled`]); otherwise `hold` is not
    /// called and the event's offset needs no hold of its own. A late event (its window of some
    /// length already closed) is added to none and handed back, for the dead-letter topic.
    #[allow(clippy::result_large_err)]
    pub fn add(
        &mut self,
        ts_ms: i64,
        event: Membership,
        hold: impl FnOnce() -> H,
    ) -> Result<(), Late<()>> {
        if let Some(closed_before) = self.aggregators.iter().find_map(|a| a.closed_before(ts_ms)) {
            return Err(Late {
                event,
                source: (),
                at_ms: ts_ms,
                closed_before,
            });
        }
        if let Some((last, rest)) = self.aggregators.split_last_mut() {
            for agg in rest {
                agg.add(ts_ms, event.clone(), ())?;
            }
            last.add(ts_ms, event, ())?;
        }
        let start = ts_ms.div_euclid(self.range_ms) * self.range_ms;
        let range = self.ranges.entry(start).or_insert_with(Range::new);
        if range.events == 0 {
            range.hold = Some(hold());
        }
        range.events += 1;
        Ok(())
    }

    /// Closes every window ending at or before `watermark_ms` (see [`close_watermark`]), shortest
    /// length first, and returns them to be rendered for the destinations of their length
    /// (`end_ms - start_ms`). Each must then be reported with [`Self::settled`] once all its
    /// deliveries are settled (at once when it has none). Returns also the holds of ranges that
    /// had nothing left to wait for.
    pub fn close(&mut self, watermark_ms: i64) -> (Vec<ClosedWindow<()>>, Vec<H>) {
        let mut closed = Vec::new();
        for agg in &mut self.aggregators {
            for w in agg.close_until(watermark_ms) {
                let range = w.start_ms.div_euclid(self.range_ms) * self.range_ms;
                self.ranges
                    .entry(range)
                    .or_insert_with(Range::new)
                    .unsettled_windows += 1;
                self.windows
                    .insert(w.chunk.header().change_id.clone(), range);
                closed.push(w);
            }
        }
        self.watermark = self.watermark.max(watermark_ms);
        let released = self.release();
        (closed, released)
    }

    /// Reports every delivery of the closed window `change_id` settled (delivered, parked or
    /// dead-lettered), or that it had none. Returns the holds this releases. Unknown or repeated
    /// reports change nothing.
    pub fn settled(&mut self, change_id: &str) -> Vec<H> {
        let Some(range) = self.windows.remove(change_id) else {
            return Vec::new();
        };
        if let Some(r) = self.ranges.get_mut(&range) {
            r.unsettled_windows -= 1;
        }
        self.release()
    }

    /// Events held in open windows, per (window, user): the memory the partition needs.
    pub fn pending_users(&self) -> usize {
        self.aggregators.iter().map(|a| a.pending_users()).sum()
    }

    /// Events read and not yet released (their range still open or unsettled).
    pub fn held_events(&self) -> usize {
        self.ranges.values().map(|r| r.events).sum()
    }

    /// Closed windows whose deliveries are not all settled.
    pub fn unsettled_windows(&self) -> usize {
        self.windows.len()
    }

    /// Releases every range that is closed (its longest window closed) with nothing unsettled,
    /// oldest first.
    fn release(&mut self) -> Vec<H> {
        let mut released = Vec::new();
        // Every window inside a range ending at or before the watermark has closed.
        let watermark = self.watermark;
        let range_ms = self.range_ms;
        self.ranges.retain(|&start, r| {
            let closed = start.saturating_add(range_ms) <= watermark;
            if closed && r.unsettled_windows == 0 {
                released.extend(r.hold.take());
                false
            } else {
                true
            }
        });
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

    /// Adds `event` read at `offset`, holding the offset when the partition asks for a hold.
    fn add(
        p: &mut MembershipPartition<u64>,
        offset: u64,
        ts: i64,
        event: Membership,
    ) -> Result<bool, Late<()>> {
        let mut held = false;
        p.add(ts, event, || {
            held = true;
            offset
        })?;
        Ok(held)
    }

    #[test]
    fn a_range_is_released_once_every_window_in_it_settled() {
        let mut p = MembershipPartition::new("t/0", &[Window::HOURLY, Window::DAILY]);
        assert_eq!(p.range_ms(), 24 * H);
        assert!(add(&mut p, 0, 10, ev("a", true)).unwrap());
        assert!(!add(&mut p, 1, H + 10, ev("b", true)).unwrap());
        // b flips back within the hour and the day.
        assert!(!add(&mut p, 2, H + 20, ev("b", false)).unwrap());
        assert_eq!(p.held_events(), 3);

        // Two hours in: the two hourly windows close; the day is still open, nothing released.
        let (closed, released) = p.close(2 * H);
        assert!(released.is_empty());
        assert_eq!(closed.len(), 2);
        assert!(closed.iter().all(|w| w.end_ms - w.start_ms == H));
        let hour0 = closed[0].chunk.header().change_id.clone();
        let hour1 = closed[1].chunk.header().change_id.clone();
        assert_eq!(closed[0].chunk.batches(BatchSize::DEFAULT).count(), 1);
        assert_eq!(closed[1].chunk.batches(BatchSize::DEFAULT).count(), 0);
        assert_eq!(p.unsettled_windows(), 2);
        assert!(p.settled(&hour1).is_empty());
        assert!(p.settled(&hour0).is_empty());

        // The day closes; settling its window releases the day's one hold.
        let (closed, released) = p.close(24 * H + 5);
        assert!(released.is_empty());
        assert_eq!(closed.len(), 1);
        let day = closed[0].chunk.header().change_id.clone();
        assert_eq!(closed[0].chunk.entered(), &[User::new("a")]);
        assert_eq!(p.settled(&day), vec![0]);
        assert_eq!((p.held_events(), p.unsettled_windows()), (0, 0));
        // Repeated or unknown reports change nothing.
        assert!(p.settled(&day).is_empty());
        assert!(p.settled("nope").is_empty());
    }

    #[test]
    fn a_range_waits_for_its_slowest_window() {
        let mut p = MembershipPartition::new("t/0", &[Window::HOURLY]);
        assert!(add(&mut p, 7, 5, ev("a", true)).unwrap());
        assert!(!add(&mut p, 8, 6, ev("a", true)).unwrap());
        let mut other = ev("z", false);
        other.cohort_id = "d".into();
        assert!(!add(&mut p, 9, 7, other).unwrap());
        let (closed, _) = p.close(H);
        assert_eq!(closed.len(), 2);
        let (c, d) = (
            closed[0].chunk.header().change_id.clone(),
            closed[1].chunk.header().change_id.clone(),
        );
        assert!(p.settled(&d).is_empty());
        assert_eq!(p.settled(&c), vec![7]);
    }

    #[test]
    fn ranges_are_released_oldest_first_each_with_its_own_hold() {
        let mut p = MembershipPartition::new("t/0", &[Window::REALTIME]);
        let m = 60_000;
        assert!(add(&mut p, 0, 10, ev("a", true)).unwrap());
        assert!(add(&mut p, 1, m + 10, ev("b", true)).unwrap());
        assert!(add(&mut p, 2, 3 * m, ev("c", true)).unwrap());
        let (closed, released) = p.close(3 * m);
        assert_eq!(closed.len(), 2);
        assert!(released.is_empty());
        let ids: Vec<String> = closed
            .iter()
            .map(|w| w.chunk.header().change_id.clone())
            .collect();
        // The later window settles first: its range goes at once, not the earlier one's.
        assert_eq!(p.settled(&ids[1]), vec![1]);
        assert_eq!(p.settled(&ids[0]), vec![0]);
        assert_eq!(p.held_events(), 1);
    }

    #[test]
    fn late_events_are_refused_by_every_length() {
        let mut p = MembershipPartition::new("t/0", &[Window::REALTIME, Window::HOURLY]);
        add(&mut p, 0, 10, ev("a", true)).unwrap();
        let (closed, _) = p.close(60_000);
        assert_eq!(closed.len(), 1);
        let late = add(&mut p, 1, 59_999, ev("b", true)).unwrap_err();
        assert_eq!((late.at_ms, late.closed_before), (59_999, 60_000));
        // Not added to the hourly window either.
        assert_eq!(p.pending_users(), 1);
        assert_eq!(p.held_events(), 1);
    }

    #[test]
    fn lengths_that_do_not_nest_share_ranges_of_their_lcm() {
        // 16 minutes and 1 hour: 16-minute windows straddle hours, so ranges are 4 hours.
        let m16 = Window::parse("16m").unwrap();
        let mut p = MembershipPartition::new("t/0", &[m16, Window::HOURLY]);
        assert_eq!(p.range_ms(), 4 * H);
        add(&mut p, 0, 55 * 60_000, ev("a", true)).unwrap();
        let (closed, _) = p.close(61 * 60_000);
        assert_eq!(closed.len(), 1); // the hour; the 16-minute window 48..64 is still open
        assert_eq!(closed[0].end_ms - closed[0].start_ms, H);
        let hour = closed[0].chunk.header().change_id.clone();
        // 56 min is in the open 16-minute window but in the closed hour: late for the hour.
        assert!(add(&mut p, 1, 56 * 60_000, ev("b", true)).is_err());
        let (closed, released) = p.close(4 * H);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].start_ms, 48 * 60_000);
        assert!(released.is_empty());
        assert!(p.settled(&closed[0].chunk.header().change_id).is_empty());
        assert_eq!(p.settled(&hour), vec![0]);
    }

    #[test]
    fn a_range_without_windows_to_wait_for_is_released_by_close() {
        // Every user flipped back: the window closes with no batch; once reported settled the
        // range goes. A range whose windows were all reported goes with the close itself.
        let mut p = MembershipPartition::new("t/0", &[Window::REALTIME]);
        add(&mut p, 4, 1, ev("a", true)).unwrap();
        add(&mut p, 5, 2, ev("a", false)).unwrap();
        let (closed, released) = p.close(60_000);
        assert!(released.is_empty());
        assert_eq!(closed[0].chunk.batches(BatchSize::DEFAULT).count(), 0);
        assert_eq!(p.settled(&closed[0].chunk.header().change_id), vec![4]);
    }

    #[test]
    fn watermark_moves_with_the_wall_clock_only_when_caught_up() {
        assert_eq!(close_watermark(100, false, 10_000, 1_000), 100);
        assert_eq!(close_watermark(100, true, 10_000, 1_000), 9_000);
        assert_eq!(close_watermark(20_000, true, 10_000, 1_000), 20_000);
    }
}
