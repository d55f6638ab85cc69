//! Cohort webhooks, end to end through the pure layer: Kafka-message bytes in (chunks and
//! membership events, shuffled and duplicated), default payloads out, checked user by user.

use std::collections::BTreeMap;

use bytes::BytesMut;
use hookpipe::cohort::{payload, BatchSize, Chunk, Membership, WindowAggregator};

const CHANGE: &str = "9baaa88f-9d46-4ee5-a946-be0c6aea0046";

/// The chunk messages of a change of `entered` entering and `exited` exiting users, `size` users
/// of each direction per chunk, as a producer would write them.
fn chunk_messages(entered: usize, exited: usize, size: usize) -> Vec<Vec<u8>> {
    let count = entered.max(exited).div_ceil(size).max(1);
    (0..count)
        .map(|i| {
            let slice = |prefix: &str, total: usize| -> Vec<serde_json::Value> {
                (i * size..((i + 1) * size).min(total))
                    .map(|u| {
                        if u % 3 == 0 {
                            serde_json::json!({"user_id": format!("{prefix}{u}"),
                                               "user_properties": {"n": u, "plan": "pro"}})
                        } else {
                            serde_json::json!({"user_id": format!("{prefix}{u}")})
                        }
                    })
                    .collect()
            };
            serde_json::to_vec(&serde_json::json!({
                "cohort_id": "7khm89cz",
                "cohort_name": "My Test Cohort",
                "computed_time": "1692206763",
                "change_id": CHANGE,
                "chunk_index": i,
                "chunk_count": count,
                "chunk_size": size,
                "entered_count": entered,
                "exited_count": exited,
                "entered": slice("in-", entered),
                "exited": slice("out-", exited),
            }))
            .unwrap()
        })
        .collect()
}

/// Decodes every message, batches it and writes default payloads: message id → payload bytes.
/// A message id seen twice must carry the same bytes both times.
fn deliver_all(messages: &[Vec<u8>], size: BatchSize) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut buf = BytesMut::new();
    for m in messages {
        let chunk = Chunk::decode(m).unwrap();
        for batch in chunk.batches(size) {
            buf.clear();
            payload::write_default(&batch, &mut buf);
            let id = batch.message_id().to_string();
            if let Some(prev) = out.insert(id.clone(), buf.to_vec()) {
                assert_eq!(prev, buf.to_vec(), "{id} changed on a repeat");
            }
        }
    }
    out
}

/// Parses payloads back: message id → (in_cohort, user ids), checking the envelope.
fn users_by_id(payloads: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, (bool, Vec<String>)> {
    payloads
        .iter()
        .map(|(id, body)| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["message_id"], id.as_str());
            assert_eq!(v["cohort_id"], "7khm89cz");
            assert_eq!(v["cohort_name"], "My Test Cohort");
            assert_eq!(v["computed_time"], "1692206763");
            let users = v["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| {
                    let id = u["user_id"].as_str().unwrap().to_owned();
                    let n: usize = id.rsplit('-').next().unwrap().parse().unwrap();
                    // Properties travel with exactly the users that had them.
                    assert_eq!(u.get("user_properties").is_some(), n % 3 == 0, "{id}");
                    id
                })
                .collect();
            (id.clone(), (v["in_cohort"].as_bool().unwrap(), users))
        })
        .collect()
}

fn expected(prefix: &str, ranges: &[(usize, usize)]) -> Vec<Vec<String>> {
    ranges
        .iter()
        .map(|&(a, b)| (a..b).map(|u| format!("{prefix}{u}")).collect())
        .collect()
}

