//! The counting sink: an HTTP/1.1 and h2c receiver on 127.0.0.1 that stands in for customers'
//! webhooks.
//!
//! It counts what it accepts (2xx) per request path (one path per destination), checks ids for
//! duplicates and, against the expected set, for loss, and records end-to-end latency from the
//! `event_time` (or `time`) the payload carries to the moment it arrived. It can inject failures
//! (a share of 500s, of 429s with `Retry-After`, of stalls) so retry behaviour can be measured.
//! Only accepted deliveries count: a delivery answered 500 and later retried is one delivery, and
//! an id accepted twice is a duplicate.
//!
//! The work per request is kept small (one lock, a few substring scans, no JSON parse) so the sink
//! is not the bottleneck; `perf/wrk-baseline` measures what it costs.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// Where a delivery's id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// The sequence number at the end of every `insert_id` in the body (`"<run>-<seq>"`); a body
    /// holding a JSON array of events counts each of them.
    Seq,
    /// An opaque id in this request header (e.g. `x-hookpipe-delivery-id`): one per request.
    Header(String),
}

impl std::str::FromStr for IdSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "seq" => Ok(IdSource::Seq),
            Some(("header", name)) if !name.is_empty() => {
                Ok(IdSource::Header(name.to_ascii_lowercase()))
            }
            _ => Err(format!(
                "id source {s:?}: expected `seq` or `header:NAME` (e.g. header:x-hookpipe-delivery-id)"
            )),
        }
    }
}

/// How the sink answers: shares of failures to inject, each drawn independently per request.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share of requests answered 500 (not counted as delivered).
    pub fail_500: f64,
    /// Share of requests answered 429 with `Retry-After: 1` (not counted as delivered).
    pub fail_429: f64,
    /// Share of requests held for `stall` before being answered 200 (counted).
    pub stall_share: f64,
    /// How long a stalled request is held.
    pub stall: Duration,
}

#[derive(Default)]
struct PathTally {
    delivered: u64,
    duplicates: u64,
    unidentified: u64,
    /// Seq mode: one bit per sequence number seen.
    seqs: Vec<u64>,
    seq_unique: u64,
    /// Header mode: 128-bit digests of the ids seen.
    ids: HashSet<u128>,
}

impl PathTally {
    fn unique(&self) -> u64 {
        self.seq_unique + self.ids.len() as u64
    }

    fn see_seq(&mut self, seq: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seqs.len() {
            self.seqs.resize((word + 1).next_power_of_two(), 0);
        }
        if self.seqs[word] & (1 << bit) != 0 {
            self.duplicates += 1;
        } else {
            self.seqs[word] |= 1 << bit;
            self.seq_unique += 1;
        }
    }

    fn see_id(&mut self, id: &[u8]) {
        if !self.ids.insert(digest(id)) {
            self.duplicates += 1;
        }
    }

    /// The first `limit` sequence numbers below `upto` that `expected` says should have
    /// arrived but did not (seq mode only).
    fn missing_seqs(&self, upto: u64, expected: &dyn Fn(u64) -> bool, limit: usize) -> Vec<u64> {
        let mut first = Vec::new();
        for seq in 0..upto {
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            let seen = self.seqs.get(word).is_some_and(|w| w & (1 << bit) != 0);
            if !seen && expected(seq) {
                first.push(seq);
                if first.len() == limit {
                    break;
                }
            }
        }
        first
    }
}

/// A 128-bit digest of an id: the id itself when it is a UUID, else two keyed SipHashes.
fn digest(id: &[u8]) -> u128 {
    let mut v: u128 = 0;
    let mut digits = 0;
    for &c in id {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b'-' => continue,
            _ => {
                digits = 99;
                break;
            }
        };
        v = (v << 4) | u128::from(d);
        digits += 1;
    }
    if digits == 32 {
        return v;
    }
    let mut a = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    (0xfeed_u32, id).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

