//! The scenario driver: one command that runs a whole measurement and prints one summary.
//!
//! A scenario is a folder under `perf/scenarios/` holding `scenario.toml` (load, destinations and
//! what each should receive, sink faults) and a config template for hookpipe. A run:
//!
//! 1. creates fresh topics and starts the counting sink on 127.0.0.1;
//! 2. produces the backlog (N events) before the pipeline starts;
//! 3. starts the pipeline (hookpipe, or any command given with `--pipeline`) and samples its
//!    process tree's CPU and peak RSS from `/proc` until the sink has every expected delivery (or
//!    progress stops): that gives deliveries/s and CPU seconds per million deliveries;
//! 4. optionally produces at a fixed rate (default: half the measured drain rate) for a few
//!    seconds and measures end-to-end latency of those events alone;
//! 5. stops the pipeline with SIGTERM (bounded, then SIGKILL), reports lost and duplicate
//!    deliveries, and deletes its topics.

use crate::kafka::{self, LoadReport, LoadSpec};
use crate::procstat::{self, TreeStats};
use crate::sink::{Faults, IdSource, Sink};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `scenario.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line saying what the scenario measures.
    pub description: String,
    /// What is produced: `events` (Amplitude events) or `cohort` (one computed cohort change of
    /// `events` entering users, in chunks of `chunk_size`; each destination must receive every
    /// user once, counted by `user_id` with `id = "json:user_id"`).
    #[serde(default = "default_load")]
    pub load: String,
    /// Users per cohort chunk message (cohort load only).
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u64,
    /// Backlog size (overridable with `--events`): events, or cohort users.
    #[serde(default = "default_events")]
    pub events: u64,
    /// Partitions of the events topic.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Producer compression.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Seconds of the fixed-rate latency phase (0 = none).
    #[serde(default)]
    pub latency_seconds: f64,
    /// Rate of the latency phase in events/s (0 = half the measured drain rate).
    #[serde(default)]
    pub latency_rate: f64,
    /// How the sink identifies deliveries: `seq` (insert_id) or `header:NAME`.
    #[serde(default = "default_id")]
    pub id: String,
    /// hookpipe's config template, relative to the scenario folder.
    #[serde(default = "default_config")]
    pub config: String,
    /// Extra topics to create (placeholders allowed), e.g. identify and dead-letter topics.
    #[serde(default)]
    pub extra_topics: Vec<String>,
    /// Dead-letter topic (placeholders allowed) whose message count the summary reports.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Failure injection.
    #[serde(default)]
    pub sink: SinkFaults,
    /// The destinations and what each must receive.
    pub destinations: Vec<Destination>,
}

fn default_events() -> u64 {
    10_000_000
}
fn default_load() -> String {
    "events".into()
}
fn default_chunk_size() -> u64 {
    10_000
}
fn default_partitions() -> i32 {
    4
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_id() -> String {
    "header:x-hookpipe-delivery-id".into()
}
fn default_config() -> String {
    "hookpipe.toml".into()
}

/// `[sink]` of a scenario.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkFaults {
    /// Share of requests answered 500.
    #[serde(default)]
    pub fail_500: f64,
    /// Share answered 429.
    #[serde(default)]
    pub fail_429: f64,
    /// Share held for `stall_ms` before a 200.
    #[serde(default)]
    pub stall_share: f64,
    /// Stall length.
    #[serde(default)]
    pub stall_ms: u64,
}

/// One `[[destinations]]`: the sink path it posts to and which events it must receive. The
/// config template must give the pipeline the same filter (event types, plan).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Sink path, e.g. `/all` (the config template uses `{sink}/all`).
    pub path: String,
    /// Event types it receives; empty = all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// When set, only events whose `event_properties.plan` equals it.
    #[serde(default)]
    pub plan: Option<String>,
}

impl Destination {
    fn wants(&self, seq: u64) -> bool {
        (self.event_types.is_empty()
            || self
                .event_types
                .iter()
                .any(|t| t == crate::gen::event_type_of(seq)))
            && self
                .plan
                .as_deref()
                .is_none_or(|p| p == crate::gen::plan_of(seq))
    }
}

/// Command-line options of `hookpipe-perf run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario folder (holding scenario.toml) or a name under perf/scenarios/.
    pub scenario: String,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Backlog size (default: the scenario's, 10M for the backlog scenarios).
    #[arg(long)]
    pub events: Option<u64>,
    /// Pipeline command (run through `sh -c`), with placeholders {bootstrap} {topic} {group}
    /// {sink} {config} {index} {metrics_port} {scenario_dir} {work} {hookpipe}.
    #[arg(long, default_value = "{hookpipe} run --config {config}")]
    pub pipeline: String,
    /// Path of the hookpipe binary, for the {hookpipe} placeholder.
    #[arg(long, default_value = "target/release/hookpipe")]
    pub hookpipe: String,
    /// Pipeline processes in one consumer group (scale-out).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Override the sink's id source (`seq` or `header:NAME`), e.g. `seq` for pipelines that do
    /// not send hookpipe's delivery id.
    #[arg(long)]
    pub id: Option<String>,
    /// Override the latency phase length in seconds (0 = skip).
    #[arg(long)]
    pub latency_seconds: Option<f64>,
    /// Override the latency phase rate in events/s.
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Give up when no delivery arrives for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout: u64,
    /// Keep the topics after the run (default: delete them to give the disk back).
    #[arg(long)]
    pub keep_topics: bool,
    /// Append the summary as one JSON line to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A failed run, with what went wrong.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The 1-minute load average, to tell how busy the machine was around a measurement.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `nproc` and the CPU model, for the record.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs, {model}")
}

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

