//! Per-user membership events aggregated over a sync window (real-time, hourly, daily) into one
//! change per cohort and window, each user collapsed to its net change.
//!
//! Determinism is what makes replays safe: a window is identified by its scope (the caller's
//! name for the input, e.g. `topic/partition`), cohort, length and start; its change id is a
//! UUID-formatted hash of those, and its content is a function of the *set* of events it holds,
//! not of their arrival order. So a window rebuilt from the same events after a crash yields the
//! same batches with the same message ids, and receivers drop the repeats.
//!
//! A window covers `[start, start + length)` of the caller's clock (`at_ms` in
//! [`WindowAggregator::add`]; `docs/cohorts.md` explains why that is the Kafka timestamp). Each
//! event also carries its own `time`, which orders one user's events inside the window.
//!
//! Net change of a user in a window: order the user's events by (`time`, `in_cohort`, then
//! properties); if the first and the last agree the user ends where the first event moved them
//! (entered, or left), otherwise the user flipped back and nothing is sent. The properties sent are
//! those of the last event.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use sha2::{Digest, Sha256};

use super::input::{Chunk, Header, Membership, User};

/// Aggregates membership events into windows of one length. One aggregator serves one scope
/// (for instance one Kafka partition), so it never sees a window another process also builds.
#[derive(Debug)]
pub struct WindowAggregator<S> {
    length_ms: i64,
    scope: String,
    open: BTreeMap<(i64, String), Open<S>>,
    closed_before: i64,
    users: usize,
}

#[derive(Debug)]
struct Open<S> {
    /// `(time, name)` of the event with the greatest pair: the window's cohort name.
    name: (i64, String),
    users: HashMap<String, Net>,
    sources: Vec<S>,
}

/// `(time, in_cohort, properties)`: the order of one user's events inside a window.
type Key = (i64, bool, Option<Box<str>>);

#[derive(Debug)]
struct Net {
    first: (i64, bool),
    last: Key,
}

/// A window whose end has passed: its net change as a one-chunk change, and the sources of every
/// event it absorbed (to be settled once all its batches are).
#[derive(Debug)]
pub struct ClosedWindow<S> {
    /// The window's change; its users sorted by `user_id`. May have no users at all (every
    /// user flipped back): then it yields no batch, and its sources can be settled at once.
    pub chunk: Chunk,
    /// Where the window's events came from, in arrival order.
    pub sources: Vec<S>,
    /// Window start, inclusive, in the caller's milliseconds.
    pub start_ms: i64,
    /// Window end, exclusive.
    pub end_ms: i64,
}

/// An event for a window that was already closed and emitted; handed back untouched so the
/// caller can dead-letter it with this as the reason.
#[derive(Debug)]
pub struct Late<S> {
    /// The event.
    pub event: Membership,
    /// Its source.
    pub source: S,
    /// The timestamp it was added with.
    pub at_ms: i64,
    /// Every window starting before this was already closed.
    pub closed_before: i64,
}

impl<S> fmt::Display for Late<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cohort membership event for cohort {:?} at {} ms arrived after its window closed \
             (windows before {} ms are closed)",
            self.event.cohort_id, self.at_ms, self.closed_before
        )
    }
}

impl<S: fmt::Debug> std::error::Error for Late<S> {}

impl<S> WindowAggregator<S> {
    /// An aggregator of windows of `length_ms` (at least 1) for the input named `scope`.
    pub fn new(scope: impl Into<String>, length_ms: u64) -> WindowAggregator<S> {
        WindowAggregator {
            length_ms: length_ms.clamp(1, i64::MAX as u64) as i64,
            scope: scope.into(),
            open: BTreeMap::new(),
            closed_before: i64::MIN,
            users: 0,
        }
    }

    /// The window length in milliseconds.
    pub fn length_ms(&self) -> u64 {
        self.length_ms as u64
    }

    /// Distinct (window, user) pairs held: the memory the aggregator needs grows with this.
    pub fn pending_users(&self) -> usize {
        self.users
    }

