//! Batching end to end (`docs/configuration.md`, "Batching"): the real `hookpipe` binary, the
//! shared Kafka broker and real HTTP receivers on 127.0.0.1. Checks the exact number of requests
//! and their bodies, partition order within a batch, the filter per event, flushes on
//! `max_wait_ms` and on SIGTERM, offsets held by an unsettled batch, retries of failing batches
//! with lost = 0, and a batch template over `inputs` against the reference FreeMarker
//! (`ftl-oracle`). Every wait is bounded.

use crate::support::http::{Receiver, Recorded, Reply, Script};
use crate::support::kafka::{
    broker, committed_offsets, produce_many, read_all, unique_name, unique_topic, Outgoing,
};
use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Hard bound on every wait in this file.
const WAIT: Duration = Duration::from_secs(60);

/// A running `hookpipe run`, killed (SIGKILL) on drop; its log is printed if a test fails.
struct Hookpipe {
    child: Option<Child>,
    log: PathBuf,
    metrics: std::net::SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Hookpipe {
    /// Writes `config` (`{METRICS}` replaced by a free port) into `dir` and starts the binary.
    fn start(dir: &Path, config: &str) -> Hookpipe {
        Hookpipe::start_named(dir, "hookpipe", config)
    }

    /// [`Hookpipe::start`] with its own config and log file names (several processes, restarts).
    fn start_named(dir: &Path, name: &str, config: &str) -> Hookpipe {
        let port = free_port();
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config.replace("{METRICS}", &port.to_string())).unwrap();
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hookpipe"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("spawning hookpipe");
        Hookpipe {
            child: Some(child),
            log,
            metrics: ([127, 0, 0, 1], port).into(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no drain.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the process has read `n` messages.
    async fn wait_consumed(&self, n: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self
            .metric("hookpipe_messages_consumed_total")
            .await
            .unwrap_or(0.0)
            < n
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} messages not read within {WAIT:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let c = self.child.as_mut().expect("running");
            if let Some(s) = c.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hookpipe did not exit within {WAIT:?} of SIGTERM; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of the first `/metrics` sample line starting with `prefix`.
    async fn metric(&self, prefix: &str) -> Option<f64> {
        let addr = self.metrics;
        let body = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .await
        .ok()
        .flatten()?;
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Hookpipe {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- hookpipe log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Kafka, topics, fast commits, metrics on `{METRICS}`, retry tiers of this test's own.
fn head(group: &str, events: &str, dead_letter: &str, waits: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{}"
group_id = "{group}"
[kafka.settings]
"session.timeout.ms" = "10000"
"heartbeat.interval.ms" = "1000"
[topics]
events = ["{events}"]
dead_letter = "{dead_letter}"
[pipeline]
workers = 2
max_in_flight = 2000
max_in_flight_per_destination = 50
drain_timeout = "20s"
commit_interval = "200ms"
[telemetry]
listen = "127.0.0.1:{{METRICS}}"
[retry]
waits = {waits}
tier_prefix = "{tiers}"
tier_partitions = 1
"#,
        broker().bootstrap(),
        tiers = unique_name("bt-tier"),
    )
}

/// An Amplitude export-format event; even `i` are on plan "pro".
fn event(i: usize) -> String {
    let plan = if i % 2 == 0 { "pro" } else { "free" };
    let ty = if i % 3 == 0 { "purchase" } else { "click" };
    format!(
        r#"{{"event_type":"{ty}","user_id":"user-{i}","device_id":"device-{i}","event_time":"2022-02-28 20:07:01.795","insert_id":"insert-{i}","event_properties":{{"i":{i},"plan":"{plan}","price":{i}.5}},"user_properties":{{"email":"user{i}@example.com"}}}}"#
    )
}

/// `n` events to one partition, in order.
async fn produce(topic: &str, range: std::ops::Range<usize>) {
    produce_many(topic, range.map(|i| Outgoing::new(event(i)).partition(0))).await;
}

/// The JSON array hookpipe sends for these events: the bytes read from Kafka, comma-joined.
fn array(events: impl Iterator<Item = usize>) -> String {
    let items: Vec<String> = events.map(event).collect();
    format!("[{}]", items.join(","))
}

/// Waits until `receiver` answered 2xx to requests on `path` carrying `events` events in all.
async fn wait_events(
    receiver: &Receiver,
    path: &str,
    events: usize,
    hp: &Hookpipe,
) -> Vec<Recorded> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ok: Vec<Recorded> = receiver
            .requests()
            .into_iter()
            .filter(|r| r.path == path && r.succeeded())
            .collect();
        let n: usize = ok
            .iter()
            .map(|r| r.json().as_array().map_or(0, Vec::len))
            .sum();
        if n >= events {
            return ok;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: {n} of {events} events within {WAIT:?}; log:\n{}",
            hp.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `group` committed `offset` on partition 0 of `topic`.
async fn wait_committed(group: &str, topic: &str, offset: i64, hp: &Hookpipe) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = committed_offsets(group, topic)
            .await
            .get(&0)
            .copied()
            .flatten();
        if c == Some(offset) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {c:?}, expected {offset}; log:\n{}",
            hp.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `insert_id`s of every event of these requests, in request then array order.
fn insert_ids(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .flat_map(|r| {
            r.json()
                .as_array()
                .unwrap_or_else(|| panic!("request #{} is not a JSON array", r.index))
                .iter()
                .map(|e| e["insert_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_in_batches_of_100_are_exactly_10_requests_in_partition_order() {
    let events = unique_topic("bt-events", 1).await;
    let dlq = unique_topic("bt-dlq", 1).await;
    let group = unique_name("bt-group");
    let receiver = Receiver::start().await;
    // A backlog first, so batches fill from it.
    produce(&events, 0..1000).await;
    let config = format!(
        r#"{}
[[destinations]]
name = "full"
url = "{}"
[destinations.events]
batch = {{ max_events = 100, max_wait_ms = 60000 }}
[[destinations]]
name = "waits"
url = "{}"
[destinations.events]
batch = {{ max_events = 300, max_wait_ms = 5000 }}
[[destinations]]
name = "pro"
url = "{}"
[destinations.events]
filter = 'input.event_properties.plan == "pro"'
batch = {{ max_events = 100, max_wait_ms = 60000 }}
"#,
        head(&group, &events, &dlq, r#"["1s"]"#),
        receiver.url_for("/full"),
        receiver.url_for("/waits"),
        receiver.url_for("/pro"),
    );
    let dir = tempfile::tempdir().unwrap();
    let hp = Hookpipe::start(dir.path(), &config);

    let full = wait_events(&receiver, "/full", 1000, &hp).await;
    let waits = wait_events(&receiver, "/waits", 1000, &hp).await;
    let pro = wait_events(&receiver, "/pro", 500, &hp).await;
    wait_committed(&group, &events, 1000, &hp).await;
    // Nothing more comes: no duplicate, no late batch.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = receiver.requests();
    let on = |path: &str| all.iter().filter(|r| r.path == path).count();
    assert_eq!(
        (on("/full"), on("/waits"), on("/pro")),
        (10, 4, 5),
        "10 full batches; 3 full of 300 then the last 100 after max_wait_ms; 500 pro events in 5"
    );

    // Exactly the events as read, in partition order, 100 to a request, each request with its
    // own stable id and the `events.track` kind.
    let mut full = full;
    full.sort_by_key(|r| r.json()[0]["event_properties"]["i"].as_u64());
    for (k, r) in full.iter().enumerate() {
        assert_eq!(r.body_str(), array(k * 100..(k + 1) * 100), "batch {k}");
        assert_eq!(r.header("x-hookpipe-type"), Some("events.track"));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let ids: HashSet<&str> = full
        .iter()
        .map(|r| r.header("x-hookpipe-delivery-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 10);
    assert!(ids.iter().all(|id| id.len() == 36));

    let mut sizes: Vec<usize> = waits
        .iter()
        .map(|r| r.json().as_array().unwrap().len())
        .collect();
    sizes.sort();
    // max_wait_ms (5 s) is far longer than reading the backlog takes, so only the last batch
    // closes on it; on a machine too loaded for that, earlier batches close on it too.
    assert_eq!(
        sizes,
        vec![100, 300, 300, 300],
        "batch sizes; log:\n{}",
        hp.log()
    );
    let mut got = insert_ids(&waits);
    got.sort();
    let mut want: Vec<String> = (0..1000).map(|i| format!("insert-{i}")).collect();
    want.sort();
    assert_eq!(got, want, "every event exactly once");

    // The filter applies per event: only even events, each once, in order within each batch.
    for r in &pro {
        let is: Vec<u64> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_properties"]["i"].as_u64().unwrap())
            .collect();
        assert_eq!(is.len(), 100);
        assert!(is.iter().all(|i| i % 2 == 0), "{is:?}");
        assert!(
            is.windows(2).all(|w| w[0] + 2 == w[1]),
            "partition order: {is:?}"
        );
    }
    assert_eq!(
        insert_ids(&pro).into_iter().collect::<HashSet<_>>().len(),
        500
    );
    assert!(read_all(&dlq, 1, Duration::from_secs(1)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_batches_are_retried_with_their_id_and_nothing_is_lost() {
    let events = unique_topic("bt-fevents", 1).await;
    let dlq = unique_topic("bt-fdlq", 1).await;
    let group = unique_name("bt-fgroup");
    // The first 7 requests fail: whole first attempts (3 tries each) of some batches.
    let receiver = Receiver::with_script(Script::fail_first(7, Reply::Status(500))).await;
    produce(&events, 0..300).await;
    let config = format!(
        r#"{}
[[destinations]]
name = "flaky"
url = "{}"
[destinations.events]
batch = {{ max_events = 100, max_wait_ms = 60000 }}
"#,
        head(&group, &events, &dlq, r#"["1s", "1s", "1s"]"#),
        receiver.url_for("/flaky"),
    );
    let dir = tempfile::tempdir().unwrap();
    let hp = Hookpipe::start(dir.path(), &config);
    let ok = wait_events(&receiver, "/flaky", 300, &hp).await;
    wait_committed(&group, &events, 300, &hp).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let all = receiver.requests();
    let ok_now: Vec<&Recorded> = all.iter().filter(|r| r.succeeded()).collect();
    assert_eq!(ok_now.len(), 3, "three batches, each delivered once");
    let mut got = insert_ids(&ok);
    got.sort();
    let mut want: Vec<String> = (0..300).map(|i| format!("insert-{i}")).collect();
    want.sort();
    assert_eq!(got, want, "lost = 0, duplicates = 0");
    // A failed try carried the same id and the same body as the batch's delivered request.
    let delivered: HashMap<&str, &[u8]> = ok_now
        .iter()
        .map(|r| (r.header("x-hookpipe-delivery-id").unwrap(), &r.body[..]))
        .collect();
    let failed: Vec<&Recorded> = all.iter().filter(|r| !r.succeeded()).collect();
    assert_eq!(failed.len(), 7);
    for f in failed {
        let id = f.header("x-hookpipe-delivery-id").unwrap();
        assert_eq!(
            delivered.get(id).copied(),
            Some(&f.body[..]),
            "try #{}",
            f.index
        );
    }
    assert!(read_all(&dlq, 1, Duration::from_secs(1)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_batch_holds_back_the_commit_of_its_members() {
    let events = unique_topic("bt-sevents", 1).await;
    let dlq = unique_topic("bt-sdlq", 1).await;
    let group = unique_name("bt-sgroup");
    // The batch of events 0..100 is answered after STALL, the one of 100..200 at once.
    const STALL: Duration = Duration::from_secs(8);
    let receiver = Receiver::with_script(Script::new(|r| {
        if r.body_str().contains("\"insert-0\"") {
            Reply::Stall(STALL, Box::new(Reply::ok()))
        } else {
            Reply::ok()
        }
    }))
    .await;
    produce(&events, 0..200).await;
    let config = format!(
        r#"{}
[[destinations]]
name = "slow"
url = "{}"
request_timeout = "20s"
[destinations.events]
batch = {{ max_events = 100, max_wait_ms = 60000 }}
"#,
        head(&group, &events, &dlq, r#"["1s"]"#),
        receiver.url_for("/slow"),
    );
    let dir = tempfile::tempdir().unwrap();
    let hp = Hookpipe::start(dir.path(), &config);
    // The second batch is delivered (answered, so settled) while the first is unanswered...
    let delivered = r#"hookpipe_deliveries_total{destination="slow",outcome="delivered"}"#;
    let deadline = tokio::time::Instant::now() + WAIT;
    while hp.metric(delivered).await.unwrap_or(0.0) < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "log:\n{}", hp.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        receiver
            .requests()
            .iter()
            .any(|r| r.body_str().contains("\"insert-100\"") && r.succeeded()),
        "the delivered batch is the second one"
    );
    let stalled = loop {
        let first = receiver
            .requests()
            .into_iter()
            .find(|r| r.body_str().contains("\"insert-0\""));
        if let Some(r) = first {
            break r.at;
        }
        assert!(tokio::time::Instant::now() < deadline, "log:\n{}", hp.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // ...and stays uncommitted behind it (three commit intervals later).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let committed = committed_offsets(&group, &events)
        .await
        .get(&0)
        .copied()
        .flatten();
    assert!(
        stalled.elapsed() < STALL,
        "the machine was too slow to look while the first batch was unanswered"
    );
    assert!(
        committed.is_none_or(|c| c == 0),
        "committed {committed:?} while the batch of offsets 0..100 was unsettled"
    );
    // Once it is answered, everything commits.
    wait_events(&receiver, "/slow", 200, &hp).await;
    wait_committed(&group, &events, 200, &hp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_the_open_batch_and_commits_it() {
    let events = unique_topic("bt-tevents", 1).await;
    let dlq = unique_topic("bt-tdlq", 1).await;
    let group = unique_name("bt-tgroup");
    let receiver = Receiver::start().await;
    let config = format!(
        r#"{}
[[destinations]]
name = "open"
url = "{}"
[destinations.events]
batch = {{ max_events = 1000, max_wait_ms = 60000 }}
"#,
        head(&group, &events, &dlq, r#"["1s"]"#),
        receiver.url_for("/open"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut hp = Hookpipe::start(dir.path(), &config);
    produce(&events, 0..50).await;
    // Wait until all 50 were read (they wait in an open batch: not full, max_wait far away).
    hp.wait_consumed(50.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 0, "nothing sent before the batch closes");
    let status = hp.terminate().await;
    assert!(status.success(), "{status:?}; log:\n{}", hp.log());
    let reqs = receiver.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body_str(), array(0..50));
    assert_eq!(
        committed_offsets(&group, &events)
            .await
            .get(&0)
            .copied()
            .flatten(),
        Some(50)
    );
}

/// The reference renderer (`HOOKPIPE_FTL_ORACLE`, default `../shared/tools/ftl-oracle`).
fn oracle(template: &str, input: &str) -> Vec<u8> {
    let path = std::env::var_os("HOOKPIPE_FTL_ORACLE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/ftl-oracle/ftl-oracle"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "reference renderer not found at {}; set HOOKPIPE_FTL_ORACLE",
        path.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let (t, i) = (dir.path().join("t.ftl"), dir.path().join("input.json"));
    std::fs::write(&t, template).unwrap();
    std::fs::write(&i, input).unwrap();
    let out = Command::new(&path)
        .arg("--amplitude")
        .arg(&t)
        .arg(&i)
        .output()
        .expect("running ftl-oracle");
    assert!(
        out.status.success(),
        "ftl-oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A batch template; `VAR` is `inputs` for hookpipe and `input` for the oracle (which binds the
/// JSON document to `input`), so both engines run the same template text.
const BATCH_TEMPLATE: &str = r#"{
  "count": ${VAR?size},
  "purchases": ${VAR?filter(e -> e.event_type == "purchase")?size},
  "events": [
    <#list VAR as e>
    {
      "n": ${e?counter},
      "type": "${e.event_type}",
      "user": ${UtilClass.toJsonString(e.user_id)},
      "price": ${e.event_properties.price * 2},
      "when": "${e.event_time?datetime("yyyy-MM-dd HH:mm:ss.SSS")?iso_utc}",
      "props": ${UtilClass.toJsonString(e.event_properties)}
    }<#sep>,</#sep>
    </#list>
  ],
  "first": "${VAR[0].insert_id}", "missing": "${(input.x)!"none"}"
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_template_over_inputs_renders_exactly_what_freemarker_renders() {
    let events = unique_topic("bt-xevents", 1).await;
    let dlq = unique_topic("bt-xdlq", 1).await;
    let group = unique_name("bt-xgroup");
    let receiver = Receiver::start().await;
    produce(&events, 0..25).await;
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("batch.ftl");
    std::fs::write(&template, BATCH_TEMPLATE.replace("VAR", "inputs")).unwrap();
    let config = format!(
        r#"{}
[[destinations]]
name = "tpl"
url = "{}"
[destinations.events]
batch = {{ max_events = 10, max_wait_ms = 3000, template = "{}" }}
"#,
        head(&group, &events, &dlq, r#"["1s"]"#),
        receiver.url_for("/tpl"),
        template.display(),
    );
    let hp = Hookpipe::start(dir.path(), &config);
    let deadline = tokio::time::Instant::now() + WAIT;
    let reqs = loop {
        let reqs = receiver.requests();
        let n: u64 = reqs
            .iter()
            .map(|r| r.json()["count"].as_u64().unwrap())
            .sum();
        if n >= 25 {
            break reqs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} of 25; log:\n{}",
            hp.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reqs.len(), 3, "10 + 10 + 5 (after max_wait_ms)");
    // The oracle gets each batch's events as its `input`; `input` itself is unbound in ours,
    // so the oracle's template reads an unbound name there.
    let template = BATCH_TEMPLATE
        .replace("VAR", "input")
        .replace("(input.x)", "(nothing.x)");
    for (first, range) in [(0, 0..10), (10, 10..20), (20, 20..25)] {
        let expected = oracle(&template, &array(range));
        let got = reqs
            .iter()
            .find(|r| r.json()["first"] == format!("insert-{first}"))
            .unwrap_or_else(|| panic!("no batch starting at event {first}"));
        assert_eq!(
            got.body_str(),
            String::from_utf8(expected).unwrap(),
            "batch starting at {first}"
        );
        assert_eq!(
            got.json()["missing"],
            "none",
            "`input` is not bound in a batch template"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_users_batch_too_with_their_own_kind() {
    let events = unique_topic("bt-uevents", 1).await;
    let identify = unique_topic("bt-uidentify", 1).await;
    let dlq = unique_topic("bt-udlq", 1).await;
    let group = unique_name("bt-ugroup");
    let receiver = Receiver::start().await;
    let users: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"user_id":"id-{i}","user_properties":{{"n":{i}}}}}"#))
        .collect();
    produce_many(
        &identify,
        users.iter().map(|u| Outgoing::new(u.as_str()).partition(0)),
    )
    .await;
    let config = format!(
        r#"{}
[[destinations]]
name = "users"
url = "{}"
[destinations.users]
batch = {{ max_events = 5, max_wait_ms = 60000 }}
"#,
        head(&group, &events, &dlq, r#"["1s"]"#).replace(
            "dead_letter =",
            &format!("identify = [\"{identify}\"]\ndead_letter =")
        ),
        receiver.url_for("/users"),
    );
    let dir = tempfile::tempdir().unwrap();
    let hp = Hookpipe::start(dir.path(), &config);
    let reqs = wait_events(&receiver, "/users", 10, &hp).await;
    assert_eq!(reqs.len(), 2);
    let mut bodies: Vec<String> = reqs.iter().map(Recorded::body_str).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![
            format!("[{}]", users[..5].join(",")),
            format!("[{}]", users[5..].join(","))
        ]
    );
    assert!(reqs
        .iter()
        .all(|r| r.header("x-hookpipe-type") == Some("events.identify")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_the_same_full_batches_come_again_with_the_same_ids() {
    let events = unique_topic("bt-kevents", 1).await;
    let dlq = unique_topic("bt-kdlq", 1).await;
    let group = unique_name("bt-kgroup");
    // First life: every request hangs, so nothing settles before the kill.
    let receiver = Receiver::with_script(Script::always(Reply::Stall(
        Duration::from_secs(120),
        Box::new(Reply::ok()),
    )))
    .await;
    produce(&events, 0..300).await;
    let config = format!(
        r#"{}
[[destinations]]
name = "k"
url = "{}"
request_timeout = "100s"
[destinations.events]
batch = {{ max_events = 100, max_wait_ms = 60000 }}
"#,
        head(&group, &events, &dlq, r#"["1s"]"#),
        receiver.url_for("/k"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut first = Hookpipe::start_named(dir.path(), "first", &config);
    let seen = receiver.wait_for(3, WAIT).await;
    assert_eq!(seen.len(), 3, "log:\n{}", first.log());
    first.kill();
    let committed = committed_offsets(&group, &events)
        .await
        .get(&0)
        .copied()
        .flatten();
    assert!(
        committed.is_none_or(|c| c == 0),
        "nothing was settled, yet {committed:?} is committed"
    );
    let before: HashMap<String, String> = seen
        .iter()
        .map(|r| {
            (
                r.header("x-hookpipe-delivery-id").unwrap().to_string(),
                r.body_str(),
            )
        })
        .collect();
    // Second life: the same messages, the same full batches, the same ids and bodies.
    receiver.set_script(Script::always(Reply::ok()));
    let second = Hookpipe::start_named(dir.path(), "second", &config);
    wait_committed(&group, &events, 300, &second).await;
    let after: HashMap<String, String> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.succeeded())
        .map(|r| {
            (
                r.header("x-hookpipe-delivery-id").unwrap().to_string(),
                r.body_str(),
            )
        })
        .collect();
    assert_eq!(after.len(), 3, "log:\n{}", second.log());
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_with_open_batches_loses_nothing() {
    const N: usize = 400;
    let events = unique_topic("bt-bevents", 4).await;
    let dlq = unique_topic("bt-bdlq", 1).await;
    let group = unique_name("bt-bgroup");
    let receiver = Receiver::start().await;
    produce_many(
        &events,
        (0..N).map(|i| Outgoing::new(event(i)).partition((i % 4) as i32)),
    )
    .await;
    // Batches never fill (1,000) and wait 4 s: when the second member joins, the first holds
    // open batches of the partitions it is about to lose.
    let config = format!(
        r#"{}
[[destinations]]
name = "r"
url = "{}"
[destinations.events]
batch = {{ max_events = 1000, max_wait_ms = 4000 }}
"#,
        head(&group, &events, &dlq, r#"["1s"]"#),
        receiver.url_for("/r"),
    );
    let dir = tempfile::tempdir().unwrap();
    let a = Hookpipe::start_named(dir.path(), "a", &config);
    a.wait_consumed(N as f64).await;
    let b = Hookpipe::start_named(dir.path(), "b", &config);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut got: Vec<String> = insert_ids(
            &receiver
                .requests()
                .into_iter()
                .filter(|r| r.succeeded())
                .collect::<Vec<_>>(),
        );
        got.sort();
        got.dedup();
        if got.len() == N {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {N} events; logs:\n{}\n----\n{}",
            got.len(),
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        a.log().contains("partitions revoked"),
        "the first member saw a revoke:\n{}",
        a.log()
    );
    // Every partition ends committed at its end, whoever delivered it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = committed_offsets(&group, &events).await;
        let done = (0..4).all(|p| c.get(&p).copied().flatten() == Some((N / 4) as i64));
        if done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "committed {c:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batches_are_dead_lettered_whole_and_their_offsets_settle() {
    let events = unique_topic("bt-devents", 1).await;
    let dlq = unique_topic("bt-ddlq", 1).await;
    let group = unique_name("bt-dgroup");
    // "refused" answers 400 forever: two attempts (waits = ["1s"]), then a dead letter.
    let receiver = Receiver::with_script(Script::new(|r| {
        if r.path == "/refused" {
            Reply::Status(400)
        } else {
            Reply::ok()
        }
    }))
    .await;
    produce(&events, 0..20).await;
    let config = format!(
        r#"{}
[[destinations]]
name = "refused"
url = "{}"
[destinations.events]
batch = {{ max_events = 20, max_wait_ms = 60000 }}
[[destinations]]
name = "broken"
url = "{}"
[destinations.events]
batch = {{ max_events = 20, max_wait_ms = 60000, template_inline = '${{inputs[0].no_such_field}}' }}
"#,
        head(&group, &events, &dlq, r#"["1s"]"#),
        receiver.url_for("/refused"),
        receiver.url_for("/broken"),
    );
    let dir = tempfile::tempdir().unwrap();
    let hp = Hookpipe::start(dir.path(), &config);
    let dead = read_all(&dlq, 2, WAIT).await;
    assert_eq!(dead.len(), 2, "log:\n{}", hp.log());
    // Both batches settled (dead letters are settlements): the offsets commit.
    wait_committed(&group, &events, 20, &hp).await;
    let by_reason: HashMap<String, &crate::support::kafka::Record> = dead
        .iter()
        .map(|d| (d.header("hookpipe.reason").unwrap(), d))
        .collect();

    let exhausted = by_reason["attempts_exhausted"];
    assert_eq!(
        exhausted.header("hookpipe.destination").as_deref(),
        Some("refused")
    );
    assert_eq!(
        exhausted.header("hookpipe.source.offset").as_deref(),
        Some("0"),
        "a batch names its first member"
    );
    let letter =
        hookpipe::retry::DeadLetter::from_json(exhausted.payload.as_deref().unwrap()).unwrap();
    let parked = letter.delivery.expect("the parked batch");
    assert_eq!(
        &parked.body[..],
        array(0..20).as_bytes(),
        "the whole batch body"
    );
    assert_eq!(parked.attempts.len(), 2);
    let sent: HashSet<String> = receiver
        .requests()
        .iter()
        .filter(|r| r.path == "/refused")
        .map(|r| r.header("x-hookpipe-delivery-id").unwrap().to_string())
        .collect();
    assert_eq!(sent, HashSet::from([parked.delivery_id.clone()]));

    let failed = by_reason["render_failed"];
    assert_eq!(
        failed.header("hookpipe.destination").as_deref(),
        Some("broken")
    );
    let letter =
        hookpipe::retry::DeadLetter::from_json(failed.payload.as_deref().unwrap()).unwrap();
    assert!(letter.reason.contains("no_such_field"), "{}", letter.reason);
    assert_eq!(
        letter.raw.as_deref(),
        Some(array(0..20).as_bytes()),
        "the batch template's inputs"
    );
    assert!(receiver.requests().iter().all(|r| r.path != "/broken"));
}
