//! A deliberately plain Kafka → HTTP relay: the harness's control pipeline.
//!
//! It exists so the harness can be checked end to end (and its overhead seen) without hookpipe:
//! one consumer, each message POSTed as-is to one URL with bounded concurrency, retried until a
//! 2xx. Offsets are committed only up to the contiguous prefix of delivered messages per
//! partition, so it loses nothing across restarts, though it may duplicate. It has none of
//! hookpipe's features (filters, templates, headers, dead letters); it is a yardstick, not a
//! product.

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Topic to consume.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Where every message is POSTed.
    pub url: String,
    /// Requests in flight at most.
    pub concurrency: usize,
}

#[derive(Default)]
struct Progress {
    /// Per partition: next offset to commit, and delivered offsets beyond it.
    parts: HashMap<i32, (i64, BTreeSet<i64>)>,
}

impl Progress {
    fn settle(&mut self, partition: i32, offset: i64) {
        let (next, done) = self.parts.entry(partition).or_insert((-1, BTreeSet::new()));
        if *next < 0 {
            // First settlement seen for this partition: offsets before the first fetched one are
            // already committed; `started` below records that first offset.
            *next = offset;
        }
        done.insert(offset);
        while done.remove(next) {
            *next += 1;
        }
    }

    fn started(&mut self, partition: i32, offset: i64) {
        let e = self.parts.entry(partition).or_insert((-1, BTreeSet::new()));
        if e.0 < 0 || offset < e.0 {
            e.0 = offset;
        }
    }
}

/// Runs until SIGTERM/SIGINT, then drains in-flight requests (bounded, 30 s) and commits.
pub async fn run(spec: RelaySpec) -> Result<(), String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &spec.bootstrap)
        .set("group.id", &spec.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.min.bytes", "65536")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|e| format!("consumer for {}: {e}", spec.bootstrap))?;
    consumer
        .subscribe(&[&spec.topic])
        .map_err(|e| format!("subscribing to {}: {e}", spec.topic))?;
    let consumer = Arc::new(consumer);
    let client = crate::http::Client::new();
    let limit = Arc::new(Semaphore::new(spec.concurrency));
    let progress = Arc::new(Mutex::new(Progress::default()));
    let url: Arc<str> = spec.url.into();

    let committer = {
        let consumer = consumer.clone();
        let progress = progress.clone();
        let topic = spec.topic.clone();
        move || {
            let mut tpl = TopicPartitionList::new();
            for (p, (next, _)) in progress.lock().expect("progress").parts.iter() {
                if *next >= 0 {
                    let _ = tpl.add_partition_offset(&topic, *p, Offset::Offset(*next));
                }
            }
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    eprintln!("relay: commit: {e}");
                }
            }
        }
    };

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("installing SIGTERM handler: {e}"))?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => committer(),
            msg = consumer.recv() => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => { eprintln!("relay: consume: {e}"); continue; }
                };
                let (partition, offset) = (msg.partition(), msg.offset());
                let body = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
                drop(msg);
                progress.lock().expect("progress").started(partition, offset);
                let permit = limit.clone().acquire_owned().await.map_err(|e| e.to_string())?;
                let (client, url, progress) = (client.clone(), url.clone(), progress.clone());
                tokio::spawn(async move {
                    let mut backoff = Duration::from_millis(50);
                    loop {
                        match client.post(&url, body.clone(), &[]).await {
                            Ok(s) if (200..300).contains(&s) => break,
                            Ok(_) | Err(_) => {
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(2));
                            }
                        }
                    }
                    progress.lock().expect("progress").settle(partition, offset);
                    drop(permit);
                });
            }
        }
    }
    // Drain: wait for every permit to come back, bounded.
    let all = u32::try_from(spec.concurrency).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(30), limit.acquire_many(all)).await;
    committer();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_the_contiguous_prefix() {
        let mut p = Progress::default();
        for o in 10..14 {
            p.started(0, o);
        }
        p.settle(0, 11);
        assert_eq!(p.parts[&0].0, 10);
        p.settle(0, 10);
        assert_eq!(p.parts[&0].0, 12);
        p.settle(0, 13);
        p.settle(0, 12);
        assert_eq!(p.parts[&0].0, 14);
    }
}
