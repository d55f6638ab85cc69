//! A destination's cohort settings (`[destinations.cohorts]`), parsed here and validated once
//! into [`CohortSettings`], which the pipeline trusts. The config module embeds
//! [`RawCohortSettings`] and calls [`RawCohortSettings::validate`]; reading and compiling the
//! template stays with the config module, which compiles every template at load the same way.

use std::time::Duration;

use serde::Deserialize;

use super::batch::BatchSize;

/// `[destinations.cohorts]` as written in the TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCohortSettings {
    /// Whether the destination receives cohort updates (default: true when the section exists).
    pub enabled: Option<bool>,
    /// Cohort ids to sync; absent or empty: every cohort.
    #[serde(default)]
    pub cohort_ids: Vec<String>,
    /// Most users per payload (default 1,000, at most 100,000).
    pub batch_size: Option<u32>,
    /// Sync cadence of membership events: `realtime` (1 minute), `hourly`, `daily`, or a length
    /// such as `15m` that divides a day.
    pub window: Option<String>,
    /// Timeout of one HTTP try, such as `2s` (default 2 s, see [`super::DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Option<String>,
    /// Template file, relative to the config file; absent: the default payload.
    pub template: Option<String>,
    /// Template text, as an alternative to `template`.
    pub template_inline: Option<String>,
}

/// Which cohorts a destination syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CohortFilter {
    /// Every cohort.
    All,
    /// Only these cohort ids (sorted, no duplicates).
    Only(Vec<String>),
}

impl CohortFilter {
    /// Whether `cohort_id` is synced.
    pub fn matches(&self, cohort_id: &str) -> bool {
        match self {
            CohortFilter::All => true,
            CohortFilter::Only(ids) => ids
                .binary_search_by(|id| id.as_str().cmp(cohort_id))
                .is_ok(),
        }
    }
}

/// A membership aggregation window: its length divides a day, so windows of every destination
/// start at UTC midnight and nest inside the longest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    length_ms: u64,
}

const DAY_MS: u64 = 86_400_000;

impl Window {
    /// `realtime`: one minute.
    pub const REALTIME: Window = Window { length_ms: 60_000 };
    /// `hourly`.
    pub const HOURLY: Window = Window {
        length_ms: 3_600_000,
    };
    /// `daily`.
    pub const DAILY: Window = Window { length_ms: DAY_MS };

    /// Parses `realtime`, `hourly`, `daily`, or `<n>s|m|h|d` dividing a day (at least 1 s).
    pub fn parse(text: &str) -> Result<Window, String> {
        match text {
            "realtime" => return Ok(Window::REALTIME),
            "hourly" => return Ok(Window::HOURLY),
            "daily" => return Ok(Window::DAILY),
            _ => {}
        }
        let ms = parse_duration(text)?.as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        if !(1000..=DAY_MS).contains(&ms) || DAY_MS % ms != 0 {
            return Err(format!(
                "{text:?} is not a window: use realtime, hourly, daily, or a length of at \
                 least 1s that divides a day (1m, 5m, 15m, 2h, ...)"
            ));
        }
        Ok(Window { length_ms: ms })
    }

    /// The length in milliseconds.
    pub fn length_ms(self) -> u64 {
        self.length_ms
    }
}

impl std::fmt::Display for Window {
    /// `realtime`, `hourly`, `daily`, or the length in the largest unit that divides it
    /// (`15m`, `30s`): what `window =` accepts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Window::REALTIME => f.write_str("realtime"),
            Window::HOURLY => f.write_str("hourly"),
            Window::DAILY => f.write_str("daily"),
            Window { length_ms: ms } => {
                let (n, unit) = [(3_600_000, "h"), (60_000, "m"), (1000, "s")]
                    .into_iter()
                    .find(|(u, _)| ms % u == 0)
                    .map_or((ms, "ms"), |(u, name)| (ms / u, name));
                write!(f, "{n}{unit}")
            }
        }
    }
}

/// Parses `<n>ms`, `<n>s`, `<n>m`, `<n>h` or `<n>d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 2s, 15m or 1h"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        _ => return Err(format!("{text:?} is not a duration such as 2s, 15m or 1h")),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A destination's validated cohort settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortSettings {
    /// Whether cohort updates go to the destination.
    pub enabled: bool,
    /// Which cohorts.
    pub cohorts: CohortFilter,
    /// Most users per payload.
    pub batch_size: BatchSize,
    /// Aggregation window of membership events.
    pub window: Window,
    /// Timeout of one HTTP try of a cohort delivery.
    pub request_timeout: Duration,
}

