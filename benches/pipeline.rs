//! Per-stage benchmarks of the in-process path, from Kafka message bytes to an HTTP request ready
//! to write (issue 6): decode, route/filter, render, request building, and the whole path, on a
//! seed-sized event (~400 bytes) and larger ones to show how the cost grows with event size.
//!
//! Every bench checks its result so it cannot measure a no-op. CI runs `cargo bench -- --test`,
//! which runs each bench once. Names follow `stage/input/implementation`, so hookpipe's figures
//! sit beside their references (serde_json for decode, minijinja for render).
//!
//! Time is wall-clock time by default (criterion's usual); with `HOOKPIPE_BENCH_CPU_TIME=1` it is
//! the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), which stays meaningful on a machine
//! shared with other work, where wall-clock samples include time spent descheduled.
//!
//! The template engine's benches (filter, render, templated path) run only once the engine is in
//! (`hookpipe::template::Template::compile` works); until then they print why they are skipped.
//! Request building mirrors `deliver::request::Prepared::build` (crate-private): the destination's
//! header block is built once and cloned per request, then the per-delivery headers are added.

use bytes::{Bytes, BytesMut};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method, Uri};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use std::hint::black_box;

/// The seed event: Amplitude's webhook docs' example event in the export format (~400 bytes).
const SEED_EVENT: &str = r#"{"insert_id":"5f0adeff-6668-4427-8d02-57d803a2b841","event_type":"click event","user_id":"some user id","device_id":"C8F9E604-F01A-4BD9-95C6-8E5357DF265D","event_time":"2022-10-24 20:07:32.123","event_properties":{"plan":"pro","button":"signup"},"user_properties":{"email":"some@email.com","plan":"pro"},"groups":{"company":"acme"},"country":"United States","platform":"iOS","app":187520,"uuid":"e3f2a1b4-1c2d-4e5f-8a9b-0c1d2e3f4a5b"}"#;

/// Amplitude's seed template for events (webhook docs), as the customer pastes it.
const SEED_TEMPLATE: &str = r#"{
      <#if input.user_id??>
      "external_id" : "${input.user_id}",
      </#if>
      "name" : "${input.event_type}",
      "time" : "${input.event_time}",
      "properties" : {
            "email" : "${input.user_properties.email!}"
      }
}"#;

/// The same template in minijinja's syntax, the render reference.
const SEED_TEMPLATE_JINJA: &str = r#"{
      {% if input.user_id is defined %}
      "external_id" : "{{ input.user_id }}",
      {% endif %}
      "name" : "{{ input.event_type }}",
      "time" : "{{ input.event_time }}",
      "properties" : {
            "email" : "{{ input.user_properties.email | default('') }}"
      }
}"#;

/// The filter of the fan-out scenario.
const FILTER: &str = r#"input.event_properties.plan == "pro""#;

/// The seed event grown to about `size` bytes with extra event properties (strings, numbers,
/// booleans, arrays), as real events grow.
fn event_of_size(size: usize) -> String {
    let mut v: serde_json::Value = serde_json::from_str(SEED_EVENT).expect("seed event");
    let mut i = 0;
    while serde_json::to_string(&v).expect("json").len() < size {
        let props = v["event_properties"]
            .as_object_mut()
            .expect("event_properties");
        match i % 4 {
            0 => props.insert(format!("prop_{i}"), format!("value number {i}").into()),
            1 => props.insert(format!("count_{i}"), (i * 7919).into()),
            2 => props.insert(format!("flag_{i}"), (i % 3 == 0).into()),
            _ => props.insert(
                format!("tags_{i}"),
                serde_json::json!(["alpha", "bravo", i]),
            ),
        };
        i += 1;
    }
    serde_json::to_string(&v).expect("json")
}

fn inputs() -> Vec<(&'static str, String)> {
    vec![
        ("seed_400B", SEED_EVENT.to_string()),
        ("event_1KB", event_of_size(1024)),
        ("event_2KB", event_of_size(2048)),
        ("event_8KB", event_of_size(8192)),
    ]
}

