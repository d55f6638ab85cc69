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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_the_selected_dead_letters_with_their_ids() {
    use hookpipe::retry::record::{ParkedDelivery, FORMAT};
    use hookpipe::retry::replay::{replay, ReplayFilter};
    broker();
    let fixed = Receiver::with_script(Script::always(Reply::ok())).await;
    let still_down = Receiver::with_script(Script::always(Reply::Status(503))).await;
    let path = Path::new(Schedule::new(vec![Duration::from_secs(60)]).unwrap()).await;
    let letter = |dest: &str, id: &str, at: u64| DeadLetter {
        format: FORMAT,
        reason: "2 attempts failed".into(),
        dead_lettered_unix_ms: at,
        delivery: Some(ParkedDelivery {
            format: FORMAT,
            delivery_id: id.into(),
            destination: dest.into(),
            kind: Kind::Identify,
            body: request(id).body,
            source: source(9),
            next_attempt: 2,
            due_unix_ms: 0,
            attempts: Vec::new(),
        }),
        raw: None,
    };
    path.parker.dead_letter(letter("fixed", "r-1", 1_000)).await;
    path.parker.dead_letter(letter("fixed", "r-2", 2_000)).await;
    path.parker.dead_letter(letter("fixed", "r-old", 10)).await;
    path.parker.dead_letter(letter("down", "r-3", 1_500)).await;
    path.parker.dead_letter(letter("gone", "r-4", 1_500)).await;
    crate::support::kafka::produce(&path.dead_letter, None, b"{\"malformed\":true}", &[]).await;
    let clients = HashMap::from([
        (
            "fixed".to_string(),
            Client::new(endpoint("fixed", &fixed.url())).unwrap(),
        ),
        (
            "down".to_string(),
            Client::new(endpoint("down", &still_down.url())).unwrap(),
        ),
    ]);
    let filter = ReplayFilter {
        destinations: Vec::new(),
        since_unix_ms: Some(1_000),
        until_unix_ms: None,
    };
    let report = replay(
        &broker().client_config(),
        &path.dead_letter,
        &filter,
        &clients,
        &path.parker,
        4,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(report.scanned, 6);
    assert_eq!(report.not_deliveries, 1);
    assert_eq!(report.filtered_out, 1, "r-old is before --since");
    assert_eq!(report.unknown_destination, 1, "gone is not configured");
    assert_eq!(report.delivered, 2);
    assert_eq!(
        report.parked, 1,
        "down failed again and went back to the tiers"
    );
    let mut ids: Vec<String> = fixed
        .requests()
        .iter()
        .map(|r| r.header("x-hookpipe-delivery-id").unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["r-1", "r-2"]);
    assert!(fixed
        .requests()
        .iter()
        .all(|r| r.header("x-hookpipe-type") == Some("events.identify")));
    // The re-failed one is parked for attempt 2 in the tier.
    let tier = read_all(&path.parker.tier_topics()[0], 1, WAIT).await;
    assert_eq!(tier.len(), 1);
    let parked =
        hookpipe::retry::ParkedDelivery::from_json(tier[0].payload.as_deref().unwrap()).unwrap();
    assert_eq!(
        (parked.delivery_id.as_str(), parked.next_attempt),
        ("r-3", 2)
    );
    assert_eq!(parked.attempts.len(), 1);
    assert_eq!(parked.attempts[0].tries.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_service_is_the_pipelines_failure_path() {
    use hookpipe::pipeline::settle::{FailedDelivery, Failure, FailurePath, Rejected};
    use hookpipe::retry::{RetryService, RetrySettings};
    broker();
    let rx = Receiver::with_script(Script::fail_first(3, Reply::Status(500))).await;
    let client = Client::new(endpoint("svc", &rx.url())).unwrap();
    let prefix = unique_name("svc");
    let dead_letter = format!("{prefix}-dead");
    ensure_topics(
        &broker().client_config(),
        std::slice::from_ref(&dead_letter),
        1,
        1,
        WAIT,
    )
    .await
    .unwrap();
    let settings = RetrySettings {
        schedule: Schedule::new(vec![Duration::from_secs(1); 2]).unwrap(),
        tier_prefix: prefix.clone(),
        tier_partitions: 2,
        ..RetrySettings::new(&prefix)
    };
    let shutdown = CancellationToken::new();
    let (service, tasks) = RetryService::start(
        &broker().client_config(),
        &dead_letter,
        settings,
        HashMap::from([("svc".to_string(), client.clone())]),
        Arc::new(hookpipe::telemetry::Telemetry::new()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let failure: Arc<dyn FailurePath> = Arc::new(service);

    // A failed first attempt is parked, then delivered on attempt 2 by the tier consumer.
    let req = request("svc-1");
    let outcome = client.attempt(&req).await;
    assert_eq!(outcome.tries().len(), 3);
    let src = SourcePosition {
        topic: "events".into(),
        partition: 0,
        offset: 5,
    };
    failure
        .park(FailedDelivery {
            destination: "svc".into(),
            request: req.clone(),
            source: src.clone(),
            failure: Failure::Attempt {
                tries: outcome.tries().to_vec(),
            },
        })
        .await;
    let got = rx.wait_for_successes(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-hookpipe-delivery-id"), Some("svc-1"));
    assert_eq!(got[0].header("x-hookpipe-attempt"), Some("2"));

    // Render failures and malformed messages go straight to the dead-letter topic.
    failure
        .park(FailedDelivery {
            destination: "svc".into(),
            request: request("svc-render"),
            source: src.clone(),
            failure: Failure::Render {
                error: "1:3 boom".into(),
            },
        })
        .await;
    failure
        .reject(Rejected {
            source: src.clone(),
            reason: "invalid_json",
            detail: "not JSON".into(),
            payload: Bytes::from_static(b"{oops"),
        })
        .await;
    let letters = read_all(&dead_letter, 2, WAIT).await;
    assert_eq!(letters.len(), 2);
    let reasons: Vec<Option<String>> = letters
        .iter()
        .map(|r| r.header("hookpipe.reason"))
        .collect();
    assert_eq!(
        reasons,
        [Some("render_failed".into()), Some("invalid_json".into())]
    );

    shutdown.cancel();
    assert_eq!(tasks.join(WAIT).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_killed_mid_attempt_repeats_that_attempt_after_restart() {
    broker();
    // Attempt 1: 400. Attempt 2, first time: the receiver sits on it for 3 s (the tier is killed
    // meanwhile). Then: 200.
    let rx = Receiver::with_script(Script::sequence(
        vec![
            Reply::Status(400),
            Reply::Stall(Duration::from_secs(3), Box::new(Reply::ok())),
        ],
        Reply::ok(),
    ))
    .await;
    let path = Path::new(Schedule::new(vec![Duration::from_secs(1)]).unwrap()).await;
    let ep = Endpoint {
        request_timeout: Duration::from_secs(10),
        ..endpoint("slow", &rx.url())
    };
    let client = Client::new(ep).unwrap();
    let clients = HashMap::from([("slow".to_string(), client.clone())]);
    let req = request("kill-1");
    let outcome = client.attempt(&req).await;
    path.parker
        .first_attempt_failed("slow", &req, source(3), outcome.tries().to_vec())
        .await;
    let (_stop, handles) = path.start_tiers(&clients);
    // Attempt 2 has reached the receiver: kill the tier consumers (no graceful stop).
    assert_eq!(rx.wait_for(2, WAIT).await.len(), 2);
    for h in &handles {
        h.abort();
    }
    for h in handles {
        let _ = tokio::time::timeout(WAIT, h)
            .await
            .expect("aborted task ends");
    }
    // A new consumer in the same group repeats attempt 2: nothing is skipped.
    let (stop, handles) = path.start_tiers(&clients);
    let got = rx.wait_for(3, WAIT).await;
    assert!(got.len() >= 3, "attempt 2 repeated after the kill");
    assert!(got
        .iter()
        .all(|r| r.header("x-hookpipe-delivery-id") == Some("kill-1")));
    assert_eq!(got[2].header("x-hookpipe-attempt"), Some("2"));
    assert!(got[2].succeeded());
    stop_all(stop, handles).await;
    assert!(read_all(&path.dead_letter, 1, Duration::from_millis(500))
        .await
        .is_empty());
}
