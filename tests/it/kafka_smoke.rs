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