#[test]
fn shuffled_duplicated_chunks_of_2500_in_1200_out_give_exact_batches() {
    let mut messages = chunk_messages(2500, 1200, 1000);
    assert_eq!(messages.len(), 3);
    // At-least-once input: two chunks arrive twice; then everything is shuffled.
    messages.push(messages[1].clone());
    messages.push(messages[0].clone());
    fastrand::Rng::with_seed(5).shuffle(&mut messages);

    let got = users_by_id(&deliver_all(&messages, BatchSize::DEFAULT));
    let mut want = BTreeMap::new();
    for (i, users) in expected("in-", &[(0, 1000), (1000, 2000), (2000, 2500)])
        .into_iter()
        .enumerate()
    {
        want.insert(format!("{CHANGE}::enter::{i}"), (true, users));
    }
    for (i, users) in expected("out-", &[(0, 1000), (1000, 1200)])
        .into_iter()
        .enumerate()
    {
        want.insert(format!("{CHANGE}::exit::{i}"), (false, users));
    }
    assert_eq!(got, want);
}

#[test]
fn any_arrival_order_and_any_replay_gives_identical_payloads() {
    // Chunks of 300 with batches of 1000: each chunk's users form one batch.
    let messages = chunk_messages(2500, 1200, 300);
    let first = deliver_all(&messages, BatchSize::DEFAULT);
    assert_eq!(first.len(), 9 + 4);
    let all: Vec<String> = users_by_id(&first)
        .into_values()
        .flat_map(|(_, users)| users)
        .collect();
    assert_eq!(all.len(), 3700);
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..4 {
        // A crash replays an arbitrary suffix of what was read before, in another order.
        let mut replay = messages.clone();
        rng.shuffle(&mut replay);
        let cut = rng.usize(..replay.len());
        let mut seen = deliver_all(&replay[..cut], BatchSize::DEFAULT);
        for (id, body) in deliver_all(&replay[cut..], BatchSize::DEFAULT) {
            seen.insert(id, body);
        }
        assert_eq!(seen, first);
    }
}

#[test]
fn batch_size_is_per_destination_and_changes_only_the_cut() {
    let messages = chunk_messages(2500, 1200, 1000);
    let got = users_by_id(&deliver_all(&messages, BatchSize::new(400).unwrap()));
    // Chunks of 1000 in batches of 400: 400, 400, 200 per full chunk.
    let enter: Vec<usize> = (0..8)
        .map(|i| got[&format!("{CHANGE}::enter::{i}")].1.len())
        .collect();
    assert_eq!(enter, [400, 400, 200, 400, 400, 200, 400, 100]);
    assert_eq!(got.len(), 8 + 4);
    assert_eq!(
        got[&format!("{CHANGE}::exit::3")].1,
        expected("out-", &[(1000, 1200)])[0]
    );
}

#[test]
fn a_chunk_that_lies_about_its_layout_is_rejected_with_the_reason() {
    let mut messages = chunk_messages(25, 12, 10);
    let mut v: serde_json::Value = serde_json::from_slice(&messages[2]).unwrap();
    v["entered"].as_array_mut().unwrap().pop();
    messages[2] = serde_json::to_vec(&v).unwrap();
    let err = Chunk::decode(&messages[2]).unwrap_err().to_string();
    assert_eq!(
        err,
        "cohort change chunk: `entered`: has 4 users, but chunk 2 of a change with \
         entered_count 25 and chunk_size 10 must have 5"
    );
}

fn membership(cohort: &str, user: &str, in_cohort: bool, time: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "cohort_id": cohort, "cohort_name": format!("Cohort {cohort}"), "user_id": user,
        "in_cohort": in_cohort, "time": time,
    }))
    .unwrap()
}

/// Feeds (Kafka timestamp, message) pairs through an hourly aggregator, closing windows as time
/// passes, and returns every payload by message id.
fn run_windows(input: &[(i64, Vec<u8>)], close_at: i64) -> BTreeMap<String, Vec<u8>> {
    let mut agg = WindowAggregator::new("amplitude-cohort-memberships/0", 3_600_000);
    let mut out = BTreeMap::new();
    let mut buf = BytesMut::new();
    let mut emit = |closed: Vec<hookpipe::cohort::ClosedWindow<usize>>| {
        for w in closed {
            for batch in w.chunk.batches(BatchSize::new(2).unwrap()) {
                buf.clear();
                payload::write_default(&batch, &mut buf);
                out.insert(batch.message_id().to_string(), buf.to_vec());
            }
        }
    };
    for (offset, (ts, bytes)) in input.iter().enumerate() {
        let event = Membership::decode(bytes).unwrap();
        agg.add(*ts, event, offset).unwrap();
        emit(agg.close_until(*ts));
    }
    emit(agg.close_until(close_at));
    out
}

