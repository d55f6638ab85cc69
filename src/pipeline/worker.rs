//! One worker: owns a shard of the partitions, decodes each message into a reused simd-json
//! tape, routes it, renders payloads into a reused buffer, admits each delivery against the
//! per-destination and total in-flight limits, and spawns its attempt, or, when its destination
//! is saturated and overflow is on, hands it to the overflow tier instead of waiting (see the
//! `pipeline` module docs). Messages of one partition are handled one after another, so first
//! attempts start in partition order (per destination, within one process).

use super::breaker::Admission;
use super::id::delivery_id;
use super::settle::{FailedDelivery, Failure, Overflowed, Rejected};
use super::user::write_user;
use super::Shared;
use crate::deliver::{Outcome, Request, Try};
use crate::retry::park::unix_ms;
use crate::retry::record::SourcePosition;
use crate::route::{self, Malformed, Payload, Route, TopicKind};
use crate::source::{Settlement, SourceMessage};
use crate::template::{Input, RenderState, Template};
use bytes::{Bytes, BytesMut};
use simd_json::{Buffers, Tape};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// A payload ready to send, or the input a template failed on.
enum Body {
    Ready(Bytes),
    RenderFailed { error: String, input: Bytes },
}

struct Planned {
    route: Route,
    body: Body,
}

/// Reusable decode and render state of one worker.
pub(super) struct Worker {
    shared: Arc<Shared>,
    scratch: Vec<u8>,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
    user_json: Vec<u8>,
    user_scratch: Vec<u8>,
    user_buffers: Buffers,
    user_tape: Option<Tape<'static>>,
    state: RenderState,
    out: BytesMut,
    routes: Vec<Route>,
    planned: Vec<Planned>,
    cohort: crate::cohort::Renderer,
    memberships: super::membership::Memberships,
    batcher: super::batch::Batcher,
}

