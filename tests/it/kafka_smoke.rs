//! Proves the real broker and the Kafka helpers work end to end: 1,000 keyed messages with
//! headers go into a 3-partition topic and all come back, each exactly once, in per-partition
//! order, with key, payload and headers intact.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::support::kafka::{self, Outgoing};

#[tokio::test]
async fn thousand_messages_round_trip_through_three_partitions() {
    kafka::broker();
    let topic = kafka::unique_topic("smoke", 3).await;
    assert_eq!(kafka::partition_count(&topic).await, 3);

    let messages = (0..1000).map(|i| {
        Outgoing::new(format!(r#"{{"event_type":"smoke","n":{i}}}"#))
            .key(format!("user-{}", i % 17))
            .header("x-seq", i.to_string())
    });
    let delivered = kafka::produce_many(&topic, messages).await;
    assert_eq!(delivered.len(), 1000);
    let used: HashSet<i32> = delivered.iter().map(|d| d.partition).collect();
    assert_eq!(
        used.len(),
        3,
        "17 keys should spread over all 3 partitions: {used:?}"
    );

    let records = kafka::read_all(&topic, 1000, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 1000, "read back {} of 1000", records.len());

    let mut seen = HashSet::new();
    let mut last_seq_per_partition: HashMap<i32, i64> = HashMap::new();
    for r in &records {
        let seq: i64 = r
            .header("x-seq")
            .expect("x-seq header")
            .parse()
            .expect("numeric x-seq");
        assert!(seen.insert(seq), "message {seq} read twice");
        let body = r.json();
        assert_eq!(
            body["n"], seq,
            "header and payload disagree at {}[{}]",
            r.partition, r.offset
        );
        assert_eq!(
            r.key.as_deref(),
            Some(format!("user-{}", seq % 17).as_bytes())
        );
        assert_eq!(delivered[seq as usize].partition, r.partition);
        assert_eq!(delivered[seq as usize].offset, r.offset);
        // Producing was in sequence order, so within a partition sequence numbers increase.
        if let Some(prev) = last_seq_per_partition.insert(r.partition, seq) {
            assert!(
                prev < seq,
                "partition {} out of order: {prev} then {seq}",
                r.partition
            );
        }
    }
    let ends = kafka::end_offsets(&topic).await;
    assert_eq!(ends.values().sum::<i64>(), 1000, "end offsets {ends:?}");
}

#[tokio::test]
async fn single_produce_reports_where_it_landed_and_headers_survive() {
    kafka::broker();
    let topic = kafka::unique_topic("smoke-one", 1).await;
    let first = kafka::produce(&topic, Some(b"k"), b"{}", &[("a", b"1"), ("a", b"2")]).await;
    let second = kafka::produce(&topic, None, b"second", &[]).await;
    assert_eq!((first.partition, first.offset), (0, 0));
    assert_eq!((second.partition, second.offset), (0, 1));
    let records = kafka::read_all(&topic, 2, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0].headers,
        vec![
            ("a".to_owned(), Some(b"1".to_vec())),
            ("a".to_owned(), Some(b"2".to_vec()))
        ]
    );
    assert_eq!(records[1].key, None);
    assert_eq!(records[1].payload_str(), "second");
    assert!(records[0].timestamp_ms.is_some_and(|t| t > 0));
}

#[tokio::test]
async fn read_all_returns_what_there_is_when_fewer_arrive() {
    kafka::broker();
    let topic = kafka::unique_topic("smoke-short", 2).await;
    kafka::produce(&topic, None, b"only", &[]).await;
    let records = kafka::read_all(&topic, 5, Duration::from_secs(3)).await;
    assert_eq!(records.len(), 1);
}

#[tokio::test]
async fn creating_an_existing_topic_again_is_accepted() {
    kafka::broker();
    let topic = kafka::unique_topic("smoke-again", 2).await;
    kafka::create_topic(&topic, 2).await;
    assert_eq!(kafka::partition_count(&topic).await, 2);
}

/// A broker restart (what the fault tests use) keeps the data, and the same clients carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_broker_restart_keeps_data_and_clients_reconnect() {
    let private = tokio::task::spawn_blocking(kafka::PrivateBroker::start_on_free_port)
        .await
        .expect("start private broker");
    let b = private.broker();
    let topic = b.unique_topic("restart", 2).await;
    let before = (0..50).map(|i| Outgoing::new(format!("before-{i}")).partition(i % 2));
    b.produce_many(&topic, before).await;

    let handle = tokio::task::spawn_blocking(move || {
        private.restart();
        private
    });
    let private = handle.await.expect("restart");
    let b = private.broker();

    let after = (0..50).map(|i| Outgoing::new(format!("after-{i}")).partition(i % 2));
    let delivered = b.produce_many(&topic, after).await;
    assert!(
        delivered.iter().all(|d| d.offset >= 25),
        "offsets restarted: {delivered:?}"
    );
    let records = b.read_all(&topic, 100, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 100);
    let payloads: HashSet<String> = records.iter().map(|r| r.payload_str()).collect();
    assert!(payloads.contains("before-0") && payloads.contains("after-49"));
    // The shared broker is untouched by all this.
    assert_ne!(kafka::broker().bootstrap(), b.bootstrap());
    tokio::task::spawn_blocking(move || drop(private))
        .await
        .expect("stop private broker");
}

