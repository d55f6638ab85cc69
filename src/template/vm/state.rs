//! Per-worker scratch space reused across renders: the VM's stacks, pools, string arena and
//! scratch buffer. After the first few renders of a template they have grown to what it needs,
//! and later renders allocate nothing.

use bytes::BytesMut;

use super::value::Value;
use super::LoopState;

/// Reusable render buffers. Keep one per worker thread and pass it to every render.
///
/// Each VM buffer has its own field (no pool to pop from and push back to), so lending them to
/// a render and taking them back is a few moves per buffer.
#[derive(Default)]
pub struct RenderState {
    pub(crate) input_cache: Vec<Value<'static>>,
    pub(crate) stack: Vec<Value<'static>>,
    pub(crate) locals: Vec<Value<'static>>,
    pub(crate) globals: Vec<Value<'static>>,
    pub(crate) seqs: Vec<Value<'static>>,
    pub(crate) hashes: Vec<(Value<'static>, Value<'static>)>,
    pub(crate) loops: Vec<LoopState<'static>>,
    pub(crate) marks: Vec<usize>,
    pub(crate) arena: String,
    pub(crate) scratch: BytesMut,
}

impl std::fmt::Debug for RenderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderState")
            .field("stack_capacity", &self.stack.capacity())
            .field("arena_capacity", &self.arena.capacity())
            .finish()
    }
}

/// Re-types an emptied vector so its allocation can be kept across renders whose values borrow
/// different inputs. `Value<'a>` has the same layout for every `'a`, so the standard library
/// reuses the allocation in place (no unsafe code: the iterator is empty).
pub(crate) fn retype<T, U>(mut v: Vec<T>) -> Vec<U> {
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
}