struct State {
    paths: HashMap<Box<str>, PathTally>,
    latency_us: Histogram<u64>,
    requests: u64,
    answered_500: u64,
    answered_429: u64,
    stalled: u64,
    first_ms: u64,
    last_ms: u64,
}

/// A running sink: its address and shared tallies. Cloning is shallow.
#[derive(Clone)]
pub struct Sink {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// Unix time in milliseconds (wall clock: latency is measured against another process's clock
/// reading of the same machine).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() {
        return None;
    }
    memchr::memmem::find(&hay[from..], needle).map(|p| p + from)
}

/// Finds every string value of `"key"` in a JSON text without parsing it (keys are assumed not
/// to appear inside string values, which holds for generated events and templates over them).
fn string_values<'a>(body: &'a [u8], key: &[u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut quoted = Vec::with_capacity(key.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(key);
    quoted.push(b'"');
    let mut at = 0;
    std::iter::from_fn(move || loop {
        let k = find(body, &quoted, at)?;
        let mut i = k + quoted.len();
        at = i;
        while i < body.len() && body[i].is_ascii_whitespace() {
            i += 1;
        }
        if body.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while i < body.len() && body[i].is_ascii_whitespace() {
            i += 1;
        }
        if body.get(i) != Some(&b'"') {
            continue;
        }
        let start = i + 1;
        let end = start + body[start..].iter().position(|&c| c == b'"')?;
        at = end + 1;
        return Some(&body[start..end]);
    })
}

fn seq_of(insert_id: &[u8]) -> Option<u64> {
    let dash = insert_id.iter().rposition(|&c| c == b'-')?;
    let digits = &insert_id[dash + 1..];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |v, &c| v * 10 + u64::from(c - b'0')),
    )
}

