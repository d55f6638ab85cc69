//! The in-attempt schedule pinned on a paused tokio clock: number of tries, spacing within the
//! jitter bounds, the 4 s cut-off, and `Retry-After`. No sockets: a scripted transport stands in.

use super::attempt::{run, AttemptPolicy};
use super::policy::Decision;
use super::{Outcome, Try};
use std::cell::RefCell;
use std::time::Duration;
use tokio::time::Instant;

/// A scripted transport: try `n` takes `durations[n-1]` and answers `decisions[n-1]`. Records
/// each try's start on tokio's clock, relative to the attempt's start.
struct Script {
    decisions: Vec<Decision>,
    durations: Vec<Duration>,
    starts: RefCell<Vec<Duration>>,
}

impl Script {
    fn new(decisions: Vec<Decision>) -> Script {
        let durations = vec![Duration::ZERO; decisions.len()];
        Script::with_durations(decisions, durations)
    }

    fn with_durations(decisions: Vec<Decision>, durations: Vec<Duration>) -> Script {
        Script {
            decisions,
            durations,
            starts: RefCell::new(Vec::new()),
        }
    }

    async fn go(&self, policy: AttemptPolicy, seed: u64) -> (Outcome, Vec<Duration>) {
        let began = Instant::now();
        let mut rng = fastrand::Rng::with_seed(seed);
        let outcome = run(&policy, &mut rng, |n| {
            let i = n as usize - 1;
            self.starts.borrow_mut().push(began.elapsed());
            let decision = self.decisions[i];
            let took = self.durations[i];
            async move {
                tokio::time::sleep(took).await;
                let status = match decision {
                    Decision::Success => Some(200),
                    Decision::Retry { .. } => Some(500),
                    Decision::GiveUp => Some(400),
                };
                let record = Try {
                    started_unix_ms: n as u64,
                    status,
                    error: None,
                };
                (record, decision)
            }
        })
        .await;
        (outcome, self.starts.borrow().clone())
    }
}

const RETRY: Decision = Decision::Retry { after: None };

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn default_policy_is_amplitudes() {
    let p = AttemptPolicy::default();
    assert_eq!(p.max_tries, 3);
    assert_eq!(p.base_delay(1), ms(100));
    assert_eq!(p.base_delay(2), ms(200));
    assert_eq!(p.base_delay(3), ms(400));
    assert_eq!(p.jitter_bounds(1), (ms(50), ms(150)));
    assert_eq!(p.jitter_bounds(2), (ms(100), ms(300)));
    assert_eq!(p.budget, Duration::from_secs(4));
    // Saturates rather than overflowing.
    assert_eq!(p.base_delay(200), ms(100).saturating_mul(u32::MAX));
}

#[test]
fn jitter_covers_its_bounds_and_stays_inside() {
    let p = AttemptPolicy::default();
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
    for _ in 0..10_000 {
        let d = p.jittered_delay(1, &mut rng);
        lo = lo.min(d);
        hi = hi.max(d);
    }
    // Inside [50, 150] ms, and reaching close to both ends (it is not a constant).
    assert!(lo >= ms(50) && lo <= ms(52), "{lo:?}");
    assert!(hi <= ms(150) && hi >= ms(148), "{hi:?}");
}

