//! hookpipe streams Amplitude-format analytics data out of Kafka into customers' webhooks.
//!
//! Each Kafka message (an event, an identify update, or a cohort membership change) is decoded,
//! routed to the destinations whose filter matches, rendered by that destination's FreeMarker
//! template, and POSTed. A message's offset is committed only once every delivery it caused is
//! settled: delivered, parked durably for a later attempt, or dead-lettered.
//!
//! # Layout
//! The modules follow the data, source → decode → route → render → deliver → retry → telemetry:
//!
//! - [`source`]: the Kafka consumer, partitions sharded over workers, per-partition commit
//!   watermarks.
//! - [`route`]: decides which destinations (and which of their payloads) a message goes to.
//! - [`template`]: the FreeMarker engine, a compiler to bytecode and a VM. Knows nothing of Kafka,
//!   HTTP or config files.
//! - [`deliver`]: the HTTP client, preset and custom headers, signing, and the tries within one
//!   attempt. Knows nothing of Kafka.
//! - [`retry`]: Amplitude's schedule across attempts, the timing wheel, and the durable retry tiers.
//! - [`cohort`]: cohort membership changes turned into exact, de-duplicable batches.
//! - [`pipeline`]: the one place that wires source → route → render → deliver → settle.
//! - [`config`]: the TOML file, parsed and validated once into types the rest trusts.
//! - [`telemetry`]: Prometheus metrics, latency histograms and structured logs.
//! - [`cli`]: the `hookpipe` commands.

pub mod cli;
pub mod cohort;
pub mod config;
pub mod deliver;
pub mod pipeline;
pub mod retry;
pub mod route;
pub mod source;
pub mod telemetry;
pub mod template;
