//! Per-user cohort membership events through the real thing: events produced to a real Kafka
//! topic with explicit CreateTime timestamps (so windows are deterministic), `hookpipe run` as a
//! child process, and real HTTP receivers. Windows of 2 and 4 seconds, in the past, so they
//! close as soon as hookpipe has read them (by later messages' timestamps, or on the wall clock
//! once the partition is read to its end).
//!
//! Also here: cohort batches overflowing to the overflow tier when their destination is
//! saturated, attempted there with the cohort request timeout.

use crate::support::http::{Receiver, Recorded, Reply, Script};
use crate::support::kafka::{
    broker, committed_offsets, end_offsets, producer, read_all, unique_name, unique_topic,
};
use hookpipe::cohort::window::window_change_id;
use rdkafka::producer::FutureRecord;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Hard bound on every wait in this module.
const WAIT: Duration = Duration::from_secs(90);

/// A running `hookpipe run`, SIGKILLed on drop; its log is printed when a test fails.
struct Hookpipe {
    child: Option<Child>,
    log: PathBuf,
}

impl Hookpipe {
    fn start(dir: &Path, name: &str, config: &str) -> Hookpipe {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hookpipe"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info,hookpipe::pipeline::membership=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawning hookpipe");
        Hookpipe {
            child: Some(child),
            log,
        }
    }

    /// SIGKILL, no drain.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Hookpipe {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- hookpipe log ---\n{}", self.log());
        }
        self.kill();
    }
}

/// One membership event and its Kafka timestamp (its `time` is the same instant).
struct Event {
    ts: i64,
    payload: Vec<u8>,
}

fn event(cohort: &str, user: &str, in_cohort: bool, ts: i64) -> Event {
    let payload = serde_json::to_vec(&serde_json::json!({
        "cohort_id": cohort, "cohort_name": format!("Cohort {cohort}"), "user_id": user,
        "in_cohort": in_cohort, "time": ts,
    }))
    .unwrap();
    Event { ts, payload }
}

/// Produces the events, in order, to partition 0 with their timestamps as CreateTime.
async fn produce(topic: &str, events: &[Event]) {
    let mut pending = Vec::new();
    for e in events {
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
            .partition(0)
            .payload(e.payload.as_slice())
            .timestamp(e.ts);
        match producer().send_result(record) {
            Ok(f) => pending.push(f),
            Err((err, _)) => panic!("producing to {topic}: {err}"),
        }
    }
    for (i, f) in pending.into_iter().enumerate() {
        let acked = tokio::time::timeout(WAIT, f).await;
        assert!(
            matches!(acked, Ok(Ok(Ok(_)))),
            "message {i} to {topic} not acknowledged: {acked:?}"
        );
    }
}

/// The start of a window-aligned span (a multiple of 4 s) about 200 s ago: windows that the
/// wall clock has long passed.
fn base_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now / 4000 - 50) * 4000
}

/// The config: one membership topic, retry tiers off (failures go to the dead-letter topic),
/// end offsets learned every 500 ms, then `destinations`.
fn config(group: &str, topic: &str, dead_letter: &str, destinations: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
[kafka.settings]
"statistics.interval.ms" = "500"
"session.timeout.ms" = "10000"
"heartbeat.interval.ms" = "1000"
[topics]
cohort_memberships = ["{topic}"]
dead_letter = "{dead_letter}"
[pipeline]
workers = 2
commit_interval = "200ms"
drain_timeout = "5s"
[telemetry]
listen = "127.0.0.1:0"
[retry]
enabled = false
{destinations}
"#,
        bootstrap = broker().bootstrap(),
    )
}

/// What a receiver got, by message id: (in_cohort, user ids, computed_time, cohort id) of the
/// first body, checking that every repeat is byte-identical and carries the same delivery id.
type Summary = BTreeMap<String, (bool, Vec<String>, String, String)>;

