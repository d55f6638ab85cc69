//! Cohort batching throughput: a 1,000,000-user change (700,000 entering, 300,000 leaving, 10%
//! with user properties) cut into batches of 1,000 and written as default payloads, from decoded
//! chunks and from the Kafka message bytes, and rendered with the seed `#sep` template. Plus one
//! 1,000-user batch rendered by hookpipe's engine beside minijinja. Each run asserts what it
//! wrote, so it cannot measure a no-op. Memory: one chunk (10,000 users per direction here) and
//! one reused payload buffer; nothing grows with the cohort.
//!
//! `cohort/membership_1m_events/decode_window_batch_default_payload/hookpipe`: 1,000,000
//! per-user membership event messages (400,000 users in 4 cohorts, flipping in and out) decoded,
//! aggregated into one hourly window, closed, and the 200,000 net changes batched and written;
//! before it, the peak memory of one run, which grows with the users pending in the open window.
//!
//! `cohort/1m_users/decode_batch_default_deliver/hookpipe` goes all the way: decode, batch, write
//! the default payload and POST every batch with `deliver::Client` (16 in flight) to a local
//! HTTP/1.1 receiver on 127.0.0.1 that reads each body and answers 204; it asserts the receiver
//! got every payload and every byte. Before it, the bench prints the peak resident memory of one
//! such run over 100,000 and over 1,000,000 users (Linux `VmHWM`, reset through
//! `/proc/self/clear_refs`), above the resident memory before the run: the two are about equal
//! when memory is bounded by the chunk and the in-flight limit rather than the cohort.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hookpipe::cohort::config::CohortFilter;
use hookpipe::cohort::{payload, BatchSize, Chunk, CohortRoute, Renderer};
use hookpipe::deliver::{Client, Endpoint};
use hookpipe::template::{Options, Template};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Amplitude's documented cohort template (conformance case 480).
const SEED_TEMPLATE: &str = r#"{
    "cohort_name": "${input.cohort_name}",
    "cohort_id": "${input.cohort_id}",
    "in_cohort": ${input.in_cohort?c},
    "computed_time": "${input.computed_time}",
     "message_id": "${input.message_id}",
    "users": [
     <#list input.users as user>
     {
         "user_id": "${user.user_id}"
      }<#sep>,
     </#list>
    ]
}
"#;

/// The same template in Jinja syntax, for the comparison.
const JINJA_TEMPLATE: &str = r#"{
    "cohort_name": "{{ input.cohort_name }}",
    "cohort_id": "{{ input.cohort_id }}",
    "in_cohort": {{ input.in_cohort }},
    "computed_time": "{{ input.computed_time }}",
     "message_id": "{{ input.message_id }}",
    "users": [
     {% for user in input.users %}
     {
         "user_id": "{{ user.user_id }}"
      }{% if not loop.last %},{% endif %}
     {% endfor %}
    ]
}
"#;

const ENTERED: usize = 700_000;
const EXITED: usize = 300_000;
const CHUNK: usize = 10_000;

fn messages() -> Vec<Vec<u8>> {
    messages_of(ENTERED, EXITED)
}

/// The chunk messages of a change of `entered` entering and `exited` leaving users.
fn messages_of(entered: usize, exited: usize) -> Vec<Vec<u8>> {
    let count = entered.max(exited).div_ceil(CHUNK);
    (0..count)
        .map(|i| {
            let users = |prefix: &str, total: usize| -> Vec<serde_json::Value> {
                (i * CHUNK..((i + 1) * CHUNK).min(total))
                    .map(|u| {
                        if u % 10 == 0 {
                            serde_json::json!({"user_id": format!("{prefix}{u}@example.com"),
                                "user_properties": {"plan": "pro", "country": "US", "ltv": 12.5}})
                        } else {
                            serde_json::json!({"user_id": format!("{prefix}{u}@example.com")})
                        }
                    })
                    .collect()
            };
            serde_json::to_vec(&serde_json::json!({
                "cohort_id": "7khm89cz", "cohort_name": "Power Users",
                "computed_time": "1692206763", "change_id": "9baaa88f-9d46-4ee5-a946-be0c6aea0046",
                "chunk_index": i, "chunk_count": count, "chunk_size": CHUNK,
                "entered_count": entered, "exited_count": exited,
                "entered": users("in-", entered), "exited": users("out-", exited),
            }))
            .unwrap()
        })
        .collect()
}

/// Batches and serializes one chunk into `out` (cleared per payload, as a sender would), adding
/// to the (users, payloads, bytes) tally.
fn write_chunk(chunk: &Chunk, out: &mut BytesMut, tally: &mut (usize, usize, usize)) {
    for batch in chunk.batches(BatchSize::DEFAULT) {
        out.clear();
        payload::write_default(&batch, out);
        tally.0 += batch.users.len();
        tally.1 += 1;
        tally.2 += out.len();
    }
}

fn check(tally: (usize, usize, usize)) {
    assert_eq!(tally.0, ENTERED + EXITED);
    assert_eq!(tally.1, (ENTERED + EXITED) / 1000);
    assert!(tally.2 > 30 * (ENTERED + EXITED));
}