#[tokio::test(start_paused = true)]
async fn success_first_try_is_one_try() {
    let s = Script::new(vec![Decision::Success]);
    let (outcome, starts) = s.go(AttemptPolicy::default(), 1).await;
    assert!(outcome.is_delivered());
    assert_eq!(outcome.tries().len(), 1);
    assert_eq!(starts, [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn three_tries_spaced_within_jitter_bounds() {
    for seed in 0..200 {
        let s = Script::new(vec![RETRY, RETRY, RETRY, Decision::Success]);
        let (outcome, starts) = s.go(AttemptPolicy::default(), seed).await;
        assert!(!outcome.is_delivered(), "never a fourth try");
        assert_eq!(outcome.tries().len(), 3);
        assert_eq!(starts[0], Duration::ZERO);
        let gap1 = starts[1] - starts[0];
        let gap2 = starts[2] - starts[1];
        assert!(gap1 >= ms(50) && gap1 <= ms(150), "seed {seed}: {gap1:?}");
        assert!(gap2 >= ms(100) && gap2 <= ms(300), "seed {seed}: {gap2:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn success_after_two_failures() {
    let s = Script::new(vec![RETRY, RETRY, Decision::Success]);
    let (outcome, _) = s.go(AttemptPolicy::default(), 3).await;
    assert!(outcome.is_delivered());
    let statuses: Vec<_> = outcome.tries().iter().map(|t| t.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
}

#[tokio::test(start_paused = true)]
async fn give_up_ends_the_attempt_at_once() {
    let s = Script::new(vec![Decision::GiveUp, Decision::Success]);
    let began = Instant::now();
    let (outcome, _) = s.go(AttemptPolicy::default(), 1).await;
    assert!(!outcome.is_delivered());
    assert_eq!(outcome.tries().len(), 1);
    assert_eq!(began.elapsed(), Duration::ZERO, "no backoff after a 4xx");
}

#[tokio::test(start_paused = true)]
async fn no_try_starts_after_the_budget() {
    // Each try takes 1.9 s (a slow receiver within its request timeout): try 1 at 0, try 2 at
    // ~2.0 s, and try 3 would start at ~4.1 s > 4 s, so it never starts.
    let s = Script::with_durations(vec![RETRY, RETRY, RETRY], vec![ms(1900); 3]);
    let began = Instant::now();
    let (outcome, starts) = s.go(AttemptPolicy::default(), 5).await;
    assert_eq!(outcome.tries().len(), 2);
    assert!(starts[1] <= Duration::from_secs(4));
    // The attempt ends when try 2 finishes, without waiting for a backoff it will not use.
    assert_eq!(began.elapsed(), starts[1] + ms(1900));
}

#[tokio::test(start_paused = true)]
async fn a_try_in_flight_at_the_budget_finishes() {
    // Try 2 starts before 4 s and runs past it: it is not cut short.
    let s = Script::with_durations(vec![RETRY, Decision::Success], vec![ms(3800), ms(1000)]);
    let policy = AttemptPolicy {
        initial_backoff: ms(100),
        ..AttemptPolicy::default()
    };
    let (outcome, starts) = s.go(policy, 9).await;
    assert!(outcome.is_delivered());
    assert!(starts[1] <= Duration::from_secs(4), "{:?}", starts[1]);
}

#[tokio::test(start_paused = true)]
async fn the_cut_off_is_exact_at_the_boundary() {
    // No jitter (initial backoff 0) and tries lasting exactly 2 s: try 3 would start at exactly
    // 4 s, which is allowed ("not later than 4 s"); with 2.001 s it is not.
    let policy = AttemptPolicy {
        initial_backoff: Duration::ZERO,
        ..AttemptPolicy::default()
    };
    let s = Script::with_durations(vec![RETRY, RETRY, RETRY], vec![ms(2000); 3]);
    let (outcome, starts) = s.go(policy, 1).await;
    assert_eq!(outcome.tries().len(), 3);
    assert_eq!(starts[2], Duration::from_secs(4));
    let s = Script::with_durations(vec![RETRY, RETRY, RETRY], vec![ms(2001); 3]);
    let (outcome, _) = s.go(policy, 1).await;
    assert_eq!(outcome.tries().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_that_fits_is_honoured() {
    let asked = Decision::Retry {
        after: Some(Duration::from_secs(2)),
    };
    let s = Script::new(vec![asked, Decision::Success]);
    let (outcome, starts) = s.go(AttemptPolicy::default(), 1).await;
    assert!(outcome.is_delivered());
    assert_eq!(
        starts[1],
        Duration::from_secs(2),
        "waits what the receiver asked"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_shorter_than_backoff_keeps_the_backoff() {
    let asked = Decision::Retry {
        after: Some(Duration::ZERO),
    };
    let s = Script::new(vec![asked, Decision::Success]);
    let (_, starts) = s.go(AttemptPolicy::default(), 1).await;
    assert!(
        starts[1] >= ms(50) && starts[1] <= ms(150),
        "{:?}",
        starts[1]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_budget_ends_the_attempt_now() {
    let asked = Decision::Retry {
        after: Some(Duration::from_secs(5)),
    };
    let s = Script::new(vec![asked, Decision::Success]);
    let began = Instant::now();
    let (outcome, _) = s.go(AttemptPolicy::default(), 1).await;
    assert!(!outcome.is_delivered());
    assert_eq!(outcome.tries().len(), 1);
    assert_eq!(
        began.elapsed(),
        Duration::ZERO,
        "does not sit out a wait it cannot use"
    );
    // Saturated values (Retry-After: 10^20) neither panic nor wait.
    let asked = Decision::Retry {
        after: Some(Duration::MAX),
    };
    let s = Script::new(vec![asked, Decision::Success]);
    let (outcome, _) = s.go(AttemptPolicy::default(), 1).await;
    assert_eq!(outcome.tries().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_tries_is_configurable_and_at_least_one() {
    let policy = AttemptPolicy {
        max_tries: 0,
        ..AttemptPolicy::default()
    };
    let s = Script::new(vec![RETRY]);
    let (outcome, _) = s.go(policy, 1).await;
    assert_eq!(outcome.tries().len(), 1);
    let policy = AttemptPolicy {
        max_tries: 5,
        initial_backoff: ms(10),
        ..AttemptPolicy::default()
    };
    let s = Script::new(vec![RETRY; 6]);
    let (outcome, _) = s.go(policy, 1).await;
    assert_eq!(outcome.tries().len(), 5);
}