fn summarize(requests: &[Recorded]) -> Summary {
    let mut bodies: BTreeMap<String, (Vec<u8>, String)> = BTreeMap::new();
    let mut out = Summary::new();
    for r in requests {
        assert_eq!(r.header("x-hookpipe-type"), Some("cohorts.computed"));
        let v = r.json();
        let id = v["message_id"].as_str().unwrap().to_owned();
        let delivery = r.header("x-hookpipe-delivery-id").unwrap().to_owned();
        let first = bodies
            .entry(id.clone())
            .or_insert_with(|| (r.body.to_vec(), delivery.clone()));
        assert_eq!(first.0, r.body.to_vec(), "{id}: a repeat differs");
        assert_eq!(first.1, delivery, "{id}: a repeat has another delivery id");
        let users = v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_owned())
            .collect();
        out.insert(
            id,
            (
                v["in_cohort"].as_bool().unwrap(),
                users,
                v["computed_time"].as_str().unwrap().to_owned(),
                v["cohort_id"].as_str().unwrap().to_owned(),
            ),
        );
    }
    out
}

fn expect(
    want: &mut Summary,
    change: &str,
    dir: &str,
    index: usize,
    users: &[&str],
    end_ms: i64,
    cohort: &str,
) {
    want.insert(
        format!("{change}::{dir}::{index}"),
        (
            dir == "enter",
            users.iter().map(|u| u.to_string()).collect(),
            (end_ms / 1000).to_string(),
            cohort.to_string(),
        ),
    );
}

