//! `hookpipe-perf`: the tools behind hookpipe's end-to-end benchmarks (issue 6).
//!
//! - `loadgen`: realistic Amplitude export-format events to a Kafka topic, as fast as possible or
//!   at a fixed rate.
//! - `sink`: a counting HTTP/1.1 + h2c receiver that checks ids for loss and duplicates, records
//!   end-to-end latency and can inject failures.
//! - `run`: the scenario driver behind `perf/run`.
//! - `relay`: a plain Kafka → HTTP relay, the harness's control pipeline.

#![forbid(unsafe_code)]

mod drive;
mod gen;
mod http;
mod kafka;
mod procstat;
mod relay;
mod sink;

use clap::{Parser, Subcommand};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "hookpipe-perf",
    about = "Load generator, counting sink and scenario driver for hookpipe's benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce N events to a topic (created if missing) and report produced/s.
    Loadgen {
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partitions, when the topic has to be created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Number of events.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// First sequence number.
        #[arg(long, default_value_t = 0)]
        start_seq: u64,
        /// Events per second (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Run id, the prefix of every insert_id.
        #[arg(long, default_value = "run")]
        run: String,
        /// compression.type: none, lz4, zstd, snappy, gzip.
        #[arg(long, default_value = "lz4")]
        compression: String,
    },
    /// Serve the counting sink until SIGINT/SIGTERM (or until --expect unique ids arrived), then
    /// print the JSON summary. GET /summary serves it while running.
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: std::net::SocketAddr,
        /// `seq` (insert_id) or `header:NAME`.
        #[arg(long, default_value = "seq")]
        id: String,
        /// Unique deliveries expected (over all paths); exit once they arrived.
        #[arg(long)]
        expect: Option<u64>,
        /// Share of requests answered 500.
        #[arg(long, default_value_t = 0.0)]
        fail_500: f64,
        /// Share of requests answered 429.
        #[arg(long, default_value_t = 0.0)]
        fail_429: f64,
        /// Share of requests stalled before a 200.
        #[arg(long, default_value_t = 0.0)]
        stall_share: f64,
        /// Stall length in milliseconds.
        #[arg(long, default_value_t = 0)]
        stall_ms: u64,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Run a scenario end to end and print one summary (see perf/README.md).
    Run(drive::RunArgs),
    /// The control pipeline: consume a topic and POST every message as-is to one URL.
    Relay {
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Destination URL.
        #[arg(long)]
        url: String,
        /// Requests in flight at most.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Print one generated event (seq N) to stdout, e.g. for wrk's request body.
    Event {
        /// Sequence number.
        #[arg(long, default_value_t = 0)]
        seq: u64,
        /// Print the seed-sized (~400 B) event instead.
        #[arg(long)]
        seed: bool,
    },
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() {
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        Cmd::Loadgen {
            bootstrap,
            topic,
            partitions,
            events,
            start_seq,
            rate,
            run,
            compression,
        } => runtime(1)
            .block_on(kafka::create_topic(&bootstrap, &topic, partitions))
            .and_then(|()| {
                kafka::produce(&kafka::LoadSpec {
                    bootstrap,
                    topic,
                    run,
                    start_seq,
                    count: events,
                    rate,
                    compression,
                })
            })
            .map(|r| {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            }),
        Cmd::Sink {
            listen,
            id,
            expect,
            fail_500,
            fail_429,
            stall_share,
            stall_ms,
            threads,
        } => runtime(threads).block_on(async move {
            let ids: sink::IdSource = id.parse()?;
            let faults = sink::Faults {
                fail_500,
                fail_429,
                stall_share,
                stall: Duration::from_millis(stall_ms),
            };
            let s = sink::Sink::start(listen, ids, faults)
                .await
                .map_err(|e| format!("sink on {listen}: {e}"))?;
            eprintln!("sink: listening on {}", s.url());
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(|e| format!("SIGTERM handler: {e}"))?;
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = tokio::signal::ctrl_c() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if expect.is_some_and(|n| s.unique(None) >= n) { break; }
                    }
                }
            }
            let exp: HashMap<String, u64> = match expect {
                Some(n) => {
                    let paths = s.unique_by_path();
                    if paths.len() == 1 {
                        paths.into_keys().map(|p| (p, n)).collect()
                    } else {
                        HashMap::new()
                    }
                }
                None => HashMap::new(),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&s.summary(&exp)).unwrap_or_default()
            );
            Ok(())
        }),
        Cmd::Run(args) => runtime(2).block_on(async move {
            let s = drive::run(args).await.map_err(|e| e.to_string())?;
            let bad = s["lost"].as_u64().unwrap_or(1) > 0
                || !s["problems"].as_array().is_some_and(|p| p.is_empty());
            if bad {
                Err("run finished with problems (see summary)".to_string())
            } else {
                Ok(())
            }
        }),
        Cmd::Relay {
            bootstrap,
            topic,
            group,
            url,
            concurrency,
            threads,
        } => runtime(threads).block_on(relay::run(relay::RelaySpec {
            bootstrap,
            topic,
            group,
            url,
            concurrency,
        })),
        Cmd::Event { seq, seed } => {
            if seed {
                println!("{}", gen::seed_event());
            } else {
                let mut s = String::new();
                gen::event("wrk", seq, sink::now_ms(), &mut s);
                println!("{s}");
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("hookpipe-perf: {e}");
        std::process::exit(1);
    }
}
