//! Cohort batching throughput: a 1,000,000-user change (700,000 entering, 300,000 leaving, 10%
//! with user properties) cut into batches of 1,000 and written as default payloads, from decoded
//! chunks and from the Kafka message bytes, and rendered with the seed `#sep` template. Plus one
//! 1,000-user batch rendered by hookpipe's engine beside minijinja. Each run asserts what it
//! wrote, so it cannot measure a no-op. Memory: one chunk (10,000 users per direction here) and
//! one reused payload buffer; nothing grows with the cohort.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hookpipe::cohort::config::CohortFilter;
use hookpipe::cohort::{payload, BatchSize, Chunk, CohortRoute, Renderer};
use hookpipe::template::{Options, Template};

/// Amplitude's documented cohort template (conformance case 480).
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

/// The same template in Jinja syntax, for the comparison.
const JINJA_TEMPLATE: &str = r#"{
    "cohort_name": "{{ input.cohort_name }}",
    "cohort_id": "{{ input.cohort_id }}",
    "in_cohort": {{ input.in_cohort }},
    "computed_time": "{{ input.computed_time }}",
     "message_id": "{{ input.message_id }}",
    "users": [
     {% for user in input.users %}
     {
         "user_id": "{{ user.user_id }}"
      }{% if not loop.last %},{% endif %}
     {% endfor %}
    ]
}
"#;

const ENTERED: usize = 700_000;
const EXITED: usize = 300_000;
const CHUNK: usize = 10_000;

fn messages() -> Vec<Vec<u8>> {
    let count = ENTERED.max(EXITED).div_ceil(CHUNK);
    (0..count)
        .map(|i| {
            let users = |prefix: &str, total: usize| -> Vec<serde_json::Value> {
                (i * CHUNK..((i + 1) * CHUNK).min(total))
                    .map(|u| {
                        if u % 10 == 0 {
                            serde_json::json!({"user_id": format!("{prefix}{u}@example.com"),
                                "user_properties": {"plan": "pro", "country": "US", "ltv": 12.5}})
                        } else {
                            serde_json::json!({"user_id": format!("{prefix}{u}@example.com")})
                        }
                    })
                    .collect()
            };
            serde_json::to_vec(&serde_json::json!({
                "cohort_id": "7khm89cz", "cohort_name": "Power Users",
                "computed_time": "1692206763", "change_id": "9baaa88f-9d46-4ee5-a946-be0c6aea0046",
                "chunk_index": i, "chunk_count": count, "chunk_size": CHUNK,
                "entered_count": ENTERED, "exited_count": EXITED,
                "entered": users("in-", ENTERED), "exited": users("out-", EXITED),
            }))
            .unwrap()
        })
        .collect()
}

/// Batches and serializes one chunk into `out` (cleared per payload, as a sender would), adding
/// to the (users, payloads, bytes) tally.
fn write_chunk(chunk: &Chunk, out: &mut BytesMut, tally: &mut (usize, usize, usize)) {
    for batch in chunk.batches(BatchSize::DEFAULT) {
        out.clear();
        payload::write_default(&batch, out);
        tally.0 += batch.users.len();
        tally.1 += 1;
        tally.2 += out.len();
    }
}

fn check(tally: (usize, usize, usize)) {
    assert_eq!(tally.0, ENTERED + EXITED);
    assert_eq!(tally.1, (ENTERED + EXITED) / 1000);
    assert!(tally.2 > 30 * (ENTERED + EXITED));
}

fn bench(c: &mut Criterion) {
    let messages = messages();
    let chunks: Vec<Chunk> = messages.iter().map(|m| Chunk::decode(m).unwrap()).collect();
    let mut g = c.benchmark_group("cohort/1m_users");
    g.sample_size(10);
    g.throughput(Throughput::Elements((ENTERED + EXITED) as u64));
    let mut out = BytesMut::with_capacity(128 << 10);
    g.bench_function("batch_default_payload/hookpipe", |b| {
        b.iter(|| {
            let mut tally = (0, 0, 0);
            for chunk in &chunks {
                write_chunk(chunk, &mut out, &mut tally);
            }
            check(tally);
            tally
        })
    });
    g.bench_function("decode_batch_default_payload/hookpipe", |b| {
        b.iter(|| {
            let mut tally = (0, 0, 0);
            for m in &messages {
                let chunk = Chunk::decode(m).unwrap();
                write_chunk(&chunk, &mut out, &mut tally);
            }
            check(tally);
            tally
        })
    });
    let route = CohortRoute {
        destination: "bench".into(),
        cohorts: CohortFilter::All,
        batch_size: BatchSize::DEFAULT,
        template: Some(Template::compile("seed", SEED_TEMPLATE, &Options::default()).unwrap()),
    };
    let mut renderer = Renderer::default();
    g.bench_function("batch_seed_template/hookpipe", |b| {
        b.iter(|| {
            let (mut users, mut payloads, mut bytes) = (0, 0, 0);
            for chunk in &chunks {
                renderer.render_chunk(chunk, &route, |r| {
                    let r = r.unwrap();
                    users += r.users;
                    payloads += 1;
                    bytes += r.request.body.len();
                });
            }
            check((users, payloads, bytes));
            bytes
        })
    });
    g.finish();

    // One batch of 1,000 users, one render, hookpipe beside minijinja.
    let batch = chunks[0].batches(BatchSize::DEFAULT).next().unwrap();
    let last = &batch.users[999].user_id;
    let mut doc = BytesMut::new();
    payload::write_template_input(&batch, &mut doc);
    let ctx: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    let mut env = minijinja::Environment::new();
    env.add_template("seed", JINJA_TEMPLATE).unwrap();
    let jinja = env.get_template("seed").unwrap();
    let mut g = c.benchmark_group("render/cohort_1000");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("hookpipe", |b| {
        b.iter(|| {
            let r = renderer.render(&batch, &route).unwrap();
            assert!(std::str::from_utf8(&r.request.body)
                .unwrap()
                .contains(last.as_str()));
            r.request.body.len()
        })
    });
    g.bench_function("minijinja", |b| {
        b.iter(|| {
            let out = jinja.render(minijinja::context! { input => &ctx }).unwrap();
            assert!(out.contains(last.as_str()));
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
