//! Optional batching (beyond Amplitude, which sends one payload per request): a destination's
//! events (or users) with `batch = { ... }` travel several to a request, as a JSON array of the
//! per-payload bodies or through a batch template that sees them as `inputs`.
//!
//! # Rules (docs/configuration.md, "Batching")
//! - A batch holds payloads of **one source partition** (one assignment of it), one destination,
//!   one payload kind (event or user) and one `x-hookpipe-type`, in offset order: the worker
//!   that owns the partition appends them as it handles its messages. The destination's filter
//!   has already applied per event.
//! - It closes when it holds `max_events` payloads, when one more payload would take it past
//!   `max_bytes` (a payload alone larger than that goes in a batch of one), when its oldest
//!   payload waited `max_wait`, when the worker would otherwise wait for room under
//!   `pipeline.max_in_flight` (pressure), and when the worker stops (shutdown).
//! - A closed batch is one delivery: one request, one delivery id ([`batch_id`], derived from the
//!   members' source positions), the same attempt, circuit breaker, overflow, retry tiers and
//!   dead letters as a single delivery; the body that is parked is the rendered batch.
//! - Every member's offset settles only once the batch is settled (delivered, parked or
//!   dead-lettered), so the partition's commit watermark never passes an undelivered member.
//! - Bounded memory: each buffered member holds a permit of `pipeline.max_in_flight` until the
//!   batch settles; the request itself needs one permit of its destination, like any delivery.
//! - A batch whose partition was revoked is dropped unsent and unsettled when it closes: the
//!   partition's new owner reads those messages again from the committed offset.

use super::settle::{FailedDelivery, Failure, Overflowed};
use super::worker::{admit_total, Delivery};
use super::Shared;
use crate::config::Batching;
use crate::deliver::{Kind, Request};
use crate::retry::record::SourcePosition;
use crate::route::{Payload, Route};
use crate::source::{PartitionTracker, Settlement, SourceMessage};
use crate::template::{RenderState, Template};
use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use tracing::debug;

/// What one open batch collects: one destination, payload kind and request kind, of one
/// partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    /// Index into the enabled destinations.
    pub(super) destination: usize,
    /// Events or users.
    pub(super) payload: Payload,
    /// The `x-hookpipe-type` of every member.
    pub(super) kind: Kind,
    /// Source topic.
    pub(super) topic: Arc<str>,
    /// Source partition.
    pub(super) partition: i32,
}

/// The limits of one batch, from its [`Batching`] settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Close at this many members.
    pub(super) max_events: usize,
    /// Close before the JSON array of the members would exceed this many bytes.
    pub(super) max_bytes: usize,
    /// Close once the oldest member waited this long.
    pub(super) max_wait: Duration,
}

impl From<&Batching> for Limits {
    fn from(b: &Batching) -> Limits {
        Limits {
            max_events: b.max_events,
            max_bytes: b.max_bytes,
            max_wait: b.max_wait,
        }
    }
}

/// Why a batch closed (logged; the tests check it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    /// `max_events` members.
    Full,
    /// The next member would have taken it past `max_bytes` (or it reached it).
    Bytes,
    /// Its oldest member waited `max_wait`.
    Wait,
    /// The worker needed room under `pipeline.max_in_flight`.
    Pressure,
    /// The partition was assigned anew (the old assignment's batch closes).
    Reassigned,
    /// The worker is stopping.
    Shutdown,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Full => "full",
            Reason::Bytes => "bytes",
            Reason::Wait => "wait",
            Reason::Pressure => "pressure",
            Reason::Reassigned => "reassigned",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// One payload waiting in a batch; `T` is what settles it (in the pipeline: its settlement, its
/// permit and the message's timestamp).
#[derive(Debug)]
pub(super) struct Member<T> {
    /// Source offset.
    pub(super) offset: i64,
    /// The payload (as-is or rendered); for a batch template, the template's input.
    pub(super) body: Bytes,
    /// Settlement duty and resources.
    pub(super) hold: T,
}

/// A batch being filled.
#[derive(Debug)]
struct Open<T> {
    tracker: Arc<PartitionTracker>,
    members: Vec<Member<T>>,
    /// Length of the JSON array of the members so far (`[`, `]` and commas included).
    bytes: usize,
    /// When the oldest member has waited `max_wait`.
    deadline: Instant,
}