fn render(
    template: &Template,
    state: &mut RenderState,
    input: Input<'_, '_>,
    input_bytes: &Bytes,
    out: &mut BytesMut,
) -> Body {
    out.clear();
    match template.render(state, input, out) {
        Ok(()) => Body::Ready(out.split().freeze()),
        Err(e) => Body::RenderFailed {
            error: e.to_string(),
            input: input_bytes.clone(),
        },
    }
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>) -> Worker {
        Worker {
            batcher: super::batch::Batcher::new(shared.clone()),
            shared: shared.clone(),
            scratch: Vec::new(),
            buffers: Buffers::default(),
            tape: Some(Tape::null()),
            user_json: Vec::new(),
            user_scratch: Vec::new(),
            user_buffers: Buffers::default(),
            user_tape: Some(Tape::null()),
            state: RenderState::default(),
            out: BytesMut::new(),
            routes: Vec::new(),
            planned: Vec::new(),
            cohort: crate::cohort::Renderer::default(),
            memberships: super::membership::Memberships::new(&shared),
        }
    }

    /// Handles messages until the channel closes; ticks membership windows meanwhile.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<SourceMessage>) {
        let mut tick = tokio::time::interval(super::membership::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
                _ = tick.tick(), if self.memberships.active() => {
                    self.memberships.tick(&self.shared).await;
                    continue;
                }
            };
            if self.shared.shutdown.is_cancelled() || msg.tracker.is_revoked() {
                // Not registered, so not committed: read again by whoever owns it next.
                continue;
            }
            self.handle(msg).await;
        }
        // Open batches go out now (the drain waits for them).
        self.batcher.close().await;
    }

    /// Decodes, routes and renders `payload` into `self.planned`. Synchronous: the tapes borrow
    /// the scratch buffers and never live across an await.
    fn prepare(&mut self, kind: TopicKind, payload: &Bytes) -> Result<(), Malformed> {
        let Worker {
            shared,
            scratch,
            buffers,
            tape,
            user_json,
            user_scratch,
            user_buffers,
            user_tape,
            state,
            out,
            routes,
            planned,
            cohort: _,
            memberships: _,
            batcher: _,
        } = self;
        planned.clear();
        scratch.clear();
        scratch.extend_from_slice(payload);
        let mut t: Tape<'_> = tape.take().unwrap_or_else(Tape::null).reset();
        if let Err(e) = simd_json::fill_tape(scratch, buffers, &mut t) {
            *tape = Some(t.reset());
            return Err(Malformed::InvalidJson(e.to_string()));
        }
        let value = t.as_value();
        let planned_ok = route::plan(
            kind,
            value,
            &shared.destinations,
            &shared.metrics,
            state,
            routes,
        );
        if planned_ok.is_ok() {
            let dests = &shared.destinations;
            let users_template = |r: &Route| {
                dests[r.destination]
                    .users
                    .as_ref()
                    .and_then(|u| u.template.as_ref())
            };
            // The user an event carries, built once per message if anyone wants it.
            let user_bytes =
                if kind == TopicKind::Events && routes.iter().any(|r| r.payload == Payload::User) {
                    user_json.clear();
                    write_user(value, user_json);
                    Some(Bytes::copy_from_slice(user_json))
                } else {
                    None
                };
            // ...and decoded once if a users template needs it as `input`.
            let mut ut: Tape<'_> = user_tape.take().unwrap_or_else(Tape::null).reset();
            let user_decoded = match &user_bytes {
                Some(bytes)
                    if routes
                        .iter()
                        .any(|r| r.payload == Payload::User && users_template(r).is_some()) =>
                {
                    user_scratch.clear();
                    user_scratch.extend_from_slice(bytes);
                    Some(
                        simd_json::fill_tape(user_scratch, user_buffers, &mut ut)
                            .map_err(|e| e.to_string()),
                    )
                }
                _ => None,
            };
            for r in routes.iter() {
                let d = &dests[r.destination];
                let body = match (r.payload, kind) {
                    (Payload::Event, _) => {
                        match d.events.as_ref().and_then(|e| e.template.as_ref()) {
                            None => Body::Ready(payload.clone()),
                            Some(tpl) => render(tpl, state, value, payload, out),
                        }
                    }
                    (Payload::User, TopicKind::Identify) => match users_template(r) {
                        None => Body::Ready(payload.clone()),
                        Some(tpl) => render(tpl, state, value, payload, out),
                    },
                    (Payload::User, TopicKind::Events) => {
                        let Some(user) = &user_bytes else { continue };
                        match (users_template(r), &user_decoded) {
                            (None, _) => Body::Ready(user.clone()),
                            (Some(tpl), Some(Ok(()))) => {
                                render(tpl, state, ut.as_value(), user, out)
                            }
                            (Some(_), Some(Err(e))) => Body::RenderFailed {
                                error: format!("user object is not valid JSON: {e}"),
                                input: user.clone(),
                            },
                            (Some(_), None) => continue,
                        }
                    }
                    // Chunks never reach `prepare` (see `handle`), and plan routes none.
                    (Payload::User, TopicKind::CohortChanges | TopicKind::CohortMemberships) => {
                        continue
                    }
                };
                planned.push(Planned { route: *r, body });
            }
            *user_tape = Some(ut.reset());
        }
        *tape = Some(t.reset());
        planned_ok
    }

    async fn handle(&mut self, msg: SourceMessage) {
        let shared = self.shared.clone();
        let Some((kind, topic_metrics)) = shared.topic_kinds.get(&*msg.topic) else {
            return;
        };
        let source = SourcePosition {
            topic: msg.topic.to_string(),
            partition: msg.partition,
            offset: msg.offset,
        };
        let kind = *kind;
        if kind == TopicKind::CohortChanges {
            return super::cohort::handle(&shared, &mut self.cohort, msg, source).await;
        }
        if kind == TopicKind::CohortMemberships {
            return self.memberships.handle(&shared, msg, source).await;
        }
        if let Err(m) = self.prepare(kind, &msg.payload) {
            let reason = if msg.payload.is_empty() {
                "invalid_json"
            } else {
                m.reason()
            };
            topic_metrics.malformed(&msg.topic, msg.partition, msg.offset, reason);
            let settlements = msg.tracker.register(msg.offset, 1);
            let rejected = Rejected {
                source,
                reason,
                detail: m.to_string(),
                payload: msg.payload.clone(),
            };
            let Some(permit) = admit_total(&shared).await else {
                return;
            };
            let failure = shared.failure.clone();
            tokio::spawn(async move {
                failure.reject(rejected).await;
                settlements.into_iter().for_each(Settlement::settle);
                drop(permit);
            });
            return;
        }
        let mut planned = std::mem::take(&mut self.planned);
        let settlements = msg.tracker.register(msg.offset, planned.len() as u32);
        for (p, settlement) in planned.drain(..).zip(settlements) {
            let d = &shared.destinations[p.route.destination];
            let id = delivery_id(
                &msg.topic,
                msg.partition,
                msg.offset,
                &d.name,
                p.route.payload.as_str(),
            );
            match p.body {
                Body::RenderFailed { error, input } => {
                    let failed = FailedDelivery {
                        destination: d.name.clone(),
                        request: Request {
                            id,
                            kind: p.route.kind,
                            body: input,
                        },
                        source: source.clone(),
                        failure: Failure::Render { error },
                    };
                    let Some(permit) = admit_total(&shared).await else {
                        break;
                    };
                    let failure = shared.failure.clone();
                    tokio::spawn(async move {
                        failure.park(failed).await;
                        settlement.settle();
                        drop(permit);
                    });
                }
                Body::Ready(body) => {
                    if let Some(batching) = super::batch::settings(&shared, &p.route) {
                        let added = self
                            .batcher
                            .add(batching, p.route, &msg, body, settlement)
                            .await;
                        if !added {
                            break;
                        }
                        continue;
                    }
                    let request = Request {
                        id,
                        kind: p.route.kind,
                        body,
                    };
                    let permits =
                        match admit_or_overflow(&shared, p.route.destination, request, &source)
                            .await
                        {
                            Admitted::Direct(permits, request) => (permits, request),
                            Admitted::Overflowed(durable, permit, id) => {
                                shared.metrics[p.route.destination].overflowed(&id);
                                tokio::spawn(async move {
                                    durable.await;
                                    settlement.settle();
                                    drop(permit);
                                });
                                continue;
                            }
                            // Shutting down: the rest of this message stays unsettled.
                            Admitted::ShuttingDown => break,
                        };
                    let ((per, total), request) = permits;
                    let delivery = Delivery {
                        shared: shared.clone(),
                        destination: p.route.destination,
                        request,
                        source: source.clone(),
                        timestamp_ms: msg.timestamp_ms,
                        settlement,
                        _permits: (per, total),
                    };
                    tokio::spawn(delivery.run());
                }
            }
        }
        self.planned = planned;
    }
}

