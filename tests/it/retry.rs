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
use hookpipe::retry::topics::{ensure_topics, partition_counts};
use hookpipe::retry::{DeadLetter, Parked, Parker, Placement, Schedule, SourcePosition, Tier};
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
    /// Tiers of 2 partitions; records placed by key (the destination name), as before placement.
    async fn new(schedule: Schedule) -> Path {
        Path::with(schedule, 2, None).await
    }

    /// Tiers of `partitions` partitions; with `placed`, the parker puts each of these
    /// destinations on a partition of its own (as `RetryService` does).
    async fn with(schedule: Schedule, partitions: i32, placed: Option<&[&str]>) -> Path {
        let prefix = unique_name("retry");
        let dead_letter = format!("{prefix}-dead");
        let mut parker = Parker::new(producer().clone(), schedule, &prefix, dead_letter.clone());
        let mut topics = parker.tier_topics().to_vec();
        topics.push(dead_letter.clone());
        // Twice: creating existing topics is not an error.
        for _ in 0..2 {
            ensure_topics(&broker().client_config(), &topics, partitions, 1, WAIT)
                .await
                .unwrap();
        }
        for topic in &topics {
            wait_for_topic(topic, partitions).await;
        }
        if let Some(destinations) = placed {
            let counts = partition_counts(producer(), parker.tier_topics(), WAIT)
                .await
                .unwrap();
            assert!(counts.values().all(|&n| n == partitions), "{counts:?}");
            parker = parker.with_placement(Placement::new(destinations, &counts));
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
        self.start_tiers_with(clients, TierLimits::default())
    }

    /// [`Path::start_tiers`] with these limits.
    fn start_tiers_with(
        &self,
        clients: &HashMap<String, Client>,
        limits: TierLimits,
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
                    limits,
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

/// Tier limits small enough that a dead destination fills its share at once: 2 attempts in
/// flight and 4 due records queued per destination.
fn tight_limits() -> TierLimits {
    TierLimits {
        in_flight_per_destination: 2,
        queued_per_destination: 4,
        ..TierLimits::default()
    }
}

/// Whether the receiver answered this request with a 2xx at once: a stalled request also ends
/// in a 2xx in the receiver's record, but long after the sender timed out and counted it failed.
fn acknowledged(r: &crate::support::http::Recorded) -> bool {
    matches!(r.reply, Reply::Status(s) if (200..300).contains(&s))
}

/// Ids acknowledged (2xx at once, see [`acknowledged`]) at least once.
fn delivered_ids(rx: &Receiver) -> std::collections::BTreeSet<String> {
    rx.requests()
        .iter()
        .filter(|r| acknowledged(r))
        .filter_map(|r| r.header("x-hookpipe-delivery-id").map(str::to_string))
        .collect()
}

/// Ids in the dead-letter topic: everything it holds, read for `wait`.
async fn dead_lettered_ids(topic: &str, wait: Duration) -> Vec<String> {
    read_all(topic, 10_000, wait)
        .await
        .iter()
        .filter_map(|r| DeadLetter::from_json(r.payload.as_deref()?).ok())
        .filter_map(|l| l.delivery.map(|d| d.delivery_id))
        .collect()
}

/// Waits (bounded) until every one of `ids` is delivered to `rx` or dead-lettered, then returns
/// (delivered, dead-lettered) among them.
async fn settle_all(
    ids: &[String],
    rx: &Receiver,
    dead_letter: &str,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let delivered = delivered_ids(rx);
        let dead: std::collections::BTreeSet<String> =
            dead_lettered_ids(dead_letter, Duration::from_millis(500))
                .await
                .into_iter()
                .collect();
        let missing = ids
            .iter()
            .filter(|id| !delivered.contains(*id) && !dead.contains(*id))
            .count();
        if missing == 0 || tokio::time::Instant::now() > deadline {
            let pick = |set: &std::collections::BTreeSet<String>| {
                ids.iter().filter(|id| set.contains(*id)).cloned().collect()
            };
            return (pick(&delivered), pick(&dead));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every record read from the tiers was settled: committed offsets are the end offsets.
async fn all_tier_offsets_committed(path: &Path) {
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
async fn a_dead_destination_does_not_hold_up_a_healthy_one_in_the_same_tier() {
    broker();
    // "down" stalls past its request timeout on every try (until it recovers, below); "up"
    // answers 500 to its first three tries (one failed first attempt), then 200.
    let down = Receiver::with_script(Script::always(Reply::Stall(
        Duration::from_secs(30),
        Box::new(Reply::ok()),
    )))
    .await;
    let up = Receiver::with_script(Script::fail_first(3, Reply::Status(500))).await;
    // Placed as RetryService places them: one partition each.
    let path = Path::with(
        Schedule::new(vec![Duration::from_secs(1); 2]).unwrap(),
        2,
        Some(&["down", "up"]),
    )
    .await;
    let (p_down, p_up) = (
        path.parker
            .placement()
            .partition(&path.parker.tier_topics()[0], "down"),
        path.parker
            .placement()
            .partition(&path.parker.tier_topics()[0], "up"),
    );
    assert!(p_down.is_some() && p_down != p_up, "{p_down:?} {p_up:?}");
    let down_client = Client::new(endpoint("down", &down.url())).unwrap();
    let up_client = Client::new(endpoint("up", &up.url())).unwrap();
    let clients = HashMap::from([
        ("down".to_string(), down_client.clone()),
        ("up".to_string(), up_client.clone()),
    ]);
    // Park 40 deliveries for "down" first, then 20 for "up" (whose first attempts fail). With 2
    // in flight and 4 queued per destination, "down" fills its share of the tier at once and its
    // partition pauses at its head.
    let mut down_ids = Vec::new();
    for i in 0..40 {
        let req = request(&format!("down-{i}"));
        let fake_tries = vec![hookpipe::deliver::Try {
            started_unix_ms: 0,
            status: None,
            error: Some("timed out".into()),
        }];
        path.parker
            .first_attempt_failed("down", &req, source(i), fake_tries)
            .await;
        down_ids.push(req.id);
    }
    let req = request("up-0");
    let outcome = up_client.attempt(&req).await;
    assert!(!outcome.is_delivered());
    for i in 0..20 {
        let req = request(&format!("up-{i}"));
        path.parker
            .first_attempt_failed("up", &req, source(100 + i), outcome.tries().to_vec())
            .await;
    }
    let (stop, handles) = path.start_tiers_with(&clients, tight_limits());
    // Every "up" delivery arrives quickly although 40 "down" attempts (each ~2 s: three 500 ms
    // timeouts and backoffs, 2 at a time: ~40 s for all) were due before them.
    let started = tokio::time::Instant::now();
    let got = up.wait_for_successes(20, WAIT).await;
    assert_eq!(got.len(), 20);
    let took = started.elapsed();
    println!("tier isolation: 20 healthy retries in {took:?} behind 40 dead ones");
    assert!(
        took < Duration::from_secs(10),
        "healthy destination waited {took:?} behind a dead one"
    );
    // Meanwhile "down" had 2 attempts at a time: most of its records still waited in Kafka.
    let tried: std::collections::BTreeSet<String> = down
        .requests()
        .iter()
        .filter_map(|r| r.header("x-hookpipe-delivery-id").map(str::to_string))
        .collect();
    assert!(tried.len() < 40, "{} dead deliveries tried", tried.len());
    // "down" recovers: every one of its deliveries is delivered or dead-lettered, none lost.
    down.set_script(Script::always(Reply::ok()));
    let (delivered, dead) = settle_all(&down_ids, &down, &path.dead_letter).await;
    println!(
        "scenario=dead_destination_in_one_tier produced=40 delivered={} dead_lettered={} lost={}",
        delivered.len(),
        dead.len(),
        40 - delivered.union(&dead).count()
    );
    assert_eq!(delivered.union(&dead).count(), 40, "lost deliveries");
    stop_all(stop, handles).await;
    all_tier_offsets_committed(&path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sharing_a_partition_under_an_older_placement_are_all_processed() {
    broker();
    // One partition, no placement: every destination shares it, as records written by a build
    // that partitioned by key (or under a config with more destinations than partitions) do.
    // "down" answers 503 until it recovers; "up" answers 200. With 1 in flight and 2 queued per
    // destination, "down" blocks the partition's head again and again.
    let down = Receiver::with_script(Script::always(Reply::Status(503))).await;
    let up = Receiver::with_script(Script::always(Reply::ok())).await;
    let path = Path::with(
        Schedule::new(vec![Duration::from_secs(1), Duration::from_secs(1)]).unwrap(),
        1,
        None,
    )
    .await;
    let clients = HashMap::from([
        (
            "down".to_string(),
            Client::new(endpoint("down", &down.url())).unwrap(),
        ),
        (
            "up".to_string(),
            Client::new(endpoint("up", &up.url())).unwrap(),
        ),
    ]);
    let failed = vec![hookpipe::deliver::Try {
        started_unix_ms: 0,
        status: Some(503),
        error: None,
    }];
    let (mut down_ids, mut up_ids) = (Vec::new(), Vec::new());
    for i in 0..24 {
        let (dest, ids) = if i % 3 == 2 {
            ("up", &mut up_ids)
        } else {
            ("down", &mut down_ids)
        };
        let req = request(&format!("{dest}-shared-{i}"));
        path.parker
            .first_attempt_failed(dest, &req, source(i), failed.clone())
            .await;
        ids.push(req.id);
    }
    let limits = TierLimits {
        in_flight_per_destination: 1,
        queued_per_destination: 2,
        ..TierLimits::default()
    };
    let (stop, handles) = path.start_tiers_with(&clients, limits);
    // Healthy records behind a blocked head wait with it (that is the cost of sharing), but
    // they are never skipped nor reordered past it: all 8 arrive.
    let got = up.wait_for_successes(8, WAIT).await;
    assert_eq!(got.len(), 8);
    down.set_script(Script::always(Reply::ok()));
    let (delivered, dead) = settle_all(&down_ids, &down, &path.dead_letter).await;
    assert_eq!(
        delivered.union(&dead).count(),
        down_ids.len(),
        "delivered {delivered:?}, dead-lettered {dead:?}"
    );
    assert_eq!(delivered_ids(&up).len(), up_ids.len());
    stop_all(stop, handles).await;
    all_tier_offsets_committed(&path).await;
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
    stop_all(stop, handles).await;
    let dead = b
        .read_all(&dead_letter, 10_000, Duration::from_millis(500))
        .await
        .len();
    let successes = rx.requests().iter().filter(|r| r.succeeded()).count();
    // Scenario 7's summary line (issue 4).
    println!(
        "scenario=broker_restart produced=10 delivered={} duplicates={} dead_lettered={dead} lost={}",
        unique.len(),
        successes - unique.len(),
        10 - unique.len()
    );
    assert_eq!(unique.len(), 10, "delivered: {unique:?}");
    assert_eq!(dead, 0);
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
async fn a_rebalance_while_heads_wait_for_full_queues_loses_nothing() {
    broker();
    // Slow answers (300 ms) with 1 attempt in flight and 2 queued per destination: the heads of
    // both partitions keep waiting for room in their destination's queue, and a second member
    // joins meanwhile, so partitions holding blocked heads and queued records are revoked.
    let rx = Receiver::with_script(Script::always(Reply::Stall(
        Duration::from_millis(300),
        Box::new(Reply::ok()),
    )))
    .await;
    let path = Path::new(Schedule::new(vec![Duration::from_secs(1)]).unwrap()).await;
    let names = ["d0", "d1", "d2", "d3"];
    let clients: HashMap<String, Client> = names
        .iter()
        .map(|n| (n.to_string(), Client::new(endpoint(n, &rx.url())).unwrap()))
        .collect();
    let limits = TierLimits {
        in_flight_per_destination: 1,
        queued_per_destination: 2,
        ..TierLimits::default()
    };
    let (stop_a, handles_a) = path.start_tiers_with(&clients, limits);
    for i in 0..40 {
        let req = request(&format!("rbq-{i}"));
        let tries = vec![hookpipe::deliver::Try {
            started_unix_ms: 0,
            status: Some(500),
            error: None,
        }];
        path.parker
            .first_attempt_failed(names[i % 4], &req, source(i as i64), tries)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (stop_b, handles_b) = path.start_tiers_with(&clients, limits);
    let deadline = tokio::time::Instant::now() + WAIT;
    let unique = loop {
        // Answered within the 500 ms request timeout: every success counts.
        let ids: std::collections::BTreeSet<String> = rx
            .requests()
            .iter()
            .filter(|r| r.succeeded())
            .filter_map(|r| r.header("x-hookpipe-delivery-id").map(str::to_string))
            .collect();
        if ids.len() == 40 || tokio::time::Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(unique.len(), 40, "delivered {unique:?}");
    assert!(rx
        .requests()
        .iter()
        .all(|r| r.header("x-hookpipe-attempt") == Some("2")));
    stop_all(stop_a, handles_a).await;
    stop_all(stop_b, handles_b).await;
    all_tier_offsets_committed(&path).await;
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
    use std::collections::BTreeSet;
    use std::collections::HashMap as Map;
    use std::process::{Child, Command, Stdio};

    /// `hookpipe run` with a config; SIGKILLed on drop.
    struct Run {
        child: Option<Child>,
        log: std::path::PathBuf,
        metrics: std::net::SocketAddr,
    }

    impl Run {
        fn start(dir: &std::path::Path, n: usize, config: &str) -> Run {
            Run::start_logging(dir, n, config, "info")
        }

        /// [`Run::start`] with this `RUST_LOG`.
        fn start_logging(dir: &std::path::Path, n: usize, config: &str, rust_log: &str) -> Run {
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
                .env("RUST_LOG", rust_log)
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap();
            Run {
                child: Some(child),
                log,
                metrics: ([127, 0, 0, 1], metrics).into(),
            }
        }

        /// The value of the first `/metrics` sample line starting with `prefix`.
        async fn metric(&self, prefix: &str) -> Option<f64> {
            use std::io::{Read, Write};
            let addr = self.metrics;
            let prefix = prefix.to_string();
            tokio::task::spawn_blocking(move || {
                let mut s =
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                write!(
                    s,
                    "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                out.lines()
                    .find(|l| l.starts_with(&prefix))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
            })
            .await
            .ok()
            .flatten()
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
        config_with(group, events, dead_letter, tiers, dests, "", "")
    }

    /// [`config`] with extra lines in `[pipeline]` and in `[retry]` (which may set `waits`).
    fn config_with(
        group: &str,
        events: &str,
        dead_letter: &str,
        tiers: &str,
        dests: &[(&str, String)],
        pipeline: &str,
        retry: &str,
    ) -> String {
        let waits = if retry.contains("waits") {
            ""
        } else {
            "waits = [\"1s\", \"2s\", \"2s\"]"
        };
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
{pipeline}
[telemetry]
listen = "127.0.0.1:{{METRICS}}"
[retry]
{waits}
tier_prefix = "{tiers}"
{retry}
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
        events_from(0, n)
    }

    /// Events `start..start + n`, each with a unique `insert_id` and `event_properties.i`.
    fn events_from(start: usize, n: usize) -> Vec<Outgoing> {
        (start..start + n)
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

    /// Like [`delivered`], counting only requests answered 2xx at once (see [`acknowledged`]):
    /// for a receiver whose stalled requests hookpipe gave up on.
    fn acknowledged_bodies(rx: &Receiver) -> Map<String, usize> {
        let mut m = Map::new();
        for r in rx.requests().iter().filter(|r| acknowledged(r)) {
            *m.entry(r.body_str()).or_insert(0) += 1;
        }
        m
    }

    /// The `event_properties.i` of a delivered or dead-lettered body.
    fn index_of(body: &str) -> Option<usize> {
        let at = body.find("\"i\":")? + 4;
        let digits: String = body[at..]
            .chars()
            .skip_while(|c| *c == ' ')
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    /// Bodies of the deliveries to `destination` in the dead-letter topic: with `expected`,
    /// read until that many records are there (at most 90 s); without, everything there now.
    async fn dead_lettered(
        topic: &str,
        destination: &str,
        expected: Option<usize>,
    ) -> std::collections::BTreeSet<String> {
        let (n, wait) = match expected {
            Some(n) => (n, Duration::from_secs(90)),
            None => (10_000, Duration::from_secs(1)),
        };
        read_all(topic, n, wait)
            .await
            .iter()
            .filter_map(|r| DeadLetter::from_json(r.payload.as_deref()?).ok())
            .filter_map(|l| l.delivery)
            .filter(|d| d.destination == destination)
            .map(|d| String::from_utf8_lossy(&d.body).into_owned())
            .collect()
    }

    /// One issue-4 fault scenario's outcome: prints its summary line and returns `lost`.
    /// `delivered` counts successful requests per body; `dead` is the bodies dead-lettered;
    /// `produced` the number of deliveries expected. A delivery is lost when it was neither
    /// delivered nor dead-lettered.
    fn summary(
        scenario: &str,
        produced: usize,
        delivered: &Map<String, usize>,
        dead: &std::collections::BTreeSet<String>,
    ) -> usize {
        let duplicates: usize = delivered.values().map(|c| c - 1).sum();
        let settled = delivered
            .keys()
            .chain(dead.iter())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let lost = produced.saturating_sub(settled);
        println!(
            "scenario={scenario} produced={produced} delivered={} duplicates={duplicates} dead_lettered={} lost={lost}",
            delivered.len(),
            dead.len()
        );
        lost
    }

    /// `text` without ANSI colour sequences (the text log colours field names).
    fn strip_ansi(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Polls (every 250 ms, at most `limit`) until `done` holds.
    async fn until(limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !done() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A port on 127.0.0.1 that refuses connections until [`Gate::open`] forwards it to a
    /// receiver: a webhook that is down (nothing listening), then back.
    struct Gate {
        port: u16,
        forward: Option<tokio::task::JoinHandle<()>>,
    }

    impl Gate {
        fn closed() -> Gate {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            Gate {
                port,
                forward: None,
            }
        }

        fn url(&self) -> String {
            format!("http://127.0.0.1:{}/", self.port)
        }

        /// Starts listening on the port, forwarding every connection to `to`.
        async fn open(&mut self, to: std::net::SocketAddr) {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
                .await
                .expect("the gate's port is still free");
            self.forward = Some(tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }));
        }
    }

    impl Drop for Gate {
        fn drop(&mut self) {
            if let Some(f) = self.forward.take() {
                f.abort();
            }
        }
    }

    /// Scenario 1: the receiver is down (connections refused) for the first seconds, then back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_down_for_a_while_then_back_loses_nothing() {
        broker();
        const N: usize = 60;
        let events_topic = unique_topic("fault-down", 2).await;
        let dead_letter = unique_topic("fault-down-dead", 1).await;
        let rx = Receiver::start().await;
        let mut gate = Gate::closed();
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            &unique_name("fault-down-group"),
            &events_topic,
            &dead_letter,
            &unique_name("fault-down-tier"),
            &[("down", gate.url())],
        );
        produce_many(&events_topic, events(N)).await;
        let run = Run::start(dir.path(), 0, &cfg);
        // Down long enough for first attempts and some second attempts to fail (waits 1 s, 2 s).
        tokio::time::sleep(Duration::from_secs(4)).await;
        gate.open(rx.addr()).await;
        until(Duration::from_secs(60), || delivered(&rx).len() >= N).await;
        let got = delivered(&rx);
        let dead = dead_lettered(&dead_letter, "down", None).await;
        let lost = summary("receiver_down_then_back", N, &got, &dead);
        assert_eq!(lost, 0, "log:\n{}", run.log());
        assert!(dead.is_empty(), "back before the last attempt: {dead:?}");
    }

    /// Scenarios 2 and 6: the receiver answers 500 to attempts 1 and 2 of every delivery (a
    /// stretch of ~3 s each), and `hookpipe` is SIGKILLed three times meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_repeatedly_while_retries_are_pending_loses_nothing() {
        broker();
        const N: usize = 100;
        let events_topic = unique_topic("fault-kill", 3).await;
        let dead_letter = unique_topic("fault-kill-dead", 1).await;
        // Failing for the first two attempts of every delivery, back from attempt 3 on.
        let rx = Receiver::with_script(Script::new(|r| {
            match r
                .header("x-hookpipe-attempt")
                .and_then(|a| a.parse::<u32>().ok())
            {
                Some(a) if a >= 3 => Reply::ok(),
                _ => Reply::Status(500),
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
        until(Duration::from_secs(90), || delivered(&rx).len() >= N).await;
        let got = delivered(&rx);
        let dead = dead_lettered(&dead_letter, "flaky", None).await;
        let lost = summary("receiver_500_for_a_stretch", N, &got, &dead)
            + summary("sigkill_while_retrying", N, &got, &dead);
        assert_eq!(lost, 0, "log of the last run:\n{}", run.log());
        assert!(dead.is_empty());
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

    /// Scenario 7 through `hookpipe run`: the broker (the only one, holding the input, the retry
    /// tiers and the dead-letter topic) is stopped for a few seconds mid-stream while first
    /// attempts fail and retries are parked, then started again; more events follow. Every
    /// delivery still arrives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_restart_mid_stream_loses_nothing() {
        use crate::support::kafka::PrivateBroker;
        const N: usize = 60;
        let private = tokio::task::spawn_blocking(PrivateBroker::start_on_free_port)
            .await
            .expect("start private broker");
        let b = private.broker();
        let events_topic = b.unique_topic("fault-restart", 3).await;
        let dead_letter = b.unique_topic("fault-restart-dead", 1).await;
        // Attempt 1 of every delivery fails, so retries are parked in the tiers across the
        // restart; later attempts succeed.
        let rx = Receiver::with_script(Script::new(|r| {
            if r.header("x-hookpipe-attempt") == Some("1") {
                Reply::Status(500)
            } else {
                Reply::ok()
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            &unique_name("fault-restart-group"),
            &events_topic,
            &dead_letter,
            &unique_name("fault-restart-tier"),
            &[("r", rx.url())],
        )
        .replace(broker().bootstrap(), b.bootstrap());
        b.produce_many(&events_topic, events(N)).await;
        let run = Run::start(dir.path(), 0, &cfg);
        // Mid-stream: some first attempts made, not every delivery through.
        until(Duration::from_secs(60), || rx.requests().len() >= N / 2).await;
        assert!(
            delivered(&rx).len() < N,
            "everything was delivered before the restart; the scenario would test nothing"
        );
        tokio::task::block_in_place(|| private.stop());
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio::task::block_in_place(|| private.start_again());
        let b = private.broker();
        b.produce_many(&events_topic, events_from(N, N)).await;
        until(Duration::from_secs(120), || delivered(&rx).len() >= 2 * N).await;
        let got = delivered(&rx);
        let dead: std::collections::BTreeSet<String> = b
            .read_all(&dead_letter, 10_000, Duration::from_secs(1))
            .await
            .iter()
            .filter_map(|r| DeadLetter::from_json(r.payload.as_deref()?).ok())
            .filter_map(|l| l.delivery)
            .map(|d| String::from_utf8_lossy(&d.body).into_owned())
            .collect();
        let lost = summary("broker_restart_mid_stream", 2 * N, &got, &dead);
        assert_eq!(lost, 0, "log:\n{}", run.log());
        assert!(dead.is_empty(), "dead-lettered: {dead:?}");
        drop(run);
        tokio::task::spawn_blocking(move || drop(private))
            .await
            .expect("stop private broker");
    }

    /// Scenario 5: a receiver answering 400 forever gets Amplitude's 10 attempts of one try each
    /// (9 waits of 1 s: one tier), then every delivery is dead-lettered with its history.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_400_forever_gets_ten_attempts_then_every_delivery_is_dead_lettered() {
        broker();
        const N: usize = 20;
        let events_topic = unique_topic("fault-400", 2).await;
        let dead_letter = unique_topic("fault-400-dead", 1).await;
        let rx = Receiver::with_script(Script::always(Reply::Status(400))).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_with(
            &unique_name("fault-400-group"),
            &events_topic,
            &dead_letter,
            &unique_name("fault-400-tier"),
            &[("rejecting", rx.url())],
            // The breaker would skip first attempts (still 10 attempts, fewer of them sent).
            "circuit_breaker_failures = 0",
            "waits = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]",
        );
        produce_many(&events_topic, events(N)).await;
        let run = Run::start(dir.path(), 0, &cfg);
        let letters = read_all(&dead_letter, N, Duration::from_secs(90)).await;
        let dead = dead_lettered(&dead_letter, "rejecting", Some(N)).await;
        let lost = summary("bad_request_forever", N, &delivered(&rx), &dead);
        assert_eq!(lost, 0, "log:\n{}", run.log());
        assert_eq!(dead.len(), N);
        for l in &letters {
            let l = DeadLetter::from_json(l.payload.as_deref().unwrap()).unwrap();
            assert_eq!(l.reason, "10 attempts failed");
            let d = l.delivery.unwrap();
            let attempts: Vec<u32> = d.attempts.iter().map(|a| a.attempt).collect();
            assert_eq!(attempts, (1..=10).collect::<Vec<_>>());
            assert!(d.all_tries().all(|t| t.status == Some(400)));
        }
        // Exactly 10 requests per delivery reached the receiver (one try per attempt).
        let mut per_body: Map<String, usize> = Map::new();
        for r in rx.requests() {
            *per_body.entry(r.body_str()).or_default() += 1;
        }
        assert_eq!(per_body.len(), N);
        assert!(per_body.values().all(|&c| c == 10), "{per_body:?}");
    }

    /// Scenario 8: a healthy destination keeps its rate beside a dead one that saturates its
    /// pipeline permits (so its deliveries overflow), fills its share of the overflow tier and of
    /// the first retry tier (so their partitions pause), and still gets every delivery, or
    /// dead-letters it, after it recovers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_destination_does_not_slow_a_healthy_one() {
        broker();
        const N: usize = 500;
        // 100 events/s: a live stream well below what the healthy destination and this shared
        // machine can take, so its rate alone is the stream's and the comparison measures
        // isolation, not CPU.
        const BATCH: usize = 10;
        let healthy_script = || {
            // Every 10th event's first attempt fails (three 500s): those are retried from the
            // first retry tier, beside the dead destination's records.
            Script::new(|r| {
                let first = r.header("x-hookpipe-attempt") == Some("1");
                match index_of(&r.body_str()) {
                    Some(i) if first && i % 10 == 5 => Reply::Status(500),
                    _ => Reply::ok(),
                }
            })
        };
        // Dead: first attempts have their connections dropped (three quick failures, ~0.45 s
        // with backoffs: its 4 permits cannot take 100/s, so it overflows); every later try
        // stalls past the 500 ms request timeout (~2 s per attempt), so its records pile up in
        // the first retry tier faster than its 4 slots there drain them.
        let dead_rx = Receiver::with_script(Script::new(|r| {
            if r.header("x-hookpipe-attempt") == Some("1") {
                Reply::Close
            } else {
                Reply::Stall(Duration::from_secs(30), Box::new(Reply::ok()))
            }
        }))
        .await;
        let mut rates = Vec::new();
        let mut retry_delays = Vec::new();
        for with_dead in [false, true] {
            let healthy = Receiver::with_script(healthy_script()).await;
            let events_topic = unique_topic("fault-iso", 3).await;
            let dead_letter = unique_topic("fault-iso-dead", 1).await;
            let dir = tempfile::tempdir().unwrap();
            let tiers = unique_name("fault-iso-tier");
            let mut dests = vec![("healthy", healthy.url())];
            if with_dead {
                dests.push(("dead", dead_rx.url()));
            }
            // 4 permits per destination in the pipeline, 4 in flight and 8 queued per destination
            // in each tier: the dead destination saturates all three at once.
            let cfg = config_with(
                &unique_name("fault-iso-group"),
                &events_topic,
                &dead_letter,
                &tiers,
                &dests,
                "max_in_flight_per_destination = 4\ncircuit_breaker_failures = 0",
                "tier_max_in_flight_per_destination = 4\ntier_max_queued_per_destination = 8",
            );
            let run = Run::start_logging(dir.path(), 0, &cfg, "info,hookpipe::retry::tier=debug");
            // Wait until it is consuming: one warm-up event delivered.
            produce_many(&events_topic, events_from(N, 1)).await;
            assert_eq!(
                healthy.wait_for_successes(1, WAIT).await.len(),
                1,
                "{}",
                run.log()
            );
            let started = tokio::time::Instant::now();
            let producing = async {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                for start in (0..N).step_by(BATCH) {
                    tick.tick().await;
                    produce_many(&events_topic, events_from(start, BATCH)).await;
                }
            };
            let receiving = until(WAIT, || delivered(&healthy).len() > N);
            tokio::join!(producing, receiving);
            let took = started.elapsed();
            let got = delivered(&healthy);
            assert!(
                got.len() > N,
                "with_dead={with_dead}: {} of {} delivered; log:\n{}",
                got.len(),
                N + 1,
                run.log()
            );
            rates.push((N as f64 / took.as_secs_f64(), took));
            // The healthy destination's retries: attempt 2 came about one wait (1 s) after
            // attempt 1 ended, not held up behind the dead destination's records in the tier.
            let reqs = healthy.requests();
            let mut delays = Vec::new();
            for r in reqs
                .iter()
                .filter(|r| r.header("x-hookpipe-attempt") == Some("2"))
            {
                let id = r.header("x-hookpipe-delivery-id");
                let last_first = reqs
                    .iter()
                    .filter(|f| {
                        f.header("x-hookpipe-delivery-id") == id
                            && f.header("x-hookpipe-attempt") == Some("1")
                    })
                    .map(|f| f.at)
                    .max()
                    .expect("attempt 1 was seen");
                delays.push(r.at - last_first);
            }
            delays.sort();
            assert_eq!(delays.len(), N / 10, "every 10th event was retried once");
            retry_delays.push(*delays.last().unwrap());
            if !with_dead {
                continue;
            }
            // (a) The dead destination filled its permits and overflowed, and filled its queue in
            // the overflow tier and in the first retry tier, whose partitions then paused.
            let overflowed = run
                .metric("hookpipe_deliveries_overflowed_total{destination=\"dead\"}")
                .await
                .unwrap_or(0.0);
            assert!(overflowed > 0.0, "the dead destination overflowed");
            let log = strip_ansi(&run.log());
            let blocked_in = |topic: &str| {
                log.lines().any(|l| {
                    l.contains("destination queue full")
                        && l.contains(topic)
                        && l.contains("destination=dead")
                })
            };
            assert!(
                blocked_in(&format!("{tiers}-overflow")),
                "the dead destination's queue in the overflow tier never filled"
            );
            assert!(
                blocked_in(&format!("{tiers}-1s")),
                "the dead destination's queue in the first retry tier never filled"
            );
            // (c) It recovers: every delivery to it (warm-up included) is delivered or
            // dead-lettered, none lost.
            dead_rx.set_script(Script::always(Reply::ok()));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            let (got, dead) = loop {
                let got = acknowledged_bodies(&dead_rx);
                let dead = dead_lettered(&dead_letter, "dead", None).await;
                let settled = got.keys().chain(dead.iter()).collect::<BTreeSet<_>>().len();
                if settled > N || tokio::time::Instant::now() > deadline {
                    break (got, dead);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            let lost = summary("dead_destination_beside_healthy", N + 1, &got, &dead);
            println!(
                "scenario 8: dead overflowed {overflowed} deliveries; its queues in the overflow tier and the 1s tier filled and paused its partitions"
            );
            assert_eq!(lost, 0, "log:\n{}", run.log());
        }
        println!(
            "scenario 8: healthy alone {:.0} deliveries/s ({:?}), beside a dead destination {:.0} deliveries/s ({:?}); slowest healthy retry {:?} alone, {:?} beside",
            rates[0].0, rates[0].1, rates[1].0, rates[1].1, retry_delays[0], retry_delays[1]
        );
        // Generous bounds (a shared, noisy machine): the healthy rate beside a dead destination
        // is at least half its rate alone, and its retries wait about their 1 s, not behind the
        // dead one's.
        assert!(
            rates[1].0 >= rates[0].0 / 2.0,
            "alone {:?}, beside a dead one {:?}",
            rates[0],
            rates[1]
        );
        assert!(
            retry_delays[1] < Duration::from_secs(6),
            "a healthy retry waited {:?}",
            retry_delays[1]
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
        for (scenario, name, got) in [
            ("throttled_429_retry_after", "throttled", &t),
            ("slower_than_request_timeout", "slow", &s),
        ] {
            let dead = dead_lettered(&dead_letter, name, None).await;
            let lost = summary(scenario, N, got, &dead);
            assert_eq!(lost, 0, "{name} lost deliveries; log:\n{}", run.log());
            assert_eq!(got.len(), N, "{name}: nothing dead-lettered, all delivered");
        }
        // Scenario 9, per message: a valid one is delivered when both destinations got it; a
        // malformed one is settled when it is dead-lettered (as `invalid_json`).
        let both: Map<String, usize> = t
            .iter()
            .filter(|(body, _)| s.contains_key(*body))
            .map(|(body, n)| (body.clone(), *n))
            .collect();
        let bad: BTreeSet<String> = letters
            .iter()
            .filter(|r| r.header("hookpipe.reason").as_deref() == Some("invalid_json"))
            .map(|r| format!("malformed@{}:{}", r.partition, r.offset))
            .collect();
        let lost = summary("malformed_mixed_in", N + BAD, &both, &bad);
        assert_eq!(lost, 0);
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