/// A batch that closed and is ready to send.
#[derive(Debug)]
pub(super) struct Closed<T> {
    /// What it collected.
    pub(super) key: Key,
    /// The partition assignment its members came from.
    pub(super) tracker: Arc<PartitionTracker>,
    /// The members, in offset order.
    pub(super) members: Vec<Member<T>>,
    /// Length of the JSON array of the members.
    pub(super) bytes: usize,
    /// Why it closed.
    pub(super) reason: Reason,
}

/// The open batches of one worker: pure bookkeeping, no I/O, so the flush rules are tested on
/// their own. Time comes from the caller (tokio's clock in the pipeline).
#[derive(Debug)]
pub(super) struct Assembler<T> {
    open: HashMap<Key, Open<T>>,
}

impl<T> Default for Assembler<T> {
    fn default() -> Self {
        Assembler {
            open: HashMap::new(),
        }
    }
}

impl<T> Assembler<T> {
    /// Appends `member` to its batch, opening one if needed; batches that close as a result are
    /// appended to `closed` (at most two: the one it did not fit in, and the one it filled).
    pub(super) fn push(
        &mut self,
        key: Key,
        tracker: &Arc<PartitionTracker>,
        limits: Limits,
        member: Member<T>,
        now: Instant,
        closed: &mut Vec<Closed<T>>,
    ) {
        let len = member.body.len();
        if let Some(open) = self.open.get(&key) {
            let reason = if !Arc::ptr_eq(&open.tracker, tracker) {
                Some(Reason::Reassigned)
            } else if open.bytes + 1 + len > limits.max_bytes {
                Some(Reason::Bytes)
            } else {
                None
            };
            self.close_into(&key, reason, closed);
        }
        let open = self.open.entry(key.clone()).or_insert_with(|| Open {
            tracker: tracker.clone(),
            members: Vec::with_capacity(limits.max_events.min(1024)),
            bytes: 1,
            deadline: now + limits.max_wait,
        });
        open.bytes += len + 1;
        open.members.push(member);
        let reason = if open.members.len() >= limits.max_events {
            Some(Reason::Full)
        } else if open.bytes >= limits.max_bytes {
            Some(Reason::Bytes)
        } else {
            None
        };
        self.close_into(&key, reason, closed);
    }

    /// Closes `key`'s open batch into `closed` when there is a `reason` to.
    fn close_into(&mut self, key: &Key, reason: Option<Reason>, closed: &mut Vec<Closed<T>>) {
        if let Some(c) = reason.and_then(|r| self.close(key, r)) {
            closed.push(c);
        }
    }

    fn close(&mut self, key: &Key, reason: Reason) -> Option<Closed<T>> {
        let (key, open) = self.open.remove_entry(key)?;
        Some(Closed {
            key,
            tracker: open.tracker,
            members: open.members,
            bytes: open.bytes,
            reason,
        })
    }

    /// The earliest deadline of an open batch.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|o| o.deadline).min()
    }

    /// Closes every batch whose oldest member waited its `max_wait` by `now`.
    pub(super) fn take_due(&mut self, now: Instant, closed: &mut Vec<Closed<T>>) {
        let due: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            closed.extend(self.close(&k, Reason::Wait));
        }
    }

    /// Closes every open batch.
    pub(super) fn take_all(&mut self, reason: Reason, closed: &mut Vec<Closed<T>>) {
        let all: Vec<Key> = self.open.keys().cloned().collect();
        for k in all {
            closed.extend(self.close(&k, reason));
        }
    }
}

/// The delivery id of a batch: the first 128 bits of
/// `SHA-256("hookpipe/batch/v1\0{topic}\0{partition}\0{destination}\0{event|user}\0{offsets}")`,
/// `offsets` being the members' offsets in decimal joined by `,`, formatted as a version-8 UUID
/// like single delivery ids. The same members give the same id on every try, attempt and
/// restart; see docs/configuration.md for when a replay forms the same batches.
pub fn batch_id(
    topic: &str,
    partition: i32,
    destination: &str,
    payload: &str,
    offsets: impl IntoIterator<Item = i64>,
) -> String {
    let mut h = Sha256::new();
    h.update(b"hookpipe/batch/v1\0");
    h.update(topic.as_bytes());
    h.update(b"\0");
    h.update(partition.to_string().as_bytes());
    h.update(b"\0");
    h.update(destination.as_bytes());
    h.update(b"\0");
    h.update(payload.as_bytes());
    h.update(b"\0");
    for (i, o) in offsets.into_iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        // A few allocations per batch, next to an HTTP request: not worth a copy of `id`'s itoa.
        h.update(o.to_string().as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(x >> 4)]));
        out.push(char::from(HEX[usize::from(x & 0x0f)]));
    }
    out
}