/// A local HTTP/1.1 receiver: reads every body, answers 204, counts requests and body bytes.
struct Receiver {
    url: String,
    requests: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

async fn receiver() -> Receiver {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let (r, b) = (requests.clone(), bytes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (r, b) = (r.clone(), b.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (r, b) = (r.clone(), b.clone());
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            b.fetch_add(body.len(), Ordering::Relaxed);
                            r.fetch_add(1, Ordering::Relaxed);
                            let mut resp =
                                http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                            *resp.status_mut() = http::StatusCode::NO_CONTENT;
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Receiver {
        url,
        requests,
        bytes,
    }
}

/// Decodes, batches, writes and delivers every chunk, 16 deliveries in flight; returns
/// (payloads, body bytes) sent.
async fn deliver_all(messages: &[Vec<u8>], client: &Client) -> (usize, usize) {
    let mut in_flight = tokio::task::JoinSet::<bool>::new();
    let mut out = BytesMut::with_capacity(128 << 10);
    let (mut payloads, mut bytes) = (0, 0);
    for m in messages {
        let chunk = Chunk::decode(m).unwrap();
        for batch in chunk.batches(BatchSize::DEFAULT) {
            out.clear();
            payload::write_default(&batch, &mut out);
            payloads += 1;
            bytes += out.len();
            let request = hookpipe::deliver::Request {
                id: batch.message_id().to_string(),
                kind: hookpipe::deliver::Kind::Cohort,
                body: out.split().freeze(),
            };
            while in_flight.len() >= 16 {
                assert!(in_flight.join_next().await.unwrap().unwrap());
            }
            let client = client.clone();
            in_flight.spawn(async move { client.attempt(&request).await.is_delivered() });
        }
    }
    while let Some(done) = in_flight.join_next().await {
        assert!(done.unwrap());
    }
    (payloads, bytes)
}

/// `(VmRSS, VmHWM)` in KiB, from /proc/self/status.
fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Peak resident memory of one delivery run above the resident memory before it, in KiB.
fn peak_above_start(
    rt: &tokio::runtime::Runtime,
    messages: &[Vec<u8>],
    client: &Client,
) -> Option<u64> {
    // Writing 5 resets VmHWM to the current RSS (Linux 4.0+).
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    let (before, _) = rss_kib()?;
    rt.block_on(deliver_all(messages, client));
    let (_, peak) = rss_kib()?;
    Some(peak.saturating_sub(before))
}

fn bench(c: &mut Criterion) {
    let messages = messages();
    let chunks: Vec<Chunk> = messages.iter().map(|m| Chunk::decode(m).unwrap()).collect();
    let mut g = c.benchmark_group("cohort/1m_users");
    g.sample_size(10);
    g.throughput(Throughput::Elements((ENTERED + EXITED) as u64));
    let mut out = BytesMut::with_capacity(128 << 10);
    g.bench_function("batch_default_payload/hookpipe", |b| {
        b.iter(|| {
            let mut tally = (0, 0, 0);
            for chunk in &chunks {
                write_chunk(chunk, &mut out, &mut tally);
            }
            check(tally);
            tally
        })
    });
    g.bench_function("decode_batch_default_payload/hookpipe", |b| {
        b.iter(|| {
            let mut tally = (0, 0, 0);
            for m in &messages {
                let chunk = Chunk::decode(m).unwrap();
                write_chunk(&chunk, &mut out, &mut tally);
            }
            check(tally);
            tally
        })
    });
    let route = CohortRoute {
        destination: "bench".into(),
        cohorts: CohortFilter::All,
        batch_size: BatchSize::DEFAULT,
        template: Some(Template::compile("seed", SEED_TEMPLATE, &Options::default()).unwrap()),
        request_timeout: hookpipe::cohort::DEFAULT_REQUEST_TIMEOUT,
        window: hookpipe::cohort::Window::HOURLY,
    };
    let mut renderer = Renderer::default();
    g.bench_function("batch_seed_template/hookpipe", |b| {
        b.iter(|| {
            let (mut users, mut payloads, mut bytes) = (0, 0, 0);
            for chunk in &chunks {
                renderer.render_chunk(chunk, &route, |r| {
                    assert!(r.error.is_none());
                    users += r.users;
                    payloads += 1;
                    bytes += r.request.body.len();
                });
            }
            check((users, payloads, bytes));
            bytes
        })
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rx = rt.block_on(receiver());
    let client = rt.block_on(async {
        Client::new(Endpoint {
            name: "bench".into(),
            url: rx.url.clone(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            signing_secrets: Vec::new(),
        })
        .unwrap()
    });
    let small = messages_of(70_000, 30_000);
    match (
        peak_above_start(&rt, &small, &client),
        peak_above_start(&rt, &messages, &client),
    ) {
        (Some(s), Some(l)) => eprintln!(
            "cohort delivery run, peak resident memory above the start: 100,000 users {s} KiB, \
             1,000,000 users {l} KiB"
        ),
        _ => eprintln!("cohort delivery run: peak memory not measurable here (/proc)"),
    }
    g.bench_function("decode_batch_default_deliver/hookpipe", |b| {
        b.iter(|| {
            let sent_before = (
                rx.requests.load(Ordering::Relaxed),
                rx.bytes.load(Ordering::Relaxed),
            );
            let (payloads, bytes) = rt.block_on(deliver_all(&messages, &client));
            assert_eq!(payloads, (ENTERED + EXITED) / 1000);
            assert_eq!(
                rx.requests.load(Ordering::Relaxed) - sent_before.0,
                payloads
            );
            assert_eq!(rx.bytes.load(Ordering::Relaxed) - sent_before.1, bytes);
            bytes
        })
    });
    g.finish();

    // One batch of 1,000 users, one render, hookpipe beside minijinja.
    let batch = chunks[0].batches(BatchSize::DEFAULT).next().unwrap();
    let last = &batch.users[999].user_id;
    let mut doc = BytesMut::new();
    payload::write_template_input(&batch, &mut doc);
    let ctx: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    let mut env = minijinja::Environment::new();
    env.add_template("seed", JINJA_TEMPLATE).unwrap();
    let jinja = env.get_template("seed").unwrap();
    let mut g = c.benchmark_group("render/cohort_1000");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("hookpipe", |b| {
        b.iter(|| {
            let r = renderer.render(&batch, &route);
            assert!(r.error.is_none());
            assert!(std::str::from_utf8(&r.request.body)
                .unwrap()
                .contains(last.as_str()));
            r.request.body.len()
        })
    });
    g.bench_function("minijinja", |b| {
        b.iter(|| {
            let out = jinja.render(minijinja::context! { input => &ctx }).unwrap();
            assert!(out.contains(last.as_str()));
            out.len()
        })
    });
    g.finish();
}

/// Users of the membership bench; user `u` has `u % 4 + 1` events, so 1,000,000 in all.
const MEMBERS: usize = 400_000;

/// The membership event messages of one hour of one partition, in timestamp order: user `u`
/// (of cohort `(u / 8) % 4`) alternates in and out `u % 4 + 1` times, starting in when
/// `(u / 4) % 2 == 0`. Users with an odd number of events end where they started: 100,000 enter
/// and 100,000 leave (25,000 of each per cohort); the others flip back and send nothing.
fn membership_messages() -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::with_capacity(MEMBERS * 5 / 2);
    for round in 0..4 {
        for u in (0..MEMBERS).filter(|u| u % 4 >= round) {
            let in_cohort = ((u / 4) % 2 == 0) == (round % 2 == 0);
            let ts = out.len() as i64 * 3;
            let cohort = (u / 8) % 4;
            let props = if u % 10 == 0 {
                r#","user_properties":{"plan":"pro","ltv":12.5}"#
            } else {
                ""
            };
            let m = format!(
                r#"{{"cohort_id":"c{cohort}","cohort_name":"Cohort {cohort}","user_id":"user-{u}@example.com","in_cohort":{in_cohort},"time":{ts}{props}}}"#
            );
            out.push((ts, m.into_bytes()));
        }
    }
    out
}

/// Membership events through the windows: decode each message, add it to an hourly window of
/// a `MembershipPartition`, close the hour, batch its net changes and write default payloads.
fn bench_membership(c: &mut Criterion) {
    use hookpipe::cohort::{Membership, MembershipPartition, Window};
    let messages = membership_messages();
    assert_eq!(messages.len(), 1_000_000);
    let mut g = c.benchmark_group("cohort/membership_1m_events");
    g.sample_size(10);
    g.throughput(Throughput::Elements(messages.len() as u64));
    let mut out = BytesMut::with_capacity(128 << 10);
    let run = |out: &mut BytesMut| {
        let mut p: MembershipPartition<()> = MembershipPartition::new("bench/0", &[Window::HOURLY]);
        for (ts, m) in &messages {
            let event = Membership::decode(m).unwrap();
            p.add(*ts, event, || ()).unwrap();
        }
        let pending = p.pending_users();
        let (closed, _) = p.close(3_600_000);
        let mut tally = (0, 0, 0);
        for w in &closed {
            write_chunk(&w.chunk, out, &mut tally);
        }
        assert_eq!(pending, MEMBERS);
        assert_eq!(closed.len(), 4);
        assert_eq!((tally.0, tally.1), (200_000, 200));
        assert!(tally.2 > 30 * 200_000);
        tally
    };
    // Memory of one run: the open window holds one entry per distinct user that changed.
    if std::fs::write("/proc/self/clear_refs", "5").is_ok() {
        if let (Some((before, _)), _, Some((_, peak))) = (rss_kib(), run(&mut out), rss_kib()) {
            eprintln!(
                "membership window run, peak resident memory above the start: {} KiB for {} \
                 pending users ({} bytes each)",
                peak.saturating_sub(before),
                MEMBERS,
                peak.saturating_sub(before) * 1024 / MEMBERS as u64
            );
        }
    }
    g.bench_function("decode_window_batch_default_payload/hookpipe", |b| {
        b.iter(|| run(&mut out))
    });
    g.finish();
}

criterion_group!(benches, bench, bench_membership);
criterion_main!(benches);
