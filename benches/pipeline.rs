//! Per-stage benchmarks of the in-process path, from Kafka message bytes to an HTTP request ready
//! to write (issue 6): decode, filter, render, request building, and the whole path (as a
//! pipeline worker runs it), on a seed-sized event (~400 bytes) and larger ones to show how the
//! cost grows with event size.
//!
//! Every bench checks its result so it cannot measure a no-op. CI runs `cargo bench -- --test`,
//! which runs each bench once. Names follow `stage/input/implementation`, so hookpipe's figures
//! sit beside their references (serde_json for decode, minijinja for render).
//!
//! Time is wall-clock time by default (criterion's usual); with `HOOKPIPE_BENCH_CPU_TIME=1` it is
//! the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), which stays meaningful on a machine
//! shared with other work, where wall-clock samples include time spent descheduled.
//!
//! Templates, filters, routing and delivery ids are hookpipe's own (`config::load_str`,
//! `route::plan`, `pipeline::id::delivery_id`, `deliver::request::Prepared::build`), so these
//! benches measure the shipped code.

use bytes::{Bytes, BytesMut};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput};
use hookpipe::config::{Config, Destination};
use hookpipe::deliver::request::Prepared;
use hookpipe::deliver::{Kind, Request};
use hookpipe::pipeline::id::delivery_id;
use hookpipe::route::{self, Route, TopicKind};
use hookpipe::telemetry::{DestinationMetrics, Telemetry};
use hookpipe::template::RenderState;
use http_body_util::Full;
use hyper::body::Body as _;
use std::hint::black_box;
use std::path::Path;

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

/// A destination's unchanging request parts, built once, exactly as its delivery client does.
fn prepared(d: &Destination) -> Prepared {
    let endpoint = hookpipe::pipeline::endpoint(d);
    Prepared::new(&endpoint.url, &endpoint.headers).expect("valid destination")
}

/// The request of the first try of the first attempt, unsigned.
fn build(prepared: &Prepared, request: &Request) -> http::Request<Full<Bytes>> {
    prepared
        .build(request, 1, 1, None, 0)
        .expect("delivery ids are header values")
}

/// A validated config with these `[[destinations]]` (templates and filters compiled by the
/// engine, exactly as `hookpipe run` loads them).
fn config(destinations: &str) -> Config {
    let text = format!(
        "[kafka]\nbootstrap_servers = \"127.0.0.1:9\"\ngroup_id = \"bench\"\n\
         [topics]\nevents = [\"amplitude-events\"]\ndead_letter = \"dlq\"\n{destinations}"
    );
    hookpipe::config::load_str(&text, Path::new("."), &|_| Some("secret-token".into()))
        .unwrap_or_else(|e| panic!("bench config: {e}"))
}

/// One destination with two custom headers; `events` adds lines to its `[destinations.events]`.
fn one_destination(events: &str) -> String {
    format!(
        "[[destinations]]\nname = \"all\"\nurl = \"http://127.0.0.1:8080/all\"\n\
         headers = [{{ name = \"Authorization\", value_env = \"TOKEN\" }}, {{ name = \"X-Team\", value = \"growth\" }}]\n\
         [destinations.events]\nenabled = true\n{events}\n"
    )
}

fn seed_template_line() -> String {
    format!("template_inline = '''{SEED_TEMPLATE}'''")
}

/// The fan-out scenario's destinations (perf/scenarios/fanout-5), with "click event" added to the
/// commerce types so the seed event goes to three of the five.
const FANOUT: &str = r#"
[[destinations]]
name = "all"
url = "http://127.0.0.1:8080/all"
[destinations.events]
enabled = true

[[destinations]]
name = "commerce"
url = "http://127.0.0.1:8080/commerce"
[destinations.events]
enabled = true
event_types = ["add_to_cart", "checkout_started", "purchase", "click event"]

[[destinations]]
name = "pro"
url = "http://127.0.0.1:8080/pro"
[destinations.events]
enabled = true
filter = 'input.event_properties.plan == "pro"'

[[destinations]]
name = "enterprise-sessions"
url = "http://127.0.0.1:8080/enterprise-sessions"
[destinations.events]
enabled = true
event_types = ["session_start", "session_end"]
filter = 'input.event_properties.plan == "enterprise"'

[[destinations]]
name = "experiments"
url = "http://127.0.0.1:8080/experiments"
[destinations.events]
enabled = true
event_types = ["$exposure"]
"#;

fn request<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("request");
    let cfg = config(&one_destination(""));
    let prepared = prepared(&cfg.destinations[0]);
    let mut offset = 0i64;
    g.bench_function("delivery_id/hookpipe", |b| {
        b.iter(|| {
            offset += 1;
            let id = delivery_id("amplitude-events", 3, black_box(offset), "braze", "event");
            assert_eq!(id.len(), 36);
            id
        })
    });
    let request = Request {
        id: delivery_id("amplitude-events", 3, 42, "braze", "event"),
        kind: Kind::Track,
        body: Bytes::from_static(SEED_EVENT.as_bytes()),
    };
    g.bench_function("build/seed_400B", |b| {
        b.iter(|| {
            let r = build(&prepared, black_box(&request));
            assert_eq!(r.headers().len(), 8);
            r
        })
    });
    g.finish();
}