impl Sink {
    /// Binds `addr` (use port 0 for any) and serves in the background on the current runtime.
    pub async fn start(addr: SocketAddr, ids: IdSource, faults: Faults) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            paths: HashMap::new(),
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            requests: 0,
            answered_500: 0,
            answered_429: 0,
            stalled: 0,
            first_ms: 0,
            last_ms: 0,
        }));
        let sink = Sink {
            addr,
            state: state.clone(),
        };
        let ctx = Arc::new((ids, faults, sink.clone()));
        tokio::spawn(async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("sink: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ctx = ctx.clone();
                        async move { ctx.2.handle(req, &ctx.0, &ctx.1).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(sink)
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        ids: &IdSource,
        faults: &Faults,
    ) -> Result<Response<Full<Bytes>>, hyper::Error> {
        if req.method() == hyper::Method::GET && req.uri().path() == "/summary" {
            let body =
                serde_json::to_vec_pretty(&self.summary(&HashMap::new())).unwrap_or_default();
            return Ok(Response::new(Full::new(Bytes::from(body))));
        }
        let path: Box<str> = req.uri().path().into();
        let header_id = match ids {
            IdSource::Header(name) => req
                .headers()
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec()),
            IdSource::Seq => None,
        };
        let body = req.into_body().collect().await?.to_bytes();
        let received = now_ms();

        let draw = if faults.fail_500 + faults.fail_429 + faults.stall_share > 0.0 {
            fastrand::f64()
        } else {
            1.0
        };
        if draw < faults.fail_500 {
            self.state.lock().expect("sink state").answered_500 += 1;
            return Ok(status(StatusCode::INTERNAL_SERVER_ERROR));
        }
        if draw < faults.fail_500 + faults.fail_429 {
            self.state.lock().expect("sink state").answered_429 += 1;
            let mut r = status(StatusCode::TOO_MANY_REQUESTS);
            r.headers_mut()
                .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            return Ok(r);
        }
        let stalled = draw < faults.fail_500 + faults.fail_429 + faults.stall_share;
        if stalled {
            tokio::time::sleep(faults.stall).await;
        }

        let mut st = self.state.lock().expect("sink state");
        let st = &mut *st;
        st.requests += 1;
        st.stalled += u64::from(stalled);
        if st.first_ms == 0 {
            st.first_ms = received;
        }
        st.last_ms = received;
        let tally = match st.paths.get_mut(&path) {
            Some(t) => t,
            None => st.paths.entry(path).or_default(),
        };
        match ids {
            IdSource::Seq => {
                let mut any = false;
                for id in string_values(&body, b"insert_id") {
                    any = true;
                    tally.delivered += 1;
                    match seq_of(id) {
                        Some(seq) => tally.see_seq(seq),
                        None => tally.unidentified += 1,
                    }
                }
                if !any {
                    tally.delivered += 1;
                    tally.unidentified += 1;
                }
            }
            IdSource::Header(_) => {
                tally.delivered += 1;
                match header_id {
                    Some(id) => tally.see_id(&id),
                    None => tally.unidentified += 1,
                }
            }
        }
        let mut timed = false;
        for key in [&b"event_time"[..], b"time"] {
            for t in string_values(&body, key) {
                if let Some(sent) = crate::gen::parse_time(t) {
                    let us = received.saturating_sub(sent).max(1) * 1000;
                    let _ = st.latency_us.record(us.min(3_600_000_000));
                    timed = true;
                }
            }
            if timed {
                break;
            }
        }
        Ok(status(StatusCode::OK))
    }

    /// Forgets the latency recorded so far (the driver calls it between the backlog drain and
    /// the fixed-rate phase).
    pub fn reset_latency(&self) {
        self.state.lock().expect("sink state").latency_us.reset();
    }

    /// Unique ids accepted so far on `path` (or over all paths when `None`).
    pub fn unique(&self, path: Option<&str>) -> u64 {
        let st = self.state.lock().expect("sink state");
        match path {
            Some(p) => st.paths.get(p).map_or(0, PathTally::unique),
            None => st.paths.values().map(PathTally::unique).sum(),
        }
    }

    /// The first `limit` sequence numbers below `upto` that should have reached `path` (per
    /// `expected`) but did not; empty in header mode.
    pub fn first_missing(
        &self,
        path: &str,
        upto: u64,
        expected: &dyn Fn(u64) -> bool,
        limit: usize,
    ) -> Vec<u64> {
        let st = self.state.lock().expect("sink state");
        match st.paths.get(path) {
            Some(t) if t.ids.is_empty() => t.missing_seqs(upto, expected, limit),
            Some(_) => Vec::new(),
            None => (0..upto).filter(|&s| expected(s)).take(limit).collect(),
        }
    }

    /// Unique ids per path.
    pub fn unique_by_path(&self) -> HashMap<String, u64> {
        let st = self.state.lock().expect("sink state");
        st.paths
            .iter()
            .map(|(p, t)| (p.to_string(), t.unique()))
            .collect()
    }

    /// The JSON summary. `expected` maps a path to the number of unique ids it should receive;
    /// for each, `missing` is reported.
    pub fn summary(&self, expected: &HashMap<String, u64>) -> serde_json::Value {
        let st = self.state.lock().expect("sink state");
        let h = &st.latency_us;
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        let mut paths = serde_json::Map::new();
        let mut all_paths: Vec<&str> = st.paths.keys().map(|k| &**k).collect();
        for p in expected.keys() {
            if !st.paths.contains_key(p.as_str()) {
                all_paths.push(p);
            }
        }
        all_paths.sort_unstable();
        all_paths.dedup();
        let empty = PathTally::default();
        let (mut total_missing, mut total_dup, mut total_unique, mut total_delivered) =
            (0, 0, 0, 0);
        for p in all_paths {
            let t = st.paths.get(p).unwrap_or(&empty);
            let mut v = json!({
                "delivered": t.delivered,
                "unique": t.unique(),
                "duplicates": t.duplicates,
                "unidentified": t.unidentified,
            });
            if let Some(&exp) = expected.get(p) {
                let missing = exp.saturating_sub(t.unique());
                v["expected"] = json!(exp);
                v["missing"] = json!(missing);
                total_missing += missing;
            }
            total_dup += t.duplicates;
            total_unique += t.unique();
            total_delivered += t.delivered;
            paths.insert(p.to_string(), v);
        }
        json!({
            "requests_accepted": st.requests,
            "answered_500": st.answered_500,
            "answered_429": st.answered_429,
            "stalled": st.stalled,
            "delivered": total_delivered,
            "unique": total_unique,
            "duplicates": total_dup,
            "missing": total_missing,
            "first_ms": st.first_ms,
            "last_ms": st.last_ms,
            "latency_ms": {
                "count": h.len(),
                "p50": q(0.5),
                "p99": q(0.99),
                "p999": q(0.999),
                "max": h.max() as f64 / 1000.0,
            },
            "paths": paths,
        })
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_string_values_with_or_without_spaces() {
        let body = br#"[{"insert_id":"r-1","x":{"insert_id" : "r-22"}},{"insert_id":5,"insert_id":"r-3"}]"#;
        let got: Vec<&[u8]> = string_values(body, b"insert_id").collect();
        assert_eq!(got, vec![&b"r-1"[..], b"r-22", b"r-3"]);
        assert_eq!(seq_of(b"abc-def-42"), Some(42));
        assert_eq!(seq_of(b"abc-"), None);
        assert_eq!(seq_of(b"42"), None);
    }

    #[test]
    fn digests_uuids_exactly_and_other_ids_by_hash() {
        assert_eq!(
            digest(b"00000000-0000-0000-0000-00000000000a"),
            10,
            "a UUID is its own digest"
        );
        assert_ne!(digest(b"delivery-1"), digest(b"delivery-2"));
    }

    #[test]
    fn tallies_duplicates_and_missing_seqs() {
        let mut t = PathTally::default();
        for s in [0, 1, 2, 2, 5, 200] {
            t.see_seq(s);
        }
        assert_eq!(t.unique(), 5);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.missing_seqs(6, &|_| true, 10), vec![3, 4]);
        assert_eq!(t.missing_seqs(300, &|s| s % 2 == 0, 2), vec![4, 6]);
    }

    #[tokio::test]
    async fn counts_accepted_deliveries_and_injects_500s() {
        let sink = Sink::start(
            "127.0.0.1:0".parse().unwrap(),
            IdSource::Seq,
            Faults::default(),
        )
        .await
        .unwrap();
        let failing = Sink::start(
            "127.0.0.1:0".parse().unwrap(),
            IdSource::Header("x-id".into()),
            Faults {
                fail_500: 1.0,
                ..Faults::default()
            },
        )
        .await
        .unwrap();
        let mut ev = String::new();
        crate::gen::event("t", 3, now_ms(), &mut ev);
        let client = crate::http::Client::new();
        for _ in 0..2 {
            let st = client
                .post(&format!("{}/a", sink.url()), ev.clone().into(), &[])
                .await
                .unwrap();
            assert_eq!(st, 200);
        }
        let st = client
            .post(
                &format!("{}/b", failing.url()),
                ev.clone().into(),
                &[("x-id", "1")],
            )
            .await
            .unwrap();
        assert_eq!(st, 500);
        let s = sink.summary(&HashMap::from([("/a".to_string(), 4)]));
        assert_eq!(s["delivered"], 2);
        assert_eq!(s["unique"], 1);
        assert_eq!(s["duplicates"], 1);
        assert_eq!(s["paths"]["/a"]["missing"], 3);
        assert_eq!(sink.first_missing("/a", 5, &|_| true, 10), vec![0, 1, 2, 4]);
        assert_eq!(s["latency_ms"]["count"], 2);
        let f = failing.summary(&HashMap::new());
        assert_eq!(f["answered_500"], 1);
        assert_eq!(f["delivered"], 0);
    }
}