/// Waits (bounded) until the group has committed the end of every partition of `topic`.
async fn wait_committed_to_end(group: &str, topic: &str) {
    let end = end_offsets(topic).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let committed = committed_offsets(group, topic).await;
        let done = end.iter().all(|(p, e)| committed.get(p) == Some(&Some(*e)));
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {committed:?}, end {end:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_send_exactly_the_net_changes_in_batches_with_window_ids() {
    broker();
    let topic = unique_topic("mem-events", 1).await;
    let dead_letter = unique_topic("mem-dead", 1).await;
    let group = unique_name("mem-group");
    let rt = Receiver::start().await;
    let wide = Receiver::start().await;
    let b = base_ms();
    let mut events = vec![
        // Window A = [b, b+2s); the 4 s window is [b, b+4s).
        event("c1", "alice", true, b + 10),
        event("c1", "bob", true, b + 20),
        event("c1", "bob", false, b + 30), // entered, left: nothing in A
        event("c1", "carol", false, b + 40),
        event("c1", "carol", true, b + 50), // left, re-entered: nothing
        event("c1", "dave", true, b + 60),
        event("c1", "dave", false, b + 70),
        event("c1", "dave", true, b + 80), // in, out, in: entered
        event("c1", "erin", false, b + 90),
        event("c1", "frank", true, b + 100),
    ];
    events.push(Event {
        ts: b + 105,
        payload: br#"{"cohort_id":"c1","user_id":"nobody"}"#.to_vec(),
    });
    events.extend([
        event("c1", "gina", true, b + 110),
        event("c1", "hank", false, b + 120),
        event("c2", "ivan", true, b + 130),
        // Window B = [b+2s, b+4s). Bob's event closes A (its timestamp is past A's end)...
        event("c1", "bob", true, b + 2010),
        // ...so this one, timestamped inside A, is late: dead-lettered, in no window.
        event("c1", "jack", true, b + 1500),
        event("c1", "hank", true, b + 2030), // left in A, entered in B
    ]);
    produce(&topic, &events).await;
    let destinations = format!(
        r#"
[[destinations]]
name = "rt"
url = "{rt}"
[destinations.cohorts]
window = "2s"
batch_size = 3
[[destinations]]
name = "wide"
url = "{wide}"
[destinations.cohorts]
window = "4s"
"#,
        rt = rt.url(),
        wide = wide.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let hp = Hookpipe::start(
        dir.path(),
        "hp",
        &config(&group, &topic, &dead_letter, &destinations),
    );

    let scope = format!("{topic}/0");
    let a1 = window_change_id(&scope, "c1", 2000, b);
    let a2 = window_change_id(&scope, "c2", 2000, b);
    let b1 = window_change_id(&scope, "c1", 2000, b + 2000);
    let mut want_rt = Summary::new();
    expect(
        &mut want_rt,
        &a1,
        "enter",
        0,
        &["alice", "dave", "frank"],
        b + 2000,
        "c1",
    );
    expect(&mut want_rt, &a1, "enter", 1, &["gina"], b + 2000, "c1");
    expect(
        &mut want_rt,
        &a1,
        "exit",
        0,
        &["erin", "hank"],
        b + 2000,
        "c1",
    );
    expect(&mut want_rt, &a2, "enter", 0, &["ivan"], b + 2000, "c2");
    expect(
        &mut want_rt,
        &b1,
        "enter",
        0,
        &["bob", "hank"],
        b + 4000,
        "c1",
    );
    let w1 = window_change_id(&scope, "c1", 4000, b);
    let w2 = window_change_id(&scope, "c2", 4000, b);
    let mut want_wide = Summary::new();
    let entered = ["alice", "bob", "dave", "frank", "gina"];
    expect(&mut want_wide, &w1, "enter", 0, &entered, b + 4000, "c1");
    expect(&mut want_wide, &w1, "exit", 0, &["erin"], b + 4000, "c1");
    expect(&mut want_wide, &w2, "enter", 0, &["ivan"], b + 4000, "c2");

    rt.wait_for_successes(want_rt.len(), WAIT).await;
    wide.wait_for_successes(want_wide.len(), WAIT).await;
    let dead = read_all(&dead_letter, 2, WAIT).await;
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|r| r.header("hookpipe.reason").unwrap_or_default())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["invalid_cohort_membership", "late_cohort_membership"],
        "{}",
        hp.log()
    );
    let late = dead
        .iter()
        .find(|r| r.header("hookpipe.reason").as_deref() == Some("late_cohort_membership"))
        .unwrap();
    assert!(
        late.payload_str().contains("after its window closed"),
        "{}",
        late.payload_str()
    );
    // Every offset is committed once every window of the 4 s range is closed and settled.
    wait_committed_to_end(&group, &topic).await;
    // Nothing more arrives: each batch exactly once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rt.count(), want_rt.len(), "{}", hp.log());
    assert_eq!(wide.count(), want_wide.len(), "{}", hp.log());
    assert_eq!(summarize(&rt.requests()), want_rt);
    assert_eq!(summarize(&wide.requests()), want_wide);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_a_window_settles_then_restart_sends_the_same_batches() {
    broker();
    let topic = unique_topic("mem-kill", 1).await;
    let dead_letter = unique_topic("mem-kill-dead", 1).await;
    let group = unique_name("mem-kill-group");
    // A receiver that hangs: the window's batches stay in flight, so its offsets stay held.
    let rx = Receiver::with_script(Script::always(Reply::Stall(
        WAIT * 2,
        Box::new(Reply::ok()),
    )))
    .await;
    let b = base_ms();
    let mut events = Vec::new();
    for (i, user) in ["u5", "u1", "u4", "u2", "u3", "u6", "u7"]
        .iter()
        .enumerate()
    {
        let ts = b + 10 * i as i64;
        // u6 and u7 leave; u3 enters and leaves (nothing); the rest enter.
        events.push(event("c", user, !matches!(*user, "u6" | "u7"), ts));
        if *user == "u3" {
            events.push(event("c", user, false, ts + 1));
        }
    }
    produce(&topic, &events).await;
    let destinations = format!(
        r#"
[[destinations]]
name = "rt"
url = "{}"
[destinations.cohorts]
window = "2s"
batch_size = 2
request_timeout = "60s"
"#,
        rx.url()
    );
    let config = config(&group, &topic, &dead_letter, &destinations);
    let dir = tempfile::tempdir().unwrap();
    let change = window_change_id(&format!("{topic}/0"), "c", 2000, b);
    let mut want = Summary::new();
    expect(&mut want, &change, "enter", 0, &["u1", "u2"], b + 2000, "c");
    expect(&mut want, &change, "enter", 1, &["u4", "u5"], b + 2000, "c");
    expect(&mut want, &change, "exit", 0, &["u6", "u7"], b + 2000, "c");

    let mut hp = Hookpipe::start(dir.path(), "first", &config);
    let first = rx.wait_for(want.len(), WAIT).await;
    assert_eq!(first.len(), want.len(), "{}", hp.log());
    let before = summarize(&first);
    assert_eq!(before, want);
    // In flight, so not committed past the window's first event.
    let committed = committed_offsets(&group, &topic).await;
    assert!(
        matches!(committed.get(&0), None | Some(None) | Some(Some(0))),
        "{committed:?}"
    );
    hp.kill();

    rx.set_script(Script::always(Reply::ok()));
    let _hp = Hookpipe::start(dir.path(), "second", &config);
    let all = rx.wait_for(2 * want.len(), WAIT).await;
    assert_eq!(all.len(), 2 * want.len());
    // The same batches again, byte for byte, with the same delivery ids (summarize checks).
    let again = summarize(&all[want.len()..]);
    assert_eq!(again, want);
    assert_eq!(summarize(&all), want);
    wait_committed_to_end(&group, &topic).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 2 * want.len());
}

/// Windows still open when a second process joins the group: the eager rebalance revokes every
/// partition of the first process, which drops its open windows and their holds; each
/// partition's new owner re-reads it from the committed offset (the held first event) and
/// closes the window on the wall clock. Every window is sent exactly once, with all its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_while_windows_are_open_sends_each_window_once_from_its_new_owner() {
    const LENGTH: i64 = 20_000;
    broker();
    let topic = unique_topic("mem-rebal", 2).await;
    let dead_letter = unique_topic("mem-rebal-dead", 1).await;
    let group = unique_name("mem-rebal-group");
    let rx = Receiver::start().await;
    // A window starting 2 to 22 s from now: open until well after the rebalance.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start = (now + 2_000).div_euclid(LENGTH) * LENGTH + LENGTH;
    let partition_events = [
        (
            0,
            vec![
                ("c", "a", true),
                ("c", "b", true),
                ("c", "c", false),
                ("c", "b", false),
            ],
        ),
        (1, vec![("d", "x", true), ("d", "y", true)]),
    ];
    let mut pending = Vec::new();
    let mut payloads = Vec::new();
    for (partition, events) in &partition_events {
        for (i, (cohort, user, in_cohort)) in events.iter().enumerate() {
            let e = event(cohort, user, *in_cohort, start + 10 * i as i64);
            payloads.push((*partition, e));
        }
    }
    for (partition, e) in &payloads {
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic)
            .partition(*partition)
            .payload(e.payload.as_slice())
            .timestamp(e.ts);
        match producer().send_result(record) {
            Ok(f) => pending.push(f),
            Err((err, _)) => panic!("producing to {topic}: {err}"),
        }
    }
    for f in pending {
        let acked = tokio::time::timeout(WAIT, f).await;
        assert!(matches!(acked, Ok(Ok(Ok(_)))), "{acked:?}");
    }
    let destinations = format!(
        "[[destinations]]\nname = \"rt\"\nurl = \"{}\"\n[destinations.cohorts]\nwindow = \"20s\"\n",
        rx.url()
    );
    let config = config(&group, &topic, &dead_letter, &destinations);
    let dir = tempfile::tempdir().unwrap();
    let first = Hookpipe::start(dir.path(), "first", &config);
    // The first process has read both partitions' first events when it commits their holds.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let committed = committed_offsets(&group, &topic).await;
        if (0..2).all(|p| committed.get(&p) == Some(&Some(0))) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{committed:?}; {}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rx.count(), 0, "a window closed early");
    let second = Hookpipe::start(dir.path(), "second", &config);

    let mut want = Summary::new();
    let end = start + LENGTH;
    let c = window_change_id(&format!("{topic}/0"), "c", LENGTH, start);
    let d = window_change_id(&format!("{topic}/1"), "d", LENGTH, start);
    expect(&mut want, &c, "enter", 0, &["a"], end, "c");
    expect(&mut want, &c, "exit", 0, &["c"], end, "c");
    expect(&mut want, &d, "enter", 0, &["x", "y"], end, "d");
    let got = rx
        .wait_for(want.len(), WAIT + Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), want.len(), "{}\n{}", first.log(), second.log());
    wait_committed_to_end(&group, &topic).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), want.len(), "a window was sent twice");
    assert_eq!(summarize(&rx.requests()), want);
    assert!(
        first.log().contains("partitions revoked"),
        "no rebalance happened: {}",
        first.log()
    );
    assert!(
        first.log().contains("open windows dropped"),
        "the revoked partitions' windows were not dropped: {}",
        first.log()
    );
}

