//! Deterministic batching: a [`Chunk`] is cut into [`Batch`]es of at most [`BatchSize`] users,
//! numbered so that every chunk of a change can number its own batches without seeing the others.
//!
//! Per direction, chunk `i` of a change holds users `i*chunk_size ..` of that direction, and every
//! chunk before the last non-empty one is full, so each full chunk yields exactly
//! `stride = ceil(chunk_size / batch_size)` batches. Batch `j` of chunk `i` gets index
//! `i*stride + j`: indices run 0, 1, 2, ... without gaps or repeats over the whole change, and
//! depend only on the change and the batch size, never on arrival order or replays. When
//! `chunk_size` is a multiple of the batch size (or the change is one chunk), batch `k` holds
//! exactly users `k*batch_size .. (k+1)*batch_size` of the change.

use std::fmt;
use std::num::NonZeroU32;

use super::input::{Chunk, Header, User};
use super::Direction;

/// The most users one payload carries; configurable per destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchSize(NonZeroU32);

impl BatchSize {
    /// The default: 1,000 users per payload, as Amplitude's cohort webhooks batch.
    pub const DEFAULT: BatchSize = BatchSize(match NonZeroU32::new(1000) {
        Some(n) => n,
        None => unreachable!(),
    });

    /// The largest allowed batch size: bigger payloads make receivers miss the 1–2 s answer time.
    pub const MAX: u32 = 100_000;

    /// A batch size of `n` users, if `1 <= n <= MAX`.
    pub fn new(n: u32) -> Option<BatchSize> {
        if n > Self::MAX {
            return None;
        }
        NonZeroU32::new(n).map(BatchSize)
    }

    /// The number of users.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl Default for BatchSize {
    fn default() -> Self {
        BatchSize::DEFAULT
    }
}

/// One payload's worth of users, all entering or all leaving one cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// The cohort and change the batch belongs to.
    pub header: &'a Header,
    /// Entering (`in_cohort: true`) or leaving users.
    pub direction: Direction,
    /// The batch's index among its change's batches of the same direction.
    pub index: u64,
    /// The users, in change order; never empty.
    pub users: &'a [User],
}

impl<'a> Batch<'a> {
    /// `<change id>::enter|exit::<index>`: the same for the same batch on every replay, so
    /// receivers can de-duplicate retries with it.
    pub fn message_id(&self) -> MessageId<'a> {
        MessageId {
            change_id: &self.header.change_id,
            direction: self.direction,
            index: self.index,
        }
    }
}

/// A batch's message id, formatted on demand without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId<'a> {
    /// The change's id.
    pub change_id: &'a str,
    /// `enter` or `exit`.
    pub direction: Direction,
    /// The batch index.
    pub index: u64,
}

impl fmt::Display for MessageId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}::{}::{}",
            self.change_id,
            self.direction.as_str(),
            self.index
        )
    }
}

impl Chunk {
    /// The chunk's batches: entering users first, then exiting users, each in change order.
    /// Borrows the chunk; allocates nothing.
    pub fn batches(&self, size: BatchSize) -> Batches<'_> {
        let n = u64::from(size.get());
        Batches {
            chunk: self,
            size: size.get() as usize,
            first_index: u64::from(self.chunk_index()) * self.chunk_size().div_ceil(n),
            direction: Direction::Enter,
            pos: 0,
        }
    }
}

/// Iterator over a chunk's batches (see [`Chunk::batches`]).
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    chunk: &'a Chunk,
    size: usize,
    first_index: u64,
    direction: Direction,
    pos: usize,
}

impl<'a> Iterator for Batches<'a> {
    type Item = Batch<'a>;