fn render<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("render");
    let env = {
        let mut env = minijinja::Environment::new();
        env.add_template("event", SEED_TEMPLATE_JINJA)
            .expect("jinja template");
        env
    };
    let cfg = config(&one_destination(&seed_template_line()));
    let template = cfg.destinations[0]
        .events
        .as_ref()
        .and_then(|e| e.template.as_ref())
        .expect("compiled seed template");
    let mut state = RenderState::default();
    let mut out = BytesMut::with_capacity(1024);
    for (name, event) in inputs() {
        let mut bytes = event.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut bytes).expect("valid");
        g.bench_function(BenchmarkId::new(name, "hookpipe"), |b| {
            // Decoded once outside the loop: this measures rendering alone.
            b.iter(|| {
                out.clear();
                template
                    .render(&mut state, black_box(tape.as_value()), &mut out)
                    .expect("render");
                assert!(out.windows(12).any(|w| w == b"some user id"));
                out.len()
            })
        });
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
    g.finish();

    let mut g = c.benchmark_group("filter");
    let cfg = config(&one_destination(&format!("filter = '{FILTER}'")));
    let filter = cfg.destinations[0]
        .events
        .as_ref()
        .and_then(|e| e.filter.as_ref())
        .expect("compiled filter");
    for (name, event) in inputs() {
        let mut bytes = event.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut bytes).expect("valid");
        g.bench_function(BenchmarkId::new(name, "hookpipe"), |b| {
            b.iter(|| {
                let yes = filter
                    .eval(&mut state, black_box(tape.as_value()))
                    .expect("filter");
                assert!(yes, "the seed event is on the pro plan");
                yes
            })
        });
    }
    g.finish();
}

/// What the in-process path needs per worker, reused across messages.
struct PathState {
    cfg: Config,
    metrics: Vec<DestinationMetrics>,
    prepared: Vec<Prepared>,
    decoder: Decoder,
    state: RenderState,
    routes: Vec<Route>,
    out: BytesMut,
}

impl PathState {
    fn new(destinations: &str) -> PathState {
        let cfg = config(destinations);
        let telemetry = Telemetry::new();
        let metrics = cfg
            .destinations
            .iter()
            .map(|d| telemetry.destination(&d.name))
            .collect();
        let prepared = cfg.destinations.iter().map(|d| prepared(d)).collect();
        PathState {
            cfg,
            metrics,
            prepared,
            decoder: Decoder::new(),
            state: RenderState::default(),
            routes: Vec::new(),
            out: BytesMut::with_capacity(4096),
        }
    }

    /// One message at `offset`, as a worker handles it: copy + decode into the reused tape,
    /// route (event types, FTL filters), payload (as-is or rendered), delivery id, request ready
    /// to write.
    fn handle(&mut self, message: &Bytes, offset: i64) -> Vec<http::Request<Full<Bytes>>> {
        let PathState {
            cfg,
            metrics,
            prepared,
            decoder,
            state,
            routes,
            out,
        } = self;
        let dests = &cfg.destinations;
        let bodies: Vec<(Route, Bytes)> = decoder
            .with(message, |v| {
                route::plan(TopicKind::Events, v, dests, metrics, state, routes).expect("routable");
                routes
                    .iter()
                    .map(|r| {
                        let tpl = dests[r.destination]
                            .events
                            .as_ref()
                            .and_then(|e| e.template.as_ref());
                        let body = match tpl {
                            None => message.clone(),
                            Some(t) => {
                                out.clear();
                                t.render(state, v, out).expect("render");
                                out.split().freeze()
                            }
                        };
                        (*r, body)
                    })
                    .collect()
            })
            .expect("valid JSON");
        bodies
            .into_iter()
            .map(|(r, body)| {
                let d = &dests[r.destination];
                let request = Request {
                    id: delivery_id("amplitude-events", 3, offset, &d.name, r.payload.as_str()),
                    kind: r.kind,
                    body,
                };
                build(&prepared[r.destination], &request)
            })
            .collect()
    }
}

/// The whole in-process path for one message: as-is to one destination, the seed template to
/// one destination, and the fan-out config (as-is to the destinations whose filters pass).
fn path<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("path");
    g.throughput(Throughput::Elements(1));
    let mut cases = [
        ("asis", PathState::new(&one_destination("")), 1),
        (
            "seed_template",
            PathState::new(&one_destination(&seed_template_line())),
            1,
        ),
        ("fanout_5", PathState::new(FANOUT), 3),
    ];
    for (name, event) in inputs() {
        let message = Bytes::from(event);
        for (case, st, routes) in cases.iter_mut() {
            let mut offset = 0i64;
            let routes = *routes;
            g.bench_with_input(BenchmarkId::new(name, *case), &message, |b, m| {
                b.iter(|| {
                    offset += 1;
                    let reqs = st.handle(black_box(m), offset);
                    assert_eq!(reqs.len(), routes);
                    assert!(reqs.iter().all(|r| r
                        .body()
                        .size_hint()
                        .exact()
                        .is_some_and(|n| n > 0)));
                    reqs
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
    path(&mut c);
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