    /// Windows holding at least one event.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// If an event observed at `at_ms` would be late, the boundary before which windows are
    /// closed.
    pub fn closed_before(&self, at_ms: i64) -> Option<i64> {
        let start = at_ms.div_euclid(self.length_ms) * self.length_ms;
        (start < self.closed_before).then_some(self.closed_before)
    }

    /// Adds an event observed at `at_ms` (which picks its window). Fails, returning the event,
    /// when that window was already closed.
    #[allow(clippy::result_large_err)]
    pub fn add(&mut self, at_ms: i64, event: Membership, source: S) -> Result<(), Late<S>> {
        let start = at_ms.div_euclid(self.length_ms) * self.length_ms;
        if start < self.closed_before {
            return Err(Late {
                event,
                source,
                at_ms,
                closed_before: self.closed_before,
            });
        }
        let Membership {
            cohort_id,
            cohort_name,
            user,
            in_cohort,
            time,
        } = event;
        let window = self.open.entry((start, cohort_id)).or_insert_with(|| Open {
            name: (time, cohort_name.clone()),
            users: HashMap::new(),
            sources: Vec::new(),
        });
        window.sources.push(source);
        if (time, &cohort_name) > (window.name.0, &window.name.1) {
            window.name = (time, cohort_name);
        }
        let key: Key = (time, in_cohort, user.user_properties);
        match window.users.get_mut(&user.user_id) {
            Some(net) => {
                if (key.0, key.1) < net.first {
                    net.first = (key.0, key.1);
                }
                if key > net.last {
                    net.last = key;
                }
            }
            None => {
                window.users.insert(
                    user.user_id,
                    Net {
                        first: (key.0, key.1),
                        last: key,
                    },
                );
                self.users += 1;
            }
        }
        Ok(())
    }

    /// Closes every window that ends at or before `now_ms`, oldest first (then by cohort id),
    /// and refuses later events for them.
    pub fn close_until(&mut self, now_ms: i64) -> Vec<ClosedWindow<S>> {
        let boundary = now_ms.div_euclid(self.length_ms) * self.length_ms;
        self.closed_before = self.closed_before.max(boundary);
        let mut closed = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if entry.key().0 >= boundary {
                break;
            }
            let ((start, cohort_id), window) = entry.remove_entry();
            self.users -= window.users.len();
            closed.push(self.finish(start, cohort_id, window));
        }
        closed
    }

    fn finish(&self, start: i64, cohort_id: String, window: Open<S>) -> ClosedWindow<S> {
        let end = start.saturating_add(self.length_ms);
        let mut entered = Vec::new();
        let mut exited = Vec::new();
        for (user_id, net) in window.users {
            let (_, last_in, props) = net.last;
            if net.first.1 != last_in {
                continue;
            }
            let user = User {
                user_id,
                user_properties: props,
            };
            if last_in {
                entered.push(user);
            } else {
                exited.push(user);
            }
        }
        entered.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
        exited.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
        let header = Header {
            change_id: window_change_id(&self.scope, &cohort_id, self.length_ms, start),
            cohort_id,
            cohort_name: window.name.1,
            computed_time: end.div_euclid(1000).max(0).to_string(),
        };
        let chunk = Chunk::single_trusted(header, entered, exited);
        ClosedWindow {
            chunk,
            sources: window.sources,
            start_ms: start,
            end_ms: end,
        }
    }
}

