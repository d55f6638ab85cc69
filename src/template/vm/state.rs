//! Per-worker scratch space reused across renders: the VM's stacks, pools, string arena and
//! scratch buffer. After the first few renders of a template they have grown to what it needs,
//! and later renders allocate nothing.

use bytes::BytesMut;

use super::value::Value;
use super::LoopState;

/// Reusable render buffers. Keep one per worker thread and pass it to every render.
#[derive(Default)]
pub struct RenderState {
    values: Vec<Vec<Value<'static>>>,
    pairs: Vec<Vec<(Value<'static>, Value<'static>)>>,
    loops: Option<Vec<LoopState<'static>>>,
    pub(crate) marks: Vec<usize>,
    pub(crate) arena: String,
    pub(crate) scratch: BytesMut,
}

impl std::fmt::Debug for RenderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderState")
            .field("spare_vectors", &self.values.len())
            .field("arena_capacity", &self.arena.capacity())
            .finish()
    }
}

/// Re-types an emptied vector so its allocation can be kept across renders whose values borrow
/// different inputs. `Value<'a>` has the same layout for every `'a`, so the standard library
/// reuses the allocation in place (no unsafe code: the iterator is empty).
fn retype<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable_item()).collect()
}

fn unreachable_item<U>() -> U {
    unreachable!("retype() only maps an empty vector")
}

impl RenderState {
    /// A fresh state (buffers grow on first use).
    pub fn new() -> RenderState {
        RenderState::default()
    }

    pub(crate) fn take_values<'a>(&mut self) -> Vec<Value<'a>> {
        self.values.pop().map(retype).unwrap_or_default()
    }

    pub(crate) fn put_values(&mut self, v: Vec<Value<'_>>) {
        self.values.push(retype(v));
    }

    pub(crate) fn take_pairs<'a>(&mut self) -> Vec<(Value<'a>, Value<'a>)> {
        self.pairs.pop().map(retype).unwrap_or_default()
    }

    pub(crate) fn put_pairs(&mut self, v: Vec<(Value<'_>, Value<'_>)>) {
        self.pairs.push(retype(v));
    }

    pub(crate) fn take_loops<'a>(&mut self) -> Vec<LoopState<'a>> {
        self.loops.take().map(retype).unwrap_or_default()
    }

    pub(crate) fn put_loops(&mut self, v: Vec<LoopState<'_>>) {
        self.loops = Some(retype(v));
    }
}