/// A destination with one permit whose receiver takes 2 s per request: the chunk's batches find
/// no permit and overflow to the overflow tier, whose consumer attempts them with the cohort
/// request timeout (5 s), not the destination's own (1 s, which would fail every try).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_cohort_batches_overflow_and_keep_the_cohort_timeout() {
    broker();
    let topic = unique_topic("mem-ovf-changes", 1).await;
    let dead_letter = unique_topic("mem-ovf-dead", 1).await;
    let group = unique_name("mem-ovf-group");
    let tiers = unique_name("mem-ovf-tier");
    let rx = Receiver::with_script(Script::always(Reply::Stall(
        Duration::from_secs(2),
        Box::new(Reply::ok()),
    )))
    .await;
    let chunk = serde_json::json!({
        "cohort_id": "c", "cohort_name": "C", "computed_time": "1700000000",
        "change_id": "ovf", "entered": [{"user_id": "a"}, {"user_id": "b"}, {"user_id": "c"},
        {"user_id": "d"}],
    });
    crate::support::kafka::produce_many(
        &topic,
        [crate::support::kafka::Outgoing::new(
            serde_json::to_vec(&chunk).unwrap(),
        )],
    )
    .await;
    let config = format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
[topics]
cohort_changes = ["{topic}"]
dead_letter = "{dead_letter}"
[pipeline]
workers = 1
max_in_flight_per_destination = 1
overflow_after = "20ms"
commit_interval = "200ms"
[telemetry]
listen = "127.0.0.1:0"
[retry]
waits = ["1s"]
tier_prefix = "{tiers}"
tier_partitions = 1
[[destinations]]
name = "slow"
url = "{url}"
request_timeout = "1s"
[destinations.cohorts]
batch_size = 1
request_timeout = "5s"
"#,
        bootstrap = broker().bootstrap(),
        url = rx.url(),
    );
    let dir = tempfile::tempdir().unwrap();
    let hp = Hookpipe::start(dir.path(), "hp", &config);
    rx.wait_for_successes(4, WAIT).await;
    let overflowed = read_all(&format!("{tiers}-overflow"), 1, WAIT).await;
    assert!(!overflowed.is_empty(), "nothing overflowed; {}", hp.log());
    assert!(
        overflowed
            .iter()
            .all(|r| r.json()["kind"] == "cohorts.computed"),
        "{:?}",
        overflowed
            .iter()
            .map(|r| r.payload_str())
            .collect::<Vec<_>>()
    );
    wait_committed_to_end(&group, &topic).await;
    // One try per batch: none timed out at 1 s; nothing dead-lettered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = summarize(&rx.requests());
    assert_eq!(rx.count(), 4, "{}", hp.log());
    let ids: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            "ovf::enter::0",
            "ovf::enter::1",
            "ovf::enter::2",
            "ovf::enter::3"
        ]
    );
    assert!(read_all(&dead_letter, 1, Duration::from_secs(2))
        .await
        .is_empty());
}

/// `topics.cohort_memberships` is an input topic like the others: it alone is enough, and a
/// topic may not be both a change topic and a membership topic.
#[test]
fn membership_topics_load_with_the_config() {
    use hookpipe::config::{load_str, StrError};
    let text = |topics: &str| {
        format!(
            "[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n[topics]\n{topics}\ndead_letter = \
             \"dead\"\n[[destinations]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/\"\n\
             [destinations.cohorts]\nwindow = \"15m\"\n"
        )
    };
    let ok = load_str(
        &text("cohort_memberships = [\"m\"]"),
        Path::new("."),
        &|_| None,
    )
    .unwrap();
    assert_eq!(ok.topics.cohort_memberships, ["m"]);
    let route = ok.destinations[0].cohorts.as_ref().unwrap();
    assert_eq!(route.window.length_ms(), 900_000);
    let err = match load_str(
        &text("cohort_changes = [\"m\"]\ncohort_memberships = [\"m\"]"),
        Path::new("."),
        &|_| None,
    ) {
        Err(StrError::Invalid(e)) => e.to_string(),
        other => panic!("expected a validation error, got {other:?}"),
    };
    assert!(
        err.contains("topics.cohort_memberships[0]: topic \"m\" is listed twice"),
        "{err}"
    );
}
