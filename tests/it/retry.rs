//! The durable retry path against a real Kafka broker and real HTTP receivers on 127.0.0.1, with
//! the schedule compressed to seconds: a delivery walks every tier and is dead-lettered with its
//! whole history; a receiver that recovers gets the delivery on a later attempt with the same id;
//! a tier consumer stopped while it holds a parked delivery leaves it for its successor; a
//! destination that is down does not hold up a healthy one in the same tier.

use crate::support::http::{Receiver, Reply, Script};
use crate::support::kafka::{
    broker, committed_offsets, end_offsets, producer, read_all, unique_name, wait_for_topic,
};
use bytes::Bytes;
use hookpipe::deliver::{Client, Endpoint, Kind, Outcome, Request};
use hookpipe::retry::tier::TierLimits;
use hookpipe::retry::topics::ensure_topics;
use hookpipe::retry::{DeadLetter, Parked, Parker, Schedule, SourcePosition, Tier};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Hard bound on every wait in this file.
const WAIT: Duration = Duration::from_secs(60);

fn endpoint(name: &str, url: &str) -> Endpoint {
    Endpoint {
        name: name.into(),
        url: url.into(),
        headers: Vec::new(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(500),
        signing_secrets: Vec::new(),
    }
}

fn request(id: &str) -> Request {
    Request {
        id: id.into(),
        kind: Kind::Track,
        body: Bytes::from(format!(
            r#"{{"event_type":"retry test","insert_id":"{id}"}}"#
        )),
    }
}

/// A retry path on fresh topics: the tiers of `schedule` and a dead-letter topic.
struct Path {
    parker: Parker,
    dead_letter: String,
    group: String,
}

impl Path {
    async fn new(schedule: Schedule) -> Path {
        let prefix = unique_name("retry");
        let dead_letter = format!("{prefix}-dead");
        let parker = Parker::new(producer().clone(), schedule, &prefix, dead_letter.clone());
        let mut topics = parker.tier_topics().to_vec();
        topics.push(dead_letter.clone());
        // Twice: creating existing topics is not an error.
        for _ in 0..2 {
            ensure_topics(&broker().client_config(), &topics, 2, 1, WAIT)
                .await
                .unwrap();
        }
        for topic in &topics {
            wait_for_topic(topic, 2).await;
        }
        Path {
            parker,
            dead_letter,
            group: format!("{prefix}-group"),
        }
    }

    /// Starts one consumer per tier; they stop when the returned token is cancelled.
    fn start_tiers(
        &self,
        clients: &HashMap<String, Client>,
    ) -> (CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
        let stop = CancellationToken::new();
        let clients = Arc::new(clients.clone());
        let handles = self
            .parker
            .tier_topics()
            .iter()
            .map(|topic| {
                let tier = Tier::new(
                    &broker().client_config(),
                    &self.group,
                    topic,
                    clients.clone(),
                    self.parker.clone(),
                    TierLimits::default(),
                )
                .unwrap();
                let stop = stop.clone();
                tokio::spawn(async move { tier.run(stop).await.unwrap() })
            })
            .collect();
        (stop, handles)
    }
}

async fn stop_all(stop: CancellationToken, handles: Vec<tokio::task::JoinHandle<()>>) {
    stop.cancel();
    for h in handles {
        tokio::time::timeout(WAIT, h)
            .await
            .expect("tier stops within the bound")
            .unwrap();
    }
}

fn source(offset: i64) -> Option<SourcePosition> {
    Some(SourcePosition {
        topic: "amplitude-events".into(),
        partition: 0,
        offset,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_forever_walks_every_tier_then_is_dead_lettered_with_its_history() {
    broker();
    let rx = Receiver::with_script(Script::always(Reply::Status(400))).await;
    let schedule = Schedule::new(vec![
        Duration::from_secs(1),
        Duration::from_secs(1),
        Duration::from_secs(2),
    ])
    .unwrap();
    let path = Path::new(schedule).await;
    let client = Client::new(endpoint("dead-end", &rx.url())).unwrap();
    let clients = HashMap::from([("dead-end".to_string(), client.clone())]);
    let (stop, handles) = path.start_tiers(&clients);

    let req = request("dl-1");
    let Outcome::Failed { tries } = client.attempt(&req).await else {
        panic!("a 400 fails");
    };
    let parked = path
        .parker
        .first_attempt_failed("dead-end", &req, source(7), tries)
        .await;
    assert!(
        matches!(parked, Parked::Tier { attempt: 2, .. }),
        "{parked:?}"
    );

    let letters = read_all(&path.dead_letter, 1, WAIT).await;
    assert_eq!(letters.len(), 1, "dead-lettered within {WAIT:?}");
    let letter = DeadLetter::from_json(letters[0].payload.as_deref().unwrap()).unwrap();
    assert_eq!(letter.reason, "4 attempts failed");
    let d = letter.delivery.unwrap();
    assert_eq!(d.delivery_id, "dl-1");
    assert_eq!(d.destination, "dead-end");
    assert_eq!(d.body, req.body);
    assert_eq!(d.source, source(7));
    let attempts: Vec<u32> = d.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
    for a in &d.attempts {
        assert_eq!(a.tries.len(), 1, "a 400 is one try per attempt");
        assert_eq!(a.tries[0].status, Some(400));
    }
    // The attempts are spaced at least by the schedule's waits.
    let starts: Vec<u64> = d
        .attempts
        .iter()
        .map(|a| a.tries[0].started_unix_ms)
        .collect();
    assert!(starts[1] - starts[0] >= 1000, "{starts:?}");
    assert!(starts[2] - starts[1] >= 1000, "{starts:?}");
    assert!(starts[3] - starts[2] >= 2000, "{starts:?}");

    // The receiver saw exactly 4 tries, one id, attempt numbers 1..4.
    let got = rx.requests();
    assert_eq!(got.len(), 4);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.header("x-hookpipe-delivery-id"), Some("dl-1"));
        assert_eq!(
            r.header("x-hookpipe-attempt"),
            Some((i + 1).to_string().as_str())
        );
    }
    stop_all(stop, handles).await;
    // Everything read from the tiers was settled and committed.
    for topic in path.parker.tier_topics() {
        let ends = end_offsets(topic).await;
        let committed = committed_offsets(&path.group, topic).await;
        for (partition, end) in ends {
            if end > 0 {
                assert_eq!(
                    committed.get(&partition).copied().flatten(),
                    Some(end),
                    "{topic}[{partition}]"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_recovers_gets_the_delivery_on_a_later_attempt() {
    broker();
    // The first attempt's three tries get 500s; the next attempt succeeds.
    let rx = Receiver::with_script(Script::fail_first(3, Reply::Status(500))).await;
    let path = Path::new(Schedule::new(vec![Duration::from_secs(1); 3]).unwrap()).await;
    let client = Client::new(endpoint("flaky", &rx.url())).unwrap();
    let clients = HashMap::from([("flaky".to_string(), client.clone())]);
    let (stop, handles) = path.start_tiers(&clients);

    let req = request("rec-1");
    let outcome = client.attempt(&req).await;
    assert_eq!(outcome.tries().len(), 3);
    path.parker
        .first_attempt_failed("flaky", &req, source(1), outcome.tries().to_vec())
        .await;
    let got = rx.wait_for_successes(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let all = rx.requests();
    assert_eq!(all.len(), 4);
    assert!(all
        .iter()
        .all(|r| r.header("x-hookpipe-delivery-id") == Some("rec-1")));
    assert_eq!(all[3].header("x-hookpipe-attempt"), Some("2"));
    // Nothing dead-lettered, nothing attempted again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.count(), 4);
    assert!(read_all(&path.dead_letter, 1, Duration::from_millis(500))
        .await
        .is_empty());
    stop_all(stop, handles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_stopped_while_holding_a_delivery_leaves_it_to_its_successor() {
    broker();
    let rx = Receiver::with_script(Script::fail_first(1, Reply::Status(400))).await;
    let path = Path::new(Schedule::new(vec![Duration::from_secs(3)]).unwrap()).await;
    let client = Client::new(endpoint("late", &rx.url())).unwrap();
    let clients = HashMap::from([("late".to_string(), client.clone())]);

    let req = request("restart-1");
    let outcome = client.attempt(&req).await;
    path.parker
        .first_attempt_failed("late", &req, source(2), outcome.tries().to_vec())
        .await;
    // A first consumer reads the parked record and holds it (due in 3 s), then stops.
    let (stop, handles) = path.start_tiers(&clients);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_all(stop, handles).await;
    assert_eq!(rx.count(), 1, "not attempted before its due time");
    // Its successor in the same group attempts it once due.
    let (stop, handles) = path.start_tiers(&clients);
    let got = rx.wait_for_successes(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-hookpipe-delivery-id"), Some("restart-1"));
    assert_eq!(got[0].header("x-hookpipe-attempt"), Some("2"));
    stop_all(stop, handles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_does_not_hold_up_a_healthy_one_in_the_same_tier() {
    broker();
    // "down" stalls past its request timeout on every try; "up" answers 500 to its first three
    // tries, then 200.
    let down = Receiver::with_script(Script::always(Reply::Stall(
        Duration::from_secs(30),
        Box::new(Reply::ok()),
    )))
    .await;
    let up = Receiver::with_script(Script::fail_first(60, Reply::Status(500))).await;
    let path = Path::new(Schedule::new(vec![Duration::from_secs(1); 2]).unwrap()).await;
    let down_client = Client::new(endpoint("down", &down.url())).unwrap();
    let up_client = Client::new(endpoint("up", &up.url())).unwrap();
    let clients = HashMap::from([
        ("down".to_string(), down_client.clone()),
        ("up".to_string(), up_client.clone()),
    ]);
    // Park 40 deliveries for "down" first, then 20 for "up" (whose first attempts fail).
    let mut parks = Vec::new();
    for i in 0..40 {
        let req = request(&format!("down-{i}"));
        let fake_tries = vec![hookpipe::deliver::Try {
            started_unix_ms: 0,
            status: None,
            error: Some("timed out".into()),
        }];
        parks.push((String::from("down"), req, fake_tries));
    }
    for i in 0..20 {
        let req = request(&format!("up-{i}"));
        let outcome = up_client.attempt(&req).await;
        assert!(!outcome.is_delivered());
        parks.push((String::from("up"), req, outcome.tries().to_vec()));
    }
    for (dest, req, tries) in &parks {
        path.parker
            .first_attempt_failed(dest, req, source(0), tries.clone())
            .await;
    }
    let (stop, handles) = path.start_tiers(&clients);
    // Every "up" delivery arrives quickly although 40 "down" attempts (each up to ~2.5 s: three
    // 500 ms timeouts and backoffs) were due before them.
    let started = tokio::time::Instant::now();
    let got = up.wait_for_successes(20, WAIT).await;
    assert_eq!(got.len(), 20);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "healthy destination waited {took:?} behind a dead one"
    );
    stop_all(stop, handles).await;
}
