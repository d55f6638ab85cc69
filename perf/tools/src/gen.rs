//! Deterministic Amplitude export-format events for load generation.
//!
//! Every event is a pure function of `(run, seq)`: the load generator can produce it, and the
//! driver can predict which destinations' filters it matches (its event type and plan) without
//! generating it again. The unique id is `insert_id = "<run>-<seq>"`, so the sink recovers the
//! sequence number from any payload that carries `insert_id`. `event_time` is the wall-clock time
//! at generation (UTC, `yyyy-MM-dd HH:mm:ss.SSS`, Amplitude's format), which is what the sink
//! measures end-to-end latency from.

use std::fmt::Write as _;

/// Event types with their relative weights (a product analytics mix: many views, few purchases).
pub const EVENT_TYPES: &[(&str, u32)] = &[
    ("page_view", 30),
    ("button_click", 20),
    ("session_start", 8),
    ("session_end", 8),
    ("search", 8),
    ("add_to_cart", 6),
    ("checkout_started", 4),
    ("purchase", 3),
    ("signup", 2),
    ("$exposure", 4),
    ("feature_used", 5),
    ("error_shown", 2),
];

/// Subscription plans, carried in `event_properties.plan` and `user_properties.plan`.
pub const PLANS: &[&str] = &["free", "starter", "pro", "enterprise"];

const PLATFORMS: &[(&str, &str, &str, &str)] = &[
    ("iOS", "ios", "Apple", "iPhone15,2"),
    ("Android", "android", "Samsung", "SM-S918B"),
    ("Web", "Chrome", "Google", "Chrome 131"),
    ("Web", "Safari", "Apple", "Mac"),
];
const COUNTRIES: &[(&str, &str, &str)] = &[
    ("United States", "California", "San Francisco"),
    ("Germany", "Berlin", "Berlin"),
    ("Brazil", "Sao Paulo", "Sao Paulo"),
    ("Japan", "Tokyo", "Tokyo"),
    ("India", "Karnataka", "Bengaluru"),
    ("France", "Ile-de-France", "Paris"),
];
const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
];

/// SplitMix64: a cheap, well-mixed hash of the sequence number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn event_type_index(h: u64) -> usize {
    let total: u32 = EVENT_TYPES.iter().map(|(_, w)| w).sum();
    let mut pick = (h % u64::from(total)) as u32;
    for (i, (_, w)) in EVENT_TYPES.iter().enumerate() {
        if pick < *w {
            return i;
        }
        pick -= w;
    }
    EVENT_TYPES.len() - 1
}

/// The event type of event `seq` (what `event_types` filters look at).
pub fn event_type_of(seq: u64) -> &'static str {
    EVENT_TYPES[event_type_index(mix(seq))].0
}

/// The plan of event `seq` (`event_properties.plan`, what property filters look at).
pub fn plan_of(seq: u64) -> &'static str {
    PLANS[((mix(seq) >> 32) % PLANS.len() as u64) as usize]
}

/// Formats unix milliseconds as Amplitude's `yyyy-MM-dd HH:mm:ss.SSS` (UTC).
pub fn format_time(unix_ms: u64, out: &mut String) {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
}

/// Parses `yyyy-MM-dd HH:mm:ss.SSS` (or `yyyy-MM-ddTHH:mm:ss.SSS`, fraction optional) as UTC
/// unix milliseconds; `None` when it is not that shape.
pub fn parse_time(s: &[u8]) -> Option<u64> {
    fn num(s: &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for &c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u64::from(c - b'0');
        }
        Some(v)
    }
    if s.len() < 19 || s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let y = num(&s[0..4])? as i64;
    let mo = num(&s[5..7])?;
    let d = num(&s[8..10])?;
    let h = num(&s[11..13])?;
    let mi = num(&s[14..16])?;
    let se = num(&s[17..19])?;
    let mut ms = 0;
    if s.len() > 20 && s[19] == b'.' {
        let frac = &s[20..s.len().min(23)];
        ms = num(frac)? * [100, 10, 1][frac.len() - 1];
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(((days * 86_400) as u64 + h * 3600 + mi * 60 + se) * 1000 + ms)
}

