//! The schedule across attempts: when each attempt after the first one happens, and when a
//! delivery is dead-lettered. Pure: no clock, no I/O.
//!
//! # Amplitude's schedule, exactly
//! Amplitude documents "nine more attempts over 4 hours, regardless of the error" after a failed
//! first attempt, without the individual delays. hookpipe's default waits, each counted from the
//! end of the previous failed attempt:
//!
//! | attempt | wait before it | cumulative |
//! |--------:|---------------:|-----------:|
//! | 1       | —              | 0          |
//! | 2       | 1 min          | 1 min      |
//! | 3       | 2 min          | 3 min      |
//! | 4       | 4 min          | 7 min      |
//! | 5       | 8 min          | 15 min     |
//! | 6       | 15 min         | 30 min     |
//! | 7       | 30 min         | 1 h        |
//! | 8       | 45 min         | 1 h 45 min |
//! | 9       | 60 min         | 2 h 45 min |
//! | 10      | 75 min         | 4 h        |
//!
//! The waits double while short (a blip is retried quickly) and then grow linearly by 15 minutes
//! (a long outage is still probed every hour or so), and they sum to exactly 4 hours, plus the
//! attempts' own time (each at most its 4 s budget and a request timeout). After attempt 10 fails,
//! the delivery is dead-lettered.
//!
//! Each distinct wait is one durable retry tier (a Kafka topic whose records all wait the same
//! time, so the topic's order is its due order): the default schedule has nine tiers.

use std::time::Duration;

/// The default waits before attempts 2 to 10, in minutes.
pub const AMPLITUDE_WAITS_MINUTES: [u64; 9] = [1, 2, 4, 8, 15, 30, 45, 60, 75];

/// A schedule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A wait of zero: the tier would spin.
    #[error("retry schedule: wait #{index} is zero (every wait must be at least 1 ms)")]
    ZeroWait {
        /// 1-based position in the list of waits.
        index: usize,
    },
    /// More waits than the record format and headers are meant for.
    #[error("retry schedule: {count} waits, at most {max}")]
    TooMany {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Park the delivery for attempt `attempt`, `wait` from now, in tier `tier`.
    Retry {
        /// The 1-based number of the next attempt.
        attempt: u32,
        /// How long to wait before it.
        wait: Duration,
        /// Index of the tier holding waits of this length (see [`Schedule::tiers`]).
        tier: usize,
    },
    /// No attempt is left: dead-letter it.
    DeadLetter,
}

/// The waits between attempts. Cloning copies a short vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    waits: Vec<Duration>,
    /// Distinct waits, ascending.
    tiers: Vec<Duration>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::amplitude()
    }
}

impl Schedule {
    /// Most waits a schedule may have (attempts = waits + 1).
    pub const MAX_WAITS: usize = 64;

    /// Amplitude's: 10 attempts over 4 hours (see the module doc for the waits).
    pub fn amplitude() -> Schedule {
        Schedule::new(
            AMPLITUDE_WAITS_MINUTES
                .iter()
                .map(|m| Duration::from_secs(m * 60))
                .collect(),
        )
        .expect("the built-in schedule is valid")
    }

    /// A schedule with explicit waits before attempts 2, 3, ...; an empty list means one attempt,
    /// then the dead-letter topic. Tests use waits of seconds.
    pub fn new(waits: Vec<Duration>) -> Result<Schedule, ScheduleError> {
        if waits.len() > Self::MAX_WAITS {
            return Err(ScheduleError::TooMany {
                count: waits.len(),
                max: Self::MAX_WAITS,
            });
        }
        if let Some(i) = waits.iter().position(|w| w.as_millis() == 0) {
            return Err(ScheduleError::ZeroWait { index: i + 1 });
        }
        let mut tiers = waits.clone();
        tiers.sort();
        tiers.dedup();
        Ok(Schedule { waits, tiers })
    }

    /// The same shape with every wait divided by `factor` (at least 1 ms each): for tests and
    /// demos that must see the whole schedule quickly.
    pub fn compressed(&self, factor: u32) -> Schedule {
        let waits = self
            .waits
            .iter()
            .map(|w| (*w / factor.max(1)).max(Duration::from_millis(1)))
            .collect();
        Schedule::new(waits).expect("compressing keeps a valid schedule valid")
    }

    /// Attempts in all, the first one included.
    pub fn attempts(&self) -> u32 {
        self.waits.len() as u32 + 1
    }

    /// The waits before attempts 2, 3, ...
    pub fn waits(&self) -> &[Duration] {
        &self.waits
    }

    /// The wait before attempt `attempt` (1-based); `None` for the first attempt or past the end.
    pub fn wait_before(&self, attempt: u32) -> Option<Duration> {
        let i = usize::try_from(attempt.checked_sub(2)?).ok()?;
        self.waits.get(i).copied()
    }

