//! The records of the durable retry path: a delivery parked in a retry tier, and a delivery (or an
//! unreadable tier record) in the dead-letter topic.
//!
//! Encoded as one JSON object per Kafka message value, so `kafka-console-consumer` shows them and
//! `hookpipe replay` reads them back. The body is base64 (it is bytes: the exact payload POSTed,
//! never re-rendered). The Kafka key is the destination name; the partition is the destination's
//! own (`placement`), so one destination's parked work stays on one partition of each tier. `format` is bumped on any incompatible change; readers
//! refuse formats they do not know rather than guessing.

use crate::deliver::{Kind, Request, Try};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The record format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Where the message that caused a delivery was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

/// The tries of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptLog {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Its tries, in order, with start time, status or error.
    pub tries: Vec<Try>,
}

/// A delivery waiting in a retry tier for its next attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedDelivery {
    /// Record format ([`FORMAT`]).
    pub format: u32,
    /// The delivery id, stable across every try, attempt, restart and replay.
    pub delivery_id: String,
    /// The destination's name (its client is looked up by it).
    pub destination: String,
    /// What the body carries.
    pub kind: Kind,
    /// The rendered payload, exactly as POSTed.
    #[serde(with = "base64_bytes")]
    pub body: Bytes,
    /// The source message, when the delivery came from one.
    pub source: Option<SourcePosition>,
    /// The 1-based number of the attempt this record waits for.
    pub next_attempt: u32,
    /// When that attempt is due, unix milliseconds.
    pub due_unix_ms: u64,
    /// Every attempt so far, in order.
    pub attempts: Vec<AttemptLog>,
}

impl ParkedDelivery {
    /// The request the next attempt sends: same id, kind and body.
    pub fn request(&self) -> Request {
        Request {
            id: self.delivery_id.clone(),
            kind: self.kind,
            body: self.body.clone(),
        }
    }

    /// Every try of every attempt, in order.
    pub fn all_tries(&self) -> impl Iterator<Item = &Try> {
        self.attempts.iter().flat_map(|a| a.tries.iter())
    }

    /// The JSON encoding (the Kafka message value).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a parked delivery always serializes")
    }

    /// Decodes a Kafka message value.
    pub fn from_json(bytes: &[u8]) -> Result<ParkedDelivery, RecordError> {
        let record: ParkedDelivery =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Json(e.to_string()))?;
        if record.format != FORMAT {
            return Err(RecordError::Format(record.format));
        }
        Ok(record)
    }
}

/// A record in the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Record format ([`FORMAT`]).
    pub format: u32,
    /// Why it was dead-lettered (e.g. "10 attempts failed", "destination no longer configured").
    pub reason: String,
    /// When, unix milliseconds.
    pub dead_lettered_unix_ms: u64,
    /// The delivery with every attempt's tries; `next_attempt` is the attempt that will not
    /// happen. `None` when the tier record itself could not be read (see `raw`).
    pub delivery: Option<ParkedDelivery>,
    /// The undecodable tier record, base64, when `delivery` is `None`.
    #[serde(with = "base64_opt", default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Bytes>,
}

impl DeadLetter {
    /// The JSON encoding (the Kafka message value).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a dead letter always serializes")
    }

    /// Decodes a Kafka message value of the dead-letter topic.
    pub fn from_json(bytes: &[u8]) -> Result<DeadLetter, RecordError> {
        let record: DeadLetter =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Json(e.to_string()))?;
        if record.format != FORMAT {
            return Err(RecordError::Format(record.format));
        }
        Ok(record)
    }
}

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not the JSON shape of a record.
    #[error("not a hookpipe retry record: {0}")]
    Json(String),
    /// Written by a build with another record format.
    #[error("retry record format {0} is not {FORMAT}, the one this build reads")]
    Format(u32),
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(body))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

mod base64_opt {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match body {
            Some(b) => super::base64_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::base64_bytes")] Bytes);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> ParkedDelivery {
        ParkedDelivery {
            format: FORMAT,
            delivery_id: "evt-1:braze".into(),
            destination: "braze".into(),
            kind: Kind::Track,
            body: Bytes::from_static(b"{\"a\":1}\n\xff"),
            source: Some(SourcePosition {
                topic: "events".into(),
                partition: 3,
                offset: 42,
            }),
            next_attempt: 2,
            due_unix_ms: 1_700_000_060_000,
            attempts: vec![AttemptLog {
                attempt: 1,
                tries: vec![
                    Try {
                        started_unix_ms: 1_700_000_000_000,
                        status: Some(503),
                        error: None,
                    },
                    Try {
                        started_unix_ms: 1_700_000_000_120,
                        status: None,
                        error: Some("connect error: refused".into()),
                    },
                ],
            }],
        }
    }

    #[test]
    fn parked_round_trips_with_bytes_body() {
        let p = parked();
        let json = p.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"kind\":\"events.track\""), "{text}");
        assert!(text.contains("\"body\":\"eyJhIjoxfQr/\""), "{text}");
        assert_eq!(ParkedDelivery::from_json(&json).unwrap(), p);
        assert_eq!(p.all_tries().count(), 2);
        let r = p.request();
        assert_eq!(
            (r.id.as_str(), r.kind, &r.body[..]),
            ("evt-1:braze", Kind::Track, &p.body[..])
        );
    }

    #[test]
    fn dead_letter_round_trips_both_shapes() {
        let d = DeadLetter {
            format: FORMAT,
            reason: "10 attempts failed".into(),
            dead_lettered_unix_ms: 5,
            delivery: Some(parked()),
            raw: None,
        };
        let json = d.to_json();
        assert!(!String::from_utf8_lossy(&json).contains("\"raw\""));
        assert_eq!(DeadLetter::from_json(&json).unwrap(), d);
        let d = DeadLetter {
            format: FORMAT,
            reason: "unreadable".into(),
            dead_lettered_unix_ms: 5,
            delivery: None,
            raw: Some(Bytes::from_static(b"garbage")),
        };
        assert_eq!(DeadLetter::from_json(&d.to_json()).unwrap(), d);
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(matches!(
            ParkedDelivery::from_json(b"not json"),
            Err(RecordError::Json(_))
        ));
        let mut p = parked();
        p.format = 99;
        assert_eq!(
            ParkedDelivery::from_json(&p.to_json()),
            Err(RecordError::Format(99))
        );
        let text = String::from_utf8(parked().to_json())
            .unwrap()
            .replace("eyJhIjoxfQr/", "!!!");
        assert!(ParkedDelivery::from_json(text.as_bytes()).is_err());
    }
}