// Howard Hinnant's civil calendar algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Writes event `seq` of run `run` into `out` (cleared first), stamped with `now_ms`.
///
/// Sizes vary from about 0.5 to 2 KB through the number of extra event properties.
pub fn event(run: &str, seq: u64, now_ms: u64, out: &mut String) {
    out.clear();
    let h = mix(seq);
    let mut rng = fastrand::Rng::with_seed(h);
    let event_type = EVENT_TYPES[event_type_index(h)].0;
    let plan = plan_of(seq);
    let user = rng.u32(..200_000);
    let (platform, os, brand, model) = PLATFORMS[rng.usize(..PLATFORMS.len())];
    let (country, region, city) = COUNTRIES[rng.usize(..COUNTRIES.len())];
    let session = now_ms - u64::from(rng.u32(..3_600_000));

    out.push_str("{\"insert_id\":\"");
    let _ = write!(out, "{run}-{seq}");
    let _ = write!(
        out,
        "\",\"event_type\":\"{event_type}\",\"user_id\":\"user-{user:06}\""
    );
    let _ = write!(
        out,
        ",\"device_id\":\"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}\"",
        mix(u64::from(user)) as u32,
        user & 0xffff,
        user & 0xfff,
        (user >> 4) & 0xfff,
        mix(u64::from(user) + 7) & 0xffff_ffff_ffff
    );
    out.push_str(",\"event_time\":\"");
    format_time(now_ms, out);
    let rich = rng.bool(); // about half the events carry the full device, geo and group blocks
    if rich {
        out.push_str("\",\"client_event_time\":\"");
        format_time(now_ms.saturating_sub(120), out);
        out.push_str("\",\"server_upload_time\":\"");
        format_time(now_ms, out);
    }
    let _ = write!(
        out,
        "\",\"event_id\":{},\"session_id\":{session},\"uuid\":\"{:08x}-{:04x}-4{:03x}-b{:03x}-{:012x}\"",
        seq % 10_000,
        h as u32,
        (h >> 32) & 0xffff,
        (h >> 48) & 0xfff,
        (h >> 20) & 0xfff,
        mix(h) & 0xffff_ffff_ffff
    );
    let _ = write!(
        out,
        ",\"platform\":\"{platform}\",\"country\":\"{country}\""
    );
    if rich {
        let _ = write!(
            out,
            ",\"amplitude_id\":{},\"app\":187520,\"os_name\":\"{os}\",\"os_version\":\"{}.{}\",\"device_brand\":\"{brand}\",\"device_model\":\"{model}\",\"region\":\"{region}\",\"city\":\"{city}\",\"language\":\"English\",\"library\":\"amplitude-ts/2.11.{}\",\"ip_address\":\"10.{}.{}.{}\",\"version_name\":\"3.{}.0\",\"paying\":{}",
            100_000_000 + u64::from(user),
            rng.u8(10..18),
            rng.u8(0..5),
            rng.u8(0..9),
            rng.u8(..),
            rng.u8(..),
            rng.u8(1..255),
            rng.u8(0..20),
            plan != "free"
        );
    }
    // Event properties: a few fixed ones, then 0-40 extra to spread sizes over 0.5-2 KB.
    let _ = write!(
        out,
        ",\"event_properties\":{{\"seq\":{seq},\"plan\":\"{plan}\",\"page\":\"/{}/{}\",\"value\":{}.{:02}",
        WORDS[rng.usize(..WORDS.len())],
        WORDS[rng.usize(..WORDS.len())],
        rng.u32(..500),
        rng.u8(..100)
    );
    let extra = rng.usize(0..=40);
    for i in 0..extra {
        match i % 4 {
            0 => {
                let _ = write!(
                    out,
                    ",\"prop_{i}\":\"{} {}\"",
                    WORDS[rng.usize(..WORDS.len())],
                    WORDS[rng.usize(..WORDS.len())]
                );
            }
            1 => {
                let _ = write!(out, ",\"count_{i}\":{}", rng.u32(..100_000));
            }
            2 => {
                let _ = write!(out, ",\"flag_{i}\":{}", rng.bool());
            }
            _ => {
                let _ = write!(
                    out,
                    ",\"tags_{i}\":[\"{}\",\"{}\",{}]",
                    WORDS[rng.usize(..WORDS.len())],
                    WORDS[rng.usize(..WORDS.len())],
                    rng.u16(..1000)
                );
            }
        }
    }
    out.push('}');
    let _ = write!(
        out,
        ",\"user_properties\":{{\"email\":\"user-{user:06}@example.com\",\"plan\":\"{plan}\",\"signup_cohort\":\"2026-{:02}\",\"lifetime_value\":{}.{:02},\"beta_tester\":{}}}",
        rng.u8(1..13),
        rng.u32(..10_000),
        rng.u8(..100),
        rng.bool()
    );
    let company = rng.u16(..5000);
    if !rich {
        out.push_str(",\"data\":{}}");
        return;
    }
    let _ = write!(
        out,
        ",\"groups\":{{\"company\":\"company-{company}\"}},\"group_properties\":{{\"company\":{{\"name\":\"Company {company}\",\"employees\":{},\"industry\":\"{}\"}}}},\"data\":{{}}}}",
        rng.u32(1..50_000),
        WORDS[rng.usize(..WORDS.len())]
    );
}