/// Appends the JSON array of `bodies` (each verbatim, separated by commas) to `out`.
pub(super) fn write_array<'a>(bodies: impl IntoIterator<Item = &'a [u8]>, out: &mut BytesMut) {
    out.put_u8(b'[');
    for (i, b) in bodies.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.extend_from_slice(b);
    }
    out.put_u8(b']');
}

/// What settles one buffered member in the pipeline.
#[derive(Debug)]
pub(super) struct Hold {
    settlement: Settlement,
    permit: OwnedSemaphorePermit,
    timestamp_ms: Option<i64>,
}

impl Hold {
    fn settle(self) {
        self.settlement.settle();
        drop(self.permit);
    }
}

/// The batch settings of `route` at its destination, if it batches.
pub(super) fn settings<'a>(shared: &'a Shared, route: &Route) -> Option<&'a Batching> {
    let d = &shared.destinations[route.destination];
    match route.payload {
        Payload::Event => d.events.as_ref()?.batch.as_ref(),
        Payload::User => d.users.as_ref()?.batch.as_ref(),
    }
}

/// What a worker tells its batch task.
enum Command {
    /// Append this payload to its batch.
    Add {
        key: Key,
        tracker: Arc<PartitionTracker>,
        limits: Limits,
        member: Member<Hold>,
    },
    /// The total limit is exhausted: send every open batch now.
    Pressure,
}

