//! A per-destination circuit breaker, so a destination that is down cannot hold the shared
//! partitions hostage: after `threshold` consecutive failed attempts the circuit opens, and for
//! `cooldown` its deliveries skip the HTTP attempt and go straight to the failure path (the retry
//! tiers, which retry them on schedule); one probe attempt per cooldown checks for recovery, and
//! the first delivered attempt closes the circuit.
//!
//! Without it, a destination that times out holds each in-flight permit for a whole attempt
//! (~4 s of tries plus a request timeout), and the healthy destinations fed by the same
//! partitions slow down to `max_in_flight_per_destination / attempt time`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// What admission should do with the next delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Attempt it (circuit closed, or this one is the probe).
    Attempt,
    /// Do not attempt: the destination is failing; hand it to the failure path.
    Skip,
}

/// One destination's breaker. Lock-free; shared by every worker and delivery task.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the circuit stays open (0: closed).
    open_until_ms: AtomicU64,
}

impl Breaker {
    /// A closed breaker; `threshold == 0` disables it (always [`Admission::Attempt`]).
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        // At least 1 so that 0 keeps meaning "closed".
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// Decides for one delivery. While open, the first caller after each cooldown becomes the
    /// probe (and re-arms the cooldown); everyone else skips.
    pub fn admit(&self) -> Admission {
        if self.threshold == 0 {
            return Admission::Attempt;
        }
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Attempt;
        }
        let now = self.now_ms();
        if now < until {
            return Admission::Skip;
        }
        let next = now + self.cooldown.as_millis() as u64;
        match self
            .open_until_ms
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admission::Attempt,
            Err(0) => Admission::Attempt,
            Err(_) => Admission::Skip,
        }
    }

    /// Records an attempt's outcome. Returns true when this failure opened the circuit.
    pub fn record(&self, delivered: bool) -> bool {
        if self.threshold == 0 {
            return false;
        }
        if delivered {
            self.consecutive_failures.store(0, Ordering::Release);
            self.open_until_ms.store(0, Ordering::Release);
            return false;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.threshold && self.open_until_ms.load(Ordering::Acquire) == 0 {
            let until = self.now_ms() + self.cooldown.as_millis() as u64;
            return self
                .open_until_ms
                .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        }
        false
    }

    /// Whether the circuit is open now.
    pub fn is_open(&self) -> bool {
        self.threshold != 0 && self.open_until_ms.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_probes_once_per_cooldown_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_secs(5));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!b.record(false));
        assert!(!b.record(false));
        assert_eq!(b.admit(), Admission::Attempt);
        assert!(b.record(false), "the third consecutive failure opens it");
        assert!(b.is_open());
        assert_eq!(b.admit(), Admission::Skip);
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_eq!(b.admit(), Admission::Skip);
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(
            b.admit(),
            Admission::Attempt,
            "one probe after the cooldown"
        );
        assert_eq!(b.admit(), Admission::Skip, "only one");
        assert!(!b.record(false), "a failed probe keeps it open");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.admit(), Admission::Attempt);
        b.record(true);
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admission::Attempt);
        assert_eq!(b.admit(), Admission::Attempt);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count_and_zero_disables() {
        let b = Breaker::new(2, Duration::from_secs(1));
        b.record(false);
        b.record(true);
        assert!(!b.record(false), "count restarted");
        assert!(b.record(false));
        let off = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..10 {
            assert!(!off.record(false));
        }
        assert_eq!(off.admit(), Admission::Attempt);
        assert!(!off.is_open());
    }
}