    /// What follows the failure of attempt `failed` (1-based).
    pub fn after_failed(&self, failed: u32) -> Next {
        let attempt = failed.saturating_add(1);
        match self.wait_before(attempt) {
            Some(wait) => Next::Retry {
                attempt,
                wait,
                tier: self.tier_of(wait).expect("every wait has a tier"),
            },
            None => Next::DeadLetter,
        }
    }

    /// From the first attempt's failure to the last attempt: the sum of the waits.
    pub fn span(&self) -> Duration {
        self.waits.iter().sum()
    }

    /// The distinct waits, ascending: one durable tier each.
    pub fn tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// The tier index of a wait.
    pub fn tier_of(&self, wait: Duration) -> Option<usize> {
        self.tiers.binary_search(&wait).ok()
    }

    /// The Kafka topic of each tier: `<prefix>-<wait>`, e.g. `hookpipe-retry-15m`.
    pub fn tier_topics(&self, prefix: &str) -> Vec<String> {
        self.tiers
            .iter()
            .map(|w| format!("{prefix}-{}", wait_label(*w)))
            .collect()
    }
}

/// A short exact label of a wait: `75m`, `30s`, `1500ms`.
pub fn wait_label(wait: Duration) -> String {
    let ms = wait.as_millis();
    if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn amplitude_is_ten_attempts_over_four_hours() {
        let s = Schedule::amplitude();
        assert_eq!(s.attempts(), 10);
        assert_eq!(s.span(), Duration::from_secs(4 * 3600));
        assert_eq!(s.wait_before(1), None);
        assert_eq!(s.wait_before(2), Some(min(1)));
        assert_eq!(s.wait_before(10), Some(min(75)));
        assert_eq!(s.wait_before(11), None);
        assert_eq!(s.wait_before(0), None);
        // Waits never shrink: a longer outage is never probed more often.
        assert!(s.waits().windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn walking_the_schedule_gives_nine_retries_then_dead_letter() {
        let s = Schedule::amplitude();
        let mut failed = 1;
        let mut total = Duration::ZERO;
        let mut retries = 0;
        while let Next::Retry {
            attempt,
            wait,
            tier,
        } = s.after_failed(failed)
        {
            assert_eq!(attempt, failed + 1);
            assert_eq!(s.tiers()[tier], wait);
            total += wait;
            retries += 1;
            failed = attempt;
        }
        assert_eq!(retries, 9);
        assert_eq!(failed, 10);
        assert_eq!(total, min(240));
        assert_eq!(s.after_failed(10), Next::DeadLetter);
        assert_eq!(s.after_failed(u32::MAX), Next::DeadLetter);
    }

    #[test]
    fn tiers_are_the_distinct_waits_with_exact_topic_names() {
        let s = Schedule::amplitude();
        assert_eq!(
            s.tier_topics("hookpipe-retry"),
            [
                "hookpipe-retry-1m",
                "hookpipe-retry-2m",
                "hookpipe-retry-4m",
                "hookpipe-retry-8m",
                "hookpipe-retry-15m",
                "hookpipe-retry-30m",
                "hookpipe-retry-45m",
                "hookpipe-retry-60m",
                "hookpipe-retry-75m"
            ]
        );
        let s = Schedule::new(vec![
            Duration::from_secs(1),
            Duration::from_millis(1500),
            Duration::from_secs(1),
        ])
        .unwrap();
        assert_eq!(s.tiers().len(), 2);
        assert_eq!(s.tier_topics("r"), ["r-1s", "r-1500ms"]);
        assert_eq!(s.tier_of(Duration::from_secs(1)), Some(0));
        assert_eq!(
            s.after_failed(3),
            Next::Retry {
                attempt: 4,
                wait: Duration::from_secs(1),
                tier: 0
            }
        );
    }

    #[test]
    fn compressed_keeps_the_shape() {
        let s = Schedule::amplitude().compressed(60);
        assert_eq!(s.attempts(), 10);
        assert_eq!(s.wait_before(2), Some(Duration::from_secs(1)));
        assert_eq!(s.span(), Duration::from_secs(240));
        assert_eq!(s.tiers().len(), 9);
        let tiny = Schedule::amplitude().compressed(u32::MAX);
        assert!(tiny.waits().iter().all(|w| *w >= Duration::from_millis(1)));
    }

    #[test]
    fn invalid_schedules_are_errors() {
        assert_eq!(
            Schedule::new(vec![Duration::from_secs(1), Duration::ZERO]),
            Err(ScheduleError::ZeroWait { index: 2 })
        );
        assert!(matches!(
            Schedule::new(vec![Duration::from_secs(1); 65]),
            Err(ScheduleError::TooMany { count: 65, .. })
        ));
        let one = Schedule::new(Vec::new()).unwrap();
        assert_eq!(one.attempts(), 1);
        assert_eq!(one.after_failed(1), Next::DeadLetter);
    }
}
