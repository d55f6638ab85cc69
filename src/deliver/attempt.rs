//! One attempt: up to three HTTP tries, spaced by a jittered exponential backoff, inside a time
//! budget. The loop is generic over the transport (a closure making one try), so the schedule is
//! tested with a paused tokio clock and no socket.
//!
//! # The schedule, exactly
//! - Try 1 starts at once.
//! - After try `n` fails with a retryable outcome ([`Decision::Retry`]), the wait before try `n + 1`
//!   is drawn uniformly from `[d/2, 3d/2]` where `d = initial_backoff × 2^(n-1)` (100 ms, then
//!   200 ms): "50 % jitter" as in resilience4j's and Google's `ExponentialBackOff` randomization
//!   factor 0.5, so the mean wait stays `d`. With the defaults: 50–150 ms, then 100–300 ms.
//! - A `Retry-After` from the receiver (429/503) lengthens that wait: the wait is the larger of the
//!   two, so we never come back earlier than asked nor faster than our own backoff.
//! - No try starts later than `budget` (4 s) after the attempt began. If the next try would start
//!   later (slow tries, or a `Retry-After` that does not fit), the attempt ends now as failed and
//!   the schedule across attempts takes over. A try already in flight is never cut short by the
//!   budget; its own request timeout bounds it.
//! - A non-retryable outcome ([`Decision::GiveUp`]) or a success ends the attempt at once.
//!
//! Only tokio's clock is used for waiting, so `tokio::time::pause()` drives it in tests.

use super::policy::Decision;
use super::{Outcome, Try};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// The in-attempt policy. [`Default`] is Amplitude's: 3 tries, 100 ms doubling, 4 s budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptPolicy {
    /// Most tries in one attempt (at least 1).
    pub max_tries: u32,
    /// Un-jittered wait after the first failed try; doubles after each further try.
    pub initial_backoff: Duration,
    /// No new try starts later than this after the attempt began.
    pub budget: Duration,
}

impl Default for AttemptPolicy {
    fn default() -> Self {
        AttemptPolicy {
            max_tries: 3,
            initial_backoff: Duration::from_millis(100),
            budget: Duration::from_secs(4),
        }
    }
}

impl AttemptPolicy {
    /// The un-jittered wait after failed try `n` (1-based): `initial_backoff × 2^(n-1)`,
    /// saturating.
    pub fn base_delay(&self, after_try: u32) -> Duration {
        let factor = 1u32
            .checked_shl(after_try.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor)
    }

    /// The bounds `[d/2, 3d/2]` the jittered wait after try `n` is drawn from.
    pub fn jitter_bounds(&self, after_try: u32) -> (Duration, Duration) {
        let d = self.base_delay(after_try);
        (d / 2, d.saturating_add(d / 2))
    }

    /// The jittered wait after failed try `n`: uniform in [`AttemptPolicy::jitter_bounds`], in
    /// whole milliseconds (tokio's timer resolution, so a wait never overshoots the budget by
    /// rounding).
    pub fn jittered_delay(&self, after_try: u32, rng: &mut fastrand::Rng) -> Duration {
        let (lo, hi) = self.jitter_bounds(after_try);
        let lo_ms = u64::try_from(lo.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
        let hi_ms = u64::try_from(hi.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.u64(lo_ms..=hi_ms.max(lo_ms)))
    }
}

/// Runs one attempt. `send(n)` makes try `n` (1-based) and returns its record and the policy's
/// decision on it.
pub(crate) async fn run<F, Fut>(
    policy: &AttemptPolicy,
    rng: &mut fastrand::Rng,
    mut send: F,
) -> Outcome
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = (Try, Decision)>,
{
    let began = Instant::now();
    let max_tries = policy.max_tries.max(1);
    let mut tries = Vec::with_capacity(max_tries as usize);
    for n in 1..=max_tries {
        let (record, decision) = send(n).await;
        tries.push(record);
        let asked = match decision {
            Decision::Success => return Outcome::Delivered { tries },
            Decision::GiveUp => break,
            Decision::Retry { after } => after,
        };
        if n == max_tries {
            break;
        }
        let backoff = policy.jittered_delay(n, rng);
        let wait = asked.map_or(backoff, |a| a.max(backoff));
        if began.elapsed().saturating_add(wait) > policy.budget {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    Outcome::Failed { tries }
}