/// A worker's handle on its batch task, which owns the worker's open batches. The task (not the
/// worker) closes them when they fill or wait `max_wait`, so a worker blocked on back-pressure
/// never holds back the batches whose permits would relieve it.
pub(super) struct Batcher {
    tx: Option<mpsc::UnboundedSender<Command>>,
    task: Option<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Batcher {
    /// The handle; the task starts with the first batched payload (most workers batch nothing).
    pub(super) fn new(shared: Arc<Shared>) -> Batcher {
        Batcher {
            tx: None,
            task: None,
            shared,
        }
    }

    fn sender(&mut self) -> &mpsc::UnboundedSender<Command> {
        let shared = &self.shared;
        let task = &mut self.task;
        self.tx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            *task = Some(tokio::spawn(BatchTask::new(shared.clone()).run(rx)));
            tx
        })
    }

    /// Adds one payload of `msg` to its batch, holding a permit of the total limit until the
    /// batch settles. `false`: shutdown started while waiting for that permit; the payload stays
    /// unsettled (read again after the restart). Unbounded channel: what it holds is bounded by
    /// the permits.
    pub(super) async fn add(
        &mut self,
        batching: &Batching,
        route: Route,
        msg: &SourceMessage,
        body: Bytes,
        settlement: Settlement,
    ) -> bool {
        let permit = match self.shared.total.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Buffered payloads may be what holds the total: send them now rather than
                // after their max_wait.
                if let Some(tx) = &self.tx {
                    let _ = tx.send(Command::Pressure);
                }
                match admit_total(&self.shared).await {
                    Some(p) => p,
                    None => return false,
                }
            }
        };
        let command = Command::Add {
            key: Key {
                destination: route.destination,
                payload: route.payload,
                kind: route.kind,
                topic: msg.topic.clone(),
                partition: msg.partition,
            },
            tracker: msg.tracker.clone(),
            limits: Limits::from(batching),
            member: Member {
                offset: msg.offset,
                body,
                hold: Hold {
                    settlement,
                    permit,
                    timestamp_ms: msg.timestamp_ms,
                },
            },
        };
        // The task only ends after `close`.
        self.sender().send(command).is_ok()
    }

    /// The worker is stopping: the task sends every open batch (their members settle as usual,
    /// so the shutdown drain waits for them) and ends.
    pub(super) async fn close(&mut self) {
        self.tx = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Owns one worker's open batches: closes them, renders them and hands them over.
struct BatchTask {
    shared: Arc<Shared>,
    assembler: Assembler<Hold>,
    closed: Vec<Closed<Hold>>,
    /// The JSON array of a closing batch.
    doc: BytesMut,
    /// A copy of it for simd-json, which parses in place.
    parse: BytesMut,
    /// The batch template's output.
    out: BytesMut,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::tape::Tape<'static>>,
    state: RenderState,
}

impl BatchTask {
    fn new(shared: Arc<Shared>) -> BatchTask {
        BatchTask {
            shared,
            assembler: Assembler::default(),
            closed: Vec::new(),
            doc: BytesMut::new(),
            parse: BytesMut::new(),
            out: BytesMut::new(),
            buffers: simd_json::Buffers::default(),
            tape: Some(simd_json::tape::Tape::null()),
            state: RenderState::default(),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            let command = match self.assembler.next_deadline() {
                None => rx.recv().await,
                Some(deadline) => tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(deadline) => {
                        self.assembler.take_due(Instant::now(), &mut self.closed);
                        self.send_closed().await;
                        continue;
                    }
                    command = rx.recv() => command,
                },
            };
            let now = Instant::now();
            match command {
                None => break,
                Some(Command::Add {
                    key,
                    tracker,
                    limits,
                    member,
                }) => self
                    .assembler
                    .push(key, &tracker, limits, member, now, &mut self.closed),
                Some(Command::Pressure) => {
                    self.assembler.take_all(Reason::Pressure, &mut self.closed)
                }
            }
            self.send_closed().await;
        }
        self.assembler.take_all(Reason::Shutdown, &mut self.closed);
        self.send_closed().await;
    }

    async fn send_closed(&mut self) {
        let mut closed = std::mem::take(&mut self.closed);
        for batch in closed.drain(..) {
            self.send(batch).await;
        }
        self.closed = closed;
    }

    /// Renders a closed batch and hands it over like any delivery: an attempt now, the overflow
    /// tier, or (template failure) the failure path.
    async fn send(&mut self, batch: Closed<Hold>) {
        let shared = &self.shared.clone();
        let Closed {
            key,
            tracker,
            members,
            bytes,
            reason,
        } = batch;
        if tracker.is_revoked() {
            // Unsettled: the partition's new owner reads these messages again.
            debug!(
                topic = %key.topic, partition = key.partition, events = members.len(),
                "batch of a revoked partition dropped unsent"
            );
            return;
        }
        let Some(first) = members.first() else {
            return;
        };
        let d = &shared.destinations[key.destination];
        let Some(batching) = settings(
            shared,
            &Route {
                destination: key.destination,
                payload: key.payload,
                kind: key.kind,
            },
        ) else {
            return;
        };
        let id = batch_id(
            &key.topic,
            key.partition,
            &d.name,
            key.payload.as_str(),
            members.iter().map(|m| m.offset),
        );
        let source = SourcePosition {
            topic: key.topic.to_string(),
            partition: key.partition,
            offset: first.offset,
        };
        let timestamp_ms = members.iter().filter_map(|m| m.hold.timestamp_ms).min();
        debug!(
            destination = %d.name, topic = %key.topic, partition = key.partition,
            first_offset = first.offset, events = members.len(), bytes, reason = reason.as_str(),
            delivery_id = %id, "batch closed"
        );
        // The JSON array of the members: the body, or the batch template's `inputs`.
        self.doc.clear();
        write_array(members.iter().map(|m| &m.body[..]), &mut self.doc);
        let array = self.doc.split().freeze();
        let holds: Vec<Hold> = members.into_iter().map(|m| m.hold).collect();
        let body = match &batching.template {
            None => Ok(array.clone()),
            Some(t) => self.render(t, &array),
        };
        let body = match body {
            Ok(body) => body,
            Err(error) => {
                // Parked like a single delivery's render failure: the input (`inputs`) is kept.
                let failed = FailedDelivery {
                    destination: d.name.clone(),
                    request: Request {
                        id,
                        kind: key.kind,
                        body: array,
                    },
                    source,
                    failure: Failure::Render { error },
                };
                let failure = shared.failure.clone();
                tokio::spawn(async move {
                    failure.park(failed).await;
                    holds.into_iter().for_each(Hold::settle);
                });
                return;
            }
        };
        let request = Request {
            id,
            kind: key.kind,
            body,
        };
        match admit(shared, key.destination, request, &source).await {
            Some(Admission::Direct(per, request)) => {
                let mut holds = holds.into_iter();
                let Some(first) = holds.next() else {
                    return;
                };
                let rest: Vec<Hold> = holds.collect();
                let delivery = Delivery {
                    shared: shared.clone(),
                    destination: key.destination,
                    request,
                    source,
                    timestamp_ms,
                    settlement: first.settlement,
                    _permits: (per, first.permit),
                };
                tokio::spawn(async move {
                    // Settles the first member once the batch is settled; then the others.
                    delivery.run().await;
                    rest.into_iter().for_each(Hold::settle);
                });
            }
            Some(Admission::Overflowed(durable, id)) => {
                shared.metrics[key.destination].overflowed(&id);
                tokio::spawn(async move {
                    durable.await;
                    holds.into_iter().for_each(Hold::settle);
                });
            }
            // Cannot happen (the permits are never closed); the members stay unsettled.
            None => {}
        }
    }

    /// Renders the batch template with `inputs` = `array`.
    fn render(&mut self, template: &Template, array: &Bytes) -> Result<Bytes, String> {
        // simd-json parses in place: parse a copy, the array itself may be parked.
        self.parse.clear();
        self.parse.extend_from_slice(array);
        self.out.clear();
        let mut tape = self
            .tape
            .take()
            .unwrap_or_else(simd_json::tape::Tape::null)
            .reset();
        let result = match simd_json::fill_tape(&mut self.parse, &mut self.buffers, &mut tape) {
            Ok(()) => template
                .render(&mut self.state, tape.as_value(), &mut self.out)
                .map_err(|e| e.to_string()),
            // Every member was parsed (or written) as JSON before: a hookpipe bug.
            Err(e) => Err(format!("batch inputs are not valid JSON: {e}")),
        };
        self.tape = Some(tape.reset());
        result.map(|()| self.out.split().freeze())
    }
}

