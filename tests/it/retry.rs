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
    let telemetry = Arc::new(hookpipe::telemetry::Telemetry::new());
    let (service, tasks) = RetryService::start(
        &broker().client_config(),
        &dead_letter,
        settings,
        HashMap::from([("svc".to_string(), client.clone())]),
        telemetry.clone(),
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
    // The re-attempt is counted in the destination's delivery metrics.
    let deadline = tokio::time::Instant::now() + WAIT;
    let want = r#"hookpipe_deliveries_total{destination="svc",outcome="delivered"} 1"#;
    while !telemetry.encode().contains(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            telemetry.encode()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_path_survives_a_broker_restart() {
    use crate::support::kafka::PrivateBroker;
    let private = tokio::task::spawn_blocking(PrivateBroker::start_on_free_port)
        .await
        .unwrap();
    let b = private.broker();
    // Every first attempt fails (3 tries each); every later attempt succeeds.
    let rx = Receiver::with_script(Script::new(|r| {
        if r.header("x-hookpipe-attempt") == Some("1") {
            Reply::Status(500)
        } else {
            Reply::ok()
        }
    }))
    .await;
    let prefix = unique_name("restart");
    let dead_letter = format!("{prefix}-dead");
    let parker = Parker::new(
        b.producer().clone(),
        Schedule::new(vec![Duration::from_secs(2), Duration::from_secs(2)]).unwrap(),
        &prefix,
        dead_letter.clone(),
    );
    let mut topics = parker.tier_topics().to_vec();
    topics.push(dead_letter.clone());
    ensure_topics(&b.client_config(), &topics, 2, 1, WAIT)
        .await
        .unwrap();
    for t in &topics {
        b.wait_for_topic(t, 2).await;
    }
    let client = Client::new(endpoint("r", &rx.url())).unwrap();
    let clients = Arc::new(HashMap::from([("r".to_string(), client.clone())]));
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for topic in parker.tier_topics() {
        let tier = Tier::new(
            &b.client_config(),
            &format!("{prefix}-group"),
            topic,
            clients.clone(),
            parker.clone(),
            TierLimits::default(),
        )
        .unwrap();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move { tier.run(stop).await.unwrap() }));
    }
    let park = |id: String| {
        let (client, parker) = (client.clone(), parker.clone());
        async move {
            let req = request(&id);
            let outcome = client.attempt(&req).await;
            parker
                .first_attempt_failed("r", &req, source(0), outcome.tries().to_vec())
                .await
        }
    };
    // Five parked before the broker goes away.
    for i in 0..5 {
        park(format!("before-{i}")).await;
    }
    // The broker stops; five more fail meanwhile: parking waits (retrying) until it is back.
    tokio::task::block_in_place(|| private.stop());
    let during: Vec<_> = (0..5)
        .map(|i| tokio::spawn(park(format!("during-{i}"))))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| private.start_again());
    for p in during {
        tokio::time::timeout(WAIT, p)
            .await
            .expect("parking completes once the broker is back")
            .unwrap();
    }
    // Every delivery arrives (duplicates allowed, losses not).
    let deadline = tokio::time::Instant::now() + WAIT;
    let unique = loop {
        let ids: std::collections::BTreeSet<String> = rx
            .requests()
            .iter()
            .filter(|r| r.succeeded())
            .filter_map(|r| r.header("x-hookpipe-delivery-id").map(str::to_string))
            .collect();
        if ids.len() == 10 || tokio::time::Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(unique.len(), 10, "delivered: {unique:?}");
    stop_all(stop, handles).await;
    assert!(b
        .read_all(&dead_letter, 1, Duration::from_millis(500))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookpipe_replay_cli_resends_one_destinations_dead_letters() {
    use hookpipe::retry::record::{ParkedDelivery, FORMAT};
    broker();
    let fixed = Receiver::with_script(Script::always(Reply::ok())).await;
    let other = Receiver::with_script(Script::always(Reply::ok())).await;
    let path = Path::new(Schedule::amplitude()).await;
    for (dest, id, at) in [
        ("fixed", "cli-1", 2_000u64),
        ("fixed", "cli-2", 3_000),
        ("other", "cli-3", 2_500),
    ] {
        path.parker
            .dead_letter(DeadLetter {
                format: FORMAT,
                reason: "10 attempts failed".into(),
                dead_lettered_unix_ms: at,
                delivery: Some(ParkedDelivery {
                    format: FORMAT,
                    delivery_id: id.into(),
                    destination: dest.into(),
                    kind: Kind::Track,
                    body: request(id).body,
                    source: source(1),
                    next_attempt: 11,
                    due_unix_ms: 0,
                    attempts: Vec::new(),
                }),
                raw: None,
            })
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookpipe.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"

[topics]
events = ["unused-events"]
dead_letter = "{dead_letter}"

[[destinations]]
name = "fixed"
url = "{fixed}"
[destinations.events]
enabled = true

[[destinations]]
name = "other"
url = "{other}"
[destinations.events]
enabled = true
"#,
            bootstrap = broker().bootstrap(),
            group = path.group,
            dead_letter = path.dead_letter,
            fixed = fixed.url(),
            other = other.url(),
        ),
    )
    .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookpipe"))
            .args(["replay", "--config"])
            .arg(&config)
            .args([
                "--destination",
                "fixed",
                "--since",
                "1970-01-01T00:00:02.500Z",
            ])
            .args(["--read-timeout-secs", "60"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("scanned 3, replayed 1 (delivered 1, parked for retry 0, dead-lettered again 0), filtered out 2"),
        "{stdout}"
    );
    let got = fixed.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-hookpipe-delivery-id"), Some("cli-2"));
    assert_eq!(other.count(), 0);

    // An unknown destination is refused before anything is sent.
    let dir2 = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookpipe"))
            .args(["replay", "--config"])
            .arg(dir2.join("hookpipe.toml"))
            .args(["--destination", "nope"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"nope\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_between_two_tier_consumers_loses_nothing() {
    broker();
    // Every first attempt was a 500 (parked below); every later attempt succeeds.
    let rx = Receiver::with_script(Script::always(Reply::ok())).await;
    let path = Path::new(Schedule::new(vec![Duration::from_secs(2)]).unwrap()).await;
    // Four destination names (the tier's key) so the records spread over both partitions.
    let names = ["d0", "d1", "d2", "d3"];
    let clients: HashMap<String, Client> = names
        .iter()
        .map(|n| (n.to_string(), Client::new(endpoint(n, &rx.url())).unwrap()))
        .collect();
    let (stop_a, handles_a) = path.start_tiers(&clients);
    for i in 0..40 {
        let req = request(&format!("rb-{i}"));
        let tries = vec![hookpipe::deliver::Try {
            started_unix_ms: 0,
            status: Some(500),
            error: None,
        }];
        path.parker
            .first_attempt_failed(names[i % 4], &req, source(i as i64), tries)
            .await;
    }
    // A second member joins while the first holds the parked heads: partitions move.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (stop_b, handles_b) = path.start_tiers(&clients);
    let deadline = tokio::time::Instant::now() + WAIT;
    let unique = loop {
        let ids: std::collections::BTreeSet<String> = rx
            .requests()
            .iter()
            .filter_map(|r| r.header("x-hookpipe-delivery-id").map(str::to_string))
            .collect();
        if ids.len() == 40 || tokio::time::Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(unique.len(), 40);
    assert!(rx
        .requests()
        .iter()
        .all(|r| r.header("x-hookpipe-attempt") == Some("2")));
    stop_all(stop_a, handles_a).await;
    stop_all(stop_b, handles_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_delivery_whose_destination_was_removed_is_dead_lettered_with_the_reason() {
    broker();
    let rx = Receiver::with_script(Script::always(Reply::ok())).await;
    let path = Path::new(Schedule::new(vec![Duration::from_secs(1)]).unwrap()).await;
    let kept = Client::new(endpoint("kept", &rx.url())).unwrap();
    let clients = HashMap::from([("kept".to_string(), kept)]);
    let tries = vec![hookpipe::deliver::Try {
        started_unix_ms: 1,
        status: Some(500),
        error: None,
    }];
    path.parker
        .first_attempt_failed("removed", &request("gone-1"), source(4), tries)
        .await;
    // An unreadable record in the tier too.
    crate::support::kafka::produce(&path.parker.tier_topics()[0], None, b"garbage", &[]).await;
    let (stop, handles) = path.start_tiers(&clients);
    let letters = read_all(&path.dead_letter, 2, WAIT).await;
    stop_all(stop, handles).await;
    assert_eq!(letters.len(), 2);
    let mut by_code: HashMap<String, DeadLetter> = HashMap::new();
    for l in &letters {
        by_code.insert(
            l.header("hookpipe.reason").unwrap(),
            DeadLetter::from_json(l.payload.as_deref().unwrap()).unwrap(),
        );
    }
    let removed = &by_code["destination_removed"];
    assert!(
        removed
            .reason
            .contains("\"removed\" is no longer configured"),
        "{}",
        removed.reason
    );
    let d = removed.delivery.as_ref().unwrap();
    assert_eq!((d.delivery_id.as_str(), d.attempts.len()), ("gone-1", 1));
    let unreadable = &by_code["unreadable_retry_record"];
    assert_eq!(unreadable.raw.as_deref(), Some(&b"garbage"[..]));
    assert_eq!(rx.count(), 0);
}

/// Whole-pipeline fault scenarios (issue 4): the real `hookpipe run`, the real broker, retry
/// tiers with waits of seconds. Each prints produced / delivered (unique ids) / duplicates /
/// dead-lettered / lost, and lost must be 0.
mod faults {
    use super::*;
    use crate::support::kafka::{produce_many, unique_topic, Outgoing};
    use std::collections::HashMap as Map;
    use std::process::{Child, Command, Stdio};

    /// `hookpipe run` with a config; SIGKILLed on drop.
    struct Run {
        child: Option<Child>,
        log: std::path::PathBuf,
    }

    impl Run {
        fn start(dir: &std::path::Path, n: usize, config: &str) -> Run {
            let metrics = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let path = dir.join(format!("run{n}.toml"));
            std::fs::write(&path, config.replace("{METRICS}", &metrics.to_string())).unwrap();
            let log = dir.join(format!("run{n}.log"));
            let file = std::fs::File::create(&log).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_hookpipe"))
                .arg("run")
                .arg("--config")
                .arg(&path)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap();
            Run {
                child: Some(child),
                log,
            }
        }

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

    impl Drop for Run {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn config(
        group: &str,
        events: &str,
        dead_letter: &str,
        tiers: &str,
        dests: &[(&str, String)],
    ) -> String {
        let mut c = format!(
            r#"
[kafka]
bootstrap_servers = "{}"
group_id = "{group}"
[kafka.settings]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[topics]
events = ["{events}"]
dead_letter = "{dead_letter}"
[pipeline]
workers = 2
drain_timeout = "10s"
commit_interval = "200ms"
[telemetry]
listen = "127.0.0.1:{{METRICS}}"
[retry]
waits = ["1s", "2s", "2s"]
tier_prefix = "{tiers}"
tier_partitions = 2
"#,
            broker().bootstrap()
        );
        for (name, url) in dests {
            c.push_str(&format!(
                "[[destinations]]\nname = \"{name}\"\nurl = \"{url}\"\nrequest_timeout = \"500ms\"\n[destinations.events]\n"
            ));
        }
        c
    }

    fn events(n: usize) -> Vec<Outgoing> {
        (0..n)
            .map(|i| {
                Outgoing::new(format!(
                    r#"{{"event_type":"fault","user_id":"u{i}","insert_id":"fault-{i}","event_time":"2022-02-28 20:07:01.795","event_properties":{{"i":{i}}}}}"#
                ))
                .key(format!("u{i}"))
            })
            .collect()
    }

    /// Successful deliveries per id, counting by body (`"i":N`) so the check does not depend on
    /// how ids are made.
    fn delivered(rx: &Receiver) -> Map<String, usize> {
        let mut m = Map::new();
        for r in rx.requests().iter().filter(|r| r.succeeded()) {
            *m.entry(r.body_str()).or_insert(0) += 1;
        }
        m
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_repeatedly_while_retries_are_pending_loses_nothing() {
        broker();
        const N: usize = 100;
        let events_topic = unique_topic("fault-kill", 3).await;
        let dead_letter = unique_topic("fault-kill-dead", 1).await;
        // Down for the first two attempts of every delivery, back from attempt 3 on.
        let rx = Receiver::with_script(Script::new(|r| {
            match r
                .header("x-hookpipe-attempt")
                .and_then(|a| a.parse::<u32>().ok())
            {
                Some(a) if a >= 3 => Reply::ok(),
                _ => Reply::Status(503),
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let group = unique_name("fault-kill-group");
        let tiers = unique_name("fault-kill-tier");
        let cfg = config(
            &group,
            &events_topic,
            &dead_letter,
            &tiers,
            &[("flaky", rx.url())],
        );
        produce_many(&events_topic, events(N)).await;

        // Killed (SIGKILL) three times while deliveries are parked in the tiers.
        let mut run = Run::start(dir.path(), 0, &cfg);
        for n in 1..=3 {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            run.kill();
            run = Run::start(dir.path(), n, &cfg);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let got = loop {
            let got = delivered(&rx);
            if got.len() >= N || tokio::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let duplicates: usize = got.values().map(|c| c - 1).sum();
        let dead = read_all(&dead_letter, 1, Duration::from_millis(500))
            .await
            .len();
        let lost = N - got.len();
        println!(
            "fault killed-while-retrying: produced {N}, delivered {} unique, duplicates {duplicates}, dead-lettered {dead}, lost {lost}",
            got.len()
        );
        assert_eq!(lost, 0, "log of the last run:\n{}", run.log());
        assert_eq!(dead, 0);
        // No attempt was skipped by the kills: every delivery was seen at attempts 1, 2 and 3.
        let mut attempts: Map<String, std::collections::BTreeSet<u32>> = Map::new();
        for r in rx.requests() {
            let a = r.header("x-hookpipe-attempt").unwrap().parse().unwrap();
            attempts.entry(r.body_str()).or_default().insert(a);
        }
        for (body, seen) in &attempts {
            assert!(
                [1, 2, 3].iter().all(|a| seen.contains(a)),
                "{body}: attempts {seen:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_destination_does_not_slow_a_healthy_one() {
        broker();
        const N: usize = 300;
        let dead_rx = Receiver::with_script(Script::always(Reply::Stall(
            Duration::from_secs(30),
            Box::new(Reply::ok()),
        )))
        .await;
        // Time for the healthy destination to get all N, alone and beside a dead one.
        let mut took = Vec::new();
        for with_dead in [false, true] {
            let healthy = Receiver::start().await;
            let events_topic = unique_topic("fault-iso", 3).await;
            let dead_letter = unique_topic("fault-iso-dead", 1).await;
            let dir = tempfile::tempdir().unwrap();
            let mut dests = vec![("healthy", healthy.url())];
            if with_dead {
                dests.push(("dead", dead_rx.url()));
            }
            let cfg = config(
                &unique_name("fault-iso-group"),
                &events_topic,
                &dead_letter,
                &unique_name("fault-iso-tier"),
                &dests,
            );
            let run = Run::start(dir.path(), 0, &cfg);
            // Wait until it is consuming: one warm-up event delivered.
            produce_many(
                &events_topic,
                [Outgoing::new(r#"{"event_type":"warm-up","user_id":"w"}"#)],
            )
            .await;
            assert_eq!(
                healthy.wait_for_successes(1, WAIT).await.len(),
                1,
                "{}",
                run.log()
            );
            let started = tokio::time::Instant::now();
            produce_many(&events_topic, events(N)).await;
            // Unique payloads (a try that timed out under load and was retried counts once).
            let deadline = started + WAIT;
            loop {
                let unique = delivered(&healthy).len();
                if unique > N {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "with_dead={with_dead}: {unique} of {} delivered; log:\n{}",
                    N + 1,
                    run.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            took.push(started.elapsed());
        }
        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        println!(
            "fault dead-beside-healthy: healthy alone {:.0} deliveries/s ({:?}), beside a dead destination {:.0} deliveries/s ({:?})",
            rate(took[0]),
            took[0],
            rate(took[1]),
            took[1]
        );
        // Beside a dead destination (each of its tries stalls past the 500 ms timeout), the
        // healthy one still gets everything within a small multiple of its time alone.
        assert!(
            took[1] < took[0] * 5 + Duration::from_secs(5),
            "alone {:?}, beside a dead one {:?}",
            took[0],
            took[1]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throttled_slow_and_malformed_together_lose_nothing() {
        broker();
        const N: usize = 60;
        const BAD: usize = 5;
        let events_topic = unique_topic("fault-mix", 2).await;
        let dead_letter = unique_topic("fault-mix-dead", 1).await;
        // 429 with Retry-After: 1 on every first try; then 200.
        let throttled = Receiver::with_script(Script::new(|r| {
            if r.header("x-hookpipe-try") == Some("1") {
                Reply::TooManyRequests {
                    retry_after: "1".into(),
                }
            } else {
                Reply::ok()
            }
        }))
        .await;
        // Slower than the 500 ms request timeout on every first try; then 200. The receiver still
        // answers the timed-out try after 2 s, so it counts it as received: those are the
        // duplicates a timeout causes (same delivery id; receivers de-duplicate on it).
        let slow = Receiver::with_script(Script::new(|r| {
            if r.header("x-hookpipe-try") == Some("1") {
                Reply::Stall(Duration::from_secs(2), Box::new(Reply::ok()))
            } else {
                Reply::ok()
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            &unique_name("fault-mix-group"),
            &events_topic,
            &dead_letter,
            &unique_name("fault-mix-tier"),
            &[("throttled", throttled.url()), ("slow", slow.url())],
        );
        let mut messages = events(N);
        for i in 0..BAD {
            messages.insert(i * 10, Outgoing::new(format!("not json {i}")));
        }
        produce_many(&events_topic, messages).await;
        let run = Run::start(dir.path(), 0, &cfg);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let (t, s) = loop {
            let (t, s) = (delivered(&throttled), delivered(&slow));
            if (t.len() >= N && s.len() >= N) || tokio::time::Instant::now() > deadline {
                break (t, s);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let letters = read_all(&dead_letter, BAD, WAIT).await;
        let malformed = letters
            .iter()
            .filter(|r| r.header("hookpipe.reason").as_deref() == Some("invalid_json"))
            .count();
        for (name, got) in [("throttled", &t), ("slow", &s)] {
            let duplicates: usize = got.values().map(|c| c - 1).sum();
            println!(
                "fault {name}+malformed: produced {N} (+{BAD} malformed), delivered {} unique, duplicates {duplicates}, malformed dead-lettered {malformed}, lost {}",
                got.len(),
                N - got.len()
            );
            assert_eq!(got.len(), N, "{name} lost deliveries; log:\n{}", run.log());
        }
        assert_eq!(malformed, BAD);
        assert_eq!(
            letters.len(),
            BAD,
            "only the malformed messages are dead-lettered"
        );
        // Retry-After was honoured: the second try of a throttled delivery came >= 1 s later.
        let reqs = throttled.requests();
        let mut first: Map<String, tokio::time::Instant> = Map::new();
        for r in &reqs {
            let id = r.header("x-hookpipe-delivery-id").unwrap().to_string();
            if r.header("x-hookpipe-try") == Some("1") {
                first.entry(id).or_insert(r.at);
            } else if let Some(at) = first.get(&id) {
                assert!(
                    r.at - *at >= Duration::from_millis(950),
                    "{id}: came back after {:?}",
                    r.at - *at
                );
            }
        }
    }
}