fn locate(scenario: &str) -> Result<PathBuf, RunError> {
    for dir in [
        PathBuf::from(scenario),
        Path::new("perf/scenarios").join(scenario),
    ] {
        if dir.join("scenario.toml").is_file() {
            return Ok(dir);
        }
    }
    Err(RunError(format!(
        "scenario {scenario:?}: no scenario.toml there nor in perf/scenarios/{scenario}/"
    )))
}

struct Pipeline {
    children: Vec<Child>,
    stats: TreeStats,
    /// Each process's `{metrics_port}`: scraped once a second when it serves Prometheus text.
    metrics_ports: Vec<u16>,
    last_scrape: Instant,
    /// Largest value seen per gauge (summed over processes) among [`WATCHED_GAUGES`].
    gauges_max: HashMap<&'static str, f64>,
    /// The last scrape of each process.
    scrapes: Vec<String>,
}

/// hookpipe gauges worth knowing the peak of when a run is slower than expected.
const WATCHED_GAUGES: &[&str] = &["hookpipe_partitions_paused", "hookpipe_in_flight"];

/// `GET /metrics` from 127.0.0.1:port, bounded by a 500 ms timeout; `None` when nothing answers.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    let _ = s.take(4 << 20).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let ok = head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200");
    ok.then(|| body.to_string())
}

/// Sum of every sample of `metric` (all label sets) in Prometheus text.
fn gauge_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Pipeline {
    /// Scrapes every process's metrics if a second has passed since the last scrape.
    fn observe(&mut self) {
        if self.last_scrape.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_scrape = Instant::now();
        let scrapes: Vec<String> = self
            .metrics_ports
            .iter()
            .map(|p| scrape(*p).unwrap_or_default())
            .collect();
        if scrapes.iter().all(String::is_empty) {
            // Not a pipeline with hookpipe's metrics endpoint.
            return;
        }
        for g in WATCHED_GAUGES {
            let v: f64 = scrapes.iter().map(|t| gauge_sum(t, g)).sum();
            let e = self.gauges_max.entry(g).or_insert(0.0);
            *e = e.max(v);
        }
        self.scrapes = scrapes;
    }

    fn exited(&mut self) -> Option<String> {
        for c in &mut self.children {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(format!("pipeline process {} exited early: {st}", c.id()));
            }
        }
        None
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns each exit status.
    async fn stop(&mut self, grace: Duration) -> Vec<String> {
        for c in &self.children {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        let deadline = Instant::now() + grace;
        let mut out = Vec::new();
        for c in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(st)) => {
                        out.push(st.to_string());
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        self.stats.sample();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => {
                        let _ = c.kill();
                        let st = c.wait().map(|s| s.to_string()).unwrap_or_default();
                        out.push(format!("{st} (SIGKILL after {} s)", grace.as_secs()));
                        break;
                    }
                }
            }
        }
        out
    }
}