#[test]
fn membership_flips_within_an_hour_collapse_and_replay_yields_the_same_ids() {
    let h = 3_600_000;
    let input = vec![
        (10, membership("c1", "alice", true, 10)),
        (20, membership("c1", "bob", true, 20)),
        (30, membership("c1", "bob", false, 30)), // bob: in and out: nothing
        (40, membership("c1", "carol", false, 40)),
        (50, membership("c1", "dave", true, 50)),
        (60, membership("c1", "erin", true, 60)),
        (70, membership("c2", "alice", false, 70)),
        (h + 5, membership("c1", "bob", true, h + 5)), // next hour: bob enters
    ];
    let out = run_windows(&input, 2 * h);
    let parsed: BTreeMap<&str, serde_json::Value> = out
        .iter()
        .map(|(id, body)| (id.as_str(), serde_json::from_slice(body).unwrap()))
        .collect();
    let users = |v: &serde_json::Value| -> Vec<String> {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut summary: Vec<(String, bool, Vec<String>, String)> = parsed
        .values()
        .map(|v| {
            (
                v["cohort_id"].as_str().unwrap().to_owned(),
                v["in_cohort"].as_bool().unwrap(),
                users(v),
                v["computed_time"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    summary.sort();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        summary,
        vec![
            ("c1".into(), false, s(&["carol"]), "3600".into()),
            ("c1".into(), true, s(&["alice", "dave"]), "3600".into()),
            ("c1".into(), true, s(&["bob"]), "7200".into()),
            ("c1".into(), true, s(&["erin"]), "3600".into()),
            ("c2".into(), false, s(&["alice"]), "3600".into()),
        ]
    );
    // Ids: one change per (cohort, window); batches of 2 numbered per direction.
    let ids: Vec<&str> = out.keys().map(|k| k.split_once("::").unwrap().1).collect();
    assert_eq!(ids.iter().filter(|k| **k == "enter::1").count(), 1);

    // A crash before the first hour's batches settled replays its events (maybe in another
    // order, since they may come from several partitions' replays): same ids, same bytes.
    let mut replay = input.clone();
    replay[..7].reverse();
    assert_eq!(run_windows(&replay, 2 * h), out);
}

/// The conformance corpus's input of the seed cohort cases 480, 483, 487 and 504.
const SEED_INPUT: &str = r#"{
  "cohort_name": "My Test Cohort",
  "cohort_id": "7khm89cz",
  "in_cohort": true,
  "computed_time": "1692206763",
  "message_id": "9baaa88f-9d46-4ee5-a946-be0c6aea0046::enter::0",
  "users": [
    {
      "user_id": "user_one@example.com",
      "user_properties": {
        "name": "John Doe",
        "country": "US",
        "city": "San Francisco"
      }
    },
    {
      "user_id": "user_two@example.com",
      "user_properties": {
        "name": "Jane Smith",
        "country": "US",
        "city": "New York"
      }
    },
    {
      "user_id": "user_three@example.com",
      "user_properties": {
        "name": "Alice Johnson",
        "country": "US",
        "city": "Los Angeles"
      }
    }
  ]
}"#;

/// The conformance corpus's input of cases 482, 484, 505 and 516 (an exit batch, a `null`
/// property).
const EXIT_INPUT: &str = r#"{
  "cohort_name": "Churn Risk (30d)",
  "cohort_id": "q2w3e4r5",
  "in_cohort": false,
  "computed_time": "1700000000",
  "message_id": "1c2d3e4f-0000-4abc-9def-123456789abc::exit::0",
  "users": [
    {
      "user_id": "u-1001"
    },
    {
      "user_id": "u-1002",
      "user_properties": {
        "name": "Bob",
        "city": null
      }
    }
  ]
}"#;

/// Turns a conformance input (a batch) back into the one-chunk change message that yields it.
fn change_message_for(input: &str) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(input).unwrap();
    let (change_id, rest) = v["message_id"].as_str().unwrap().split_once("::").unwrap();
    let field = if v["in_cohort"].as_bool().unwrap() {
        "entered"
    } else {
        "exited"
    };
    // "entered" → "enter::0", "exited" → "exit::0".
    assert_eq!(rest, format!("{}::0", &field[..field.len() - 2]));
    let mut m = serde_json::json!({
        "cohort_id": v["cohort_id"], "cohort_name": v["cohort_name"],
        "computed_time": v["computed_time"], "change_id": change_id,
    });
    m[field] = v["users"].clone();
    serde_json::to_vec(&m).unwrap()
}

#[test]
fn template_input_is_byte_for_byte_the_seed_cases_input_minified() {
    for input in [SEED_INPUT, EXIT_INPUT] {
        let chunk = Chunk::decode(&change_message_for(input)).unwrap();
        let mut batches = chunk.batches(BatchSize::DEFAULT);
        let batch = batches.next().unwrap();
        assert!(batches.next().is_none());
        let mut doc = BytesMut::new();
        payload::write_template_input(&batch, &mut doc);
        let minified: String = {
            // serde_json re-serializes compactly in key order (preserve_order); the fixtures
            // hold no number it could re-format.
            let v: serde_json::Value = serde_json::from_str(input).unwrap();
            serde_json::to_string(&v).unwrap()
        };
        assert_eq!(std::str::from_utf8(&doc).unwrap(), minified);
    }
}

/// The conformance corpus (`../shared/ftl-conformance`, or `HOOKPIPE_CONFORMANCE_DIR`), as the
/// conformance test finds it.
fn corpus_cases() -> std::path::PathBuf {
    let dir = match std::env::var_os("HOOKPIPE_CONFORMANCE_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/ftl-conformance")
        }
    };
    let cases = dir.join("cases");
    assert!(
        cases.is_dir(),
        "conformance corpus not found at {}; set HOOKPIPE_CONFORMANCE_DIR",
        cases.display()
    );
    cases
}