/// Per-worker decode state: the message copy (simd-json parses in place), its scratch buffers and
/// the tape, all reused across messages.
struct Decoder {
    bytes: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::tape::Tape<'static>>,
}

impl Decoder {
    fn new() -> Decoder {
        Decoder {
            bytes: Vec::with_capacity(4096),
            buffers: simd_json::Buffers::new(4096),
            tape: Some(simd_json::tape::Tape::null()),
        }
    }

    /// Decodes `message` and hands its tape to `f`; the tape's storage is kept for the next one.
    fn with<R>(
        &mut self,
        message: &[u8],
        f: impl FnOnce(simd_json::tape::Value<'_, '_>) -> R,
    ) -> Option<R> {
        self.bytes.clear();
        self.bytes.extend_from_slice(message);
        let mut tape = self.tape.take().expect("tape").reset();
        let r = match simd_json::fill_tape(&mut self.bytes, &mut self.buffers, &mut tape) {
            Ok(()) => Some(f(tape.as_value())),
            Err(_) => None,
        };
        self.tape = Some(tape.reset());
        r
    }
}

fn event_type_len(v: simd_json::tape::Value<'_, '_>) -> usize {
    use simd_json::prelude::*;
    v.get("event_type")
        .and_then(|t| t.into_string())
        .map_or(0, str::len)
}

fn decode<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("decode");
    for (name, event) in inputs() {
        g.throughput(Throughput::Bytes(event.len() as u64));
        let mut dec = Decoder::new();
        g.bench_with_input(BenchmarkId::new(name, "simd_json_tape"), &event, |b, e| {
            b.iter(|| {
                let n = dec.with(black_box(e.as_bytes()), event_type_len);
                assert_eq!(n, Some("click event".len()));
                n
            })
        });
        g.bench_with_input(
            BenchmarkId::new(name, "serde_json_value"),
            &event,
            |b, e| {
                b.iter(|| {
                    let v: serde_json::Value =
                        serde_json::from_slice(black_box(e.as_bytes())).expect("valid");
                    assert_eq!(v["event_type"], "click event");
                    v
                })
            },
        );
    }
    g.finish();
}

/// The stable delivery id: a UUID-formatted SHA-256 prefix of where the message came from and
/// where it goes (pipeline brief: source topic, partition, offset, destination, payload kind).
fn delivery_id(topic: &str, partition: i32, offset: i64, destination: &str, kind: &str) -> String {
    let mut h = Sha256::new();
    h.update(topic.as_bytes());
    h.update([0]);
    h.update(partition.to_be_bytes());
    h.update(offset.to_be_bytes());
    h.update(destination.as_bytes());
    h.update([0]);
    h.update(kind.as_bytes());
    let d = h.finalize();
    let mut s = String::with_capacity(36);
    for (i, b) in d[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from_digit(u32::from(b >> 4), 16).expect("hex"));
        s.push(char::from_digit(u32::from(b & 15), 16).expect("hex"));
    }
    s
}

/// A destination's unchanging request parts, built once (as deliver's `Prepared`).
struct Prepared {
    uri: Uri,
    base: HeaderMap,
}

impl Prepared {
    fn new() -> Prepared {
        let mut base = HeaderMap::with_capacity(16);
        base.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        base.insert(
            USER_AGENT,
            HeaderValue::from_static("Amplitude/Webhook/1.0"),
        );
        for (k, v) in [
            ("authorization", "Bearer 0123456789abcdef0123456789abcdef"),
            ("x-team", "growth"),
            ("x-source", "amplitude"),
        ] {
            let mut v = HeaderValue::from_static(v);
            v.set_sensitive(true);
            base.append(HeaderName::from_static(k), v);
        }
        Prepared {
            uri: "http://127.0.0.1:8080/webhook".parse().expect("uri"),
            base,
        }
    }

