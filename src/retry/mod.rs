//! Retries across attempts: Amplitude's schedule (nine more attempts over four hours after a
//! failed first attempt), the durable retry tiers that hold deliveries while they wait, and the
//! dead-letter records written when every attempt has failed.
//!
//! - [`schedule`]: the pure schedule, its exact waits, and one tier per distinct wait.
//! - [`record`]: the parked-delivery and dead-letter records written to Kafka.
//!
//! Timers: in-memory waits (in-attempt backoffs, a tier's head waiting for its due time) are
//! tokio timers, which live on tokio's hierarchical timing wheel; `benches/timers.rs` measures it
//! and tokio-util's `DelayQueue` at one million pending timers.

pub mod record;
pub mod schedule;

pub use record::{AttemptLog, DeadLetter, ParkedDelivery, RecordError, SourcePosition};
pub use schedule::{Next, Schedule, ScheduleError};