/// Runs `scripts/kafka --port P ARGS` against the shared broker, feeding `stdin`; returns
/// (success, stdout, stderr).
fn script(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let bootstrap = kafka::broker().bootstrap();
    let port = bootstrap
        .strip_prefix("127.0.0.1:")
        .unwrap_or_else(|| panic!("the script tests need a broker on 127.0.0.1, not {bootstrap}"));
    let mut child = std::process::Command::new("bash")
        .arg(kafka::kafka_script())
        .args(["--port", port])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run scripts/kafka");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("scripts/kafka output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the demo relies on: `status`, `topics create`, and `produce` with keys from stdin lines.
#[tokio::test]
async fn script_status_topics_and_keyed_produce() {
    let bootstrap = kafka::broker().bootstrap().to_owned();
    let (ok, stdout, _) = tokio::task::spawn_blocking(|| script(&["status"], ""))
        .await
        .expect("status");
    assert!(ok, "status should succeed on a running broker");
    assert_eq!(stdout.trim(), bootstrap);

    let topic = kafka::unique_name("script");
    let t = topic.clone();
    let (ok, _, stderr) =
        tokio::task::spawn_blocking(move || script(&["topics", "create", &t, "2"], ""))
            .await
            .expect("create");
    assert!(ok, "topics create failed: {stderr}");
    kafka::wait_for_topic(&topic, 2).await;

    let t = topic.clone();
    let lines = "user-1\t{\"event_type\":\"a\"}\nuser-2\t{\"event_type\":\"b\"}\n\tno key\n";
    let (ok, _, stderr) = tokio::task::spawn_blocking(move || {
        script(&["produce", &t, "--key-separator", "\t"], lines)
    })
    .await
    .expect("produce");
    assert!(ok, "produce failed: {stderr}");
    let records = kafka::read_all(&topic, 3, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 3);
    let mut got: Vec<(Vec<u8>, String)> = records
        .iter()
        .map(|r| (r.key.clone().unwrap_or_default(), r.payload_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (Vec::new(), "no key".to_owned()),
            (b"user-1".to_vec(), r#"{"event_type":"a"}"#.to_owned()),
            (b"user-2".to_vec(), r#"{"event_type":"b"}"#.to_owned()),
        ]
    );
}

#[tokio::test]
async fn script_rejects_bad_arguments_with_a_message() {
    kafka::broker();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["topics", "create", "x"], "usage"),
        (
            vec!["topics", "create", "x", "0"],
            "PARTITIONS must be a positive integer",
        ),
        (vec!["frobnicate"], "unknown command"),
        (vec!["produce"], "usage"),
    ];
    for (args, expected) in cases {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (ok, _, stderr) = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            script(&refs, "")
        })
        .await
        .expect("script");
        assert!(!ok, "{args:?} should fail");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{stderr}"
        );
    }
}