    fn build(&self, id: &str, kind: &'static str, body: Bytes) -> http::Request<Full<Bytes>> {
        let mut headers = self.base.clone();
        headers.insert(
            HeaderName::from_static("x-hookpipe-type"),
            HeaderValue::from_static(kind),
        );
        headers.insert(
            HeaderName::from_static("x-hookpipe-delivery-id"),
            HeaderValue::from_str(id).expect("id is a header value"),
        );
        headers.insert(
            HeaderName::from_static("x-hookpipe-attempt"),
            HeaderValue::from(1u32),
        );
        headers.insert(
            HeaderName::from_static("x-hookpipe-try"),
            HeaderValue::from(1u32),
        );
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        req
    }
}

fn request<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("request");
    let prepared = Prepared::new();
    let body = Bytes::from_static(SEED_EVENT.as_bytes());
    let mut offset = 0i64;
    g.bench_function("delivery_id/sha256_uuid", |b| {
        b.iter(|| {
            offset += 1;
            let id = delivery_id(
                "amplitude-events",
                3,
                black_box(offset),
                "braze",
                "events.track",
            );
            assert_eq!(id.len(), 36);
            id
        })
    });
    let id = delivery_id("amplitude-events", 3, 42, "braze", "events.track");
    g.bench_function("build/seed_400B", |b| {
        b.iter(|| {
            let r = prepared.build(black_box(&id), "events.track", body.clone());
            assert_eq!(r.headers().len(), 9);
            r
        })
    });
    g.finish();
}

/// The engine, if it is in: compiled seed template and filter, or why not.
struct Engine {
    template: hookpipe::template::Template,
    filter: hookpipe::template::Condition,
}

fn engine() -> Result<Engine, String> {
    use hookpipe::template::{Condition, Options, Template};
    // The contract's placeholder panics with `unimplemented!` until the engine lands.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| {
        let options = Options {
            json_mode: true,
            ..Options::default()
        };
        let template = Template::compile("event.ftl", SEED_TEMPLATE, &options)
            .map_err(|e| format!("seed template: {e}"))?;
        let filter =
            Condition::compile("filter", FILTER, &options).map_err(|e| format!("filter: {e}"))?;
        Ok(Engine { template, filter })
    });
    std::panic::set_hook(hook);
    r.unwrap_or_else(|_| {
        Err("the template engine is not merged yet (Template::compile panics)".into())
    })
}

fn render<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("render");
    let env = {
        let mut env = minijinja::Environment::new();
        env.add_template("event", SEED_TEMPLATE_JINJA)
            .expect("jinja template");
        env
    };
    for (name, event) in inputs() {
        let value: serde_json::Value = serde_json::from_str(&event).expect("event");
        let ctx = minijinja::context! { input => value };
        let tmpl = env.get_template("event").expect("template");
        g.bench_with_input(BenchmarkId::new(name, "minijinja"), &ctx, |b, ctx| {
            b.iter(|| {
                let out = tmpl.render(black_box(ctx)).expect("render");
                assert!(out.contains("\"external_id\" : \"some user id\""));
                out
            })
        });
    }
    match engine() {
        Err(why) => eprintln!("render/*/hookpipe, filter/*, path/*/seed_template: skipped: {why}"),
        Ok(engine) => {
            let mut state = hookpipe::template::RenderState::default();
            let mut dec = Decoder::new();
            let mut out = BytesMut::with_capacity(1024);
            for (name, event) in inputs() {
                g.bench_with_input(BenchmarkId::new(name, "hookpipe"), &event, |b, e| {
                    // Decode once outside the loop: this measures rendering alone.
                    let mut bytes = e.as_bytes().to_vec();
                    let tape = simd_json::to_tape(&mut bytes).expect("valid");
                    b.iter(|| {
                        out.clear();
                        engine
                            .template
                            .render(&mut state, tape.as_value(), &mut out)
                            .expect("render");
                        assert!(out.windows(12).any(|w| w == b"some user id"));
                        out.len()
                    })
                });
                let mut fg_state = hookpipe::template::RenderState::default();
                let tape_ok = dec.with(event.as_bytes(), |v| {
                    engine.filter.eval(&mut fg_state, v).expect("filter")
                });
                assert_eq!(tape_ok, Some(true), "the seed event is on the pro plan");
            }
            g.finish();
            let mut g = c.benchmark_group("filter");
            for (name, event) in inputs() {
                let mut bytes = event.as_bytes().to_vec();
                let tape = simd_json::to_tape(&mut bytes).expect("valid");
                g.bench_function(BenchmarkId::new(name, "hookpipe"), |b| {
                    b.iter(|| {
                        let yes = engine
                            .filter
                            .eval(&mut state, black_box(tape.as_value()))
                            .expect("filter");
                        assert!(yes);
                        yes
                    })
                });
            }
            g.finish();
            path(c, Some(&engine));
            return;
        }
    }
    g.finish();
    path(c, None);
}