/// What [`admit_or_overflow`] decided for one delivery.
pub(super) enum Admitted {
    /// Attempt it now, holding these permits.
    Direct((OwnedSemaphorePermit, OwnedSemaphorePermit), Request),
    /// Handed to the overflow tier: settle once `Durable` resolves, holding the total permit
    /// until then. Carries the delivery id for the metric.
    Overflowed(super::settle::Durable, OwnedSemaphorePermit, String),
    /// Shutdown started while waiting.
    ShuttingDown,
}

/// Admits a delivery without waiting on its destination when overflow is on: with a free
/// per-destination permit (and no earlier overflowed delivery to it still waiting for its first
/// attempt) it goes direct; otherwise it is handed to the failure path's overflow tier. Either
/// way it waits for room under the total limit (healthy back-pressure: Kafka is the buffer).
/// With overflow off (or a failure path that takes none), it waits for a permit as before.
pub(super) async fn admit_or_overflow(
    shared: &Shared,
    destination: usize,
    request: Request,
    source: &SourcePosition,
) -> Admitted {
    let d = &shared.destinations[destination];
    if shared.overflow {
        let mode = &shared.overflow_mode[destination];
        let own = if shared.failure.overflowing(&d.name) {
            None
        } else {
            let per = shared.permits[destination].clone();
            match per.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                // Still saturated since it last overflowed: no wait.
                Err(_) if mode.load(Ordering::Relaxed) => None,
                // Newly saturated: wait while the destination makes progress (see
                // `wait_while_progressing`); one that finishes no attempt within
                // `overflow_after` starts overflowing, and stays in that mode (no more waits)
                // until a permit is free when a delivery arrives.
                Err(_) => tokio::select! {
                    biased;
                    _ = shared.shutdown.cancelled() => return Admitted::ShuttingDown,
                    p = wait_while_progressing(shared, destination, per) => p,
                },
            }
        };
        mode.store(own.is_none(), Ordering::Relaxed);
        let Some(total) = admit_total(shared).await else {
            return Admitted::ShuttingDown;
        };
        if let Some(per) = own {
            return Admitted::Direct((per, total), request);
        }
        let id = request.id.clone();
        let overflowed = Overflowed {
            destination: d.name.clone(),
            request,
            source: source.clone(),
        };
        match shared.failure.overflow(overflowed) {
            Ok(durable) => return Admitted::Overflowed(durable, total, id),
            Err(back) => {
                drop(total);
                return match admit(shared, destination).await {
                    Some(permits) => Admitted::Direct(permits, back.request),
                    None => Admitted::ShuttingDown,
                };
            }
        }
    }
    match admit(shared, destination).await {
        Some(permits) => Admitted::Direct(permits, request),
        None => Admitted::ShuttingDown,
    }
}

