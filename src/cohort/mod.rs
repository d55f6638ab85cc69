//! Cohort membership changes turned into exact, de-duplicable batches.
//!
//! Two inputs feed cohort webhooks (the formats are specified in `docs/cohorts.md`):
//!
//! - [`Chunk`]: one message of a computed cohort change. A change may be split into several
//!   chunks; every chunk is self-contained (it says where its users sit in the change), so its
//!   batches and their message ids are computed from that chunk alone, whatever the arrival order
//!   and however often it is replayed. Memory is bounded by one chunk.
//! - [`Membership`]: one user entering or leaving a cohort. A [`WindowAggregator`] collapses a
//!   window's events to each user's net change and, when the window closes, yields it as a
//!   one-chunk change whose id is derived from the window itself, so a replayed window yields the
//!   same message ids.
//!
//! A chunk is cut into [`Batch`]es of at most [`BatchSize`] users, entering users first, with
//! `message_id = <change id>::enter|exit::<batch index>`. [`payload`] writes a batch as Amplitude's
//! default cohort payload (which is also the template's `input` document), and [`route`] turns a
//! chunk into one destination's delivery requests. Nothing here knows of Kafka, and nothing here
//! sends HTTP.

pub mod batch;
pub mod config;
pub mod input;
pub mod json;
pub mod payload;
pub mod route;
pub mod settle;
pub mod window;

pub use batch::{Batch, BatchSize, Batches, MessageId};
pub use config::{CohortSettings, RawCohortSettings, Window};
pub use input::{Chunk, DecodeError, Header, Membership, User};
pub use route::{CohortRoute, Renderer};
pub use settle::{close_watermark, MembershipPartition};
pub use window::{ClosedWindow, Late, WindowAggregator};

use std::time::Duration;

/// Default timeout of one HTTP try of a cohort delivery. Amplitude asks cohort receivers to answer
/// within 1–2 s; 2 s accepts every receiver that does, and still leaves room for a second try
/// inside an attempt's 4 s budget.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a batch's users enter or leave the cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Users entering the cohort (`in_cohort: true`, `::enter::` in the message id).
    Enter,
    /// Users leaving the cohort (`in_cohort: false`, `::exit::` in the message id).
    Exit,
}

impl Direction {
    /// The word used in message ids: `enter` or `exit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Enter => "enter",
            Direction::Exit => "exit",
        }
    }

    /// The payload's `in_cohort` value.
    pub fn in_cohort(self) -> bool {
        self == Direction::Enter
    }
}
