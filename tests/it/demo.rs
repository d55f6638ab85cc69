//! What `scripts/demo` shows, pinned: `examples/demo.toml` passes `hookpipe check`, the sample
//! files are Amplitude export-format records, and the demo config, pointed at the test broker and
//! a test receiver instead of 127.0.0.1:9092 and :8787, delivers exactly the deliveries the demo
//! prints (per destination and kind), dead-letters the malformed line, and stops cleanly on
//! SIGTERM.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::http::Receiver;
use crate::support::kafka::{self, Outgoing};

/// Bound on every wait here.
const WAIT: Duration = Duration::from_secs(90);

/// The header secret `scripts/demo` exports.
const TOKEN: &str = "Bearer demo-token-not-a-real-secret";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn lines(file: &str) -> Vec<serde_json::Value> {
    let path = repo().join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}:{}: not JSON: {e}", i + 1))
        })
        .collect()
}

/// Amplitude's export time format: `2022-02-28 20:07:01.795`.
fn is_amplitude_time(v: &serde_json::Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    b.len() == 23
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn samples_are_amplitude_export_records() {
    let events = lines("examples/events.jsonl");
    assert_eq!(events.len(), 20);
    for (i, e) in events.iter().enumerate() {
        let at = format!("examples/events.jsonl:{}", i + 1);
        assert!(e["event_type"].is_string(), "{at}: event_type");
        assert!(
            is_amplitude_time(&e["event_time"]),
            "{at}: event_time {}",
            e["event_time"]
        );
        assert!(
            e["$insert_id"].is_string() && e["uuid"].is_string(),
            "{at}: ids"
        );
        assert!(
            e["user_id"].is_string() || e["device_id"].is_string(),
            "{at}: no user"
        );
        assert!(
            e["event_properties"].is_object() && e["user_properties"].is_object(),
            "{at}"
        );
        assert!(e["groups"].is_object(), "{at}: groups");
    }
    let types: HashSet<&str> = events
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert!(
        types.contains("purchase") && types.contains("$exposure"),
        "{types:?}"
    );
    let identifies = lines("examples/identify.jsonl");
    assert_eq!(identifies.len(), 4);
    for (i, u) in identifies.iter().enumerate() {
        let at = format!("examples/identify.jsonl:{}", i + 1);
        assert_eq!(u["event_type"], "$identify", "{at}");
        assert!(u["user_properties"].is_object(), "{at}: user_properties");
        assert!(is_amplitude_time(&u["event_time"]), "{at}: event_time");
    }
}

fn check(config: &Path, env: &[(&str, &str)]) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookpipe"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .expect("running hookpipe check");
    assert!(
        out.status.success(),
        "hookpipe check --config {} failed ({}):\n{}{}",
        config.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn example_configs_pass_hookpipe_check() {
    check(
        &repo().join("examples/demo.toml"),
        &[("DEMO_WEBHOOK_TOKEN", TOKEN)],
    );
    check(
        &repo().join("k8s/config/config.toml"),
        &[
            ("KAFKA_SASL_PASSWORD", "x"),
            ("BRAZE_AUTHORIZATION", "Bearer x"),
            (
                "HOOKPIPE_SIGNING_SECRET",
                "whsec_cmVwbGFjZS1tZS13aXRoLWEtcmVhbC1zZWNyZXQ=",
            ),
        ],
    );
}

/// Replaces `from` with `to` in `text`, failing if `from` is absent (the demo config changed and
/// this test must follow it).
fn swap(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "examples/demo.toml no longer contains {from:?}"
    );
    text.replace(from, to)
}

struct Running(Option<Child>, PathBuf);

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- hookpipe log ---\n{}", self.log());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_config_delivers_what_the_demo_shows() {
    kafka::broker();
    let events_topic = kafka::unique_topic("demo-events", 3).await;
    let identify_topic = kafka::unique_topic("demo-identify", 1).await;
    let dead_topic = kafka::unique_topic("demo-dead", 1).await;
    let receiver = Receiver::start().await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");

    let demo = std::fs::read_to_string(repo().join("examples/demo.toml")).expect("demo.toml");
    let mut config = swap(
        demo,
        "\"127.0.0.1:9092\"",
        &format!("\"{}\"", kafka::broker().bootstrap()),
    );
    config = swap(
        config,
        "\"hookpipe-demo\"",
        &format!("\"{}\"", kafka::unique_name("demo-group")),
    );
    config = swap(
        config,
        "[\"amplitude-events\"]",
        &format!("[\"{events_topic}\"]"),
    );
    config = swap(
        config,
        "[\"amplitude-identify\"]",
        &format!("[\"{identify_topic}\"]"),
    );
    config = swap(
        config,
        "\"hookpipe-dead-letter\"",
        &format!("\"{dead_topic}\""),
    );
    config = swap(
        config,
        "\"127.0.0.1:9464\"",
        &format!("\"127.0.0.1:{metrics_port}\""),
    );
    config = swap(config, "http://127.0.0.1:8787/", &receiver.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("demo.toml");
    std::fs::write(&path, config).expect("write config");
    let log = dir.path().join("hookpipe.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_hookpipe"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("DEMO_WEBHOOK_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .expect("spawning hookpipe run");
    let mut running = Running(Some(child), log);

    // Produce as scripts/demo does: keyed by user_id, else device_id; then one malformed line.
    let keyed = |v: &serde_json::Value| {
        let key = v["user_id"]
            .as_str()
            .or(v["device_id"].as_str())
            .unwrap_or_default();
        Outgoing::new(v.to_string()).key(key)
    };
    kafka::produce_many(
        &events_topic,
        lines("examples/events.jsonl").iter().map(keyed),
    )
    .await;
    kafka::produce_many(
        &identify_topic,
        lines("examples/identify.jsonl").iter().map(keyed),
    )
    .await;
    kafka::produce(&events_topic, None, b"this line is not JSON", &[]).await;

    // all-as-is: 20 events + a user for each of them + 4 identifies; purchases-braze: the 2
    // purchases by pro users + the same 24 users, templated; exposures: the 2 $exposure events.
    let expected = 72;
    let got = receiver.wait_for(expected, WAIT).await;
    assert_eq!(got.len(), expected, "deliveries; log:\n{}", running.log());
    // Nothing more arrives once everything is delivered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = receiver.requests();
    assert_eq!(got.len(), expected, "late extra deliveries");

    let mut by_route: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &got {
        let kind = r.header("x-hookpipe-type").unwrap_or("-").to_owned();
        *by_route.entry((r.path.clone(), kind)).or_default() += 1;
        assert_eq!(r.header("user-agent"), Some("Amplitude/Webhook/1.0"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let secret = r.header("authorization");
        if r.path == "/all" {
            assert_eq!(secret, Some(TOKEN), "the env header reaches /all");
        } else {
            assert_eq!(secret, None, "{} must not get /all's secret header", r.path);
        }
        r.json();
    }
    let want: BTreeMap<(String, String), usize> = [
        ("/all", "events.track", 18),
        ("/all", "experiments.exposure", 2),
        ("/all", "events.identify", 24),
        ("/braze/users/track", "events.track", 2),
        ("/braze/users/track", "events.identify", 24),
        ("/experiments", "experiments.exposure", 2),
    ]
    .into_iter()
    .map(|(p, k, n)| ((p.to_owned(), k.to_owned()), n))
    .collect();
    assert_eq!(by_route, want);
    let ids: HashSet<&str> = got
        .iter()
        .filter_map(|r| r.header("x-hookpipe-delivery-id"))
        .collect();
    assert_eq!(ids.len(), expected, "every delivery has its own id");

    // The seed event template, as FreeMarker renders it, for the pro users' purchases only.
    let mut braze: Vec<serde_json::Value> = got
        .iter()
        .filter(|r| {
            r.path == "/braze/users/track" && r.header("x-hookpipe-type") == Some("events.track")
        })
        .map(|r| r.json())
        .collect();
    braze.sort_by_key(|v| v["time"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        braze,
        vec![
            serde_json::json!({"external_id": "ada@example.com", "name": "purchase",
                "time": "2022-02-28 20:07:22.341", "properties": {"email": "ada@example.com"}}),
            serde_json::json!({"external_id": "linus@example.com", "name": "purchase",
                "time": "2022-02-28 20:08:10.322", "properties": {"email": "linus@example.com"}}),
        ]
    );

    let dead = kafka::read_all(&dead_topic, 1, WAIT).await;
    assert_eq!(dead.len(), 1, "the malformed line is dead-lettered");
    assert_eq!(
        dead[0].header("hookpipe.reason").as_deref(),
        Some("invalid_json")
    );
    assert_eq!(
        dead[0].header("hookpipe.source.topic").as_deref(),
        Some(events_topic.as_str())
    );

    // SIGTERM: drain, commit, exit 0.
    let pid = running.0.as_ref().expect("running").id();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = running
            .0
            .as_mut()
            .expect("running")
            .try_wait()
            .expect("wait")
        {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.0 = None;
    assert!(
        status.success(),
        "hookpipe exited with {status}; log:\n{}",
        running.log()
    );
}
