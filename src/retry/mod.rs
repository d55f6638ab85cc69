//! Retries across attempts: Amplitude's schedule (nine more attempts over four hours after a
//! failed first attempt), the durable retry tiers that hold deliveries while they wait, and the
//! dead-letter records written when every attempt has failed.
//!
//! - [`schedule`]: the pure schedule, its exact waits, and one tier per distinct wait.
//! - [`record`]: the parked-delivery and dead-letter records written to Kafka.
//! - [`park`]: the write side: after a failed attempt, produce the delivery to its next tier (or
//!   the dead-letter topic) and return only once Kafka acknowledged it.
//! - [`placement`]: which partition of a tier each destination's records go to, so that no two
//!   destinations share one while partitions suffice.
//! - [`tier`]: the read side: one consumer per tier waits for each partition's head (paused
//!   partition, timer on tokio-util's `DelayQueue`), re-attempts, and parks failures again.
//! - [`topics`]: creates the tier and dead-letter topics at start-up.
//! - [`service`]: all of the above behind the pipeline's failure path (`pipeline::settle`).
//! - [`replay`]: re-sends dead-lettered deliveries through the same path (`hookpipe replay`).
//!
//! `docs/retries.md` states the exact schedules and the record format.
//!
//! Timers: in-memory waits (in-attempt backoffs, a tier's head waiting for its due time) are
//! tokio timers, which live on tokio's hierarchical timing wheel; `benches/timers.rs` measures it
//! and tokio-util's `DelayQueue` at one million pending timers.

pub mod park;
pub mod placement;
pub mod record;
pub mod replay;
pub mod schedule;
pub mod service;
pub mod tier;
pub mod topics;

pub use park::{Parked, Parker};
pub use placement::Placement;
pub use record::{AttemptLog, DeadLetter, ParkedDelivery, RecordError, SourcePosition};
pub use schedule::{Next, Schedule, ScheduleError};
pub use service::{RetryService, RetrySettings, RetryTasks};
pub use tier::{Tier, TierError, TierLimits};