/// Waits until every path has its expected unique count, sampling the pipeline. Returns the
/// instant the last one arrived, or an error when progress stops.
/// Waits until the sink has every expected delivery. `first` receives the pipeline's CPU
/// seconds and the deliveries seen at the first sample that saw any delivery, so the caller can
/// tell start-up CPU (connecting, joining groups, creating topics) from CPU per delivery.
async fn wait_for(
    sink: &Sink,
    expected: &HashMap<String, u64>,
    pipeline: &mut Pipeline,
    stall: Duration,
    first: &mut Option<(f64, u64)>,
) -> Result<(), String> {
    let want: u64 = expected.values().sum();
    let ticks = procstat::clock_ticks();
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        pipeline.stats.sample();
        pipeline.observe();
        let by_path = sink.unique_by_path();
        if first.is_none() {
            let got: u64 = by_path.values().sum();
            if got > 0 {
                *first = Some((pipeline.stats.cpu_seconds(ticks), got));
            }
        }
        let done = expected
            .iter()
            .all(|(p, n)| by_path.get(p).copied().unwrap_or(0) >= *n);
        if done {
            return Ok(());
        }
        let got: u64 = by_path.values().sum();
        if got != last {
            last = got;
            last_change = Instant::now();
        } else if last_change.elapsed() > stall {
            return Err(format!(
                "no progress for {} s: {got} of {want} unique deliveries",
                stall.as_secs()
            ));
        }
        if let Some(e) = pipeline.exited() {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expected_counts(dests: &[Destination], from: u64, to: u64) -> HashMap<String, u64> {
    let mut m: HashMap<String, u64> = dests.iter().map(|d| (d.path.clone(), 0)).collect();
    for seq in from..to {
        for d in dests {
            if d.wants(seq) {
                *m.get_mut(&d.path).expect("path") += 1;
            }
        }
    }
    m
}

async fn produce(spec: LoadSpec) -> Result<LoadReport, RunError> {
    let r = tokio::task::spawn_blocking(move || kafka::produce(&spec))
        .await
        .map_err(|e| RunError(format!("load generator thread: {e}")))?
        .map_err(RunError)?;
    if r.failed > 0 {
        return Err(RunError(format!(
            "load generator: {} events refused",
            r.failed
        )));
    }
    Ok(r)
}

/// Runs a scenario and prints its summary. The summary is also returned as JSON.
pub async fn run(args: RunArgs) -> Result<serde_json::Value, RunError> {
    let dir = locate(&args.scenario)?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("scenario")
        .to_string();
    let text = std::fs::read_to_string(dir.join("scenario.toml"))
        .map_err(|e| RunError(format!("{}: {e}", dir.join("scenario.toml").display())))?;
    let sc: Scenario = toml::from_str(&text)
        .map_err(|e| RunError(format!("{}: {e}", dir.join("scenario.toml").display())))?;
    let events = args.events.unwrap_or(sc.events);
    let cohort_chunk_size = match sc.load.as_str() {
        "events" => None,
        "cohort" => Some(sc.chunk_size.max(1)),
        other => {
            return Err(RunError(format!(
                "{}: load = {other:?}: expected \"events\" or \"cohort\"",
                dir.join("scenario.toml").display()
            )))
        }
    };
    let ids: IdSource = args
        .id
        .as_deref()
        .unwrap_or(&sc.id)
        .parse()
        .map_err(RunError)?;
    let run_id = format!("{:x}", crate::sink::now_ms() % 0xffff_ffff);
    let topic = format!("perf-{name}-{run_id}");
    let group = format!("perf-{name}-{run_id}");
    let work = std::env::temp_dir().join(format!("hookpipe-perf-{run_id}"));
    std::fs::create_dir_all(&work).map_err(|e| RunError(format!("{}: {e}", work.display())))?;
    let ticks = procstat::clock_ticks();
    let load_at_start = loadavg();

    let faults = Faults {
        fail_500: sc.sink.fail_500,
        fail_429: sc.sink.fail_429,
        stall_share: sc.sink.stall_share,
        stall: Duration::from_millis(sc.sink.stall_ms),
    };
    let sink = Sink::start("127.0.0.1:0".parse().expect("addr"), ids.clone(), faults)
        .await
        .map_err(|e| RunError(format!("starting sink: {e}")))?;
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut vars = vec![
        ("bootstrap", args.bootstrap.clone()),
        ("topic", topic.clone()),
        ("group", group.clone()),
        ("sink", sink.url()),
        ("scenario_dir", abs(&dir).display().to_string()),
        ("work", work.display().to_string()),
        (
            "hookpipe",
            abs(Path::new(&args.hookpipe)).display().to_string(),
        ),
    ];

    // Topics.
    kafka::create_topic(&args.bootstrap, &topic, sc.partitions)
        .await
        .map_err(RunError)?;
    let extra: Vec<String> = sc.extra_topics.iter().map(|t| fill(t, &vars)).collect();
    for t in &extra {
        kafka::create_topic(&args.bootstrap, t, sc.partitions)
            .await
            .map_err(RunError)?;
    }
    eprintln!(
        "perf: scenario {name}: topic {topic} ({} partitions), sink {}, work dir {}",
        sc.partitions,
        sink.url(),
        work.display()
    );

    // Backlog.
    let unit = if cohort_chunk_size.is_some() {
        "cohort users"
    } else {
        "events"
    };
    eprintln!("perf: producing {events} {unit} ...");
    let load = produce(LoadSpec {
        bootstrap: args.bootstrap.clone(),
        topic: topic.clone(),
        run: run_id.clone(),
        start_seq: 0,
        count: events,
        rate: None,
        compression: sc.compression.clone(),
        cohort_chunk_size,
    })
    .await?;
    eprintln!(
        "perf: produced {} messages in {:.1} s ({:.0}/s)",
        load.acked, load.seconds, load.events_per_second
    );

    // Pipeline.
    let config_template = std::fs::read_to_string(dir.join(&sc.config)).ok();
    let mut children = Vec::new();
    let mut commands = Vec::new();
    let mut metrics_ports = Vec::new();
    for index in 0..args.processes {
        let mut vars_i = vars.clone();
        vars_i.push(("index", index.to_string()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| RunError(format!("picking a metrics port: {e}")))?;
        vars_i.push(("metrics_port", port.to_string()));
        metrics_ports.push(port);
        let config = work.join(format!("config-{index}.toml"));
        if let Some(t) = &config_template {
            std::fs::write(&config, fill(t, &vars_i))
                .map_err(|e| RunError(format!("{}: {e}", config.display())))?;
        }
        vars_i.push(("config", config.display().to_string()));
        let cmd = fill(&args.pipeline, &vars_i);
        let log = std::fs::File::create(work.join(format!("pipeline-{index}.log")))
            .map_err(|e| RunError(format!("pipeline log: {e}")))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| RunError(e.to_string()))?)
            .stderr(log)
            .env("HOOKPIPE_PERF_BOOTSTRAP", &args.bootstrap)
            .env("HOOKPIPE_PERF_TOPIC", &topic)
            .env("HOOKPIPE_PERF_GROUP", &group)
            .env("HOOKPIPE_PERF_SINK", sink.url())
            .spawn()
            .map_err(|e| RunError(format!("starting pipeline `{cmd}`: {e}")))?;
        commands.push(cmd);
        children.push(child);
    }
    vars.push(("config", work.join("config-0.toml").display().to_string()));
    let started = Instant::now();
    let mut pipeline = Pipeline {
        stats: TreeStats::new(children.iter().map(Child::id).collect()),
        children,
        metrics_ports,
        last_scrape: Instant::now(),
        gauges_max: HashMap::new(),
        scrapes: Vec::new(),
    };
    eprintln!("perf: pipeline: {}", commands.join(" | "));

    let expected = match cohort_chunk_size {
        // Every destination gets every user of the change once.
        Some(_) => sc
            .destinations
            .iter()
            .map(|d| (d.path.clone(), events))
            .collect(),
        None => expected_counts(&sc.destinations, 0, events),
    };
    let total_expected: u64 = expected.values().sum();
    let mut first_sample = None;
    let drained = wait_for(
        &sink,
        &expected,
        &mut pipeline,
        Duration::from_secs(args.stall_timeout),
        &mut first_sample,
    )
    .await;
    let drain_wall = started.elapsed().as_secs_f64();
    pipeline.stats.sample();
    let drain_cpu = pipeline.stats.cpu_seconds(ticks);
    let first_last = sink.summary(&HashMap::new());
    let (first_ms, last_ms) = (
        first_last["first_ms"].as_u64().unwrap_or(0),
        first_last["last_ms"].as_u64().unwrap_or(0),
    );
    let delivered_during_drain = sink.unique(None);
    let active_s = (last_ms.saturating_sub(first_ms)) as f64 / 1000.0;
    let drain_rate = delivered_during_drain as f64 / active_s.max(1e-3);
    let events_rate = events as f64
        * (delivered_during_drain as f64 / total_expected.max(1) as f64)
        / active_s.max(1e-3);
    let mut problems = Vec::new();
    if let Err(e) = &drained {
        problems.push(format!("backlog drain: {e}"));
    }

    // Latency at a fixed rate.
    let latency_seconds = match cohort_chunk_size {
        Some(_) => 0.0,
        None => args.latency_seconds.unwrap_or(sc.latency_seconds),
    };
    let mut latency = json!(null);
    let mut latency_expected = HashMap::new();
    if drained.is_ok() && latency_seconds > 0.0 {
        let rate = args
            .latency_rate
            .filter(|r| *r > 0.0)
            .or(Some(sc.latency_rate).filter(|r| *r > 0.0))
            .unwrap_or((events_rate / 2.0).max(1.0));
        let count = (rate * latency_seconds).ceil() as u64;
        eprintln!("perf: latency phase: {count} events at {rate:.0}/s ...");
        sink.reset_latency();
        let cpu_before = pipeline.stats.cpu_seconds(ticks);
        let load2 = produce(LoadSpec {
            bootstrap: args.bootstrap.clone(),
            topic: topic.clone(),
            run: run_id.clone(),
            start_seq: events,
            count,
            rate: Some(rate),
            compression: sc.compression.clone(),
            cohort_chunk_size: None,
        })
        .await?;
        latency_expected = expected_counts(&sc.destinations, 0, events + count);
        let r = wait_for(
            &sink,
            &latency_expected,
            &mut pipeline,
            Duration::from_secs(args.stall_timeout),
            &mut Some((0.0, 0)),
        )
        .await;
        pipeline.stats.sample();
        let phase_deliveries = latency_expected.values().sum::<u64>() - total_expected;
        let latency_cpu =
            (pipeline.stats.cpu_seconds(ticks) - cpu_before) / phase_deliveries.max(1) as f64 * 1e6;
        if let Err(e) = r {
            problems.push(format!("latency phase: {e}"));
        }
        let s = sink.summary(&HashMap::new());
        latency = json!({
            "rate_per_s": rate,
            "achieved_rate_per_s": load2.events_per_second,
            "events": count,
            "p50_ms": s["latency_ms"]["p50"],
            "p99_ms": s["latency_ms"]["p99"],
            "p999_ms": s["latency_ms"]["p999"],
            "max_ms": s["latency_ms"]["max"],
            "samples": s["latency_ms"]["count"],
            "cpu_s_per_million_deliveries": latency_cpu,
        });
    }

    pipeline.last_scrape = Instant::now() - Duration::from_secs(2);
    pipeline.observe();
    for (i, text) in pipeline.scrapes.iter().enumerate() {
        let _ = std::fs::write(work.join(format!("metrics-{i}.txt")), text);
    }
    let exits = pipeline.stop(Duration::from_secs(40)).await;
    pipeline.stats.sample();
    let final_expected = if latency_expected.is_empty() {
        expected.clone()
    } else {
        latency_expected
    };
    let total_events = if latency.is_null() {
        events
    } else {
        events + latency["events"].as_u64().unwrap_or(0)
    };
    let s = sink.summary(&final_expected);
    let mut first_missing = serde_json::Map::new();
    if matches!(ids, IdSource::Seq(_)) && s["missing"].as_u64().unwrap_or(0) > 0 {
        for d in &sc.destinations {
            let m = sink.first_missing(&d.path, total_events, &|q| d.wants(q), 10);
            if !m.is_empty() {
                first_missing.insert(d.path.clone(), json!(m));
            }
        }
    }
    let dead_lettered = match &sc.dead_letter_topic {
        Some(t) => Some(
            kafka::count_messages(&args.bootstrap, &fill(t, &vars))
                .await
                .map_err(RunError)?,
        ),
        None => None,
    };
    if !args.keep_topics {
        for t in std::iter::once(&topic).chain(extra.iter()) {
            if let Err(e) = kafka::delete_topic(&args.bootstrap, t).await {
                eprintln!("perf: {e}");
            }
        }
    }

    let rss = pipeline.stats.peak_rss_mib();
    let mut date_utc = String::new();
    crate::gen::format_time(crate::sink::now_ms(), &mut date_utc);
    let summary = json!({
        "scenario": name,
        "description": sc.description,
        "date_utc": date_utc,
        "machine": machine(),
        "loadavg_start": load_at_start,
        "loadavg_end": loadavg(),
        "pipeline": commands,
        "processes": args.processes,
        "events": events,
        "load": sc.load,
        "partitions": sc.partitions,
        "id_source": args.id.as_deref().unwrap_or(&sc.id),
        "produced": {
            "events_per_s": load.events_per_second,
            "seconds": load.seconds,
            "mean_event_bytes": load.bytes as f64 / load.acked.max(1) as f64,
        },
        "drain": {
            "ok": drained.is_ok(),
            "expected_deliveries": total_expected,
            "unique_deliveries": delivered_during_drain,
            "seconds_first_to_last_delivery": active_s,
            "seconds_from_pipeline_start": drain_wall,
            "deliveries_per_s": drain_rate,
            "events_per_s": events_rate,
            "pipeline_cpu_s": drain_cpu,
            "cpu_s_per_million_deliveries": drain_cpu / delivered_during_drain.max(1) as f64 * 1e6,
            // Start-up excluded: CPU from the first sample that saw a delivery to the end,
            // over the deliveries made in between.
            "startup_cpu_s": first_sample.map(|(c, _)| c),
            "cpu_s_per_million_deliveries_after_first": first_sample.map(|(c, n)| {
                (drain_cpu - c) / delivered_during_drain.saturating_sub(n).max(1) as f64 * 1e6
            }),
        },
        "peak_rss_mib": rss,
        "pipeline_gauges_max": pipeline.gauges_max,
        "latency": latency,
        "missing_at_sink": s["missing"],
        "lost": s["missing"].as_u64().unwrap_or(0).saturating_sub(dead_lettered.unwrap_or(0)),
        "duplicates": s["duplicates"],
        "dead_lettered": dead_lettered,
        "first_missing_seqs": first_missing,
        "sink": {
            "answered_500": s["answered_500"],
            "answered_429": s["answered_429"],
            "stalled": s["stalled"],
            "paths": s["paths"],
        },
        "exit": exits,
        "problems": problems,
        "work_dir": work.display().to_string(),
    });
    print_summary(&summary);
    if let Some(out) = &args.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .map_err(|e| RunError(format!("{}: {e}", out.display())))?;
        writeln!(f, "{summary}").map_err(|e| RunError(format!("{}: {e}", out.display())))?;
    }
    Ok(summary)
}

