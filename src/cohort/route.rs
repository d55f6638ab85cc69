//! From a chunk to the requests of one destination: pick the destination's cohorts, cut the
//! batches at its batch size, render each (default payload or its template) and name each
//! delivery with an id derived from the batch's message id, so a repeat of the same batch (a
//! duplicated chunk, a replay) carries the same delivery id as the first.

use bytes::BytesMut;
use sha2::{Digest, Sha256};

use super::batch::{Batch, BatchSize};
use super::config::CohortFilter;
use super::input::Chunk;
use super::payload::{write_default, write_template_input, PayloadError, TemplateScratch};
use crate::deliver::{Kind, Request};
use crate::template::{RenderState, Template};

/// One destination's cohort route, built by the pipeline from the validated settings with the
/// template compiled.
#[derive(Debug)]
pub struct CohortRoute {
    /// The destination's name (part of every delivery id).
    pub destination: String,
    /// Which cohorts it syncs.
    pub cohorts: CohortFilter,
    /// Most users per payload.
    pub batch_size: BatchSize,
    /// Its template; `None`: the default payload.
    pub template: Option<Template>,
    /// Timeout of one HTTP try of its cohort deliveries.
    pub request_timeout: std::time::Duration,
    /// The window its membership events are aggregated over (its sync cadence).
    pub window: super::config::Window,
}

/// Per-worker rendering state for cohort payloads, reused from chunk to chunk.
#[derive(Debug, Default)]
pub struct Renderer {
    scratch: TemplateScratch,
    state: RenderState,
    body: BytesMut,
}

/// A batch rendered for one destination.
#[derive(Debug)]
pub struct Rendered {
    /// The batch's message id (`<change id>::enter|exit::<index>`), for logs and dead letters.
    pub message_id: String,
    /// Users in the batch.
    pub users: usize,
    /// The request to hand to `deliver::Client::attempt`; when the template failed, its body is
    /// the template's input document instead (what the dead-letter record should keep).
    pub request: Request,
    /// Why the template failed on this batch, if it did: the batch then goes to the failure
    /// path, not to the receiver.
    pub error: Option<PayloadError>,
}

impl Renderer {
    /// Renders every batch `chunk` yields for `route`, in batch order, calling `each` with the
    /// result. Nothing is produced when the route does not sync the chunk's cohort.
    pub fn render_chunk(
        &mut self,
        chunk: &Chunk,
        route: &CohortRoute,
        mut each: impl FnMut(Rendered),
    ) {
        if !route.cohorts.matches(&chunk.header().cohort_id) {
            return;
        }
        for batch in chunk.batches(route.batch_size) {
            each(self.render(&batch, route));
        }
    }

    /// How many deliveries [`Self::render_chunk`] will produce for `route`, without rendering.
    pub fn count(chunk: &Chunk, route: &CohortRoute) -> usize {
        if route.cohorts.matches(&chunk.header().cohort_id) {
            chunk.batches(route.batch_size).len()
        } else {
            0
        }
    }

    /// Renders one batch for `route`.
    pub fn render(&mut self, batch: &Batch<'_>, route: &CohortRoute) -> Rendered {
        let message_id = batch.message_id().to_string();
        self.body.clear();
        let error = match &route.template {
            None => {
                write_default(batch, &mut self.body);
                None
            }
            Some(t) => match self
                .scratch
                .render(t, &mut self.state, batch, &mut self.body)
            {
                Ok(()) => None,
                Err(e) => {
                    self.body.clear();
                    write_template_input(batch, &mut self.body);
                    Some(e)
                }
            },
        };
        Rendered {
            request: Request {
                id: delivery_id(&route.destination, &message_id),
                kind: Kind::Cohort,
                body: self.body.split().freeze(),
            },
            users: batch.users.len(),
            message_id,
            error,
        }
    }
}

/// The delivery id of a cohort batch for a destination: a UUID (version 8) made of the first 16
/// bytes of SHA-256 over both. Stable across tries, retries, duplicates and restarts.
pub fn delivery_id(destination: &str, message_id: &str) -> String {
    let mut h = Sha256::new();
    for part in ["hookpipe/cohort-delivery/v1", destination, message_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    super::window::uuid_from_digest(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::{Header, User};

    fn chunk(cohort: &str, users: usize) -> Chunk {
        let header = Header {
            cohort_id: cohort.into(),
            cohort_name: "n".into(),
            computed_time: "1".into(),
            change_id: "chg".into(),
        };
        let entered = (0..users).map(|i| User::new(format!("u{i}"))).collect();
        Chunk::single(header, entered, vec![]).unwrap()
    }

    fn route(dest: &str, cohorts: CohortFilter, size: u32) -> CohortRoute {
        CohortRoute {
            destination: dest.into(),
            cohorts,
            batch_size: BatchSize::new(size).unwrap(),
            template: None,
            request_timeout: crate::cohort::DEFAULT_REQUEST_TIMEOUT,
            window: crate::cohort::Window::HOURLY,
        }
    }

    fn render_all(chunk: &Chunk, route: &CohortRoute) -> Vec<Rendered> {
        let mut r = Renderer::default();
        let mut out = Vec::new();
        r.render_chunk(chunk, route, |x| {
            assert!(x.error.is_none());
            out.push(x)
        });
        out
    }

    #[test]
    fn renders_default_payload_requests_with_stable_ids() {
        let c = chunk("c", 5);
        let a = render_all(&c, &route("crm", CohortFilter::All, 2));
        assert_eq!(a.len(), 3);
        assert_eq!(Renderer::count(&c, &route("crm", CohortFilter::All, 2)), 3);
        assert_eq!(a[2].message_id, "chg::enter::2");
        assert_eq!(a[2].users, 1);
        assert_eq!(a[0].request.kind, Kind::Cohort);
        let body: serde_json::Value = serde_json::from_slice(&a[1].request.body).unwrap();
        assert_eq!(body["users"][1]["user_id"], "u3");
        // Bodies are independent buffers, not views of a reused one.
        assert_ne!(a[0].request.body, a[1].request.body);
        // Same batch, same destination: same id, also from a fresh renderer.
        let again = render_all(&c, &route("crm", CohortFilter::All, 2));
        assert_eq!(a[1].request.id, again[1].request.id);
        // Another destination or batch: another id.
        let other = render_all(&c, &route("ads", CohortFilter::All, 2));
        assert_ne!(a[1].request.id, other[1].request.id);
        assert_ne!(a[0].request.id, a[1].request.id);
        assert_eq!(a[0].request.id.len(), 36);
    }

    #[test]
    fn skips_cohorts_the_destination_does_not_sync() {
        let only = CohortFilter::Only(vec!["x".into()]);
        assert!(render_all(&chunk("c", 3), &route("crm", only.clone(), 2)).is_empty());
        assert_eq!(
            Renderer::count(&chunk("c", 3), &route("crm", only.clone(), 2)),
            0
        );
        assert_eq!(render_all(&chunk("x", 3), &route("crm", only, 2)).len(), 2);
    }
}