/// Waits for a permit of `destination` as long as it keeps finishing attempts: `None` once two
/// whole `overflow_after` windows in a row passed in which it finished none (a stalled or slow
/// destination, which then overflows). A destination that is merely busy, its permits all taken
/// because the backlog is bigger than its concurrency, frees one every few milliseconds;
/// overflowing it would only move the backlog from Kafka to the overflow tier at extra cost (and,
/// by the ordering rule, every later delivery with it). So:
/// - before the destination has finished any attempt (a cold start: every connection is still
///   being opened) it is waited for; a destination dead from the start overflows once its first
///   attempt has failed (one attempt's timeouts later);
/// - a window counts as idle only after the worker yielded once, so attempts whose responses
///   arrived while the process was descheduled (a loaded machine) are counted first; two windows
///   are needed so one descheduling of the whole process cannot look like a stalled destination.
async fn wait_while_progressing(
    shared: &Shared,
    destination: usize,
    per: Arc<tokio::sync::Semaphore>,
) -> Option<OwnedSemaphorePermit> {
    let finished = &shared.finished[destination];
    let mut idle_windows = 0;
    loop {
        let seen = finished.load(Ordering::Relaxed);
        match tokio::time::timeout(shared.overflow_after, per.clone().acquire_owned()).await {
            Ok(p) => return p.ok(),
            Err(_) => {
                tokio::task::yield_now().await;
                if let Ok(p) = per.clone().try_acquire_owned() {
                    return Some(p);
                }
                let now = finished.load(Ordering::Relaxed);
                idle_windows = if now == seen && now > 0 {
                    idle_windows + 1
                } else {
                    0
                };
                if idle_windows >= 2 {
                    return None;
                }
            }
        }
    }
}

/// Waits for room for one more delivery to `destination`: first its own limit, then the total.
/// `None` if shutdown started while waiting.
pub(super) async fn admit(
    shared: &Shared,
    destination: usize,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let per = shared.permits[destination].clone();
    let total = shared.total.clone();
    tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => None,
        permits = async {
            let p = per.acquire_owned().await.ok()?;
            let t = total.acquire_owned().await.ok()?;
            Some((p, t))
        } => permits,
    }
}

/// Waits for room under the total limit only, for hand-offs that make no HTTP attempt
/// (malformed messages, render failures), so a slow dead-letter topic bounds them too.
pub(super) async fn admit_total(shared: &Shared) -> Option<OwnedSemaphorePermit> {
    let total = shared.total.clone();
    tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => None,
        permit = total.acquire_owned() => permit.ok(),
    }
}

/// One admitted delivery: its attempt, then settlement. Holds its permits until settled, so the
/// in-flight limits bound memory including deliveries being handed to the failure path.
pub(super) struct Delivery {
    pub(super) shared: Arc<Shared>,
    pub(super) destination: usize,
    pub(super) request: Request,
    pub(super) source: SourcePosition,
    pub(super) timestamp_ms: Option<i64>,
    pub(super) settlement: Settlement,
    pub(super) _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Delivery {
    pub(super) async fn run(self) {
        let shared = &self.shared;
        let metrics = &shared.metrics[self.destination];
        metrics.admitted();
        let breaker = &shared.breakers[self.destination];
        let outcome = match breaker.admit() {
            Admission::Attempt => {
                let started = tokio::time::Instant::now();
                let client = &shared.clients[self.destination];
                let outcome = client.attempt(&self.request).await;
                let took = started.elapsed();
                let delivered = outcome.is_delivered();
                metrics.attempt(&self.request.id, delivered, outcome.tries().len(), took);
                let was_open = breaker.is_open();
                if breaker.record(delivered) {
                    metrics.circuit(true);
                } else if was_open && delivered {
                    metrics.circuit(false);
                }
                outcome
            }
            Admission::Skip => {
                metrics.skipped(&self.request.id);
                Outcome::Failed {
                    tries: vec![Try {
                        started_unix_ms: unix_ms(SystemTime::now()),
                        status: None,
                        error: Some(
                            "not attempted: circuit open after consecutive failed attempts".into(),
                        ),
                    }],
                }
            }
        };
        match outcome {
            Outcome::Delivered { .. } => {
                if let Some(ts) = self.timestamp_ms {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    let sent = Duration::from_millis(ts.max(0) as u64);
                    shared.telemetry.end_to_end(now.saturating_sub(sent));
                }
            }
            Outcome::Failed { tries } => {
                let failed = FailedDelivery {
                    destination: shared.destinations[self.destination].name.clone(),
                    request: self.request.clone(),
                    source: self.source.clone(),
                    failure: Failure::Attempt { tries },
                };
                shared.failure.park(failed).await;
            }
        }
        metrics.settled();
        shared.finished[self.destination].fetch_add(1, Ordering::Relaxed);
        self.settlement.settle();
    }
}