/// The whole in-process path for one message and one destination: copy + decode, route
/// (event type, and the FTL filter when the engine is in), payload (as-is, or the seed template),
/// delivery id, request ready to write.
fn path<M: Measurement>(c: &mut Criterion<M>, engine: Option<&Engine>) {
    let mut g = c.benchmark_group("path");
    let prepared = Prepared::new();
    let wanted: [&str; 3] = ["click event", "purchase", "signup"];
    for (name, event) in inputs() {
        g.throughput(Throughput::Elements(1));
        let message = Bytes::from(event.clone());
        let mut dec = Decoder::new();
        let mut offset = 0i64;
        g.bench_with_input(BenchmarkId::new(name, "asis"), &message, |b, m| {
            b.iter(|| {
                offset += 1;
                let routed = dec
                    .with(black_box(m), |v| {
                        use simd_json::prelude::*;
                        let t = v
                            .get("event_type")
                            .and_then(|t| t.into_string())
                            .unwrap_or("");
                        wanted.contains(&t)
                    })
                    .expect("valid");
                assert!(routed);
                let id = delivery_id("amplitude-events", 3, offset, "all", "events.track");
                prepared.build(&id, "events.track", m.clone())
            })
        });
        if let Some(engine) = engine {
            let mut state = hookpipe::template::RenderState::default();
            let mut out = BytesMut::with_capacity(1024);
            g.bench_with_input(BenchmarkId::new(name, "seed_template"), &message, |b, m| {
                b.iter(|| {
                    offset += 1;
                    let rendered = dec
                        .with(black_box(m), |v| {
                            use simd_json::prelude::*;
                            let t = v
                                .get("event_type")
                                .and_then(|t| t.into_string())
                                .unwrap_or("");
                            if !wanted.contains(&t)
                                || !engine.filter.eval(&mut state, v).expect("filter")
                            {
                                return false;
                            }
                            out.clear();
                            engine
                                .template
                                .render(&mut state, v, &mut out)
                                .expect("render");
                            true
                        })
                        .expect("valid");
                    assert!(rendered && !out.is_empty());
                    let id = delivery_id("amplitude-events", 3, offset, "all", "events.track");
                    prepared.build(&id, "events.track", out.split().freeze())
                })
            });
        }
    }
    g.finish();
}

/// CPU time of the calling thread.
struct CpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid, exclusive pointer; the clock id
    // is a constant the kernel supports on every Linux since 2.6.12.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Formats CPU nanoseconds like criterion formats wall-clock durations.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if ns < 1e3 {
            (1.0, "ns cpu")
        } else if ns < 1e6 {
            (1e-3, "µs cpu")
        } else {
            (1e-6, "ms cpu")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per, unit) = match *throughput {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => (b as f64 / 1e6, "MB/cpu-s"),
            Throughput::Elements(e) => (e as f64 / 1e6, "M elem/cpu-s"),
        };
        let _ = ns;
        for v in values {
            *v = per * 1e9 / *v;
        }
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn all<M: Measurement>(mut c: Criterion<M>) {
    decode(&mut c);
    request(&mut c);
    render(&mut c);
    c.final_summary();
}

fn main() {
    if std::env::var_os("HOOKPIPE_BENCH_CPU_TIME").is_some_and(|v| v != "0") {
        all(Criterion::default()
            .with_measurement(CpuTime)
            .configure_from_args());
    } else {
        all(Criterion::default().configure_from_args());
    }
}