/// A seed-sized (~400 bytes) event shaped like the one in Amplitude's webhook docs, for benches.
pub fn seed_event() -> &'static str {
    r#"{"insert_id":"5f0adeff-6668-4427-8d02-57d803a2b841","event_type":"click event","user_id":"some user id","device_id":"C8F9E604-F01A-4BD9-95C6-8E5357DF265D","event_time":"2022-10-24 20:07:32.123","event_properties":{"plan":"pro","button":"signup"},"user_properties":{"email":"some@email.com","plan":"pro"},"groups":{"company":"acme"},"country":"United States","platform":"iOS","app":187520,"uuid":"e3f2a1b4-1c2d-4e5f-8a9b-0c1d2e3f4a5b"}"#
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_json_with_their_id_seq_and_type() {
        let mut s = String::new();
        let mut sizes = Vec::new();
        for seq in 0..2000 {
            event("r1", seq, 1_700_000_000_123, &mut s);
            let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
            assert_eq!(v["insert_id"], format!("r1-{seq}"));
            assert_eq!(v["event_properties"]["seq"], seq);
            assert_eq!(v["event_type"], event_type_of(seq));
            assert_eq!(v["event_properties"]["plan"], plan_of(seq));
            assert_eq!(v["event_time"], "2023-11-14 22:13:20.123");
            sizes.push(s.len());
        }
        let min = *sizes.iter().min().unwrap();
        let max = *sizes.iter().max().unwrap();
        assert!(min >= 500 && max <= 2048, "sizes {min}..{max}");
        assert!(max - min > 600, "sizes vary: {min}..{max}");
    }

    #[test]
    fn time_round_trips() {
        let mut s = String::new();
        for ms in [0u64, 951_782_400_000, 1_700_000_000_123, 4_102_444_799_999] {
            s.clear();
            format_time(ms, &mut s);
            assert_eq!(parse_time(s.as_bytes()), Some(ms), "{s}");
        }
        assert_eq!(
            parse_time(b"2022-10-24T20:07:32.1"),
            Some(1_666_642_052_100)
        );
        assert_eq!(parse_time(b"not a time at all!!"), None);
    }

    #[test]
    fn the_type_mix_covers_every_type() {
        let mut seen = std::collections::HashSet::new();
        for seq in 0..10_000 {
            seen.insert(event_type_of(seq));
        }
        assert_eq!(seen.len(), EVENT_TYPES.len());
    }

    #[test]
    fn the_seed_event_is_seed_sized_json() {
        let s = seed_event();
        assert!((380..=480).contains(&s.len()), "{}", s.len());
        serde_json::from_str::<serde_json::Value>(s).unwrap();
    }
}