impl Default for CohortSettings {
    fn default() -> Self {
        CohortSettings {
            enabled: true,
            cohorts: CohortFilter::All,
            batch_size: BatchSize::DEFAULT,
            window: Window::HOURLY,
            request_timeout: super::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl RawCohortSettings {
    /// Validates the section found at `path` (such as `destinations[1] "braze".cohorts`), all
    /// but its template (`template`/`template_inline`, compiled by the config module). Every
    /// problem is pushed to `problems` as (path, message); `None` when there was any.
    pub fn validate(
        &self,
        path: &str,
        problems: &mut Vec<(String, String)>,
    ) -> Option<CohortSettings> {
        let before = problems.len();
        let d = CohortSettings::default();
        let mut cohorts = Vec::with_capacity(self.cohort_ids.len());
        for (i, id) in self.cohort_ids.iter().enumerate() {
            if id.trim().is_empty() {
                problems.push((format!("{path}.cohort_ids[{i}]"), "empty cohort id".into()));
            }
            cohorts.push(id.clone());
        }
        cohorts.sort();
        cohorts.dedup();
        let batch_size = match self.batch_size {
            None => d.batch_size,
            Some(n) => BatchSize::new(n).unwrap_or_else(|| {
                problems.push((
                    format!("{path}.batch_size"),
                    format!("{n}, must be from 1 to {}", BatchSize::MAX),
                ));
                d.batch_size
            }),
        };
        let window = match self.window.as_deref().map(Window::parse) {
            None => d.window,
            Some(Ok(w)) => w,
            Some(Err(e)) => {
                problems.push((format!("{path}.window"), e));
                d.window
            }
        };
        let request_timeout = match self.request_timeout.as_deref().map(parse_duration) {
            None => d.request_timeout,
            Some(Ok(t)) if !t.is_zero() && t <= Duration::from_secs(60) => t,
            Some(Ok(t)) => {
                problems.push((
                    format!("{path}.request_timeout"),
                    format!("{t:?}, must be more than 0 and at most 60s"),
                ));
                d.request_timeout
            }
            Some(Err(e)) => {
                problems.push((format!("{path}.request_timeout"), e));
                d.request_timeout
            }
        };
        (problems.len() == before).then(|| CohortSettings {
            enabled: self.enabled.unwrap_or(true),
            cohorts: if cohorts.is_empty() {
                CohortFilter::All
            } else {
                CohortFilter::Only(cohorts)
            },
            batch_size,
            window,
            request_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<CohortSettings, Vec<String>> {
        let raw: RawCohortSettings = toml::from_str(toml_text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        raw.validate("destinations[0] \"d\".cohorts", &mut problems)
            .ok_or_else(|| {
                problems
                    .into_iter()
                    .map(|(path, m)| format!("{path}: {m}"))
                    .collect()
            })
    }

    #[test]
    fn defaults() {
        let s = parse("").unwrap();
        assert_eq!(s, CohortSettings::default());
        assert_eq!(s.batch_size.get(), 1000);
        assert_eq!(s.request_timeout, Duration::from_secs(2));
        assert!(s.cohorts.matches("anything"));
    }

    #[test]
    fn full_section() {
        let s = parse(
            r#"
            enabled = false
            cohort_ids = ["b", "a", "b"]
            batch_size = 250
            window = "15m"
            request_timeout = "1500ms"
            template_inline = "${input.cohort_id}"
            "#,
        )
        .unwrap();
        assert!(!s.enabled);
        assert_eq!(s.cohorts, CohortFilter::Only(vec!["a".into(), "b".into()]));
        assert!(s.cohorts.matches("a") && !s.cohorts.matches("c"));
        assert_eq!(s.batch_size.get(), 250);
        assert_eq!(s.window.length_ms(), 900_000);
        assert_eq!(s.request_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let problems = parse(
            r#"
            cohort_ids = ["ok", " "]
            batch_size = 0
            window = "7m"
            request_timeout = "soon"
            "#,
        )
        .unwrap_err();
        let p = "destinations[0] \"d\".cohorts";
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with(&format!("{p}.cohort_ids[1]: empty")));
        assert!(problems[1].starts_with(&format!("{p}.batch_size: 0")));
        assert!(problems[2].starts_with(&format!("{p}.window: \"7m\" is not a window")));
        assert!(problems[3].starts_with(&format!("{p}.request_timeout: \"soon\"")));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse("batch = 3").unwrap_err();
        assert!(err[0].contains("unknown field `batch`"), "{err:?}");
    }

    #[test]
    fn windows() {
        assert_eq!(Window::parse("realtime").unwrap().length_ms(), 60_000);
        assert_eq!(Window::parse("hourly").unwrap(), Window::HOURLY);
        assert_eq!(Window::parse("1d").unwrap(), Window::DAILY);
        assert_eq!(Window::parse("30s").unwrap().length_ms(), 30_000);
        for (text, shown) in [
            ("realtime", "realtime"),
            ("1h", "hourly"),
            ("24h", "daily"),
            ("30s", "30s"),
            ("90s", "90s"),
            ("15m", "15m"),
            ("2h", "2h"),
        ] {
            let w = Window::parse(text).unwrap();
            assert_eq!(w.to_string(), shown);
            assert_eq!(Window::parse(shown).unwrap(), w);
        }
        for bad in ["0s", "500ms", "2d", "7m", "1w", "", "h"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }
}