/// What [`admit`] decided for a batch.
enum Admission {
    /// Attempt it now, holding its destination's permit (the total is held by the members).
    Direct(OwnedSemaphorePermit, Request),
    /// Handed to the overflow tier; settle the members once this resolves. Carries the id for
    /// the metric.
    Overflowed(super::settle::Durable, String),
}

/// Admits a batch like the worker admits a single delivery (`pipeline` module docs, "Overflow"),
/// except that it takes no permit of the total (its members hold theirs) and does not give up
/// at shutdown: batches are sent while the pipeline drains.
async fn admit(
    shared: &Shared,
    destination: usize,
    mut request: Request,
    source: &SourcePosition,
) -> Option<Admission> {
    let d = &shared.destinations[destination];
    let per = shared.permits[destination].clone();
    if shared.overflow {
        let mode = &shared.overflow_mode[destination];
        let own = if shared.failure.overflowing(&d.name) {
            None
        } else {
            match per.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) if mode.load(Ordering::Relaxed) => None,
                Err(_) => tokio::time::timeout(shared.overflow_after, per.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok),
            }
        };
        mode.store(own.is_none(), Ordering::Relaxed);
        if let Some(p) = own {
            return Some(Admission::Direct(p, request));
        }
        let id = request.id.clone();
        let overflowed = Overflowed {
            destination: d.name.clone(),
            request,
            source: source.clone(),
        };
        match shared.failure.overflow(overflowed) {
            Ok(durable) => return Some(Admission::Overflowed(durable, id)),
            Err(back) => request = back.request,
        }
    }
    let p = per.acquire_owned().await.ok()?;
    Some(Admission::Direct(p, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(partition: i32) -> Key {
        Key {
            destination: 0,
            payload: Payload::Event,
            kind: Kind::Track,
            topic: "events".into(),
            partition,
        }
    }

    fn member(offset: i64, len: usize) -> Member<()> {
        Member {
            offset,
            body: Bytes::from(vec![b'1'; len]),
            hold: (),
        }
    }

    const LIMITS: Limits = Limits {
        max_events: 3,
        max_bytes: 1_000,
        max_wait: Duration::from_millis(500),
    };

    fn offsets(c: &Closed<()>) -> Vec<i64> {
        c.members.iter().map(|m| m.offset).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn closes_when_full_in_offset_order_one_batch_per_partition() {
        let t0 = Arc::new(PartitionTracker::new("events", 0));
        let t1 = Arc::new(PartitionTracker::new("events", 1));
        let mut a = Assembler::default();
        let mut closed = Vec::new();
        let now = Instant::now();
        for o in 0..7 {
            a.push(key(0), &t0, LIMITS, member(o, 1), now, &mut closed);
            a.push(key(1), &t1, LIMITS, member(100 + o, 1), now, &mut closed);
        }
        let got: Vec<(i32, Vec<i64>, Reason)> = closed
            .iter()
            .map(|c| (c.key.partition, offsets(c), c.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, vec![0, 1, 2], Reason::Full),
                (1, vec![100, 101, 102], Reason::Full),
                (0, vec![3, 4, 5], Reason::Full),
                (1, vec![103, 104, 105], Reason::Full),
            ]
        );
        // `[` + "1,1,1" + `]`.
        assert_eq!(closed[0].bytes, 7);
        closed.clear();
        a.take_all(Reason::Shutdown, &mut closed);
        closed.sort_by_key(|c| c.key.partition);
        let got: Vec<(Vec<i64>, Reason)> = closed.iter().map(|c| (offsets(c), c.reason)).collect();
        assert_eq!(
            got,
            vec![(vec![6], Reason::Shutdown), (vec![106], Reason::Shutdown)]
        );
        assert_eq!(a.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_member_sets_the_deadline() {
        let t = Arc::new(PartitionTracker::new("events", 0));
        let mut a = Assembler::default();
        let mut closed = Vec::new();
        let start = Instant::now();
        a.push(
            key(0),
            &t,
            LIMITS,
            member(0, 1),
            Instant::now(),
            &mut closed,
        );
        tokio::time::advance(Duration::from_millis(300)).await;
        a.push(
            key(0),
            &t,
            LIMITS,
            member(1, 1),
            Instant::now(),
            &mut closed,
        );
        assert_eq!(a.next_deadline(), Some(start + LIMITS.max_wait));
        tokio::time::advance(Duration::from_millis(199)).await;
        a.take_due(Instant::now(), &mut closed);
        assert!(closed.is_empty(), "not due 1 ms before max_wait");
        tokio::time::advance(Duration::from_millis(1)).await;
        a.take_due(Instant::now(), &mut closed);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (offsets(&closed[0]), closed[0].reason),
            (vec![0, 1], Reason::Wait)
        );
        // The next batch starts its own clock.
        closed.clear();
        a.push(
            key(0),
            &t,
            LIMITS,
            member(2, 1),
            Instant::now(),
            &mut closed,
        );
        assert_eq!(a.next_deadline(), Some(Instant::now() + LIMITS.max_wait));
    }

    #[tokio::test(start_paused = true)]
    async fn max_bytes_closes_before_overflowing_and_a_big_payload_travels_alone() {
        let t = Arc::new(PartitionTracker::new("events", 0));
        let limits = Limits {
            max_events: 100,
            max_bytes: 20,
            max_wait: Duration::from_secs(1),
        };
        let mut a = Assembler::default();
        let mut closed = Vec::new();
        let now = Instant::now();
        // [ + 8 + , + 8 + ] = 19 bytes: fits.
        a.push(key(0), &t, limits, member(0, 8), now, &mut closed);
        a.push(key(0), &t, limits, member(1, 8), now, &mut closed);
        assert!(closed.is_empty());
        // One more byte of payload would make 21: the open batch goes first.
        a.push(key(0), &t, limits, member(2, 1), now, &mut closed);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (offsets(&closed[0]), closed[0].reason),
            (vec![0, 1], Reason::Bytes)
        );
        assert_eq!(closed[0].bytes, 19);
        closed.clear();
        // 50 bytes alone: the open one closes, then it closes on its own.
        a.push(key(0), &t, limits, member(3, 50), now, &mut closed);
        let got: Vec<(Vec<i64>, Reason)> = closed.iter().map(|c| (offsets(c), c.reason)).collect();
        assert_eq!(
            got,
            vec![(vec![2], Reason::Bytes), (vec![3], Reason::Bytes)]
        );
        assert_eq!(a.next_deadline(), None);
        // Exactly max_bytes closes at once.
        closed.clear();
        a.push(key(0), &t, limits, member(4, 18), now, &mut closed);
        assert_eq!((offsets(&closed[0]), closed[0].bytes), (vec![4], 20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_assignment_of_the_partition_starts_a_new_batch() {
        let old = Arc::new(PartitionTracker::new("events", 0));
        let new = Arc::new(PartitionTracker::new("events", 0));
        let mut a = Assembler::default();
        let mut closed = Vec::new();
        let now = Instant::now();
        a.push(key(0), &old, LIMITS, member(5, 1), now, &mut closed);
        old.revoke();
        a.push(key(0), &new, LIMITS, member(5, 1), now, &mut closed);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].reason, Reason::Reassigned);
        assert!(Arc::ptr_eq(&closed[0].tracker, &old) && closed[0].tracker.is_revoked());
        closed.clear();
        a.take_all(Reason::Shutdown, &mut closed);
        assert!(Arc::ptr_eq(&closed[0].tracker, &new));
    }

    #[tokio::test(start_paused = true)]
    async fn destinations_payloads_and_kinds_batch_apart() {
        let t = Arc::new(PartitionTracker::new("events", 0));
        let mut a = Assembler::default();
        let mut closed = Vec::new();
        let now = Instant::now();
        let keys = [
            key(0),
            Key {
                destination: 1,
                ..key(0)
            },
            Key {
                payload: Payload::User,
                kind: Kind::Identify,
                ..key(0)
            },
            Key {
                kind: Kind::Exposure,
                ..key(0)
            },
        ];
        for (o, k) in keys.iter().enumerate() {
            a.push(k.clone(), &t, LIMITS, member(o as i64, 1), now, &mut closed);
        }
        assert!(closed.is_empty());
        a.take_all(Reason::Pressure, &mut closed);
        assert_eq!(closed.len(), 4);
        assert!(closed
            .iter()
            .all(|c| c.members.len() == 1 && c.reason == Reason::Pressure));
    }

    #[test]
    fn batch_ids_are_stable_uuids_that_depend_on_every_member() {
        let a = batch_id("events", 3, "braze", "event", [10, 11, 12]);
        assert_eq!(a, batch_id("events", 3, "braze", "event", vec![10, 11, 12]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version 8: {a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant: {a}");
        for other in [
            batch_id("events", 3, "braze", "event", [10, 11]),
            batch_id("events", 3, "braze", "event", [10, 12]),
            batch_id("events", 3, "braze", "event", [101, 112]),
            batch_id("events", 4, "braze", "event", [10, 11, 12]),
            batch_id("events2", 3, "braze", "event", [10, 11, 12]),
            batch_id("events", 3, "braze2", "event", [10, 11, 12]),
            batch_id("events", 3, "braze", "user", [10, 11, 12]),
            // A batch of one is not the single delivery of that message.
            batch_id("events", 3, "braze", "event", [10]),
        ] {
            assert_ne!(a, other);
        }
        assert_ne!(
            batch_id("events", 3, "braze", "event", [10]),
            crate::pipeline::id::delivery_id("events", 3, 10, "braze", "event")
        );
        // Pinned (checked with Python's hashlib): a change of derivation breaks de-duplication
        // across an upgrade.
        assert_eq!(a, "acc45ca3-1767-896a-ae3b-63724f583cf4");
    }

    #[test]
    fn the_array_is_the_payloads_verbatim() {
        let mut out = BytesMut::from(&b"x"[..]);
        write_array([&b"{\"a\":1}\n"[..], b"2", b"\"s\""], &mut out);
        assert_eq!(&out[..], b"x[{\"a\":1}\n,2,\"s\"]");
        out.clear();
        write_array(std::iter::empty(), &mut out);
        assert_eq!(&out[..], b"[]");
    }

    #[test]
    fn a_batch_template_reads_inputs_also_where_it_reassigns_it() {
        use crate::template::Options;
        let render = |source: &str| {
            let t = Template::compile_bound("t", source, &Options::default(), "inputs").unwrap();
            let mut doc = br#"[{"n":1},{"n":2},{"n":3}]"#.to_vec();
            let tape = simd_json::to_tape(&mut doc).unwrap();
            let mut out = BytesMut::new();
            t.render(&mut RenderState::default(), tape.as_value(), &mut out)
                .unwrap();
            String::from_utf8(out.to_vec()).unwrap()
        };
        // A global of the same name reads the data model until it is assigned (FreeMarker).
        assert_eq!(
            render("<#assign inputs = inputs?filter(e -> e.n > 1)>${inputs?size}"),
            "2"
        );
        assert_eq!(
            render("${inputs[2].n}<#global inputs = [7]>${inputs[0]}"),
            "37"
        );
        assert_eq!(render("${input???c}:${inputs?size}"), "false:3");
    }
}