/// The seed cohort templates (and the corpus's other cohort cases), fed through the real path:
/// a change message is decoded, batched and rendered by the destination's compiled template,
/// and must give exactly what FreeMarker gave on the batch's document (or fail where it failed).
/// Case 517 (a batch of no users) is left out: hookpipe never sends an empty batch.
#[test]
fn seed_cohort_templates_render_as_freemarker_through_the_cohort_path() {
    check_template_cases(&[
        "480-cohort-sep",
        "482-cohort-sep-no-c",
        "483-per-user-iterator",
        "484-per-user-single-quotes",
        "485-per-user-doc-verbatim-error",
        "486-cohort-user-properties-doc-error",
        "487-cohort-user-properties-fixed",
        "504-slack-cohort-summary",
        "505-slack-cohort-exit",
        "516-users-array-exit",
    ]);
}

fn check_template_cases(names: &[&str]) {
    use hookpipe::cohort::config::CohortFilter;
    use hookpipe::cohort::{CohortRoute, Renderer};
    use hookpipe::template::{Options, Template};

    let cases = corpus_cases();
    let mut renderer = Renderer::default();
    let mut failures = Vec::new();
    for &name in names {
        let dir = cases.join(name);
        let read = |f: &str| std::fs::read_to_string(dir.join(f));
        let input = read("input.json").unwrap();
        let source = read("template.ftl").unwrap();
        let expected = read("expected.txt").ok();
        let template = match Template::compile(name, &source, &Options::default()) {
            Ok(t) => t,
            Err(e) if expected.is_none() => {
                eprintln!("{name}: fails to compile, as expected: {e}");
                continue;
            }
            Err(e) => {
                failures.push(format!("{name}: compile error {e}"));
                continue;
            }
        };
        let route = CohortRoute {
            destination: "d".into(),
            cohorts: CohortFilter::All,
            batch_size: BatchSize::DEFAULT,
            template: Some(template),
            request_timeout: hookpipe::cohort::DEFAULT_REQUEST_TIMEOUT,
            window: hookpipe::cohort::Window::HOURLY,
        };
        let chunk = Chunk::decode(&change_message_for(&input)).unwrap();
        let mut results = Vec::new();
        renderer.render_chunk(&chunk, &route, |r| results.push(r));
        assert_eq!(results.len(), 1, "{name}");
        let r = results.pop().unwrap();
        match (r.error, expected) {
            (None, Some(want)) => {
                if r.request.body != want.as_bytes() {
                    failures.push(format!(
                        "{name}: got\n{}\nwant\n{want}",
                        String::from_utf8_lossy(&r.request.body)
                    ));
                }
            }
            (Some(e), None) => {
                // The failed batch keeps its input document, for the dead-letter record.
                assert!(r.request.body.starts_with(b"{\"cohort_name\":"), "{name}");
                eprintln!("{name}: fails, as expected: {e}")
            }
            (None, None) => failures.push(format!(
                "{name}: should fail, rendered {:?}",
                String::from_utf8_lossy(&r.request.body)
            )),
            (Some(e), Some(_)) => failures.push(format!("{name} ({}): {e}", r.message_id)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Through the real thing: chunk messages produced to a real Kafka topic (shuffled over three
/// partitions, one duplicated, one malformed), `hookpipe run` as a child process, and real HTTP
/// receivers: one destination with the default payload, one with the seed `#sep` template and
/// batches of 500 that only syncs this cohort.
mod kafka {
    use super::{chunk_messages, CHANGE};
    use crate::support::http::{Receiver, Recorded};
    use crate::support::kafka::{
        broker, committed_offsets, end_offsets, produce_many, read_all, unique_name, unique_topic,
        Outgoing,
    };
    use std::collections::BTreeMap;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// Hard bound on every wait in this module.
    const WAIT: Duration = Duration::from_secs(90);

    const SEED_TEMPLATE: &str = r#"{
    "cohort_name": "${input.cohort_name}",
    "cohort_id": "${input.cohort_id}",
    "in_cohort": ${input.in_cohort?c},
    "computed_time": "${input.computed_time}",
     "message_id": "${input.message_id}",
    "users": [
     <#list input.users as user>
     {
         "user_id": "${user.user_id}"
      }<#sep>,
     </#list>
    ]
}
"#;

    struct Setup {
        config: tempfile::TempDir,
        topic: String,
        dead_letter: String,
        group: String,
        plain: Receiver,
        templated: Receiver,
    }

    impl Setup {
        async fn new(name: &str) -> Setup {
            broker();
            let topic = unique_topic(&format!("{name}-changes"), 3).await;
            let dead_letter = unique_topic(&format!("{name}-dead"), 1).await;
            let plain = Receiver::start().await;
            let templated = Receiver::start().await;
            let config = tempfile::tempdir().unwrap();
            let group = unique_name(&format!("{name}-group"));
            std::fs::write(
                config.path().join("hookpipe.toml"),
                format!(
                    r#"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"

[topics]
cohort_changes = ["{topic}"]
dead_letter = "{dead_letter}"

[pipeline]
workers = 2
commit_interval = "200ms"

[telemetry]
listen = "127.0.0.1:0"

[[destinations]]
name = "plain"
url = "{plain}"
[destinations.cohorts]

[[destinations]]
name = "templated"
url = "{templated}"
headers = [{{ name = "X-Team", value = "growth" }}]
[destinations.cohorts]
cohort_ids = ["7khm89cz"]
batch_size = 500
request_timeout = "1s"
template_inline = '''{template}'''
"#,
                    bootstrap = broker().bootstrap(),
                    plain = plain.url(),
                    templated = templated.url(),
                    template = SEED_TEMPLATE,
                ),
            )
            .unwrap();
            Setup {
                config,
                topic,
                dead_letter,
                group,
                plain,
                templated,
            }
        }

        fn spawn(&self) -> Child {
            Command::new(env!("CARGO_BIN_EXE_hookpipe"))
                .arg("run")
                .arg("--config")
                .arg(self.config.path().join("hookpipe.toml"))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        }
    }

    /// Kills the child on drop, so a failing test leaves no process behind.
    struct Running(Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// message id → every body received with it; checks the wire headers on the way.
    fn by_message_id(requests: &[Recorded], team: bool) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        let mut delivery_ids: BTreeMap<String, String> = BTreeMap::new();
        for r in requests.iter().filter(|r| r.succeeded()) {
            assert_eq!(r.header("x-hookpipe-type"), Some("cohorts.computed"));
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("user-agent"), Some("Amplitude/Webhook/1.0"));
            assert_eq!(r.header("x-team").is_some(), team);
            let id = r.json()["message_id"].as_str().unwrap().to_owned();
            let delivery = r.header("x-hookpipe-delivery-id").unwrap().to_owned();
            // One delivery id per (destination, message id), whatever the repeat.
            assert_eq!(
                delivery_ids.entry(id.clone()).or_insert(delivery.clone()),
                &delivery
            );
            out.entry(id).or_default().push(r.body.to_vec());
        }
        out
    }

    /// (in_cohort, user ids) of each message id; every repeat must be byte-identical.
    fn users(received: &BTreeMap<String, Vec<Vec<u8>>>) -> BTreeMap<String, (bool, Vec<String>)> {
        received
            .iter()
            .map(|(id, bodies)| {
                assert!(
                    bodies.iter().all(|b| b == &bodies[0]),
                    "{id}: repeats differ"
                );
                let v: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
                let users = v["users"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u["user_id"].as_str().unwrap().to_owned())
                    .collect();
                (id.clone(), (v["in_cohort"].as_bool().unwrap(), users))
            })
            .collect()
    }

    fn expected(size: usize) -> BTreeMap<String, (bool, Vec<String>)> {
        let mut want = BTreeMap::new();
        for (dir, prefix, total, in_cohort) in
            [("enter", "in-", 2500, true), ("exit", "out-", 1200, false)]
        {
            for (i, start) in (0..total).step_by(size).enumerate() {
                let ids = (start..(start + size).min(total))
                    .map(|u| format!("{prefix}{u}"))
                    .collect();
                want.insert(format!("{CHANGE}::{dir}::{i}"), (in_cohort, ids));
            }
        }
        want
    }

    async fn produce_shuffled(topic: &str, extra: Vec<Vec<u8>>) {
        let mut messages = chunk_messages(2500, 1200, 1000);
        messages.push(messages[2].clone()); // at-least-once upstream
        messages.extend(extra);
        fastrand::Rng::with_seed(3).shuffle(&mut messages);
        let outgoing = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| Outgoing::new(m).partition((i % 3) as i32));
        produce_many(topic, outgoing).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shuffled_chunks_through_kafka_give_exact_batches_to_each_destination() {
        let s = Setup::new("cohort-e2e").await;
        produce_shuffled(&s.topic, vec![b"{\"cohort_id\":\"x\"}".to_vec()]).await;
        let _run = Running(s.spawn());

        // Default payload, batches of 1000: 3 + 2 distinct; plus the duplicated chunk's repeats.
        s.plain.wait_for_successes(5, WAIT).await;
        s.templated.wait_for_successes(5 + 3, WAIT).await;
        let dead = read_all(&s.dead_letter, 1, WAIT).await;
        assert_eq!(dead.len(), 1, "the malformed chunk is dead-lettered");
        assert_eq!(
            dead[0].header("hookpipe.reason").as_deref(),
            Some("invalid_cohort_change")
        );
        // Let the duplicate's repeats arrive, then compare.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let plain = by_message_id(&s.plain.requests(), false);
        let templated = by_message_id(&s.templated.requests(), true);
        assert_eq!(users(&plain), expected(1000));
        assert_eq!(users(&templated), expected(500));
        // The template's output is exactly FreeMarker's layout for the seed template.
        let first = &templated[&format!("{CHANGE}::exit::2")][0];
        let text = String::from_utf8(first.clone()).unwrap();
        assert!(
            text.starts_with("{\n    \"cohort_name\": \"My Test Cohort\",\n    \"cohort_id\": \"7khm89cz\",\n    \"in_cohort\": false,\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\"user_id\": \"out-1199\"\n      }    ]\n}\n"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_between_batches_then_restart_repeats_the_same_message_ids() {
        let s = Setup::new("cohort-kill").await;
        produce_shuffled(&s.topic, Vec::new()).await;
        {
            let _run = Running(s.spawn());
            // Some batches out, surely not all: SIGKILL (Running's drop) mid-stream.
            s.plain.wait_for_successes(2, WAIT).await;
        }
        let before = by_message_id(&s.plain.requests(), false);
        let _run = Running(s.spawn());
        s.plain
            .wait_for_successes(before.values().map(Vec::len).sum::<usize>() + 1, WAIT)
            .await;
        // Wait until every distinct batch of both destinations has arrived.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let p = by_message_id(&s.plain.requests(), false).len();
            let t = by_message_id(&s.templated.requests(), true).len();
            if (p, t) == (5, 8) || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = by_message_id(&s.plain.requests(), false);
        // Same ids, same bytes across the crash; exactly the expected batches in the end.
        for (id, bodies) in &before {
            assert_eq!(after[id][0], bodies[0], "{id} changed across the restart");
        }
        assert_eq!(users(&after), expected(1000));
        assert_eq!(
            users(&by_message_id(&s.templated.requests(), true)),
            expected(500)
        );
        // Every chunk's batches are settled, so every offset gets committed.
        let end = end_offsets(&s.topic).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let committed = committed_offsets(&s.group, &s.topic).await;
            let done = end.iter().all(|(p, e)| committed.get(p) == Some(&Some(*e)));
            if done || tokio::time::Instant::now() > deadline {
                assert!(done, "committed {committed:?}, end {end:?}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `[destinations.cohorts]` inside a whole config file: a valid one becomes the destination's
/// cohort route; a broken one reports every problem with its path, the template's with a caret.
#[test]
fn cohort_settings_load_with_the_config_and_report_every_problem() {
    use hookpipe::config::{load_str, StrError};
    let base = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
[topics]
cohort_changes = ["amplitude-cohorts"]
dead_letter = "dead"
[[destinations]]
name = "crm"
url = "http://127.0.0.1:9/hook"
"#;
    let ok = load_str(
        &format!(
            "{base}[destinations.cohorts]\nbatch_size = 250\ntemplate_inline = '${{input.cohort_id}}'\n"
        ),
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap();
    assert_eq!(ok.topics.cohort_changes, ["amplitude-cohorts"]);
    let route = ok.destinations[0].cohorts.as_ref().unwrap();
    assert_eq!(
        (route.destination.as_str(), route.batch_size.get()),
        ("crm", 250)
    );
    assert_eq!(route.request_timeout, std::time::Duration::from_secs(2));
    assert!(route.template.is_some() && ok.destinations[0].events.is_none());

    let bad = format!(
        "{base}[destinations.cohorts]\nbatch_size = 0\nwindow = \"7m\"\ntemplate_inline = '${{input.cohort_id'\n"
    );
    let err = match load_str(&bad, std::path::Path::new("."), &|_| None) {
        Err(StrError::Invalid(e)) => e.to_string(),
        other => panic!("expected validation errors, got {other:?}"),
    };
    let p = "destinations[0] \"crm\".cohorts";
    assert!(err.starts_with("3 problems"), "{err}");
    assert!(
        err.contains(&format!("{p}.batch_size: 0, must be from 1 to 100000")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}.window: \"7m\" is not a window")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}: {p}.template_inline:1:")),
        "{err}"
    );
    assert!(err.contains('^'), "{err}");

    // Cohorts alone are enough for a destination; disabled cohorts are not.
    let off = format!("{base}[destinations.cohorts]\nenabled = false\n");
    let err = match load_str(&off, std::path::Path::new("."), &|_| None) {
        Err(StrError::Invalid(e)) => e.to_string(),
        other => panic!("expected validation errors, got {other:?}"),
    };
    assert!(err.contains("nothing would be sent"), "{err}");
}
