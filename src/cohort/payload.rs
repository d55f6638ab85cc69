//! A batch as bytes: Amplitude's default cohort payload, and the same document handed to a
//! destination's FreeMarker template as `input`.
//!
//! The default payload is compact JSON with the seed's keys in the seed's order:
//!
//! ```text
//! {"cohort_name":"My Test Cohort","cohort_id":"7khm89cz","in_cohort":true,
//!  "computed_time":"1692206763","message_id":"9baaa88f-...::enter::0",
//!  "users":[{"user_id":"user_one@example.com","user_properties":{"city":"Paris"}},...]}
//! ```
//!
//! (one line; wrapped here). `user_properties` appears only for users that have some, exactly as
//! the input wrote them (minified). The template `input` is this very document, so a template
//! sees `input.users[i].user_properties` missing when the default payload omits it.

use bytes::{BufMut, BytesMut};

use super::batch::Batch;
use super::json::{write_str, write_str_body, write_u64};
use crate::template::{RenderError, RenderState, Template};

/// Appends `batch` as the default cohort payload (see the module doc) to `out`. Allocates only
/// when `out` must grow, so a reused buffer makes this allocation-free.
pub fn write_default(batch: &Batch<'_>, out: &mut BytesMut) {
    let h = batch.header;
    out.reserve(160 + h.cohort_name.len() + h.change_id.len() + batch.users.len() * 32);
    out.extend_from_slice(b"{\"cohort_name\":");
    write_str(out, &h.cohort_name);
    out.extend_from_slice(b",\"cohort_id\":");
    write_str(out, &h.cohort_id);
    out.extend_from_slice(if batch.direction.in_cohort() {
        b",\"in_cohort\":true,\"computed_time\":"
    } else {
        b",\"in_cohort\":false,\"computed_time\":"
    });
    write_str(out, &h.computed_time);
    out.extend_from_slice(b",\"message_id\":\"");
    write_str_body(out, &h.change_id);
    out.extend_from_slice(b"::");
    out.extend_from_slice(batch.direction.as_str().as_bytes());
    out.extend_from_slice(b"::");
    write_u64(out, batch.index);
    out.extend_from_slice(b"\",\"users\":[");
    for (i, user) in batch.users.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.extend_from_slice(b"{\"user_id\":");
        write_str(out, &user.user_id);
        if let Some(props) = &user.user_properties {
            out.extend_from_slice(b",\"user_properties\":");
            out.extend_from_slice(props.as_bytes());
        }
        out.put_u8(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// Appends the template `input` document of `batch`: the same bytes as [`write_default`].
pub fn write_template_input(batch: &Batch<'_>, out: &mut BytesMut) {
    write_default(batch, out);
}

/// Why a templated cohort payload could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The template failed on this batch (its position and message say why).
    #[error("cohort template: {0}")]
    Render(#[from] RenderError),
    /// The input document did not parse back; a hookpipe bug, reported rather than panicking.
    #[error("cohort template input is not valid JSON (a hookpipe bug): {0}")]
    Input(#[from] simd_json::Error),
}

/// Per-worker scratch for templated cohort payloads: the input document, simd-json's buffers and
/// tape, all reused from batch to batch.
pub struct TemplateScratch {
    doc: BytesMut,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::tape::Tape<'static>>,
}

impl std::fmt::Debug for TemplateScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateScratch")
            .field("doc_capacity", &self.doc.capacity())
            .finish_non_exhaustive()
    }
}

impl Default for TemplateScratch {
    fn default() -> Self {
        TemplateScratch {
            doc: BytesMut::with_capacity(64 << 10),
            buffers: simd_json::Buffers::new(64 << 10),
            tape: Some(simd_json::tape::Tape::null().reset()),
        }
    }
}

impl TemplateScratch {
    /// Renders `template` with `input` = the batch's document (see the module doc), appending
    /// the result to `out`.
    pub fn render(
        &mut self,
        template: &Template,
        state: &mut RenderState,
        batch: &Batch<'_>,
        out: &mut BytesMut,
    ) -> Result<(), PayloadError> {
        self.doc.clear();
        write_template_input(batch, &mut self.doc);
        let mut tape = self
            .tape
            .take()
            .unwrap_or_else(|| simd_json::tape::Tape::null().reset())
            .reset();
        let result = match simd_json::fill_tape(&mut self.doc, &mut self.buffers, &mut tape) {
            Ok(()) => template
                .render(state, tape.as_value(), out)
                .map_err(PayloadError::from),
            Err(e) => Err(PayloadError::from(e)),
        };
        self.tape = Some(tape.reset());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::{BatchSize, Chunk, Header, User};

    fn seed_chunk() -> Chunk {
        let header = Header {
            cohort_id: "7khm89cz".into(),
            cohort_name: "My Test Cohort".into(),
            computed_time: "1692206763".into(),
            change_id: "9baaa88f-9d46-4ee5-a946-be0c6aea0046".into(),
        };
        let entered = vec![
            User::new("user_one@example.com"),
            User::new("user_two@example.com"),
            User::new("user_three@example.com"),
        ];
        Chunk::single(header, entered, vec![]).unwrap()
    }

    #[test]
    fn default_payload_is_the_seed_example_compacted() {
        let chunk = seed_chunk();
        let batch = chunk.batches(BatchSize::DEFAULT).next().unwrap();
        let mut out = BytesMut::new();
        write_default(&batch, &mut out);
        let seed = r#"{
            "cohort_name": "My Test Cohort",
            "cohort_id": "7khm89cz",
            "in_cohort": true,
            "computed_time": "1692206763",
            "message_id": "9baaa88f-9d46-4ee5-a946-be0c6aea0046::enter::0",
            "users": [
              { "user_id": "user_one@example.com" },
              { "user_id": "user_two@example.com" },
              { "user_id": "user_three@example.com" }
            ]
        }"#;
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            crate::cohort::json::minify(seed)
        );
    }

    #[test]
    fn default_payload_escapes_and_carries_properties_verbatim() {
        let header = Header {
            cohort_id: "c\"1".into(),
            cohort_name: "Tab\there\n".into(),
            computed_time: "1700000000".into(),
            change_id: "ch\\g".into(),
        };
        let exited = vec![
            User::with_properties("ü\u{1}", r#"{"n": 1.50, "big": 123456789012345678901234}"#)
                .unwrap(),
            User::new("b"),
        ];
        let chunk = Chunk::single(header, vec![], exited).unwrap();
        let batch = chunk.batches(BatchSize::new(5).unwrap()).next().unwrap();
        let mut out = BytesMut::from(&b"prefix"[..]);
        write_default(&batch, &mut out);
        let text = std::str::from_utf8(&out[6..]).unwrap();
        assert_eq!(
            text,
            r#"{"cohort_name":"Tab\there\n","cohort_id":"c\"1","in_cohort":false,"computed_time":"1700000000","message_id":"ch\\g::exit::0","users":[{"user_id":"ü\u0001","user_properties":{"n":1.50,"big":123456789012345678901234}},{"user_id":"b"}]}"#
        );
        // It is JSON, and it says what the batch says.
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["message_id"], "ch\\g::exit::0");
        assert_eq!(v["users"][0]["user_id"], "ü\u{1}");
        assert!(v["users"][1].get("user_properties").is_none());
    }
}