/// The change id of a window: a UUID (version 8, RFC 9562) made of the first 16 bytes of
/// SHA-256 over the scope, cohort id, window length and start. Same window, same id, forever.
pub fn window_change_id(scope: &str, cohort_id: &str, length_ms: i64, start_ms: i64) -> String {
    let mut h = Sha256::new();
    for part in [
        "hookpipe/cohort-window/v1",
        scope,
        cohort_id,
        &length_ms.to_string(),
        &start_ms.to_string(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    uuid_from_digest(&h.finalize())
}

/// Formats the first 16 bytes of a digest as a version-8 UUID (RFC 9562): hookpipe's ids are
/// hashes of what they name, so they never change.
pub(super) fn uuid_from_digest(digest: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::BatchSize;

    fn ev(cohort: &str, user: &str, in_cohort: bool, time: i64) -> Membership {
        Membership {
            cohort_id: cohort.into(),
            cohort_name: format!("{cohort} name"),
            user: User::new(user),
            in_cohort,
            time,
        }
    }

    fn ids(users: &[User]) -> Vec<&str> {
        users.iter().map(|u| u.user_id.as_str()).collect()
    }

    #[test]
    fn flips_collapse_to_the_net_change() {
        let mut agg = WindowAggregator::new("t/0", 3_600_000);
        let events = [
            ev("c", "enter-leave", true, 1),
            ev("c", "enter-leave", false, 2),
            ev("c", "leave-enter", false, 1),
            ev("c", "leave-enter", true, 2),
            ev("c", "enter-leave-enter", true, 1),
            ev("c", "enter-leave-enter", false, 2),
            ev("c", "enter-leave-enter", true, 3),
            ev("c", "leave", false, 5),
            ev("c", "enter", true, 5),
            ev("c", "enter", true, 6),
        ];
        for (i, e) in events.into_iter().enumerate() {
            agg.add(1000, e, i).unwrap();
        }
        assert_eq!(agg.pending_users(), 5);
        assert!(agg.close_until(3_599_999).is_empty());
        let closed = agg.close_until(3_600_000);
        assert_eq!(closed.len(), 1);
        let w = &closed[0];
        assert_eq!(ids(w.chunk.entered()), ["enter", "enter-leave-enter"]);
        assert_eq!(ids(w.chunk.exited()), ["leave"]);
        assert_eq!(w.sources, (0..10).collect::<Vec<_>>());
        assert_eq!((w.start_ms, w.end_ms), (0, 3_600_000));
        assert_eq!(w.chunk.header().computed_time, "3600");
        assert_eq!(agg.pending_users(), 0);
    }

    #[test]
    fn late_events_are_handed_back() {
        let mut agg = WindowAggregator::new("t/0", 1000);
        agg.add(500, ev("c", "u", true, 1), "a").unwrap();
        assert_eq!(agg.close_until(2500).len(), 1);
        let late = agg.add(1999, ev("c", "v", true, 1), "b").unwrap_err();
        assert_eq!((late.source, late.closed_before), ("b", 2000));
        assert!(late.to_string().contains("after its window closed"));
        agg.add(2000, ev("c", "v", true, 1), "c").unwrap();
        assert_eq!(agg.open_windows(), 1);
    }

    #[test]
    fn same_events_in_any_order_give_the_same_batches() {
        let mut events = Vec::new();
        for u in 0..300 {
            for k in 0..(u % 4) {
                events.push(ev(
                    if u % 3 == 0 { "a" } else { "b" },
                    &format!("u{u:03}"),
                    (u + k) % 2 == 0,
                    k as i64,
                ));
            }
        }
        let run = |order: &[Membership]| {
            let mut agg = WindowAggregator::new("t/1", 60_000);
            for (i, e) in order.iter().enumerate() {
                agg.add(30_000 + i as i64, e.clone(), ()).unwrap();
            }
            let mut out = Vec::new();
            for w in agg.close_until(60_000) {
                for b in w.chunk.batches(BatchSize::new(7).unwrap()) {
                    out.push((
                        b.message_id().to_string(),
                        b.header.cohort_name.clone(),
                        ids(b.users).join(","),
                    ));
                }
            }
            out
        };
        let want = run(&events);
        assert!(want.len() > 10);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5 {
            rng.shuffle(&mut events);
            assert_eq!(run(&events), want);
        }
    }

    #[test]
    fn change_ids_are_stable_uuids_that_differ_per_window() {
        let a = window_change_id("t/0", "c", 60_000, 0);
        assert_eq!(a, window_change_id("t/0", "c", 60_000, 0));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        let others = [
            window_change_id("t/1", "c", 60_000, 0),
            window_change_id("t/0", "d", 60_000, 0),
            window_change_id("t/0", "c", 3_600_000, 0),
            window_change_id("t/0", "c", 60_000, 60_000),
            // Length-prefixed parts: shifting a character between parts changes the id.
            window_change_id("t/0c", "", 60_000, 0),
        ];
        for o in others {
            assert_ne!(a, o);
        }
    }
}
