//! Timers at one million pending: what holding a million waiting deliveries in memory costs.
//!
//! - `timers/delay_queue/insert_expire_1m`: tokio-util's `DelayQueue` (a hierarchical timing
//!   wheel): insert 1,000,000 keys with due times spread over 4 hours, then expire them all.
//! - `timers/tokio_tasks/sleep_expire_1m`: the alternative of one tokio task per parked delivery,
//!   each sleeping on tokio's own timer wheel: spawn 1,000,000, then let them all fire.
//! - Memory (printed once, not timed): resident bytes per pending entry for both, measured as the
//!   growth of VmRSS while 1,000,000 are pending, plus the size of a parked-delivery record
//!   beyond its body.
//!
//! Time runs on tokio's paused clock (`advance`), so the benchmark measures timer work, not
//! waiting. Each benchmark asserts that every timer fired, so it cannot measure a no-op.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hookpipe::deliver::{Kind, Try};
use hookpipe::retry::{AttemptLog, ParkedDelivery, SourcePosition};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::time::DelayQueue;

const N: usize = 1_000_000;
const SPREAD: Duration = Duration::from_secs(4 * 3600);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Due times spread evenly-at-random over [`SPREAD`], fixed by a seed.
fn deadlines() -> Vec<Duration> {
    let mut rng = fastrand::Rng::with_seed(42);
    let max = SPREAD.as_millis() as u64;
    (0..N)
        .map(|_| Duration::from_millis(rng.u64(1..max)))
        .collect()
}

async fn delay_queue_fill(due: &[Duration]) -> DelayQueue<u64> {
    let mut q = DelayQueue::with_capacity(due.len());
    for (i, d) in due.iter().enumerate() {
        q.insert(i as u64, *d);
    }
    q
}

async fn delay_queue_expire_all(mut q: DelayQueue<u64>) -> usize {
    tokio::time::advance(SPREAD).await;
    let mut fired = 0;
    while let Some(_expired) = std::future::poll_fn(|cx| q.poll_expired(cx)).await {
        fired += 1;
    }
    fired
}

async fn tasks_fill(due: &[Duration], fired: &Arc<AtomicUsize>) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for d in due {
        // Created here, so the deadline is counted from now, not from the task's first poll.
        let sleep = tokio::time::sleep(*d);
        let fired = fired.clone();
        set.spawn(async move {
            sleep.await;
            fired.fetch_add(1, Ordering::Relaxed);
        });
    }
    // Let every task register its timer.
    tokio::task::yield_now().await;
    set
}

async fn tasks_expire_all(mut set: tokio::task::JoinSet<()>) {
    tokio::time::advance(SPREAD).await;
    while set.join_next().await.is_some() {}
}

/// Resident set size in bytes (Linux `/proc/self/status`), or `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn report_memory(due: &[Duration]) {
    let rt = runtime();
    let before = rss_bytes();
    let q = rt.block_on(delay_queue_fill(due));
    let after = rss_bytes();
    assert_eq!(q.len(), N);
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "memory/delay_queue: {:.1} bytes per pending timer at {N} (RSS +{} MiB)",
            a.saturating_sub(b) as f64 / N as f64,
            a.saturating_sub(b) >> 20
        );
    }
    drop(q);

    let fired = Arc::new(AtomicUsize::new(0));
    let before = rss_bytes();
    let set = rt.block_on(tasks_fill(due, &fired));
    let after = rss_bytes();
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "memory/tokio_tasks: {:.1} bytes per sleeping task at {N} (RSS +{} MiB)",
            a.saturating_sub(b) as f64 / N as f64,
            a.saturating_sub(b) >> 20
        );
    }
    rt.block_on(tasks_expire_all(set));
    assert_eq!(fired.load(Ordering::Relaxed), N);

    // A parked delivery lives in Kafka, not in memory; its record's overhead beyond the body:
    let body = Bytes::from(vec![b'x'; 300]);
    let record = ParkedDelivery {
        format: hookpipe::retry::record::FORMAT,
        delivery_id: "0123456789abcdef0123456789abcdef:destination".into(),
        destination: "destination".into(),
        kind: Kind::Track,
        body: body.clone(),
        source: Some(SourcePosition {
            topic: "amplitude-events".into(),
            partition: 11,
            offset: 123_456_789,
        }),
        next_attempt: 2,
        due_unix_ms: 1_700_000_060_000,
        attempts: vec![AttemptLog {
            attempt: 1,
            tries: vec![
                Try {
                    started_unix_ms: 1_700_000_000_000,
                    status: Some(503),
                    error: None,
                };
                3
            ],
        }],
    };
    let encoded = record.to_json().len();
    println!(
        "memory/parked_record: {encoded} bytes on Kafka for a 300-byte body after one attempt of 3 tries ({} bytes of overhead incl. base64)",
        encoded - body.len()
    );
}

fn bench(c: &mut Criterion) {
    let due = deadlines();
    report_memory(&due);

    let mut group = c.benchmark_group("timers");
    group.sample_size(10);
    group.bench_function("delay_queue/insert_1m", |b| {
        let rt = runtime();
        b.iter_batched(
            || (),
            |()| {
                let q = rt.block_on(delay_queue_fill(&due));
                assert_eq!(q.len(), N);
                q
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("delay_queue/insert_expire_1m", |b| {
        let rt = runtime();
        b.iter(|| {
            let fired = rt.block_on(async {
                let q = delay_queue_fill(&due).await;
                delay_queue_expire_all(q).await
            });
            assert_eq!(fired, N);
        })
    });
    group.bench_function("tokio_tasks/sleep_expire_1m", |b| {
        b.iter(|| {
            let rt = runtime();
            let fired = Arc::new(AtomicUsize::new(0));
            rt.block_on(async {
                let set = tasks_fill(&due, &fired).await;
                tasks_expire_all(set).await;
            });
            assert_eq!(fired.load(Ordering::Relaxed), N);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