fn print_summary(s: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let d = &s["drain"];
    println!(
        "== hookpipe-perf summary: scenario {} ==",
        s["scenario"].as_str().unwrap_or("")
    );
    println!("date (UTC)      {}", s["date_utc"].as_str().unwrap_or(""));
    println!("pipeline        {}", s["pipeline"]);
    println!(
        "machine         {}; load average {} at start, {} at end",
        s["machine"].as_str().unwrap_or(""),
        s["loadavg_start"].as_str().unwrap_or(""),
        s["loadavg_end"].as_str().unwrap_or("")
    );
    let (unit, message) = if s["load"] == "cohort" {
        ("cohort users", "chunk")
    } else {
        ("events", "event")
    };
    println!(
        "backlog         {} {unit}, {} partitions, produced at {:.0} {message}s/s (mean {:.0} B/{message})",
        s["events"],
        s["partitions"],
        f(&s["produced"]["events_per_s"]),
        f(&s["produced"]["mean_event_bytes"])
    );
    println!(
        "drain           {} of {} deliveries in {:.2} s (first to last delivery; {:.2} s from pipeline start)",
        d["unique_deliveries"],
        d["expected_deliveries"],
        f(&d["seconds_first_to_last_delivery"]),
        f(&d["seconds_from_pipeline_start"])
    );
    println!(
        "throughput      {:.0} deliveries/s, {:.0} {unit}/s",
        f(&d["deliveries_per_s"]),
        f(&d["events_per_s"])
    );
    println!(
        "pipeline CPU    {:.2} s during the drain = {:.2} CPU-s per million deliveries ({:.2} us/delivery)",
        f(&d["pipeline_cpu_s"]),
        f(&d["cpu_s_per_million_deliveries"]),
        f(&d["cpu_s_per_million_deliveries"])
    );
    if !d["cpu_s_per_million_deliveries_after_first"].is_null() {
        println!(
            "                {:.2} s of it before the first delivery (start-up); after it {:.2} us/delivery",
            f(&d["startup_cpu_s"]),
            f(&d["cpu_s_per_million_deliveries_after_first"])
        );
    }
    println!("peak RSS (MiB)  {}", s["peak_rss_mib"]);
    if s["pipeline_gauges_max"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        println!(
            "pipeline gauges {} (peak, from /metrics once a second)",
            s["pipeline_gauges_max"]
        );
    }
    if s["latency"].is_null() {
        println!("latency         (no fixed-rate phase)");
    } else {
        let l = &s["latency"];
        println!(
            "latency         at {:.0} events/s for {} events: p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms, max {:.1} ms ({} samples); CPU {:.2} s per million deliveries",
            f(&l["rate_per_s"]),
            l["events"],
            f(&l["p50_ms"]),
            f(&l["p99_ms"]),
            f(&l["p999_ms"]),
            f(&l["max_ms"]),
            l["samples"],
            f(&l["cpu_s_per_million_deliveries"])
        );
    }
    println!(
        "lost            {} ({} missing at the sink, {} of them dead-lettered)",
        s["lost"], s["missing_at_sink"], s["dead_lettered"]
    );
    println!("duplicates      {}", s["duplicates"]);
    println!(
        "sink faults     500s {}, 429s {}, stalls {}",
        s["sink"]["answered_500"], s["sink"]["answered_429"], s["sink"]["stalled"]
    );
    println!("pipeline exit   {}", s["exit"]);
    for p in s["problems"].as_array().into_iter().flatten() {
        println!("PROBLEM         {}", p.as_str().unwrap_or(""));
    }
    println!("work dir        {}", s["work_dir"].as_str().unwrap_or(""));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_gauge_over_label_sets() {
        let text = "# HELP hookpipe_in_flight x\nhookpipe_in_flight{destination=\"a\"} 3\nhookpipe_in_flight{destination=\"b\"} 4\nhookpipe_in_flight_other 9\nhookpipe_partitions_paused 2\n";
        assert_eq!(gauge_sum(text, "hookpipe_in_flight"), 7.0);
        assert_eq!(gauge_sum(text, "hookpipe_partitions_paused"), 2.0);
        assert_eq!(scrape(1), None, "nothing listens on port 1");
    }

    #[test]
    fn fills_placeholders_and_counts_expectations() {
        assert_eq!(
            fill(
                "{hookpipe} run --config {config}",
                &[("hookpipe", "h".into()), ("config", "c".into())]
            ),
            "h run --config c"
        );
        let dests = vec![
            Destination {
                path: "/all".into(),
                event_types: vec![],
                plan: None,
            },
            Destination {
                path: "/buys".into(),
                event_types: vec!["purchase".into()],
                plan: Some("pro".into()),
            },
        ];
        let m = expected_counts(&dests, 0, 10_000);
        assert_eq!(m["/all"], 10_000);
        let buys = (0..10_000u64)
            .filter(|&s| {
                crate::gen::event_type_of(s) == "purchase" && crate::gen::plan_of(s) == "pro"
            })
            .count() as u64;
        assert_eq!(m["/buys"], buys);
        assert!(buys > 30 && buys < 150, "{buys}");
    }

    #[test]
    fn every_shipped_scenario_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&root).unwrap().flatten() {
            let p = e.path().join("scenario.toml");
            let text = std::fs::read_to_string(&p).unwrap();
            let sc: Scenario =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!sc.destinations.is_empty(), "{}", p.display());
            sc.id.parse::<IdSource>().unwrap();
            assert!(
                ["events", "cohort"].contains(&sc.load.as_str()),
                "{}",
                p.display()
            );
            assert!(
                e.path().join(&sc.config).is_file(),
                "{}: config template",
                p.display()
            );
            n += 1;
        }
        assert!(n >= 5, "{n} scenarios");
    }
}