    fn next(&mut self) -> Option<Batch<'a>> {
        loop {
            let users = match self.direction {
                Direction::Enter => self.chunk.entered(),
                Direction::Exit => self.chunk.exited(),
            };
            if self.pos < users.len() {
                let end = (self.pos + self.size).min(users.len());
                let batch = Batch {
                    header: self.chunk.header(),
                    direction: self.direction,
                    index: self.first_index + (self.pos / self.size) as u64,
                    users: &users[self.pos..end],
                };
                self.pos = end;
                return Some(batch);
            }
            match self.direction {
                Direction::Enter => {
                    self.direction = Direction::Exit;
                    self.pos = 0;
                }
                Direction::Exit => return None,
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = |len: usize, pos: usize| len.saturating_sub(pos).div_ceil(self.size);
        let n = match self.direction {
            Direction::Enter => {
                left(self.chunk.entered().len(), self.pos) + left(self.chunk.exited().len(), 0)
            }
            Direction::Exit => left(self.chunk.exited().len(), self.pos),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            cohort_id: "c".into(),
            cohort_name: "n".into(),
            computed_time: "1".into(),
            change_id: "chg".into(),
        }
    }

    fn users(prefix: &str, range: std::ops::Range<u64>) -> Vec<User> {
        range.map(|i| User::new(format!("{prefix}{i}"))).collect()
    }

    /// Every chunk of a change of `e` entering and `x` exiting users, cut in chunks of `s`.
    fn chunks(e: u64, x: u64, s: u64) -> Vec<Chunk> {
        let count = e.max(x).div_ceil(s).max(1) as u32;
        (0..count)
            .map(|i| {
                let lo = u64::from(i) * s;
                let en = users("e", lo.min(e)..(lo + s).min(e));
                let ex = users("x", lo.min(x)..(lo + s).min(x));
                Chunk::new(header(), i, count, s, e, x, en, ex).unwrap()
            })
            .collect()
    }

    fn summary(chunks: &[Chunk], size: u32) -> Vec<(String, usize, String)> {
        let mut out: Vec<_> = chunks
            .iter()
            .flat_map(|c| c.batches(BatchSize::new(size).unwrap()))
            .map(|b| {
                (
                    b.message_id().to_string(),
                    b.users.len(),
                    b.users[0].user_id.clone(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn aligned_chunks_batch_like_one_chunk() {
        let one = summary(&chunks(2500, 1200, 5000), 1000);
        assert_eq!(
            one,
            vec![
                ("chg::enter::0".into(), 1000, "e0".into()),
                ("chg::enter::1".into(), 1000, "e1000".into()),
                ("chg::enter::2".into(), 500, "e2000".into()),
                ("chg::exit::0".into(), 1000, "x0".into()),
                ("chg::exit::1".into(), 200, "x1000".into()),
            ]
        );
        assert_eq!(summary(&chunks(2500, 1200, 1000), 1000), one);
        assert_eq!(summary(&chunks(2500, 1200, 2000), 1000), one);
    }

    #[test]
    fn unaligned_chunks_cut_batches_at_chunk_ends_and_keep_indices_contiguous() {
        // Chunks of 700, batches of 500: each full chunk yields 500 + 200 (stride 2).
        let got = summary(&chunks(1500, 0, 700), 500);
        assert_eq!(
            got,
            vec![
                ("chg::enter::0".into(), 500, "e0".into()),
                ("chg::enter::1".into(), 200, "e500".into()),
                ("chg::enter::2".into(), 500, "e700".into()),
                ("chg::enter::3".into(), 200, "e1200".into()),
                ("chg::enter::4".into(), 100, "e1400".into()),
            ]
        );
    }

    #[test]
    fn indices_are_a_gapless_range_for_many_layouts() {
        for (e, x, s, n) in [
            (0, 0, 1, 1),
            (1, 0, 1, 1),
            (0, 3, 2, 5),
            (10, 7, 3, 2),
            (999, 1001, 250, 1000),
            (4321, 1234, 1000, 300),
        ] {
            let all = chunks(e, x, s);
            for (dir, total) in [(Direction::Enter, e), (Direction::Exit, x)] {
                let mut idx: Vec<u64> = Vec::new();
                let mut seen: Vec<String> = Vec::new();
                for c in &all {
                    let it = c.batches(BatchSize::new(n).unwrap());
                    assert_eq!(it.len(), it.clone().count());
                    for b in it.filter(|b| b.direction == dir) {
                        assert!(!b.users.is_empty() && b.users.len() <= n as usize);
                        assert_eq!(b.users[0].user_id.starts_with('e'), dir.in_cohort());
                        idx.push(b.index);
                        seen.extend(b.users.iter().map(|u| u.user_id.clone()));
                    }
                }
                idx.sort();
                assert_eq!(
                    idx,
                    (0..idx.len() as u64).collect::<Vec<_>>(),
                    "{e} {x} {s} {n}"
                );
                assert_eq!(seen.len() as u64, total);
                seen.sort();
                seen.dedup();
                assert_eq!(seen.len() as u64, total, "a user doubled");
            }
        }
    }

    #[test]
    fn batch_size_bounds() {
        assert_eq!(BatchSize::default().get(), 1000);
        assert!(BatchSize::new(0).is_none());
        assert!(BatchSize::new(BatchSize::MAX + 1).is_none());
        assert_eq!(
            BatchSize::new(BatchSize::MAX).unwrap().get(),
            BatchSize::MAX
        );
    }
}
