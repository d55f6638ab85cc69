//! Delivery: one pooled HTTP client per destination, the preset and custom headers, signing, and
//! the tries within one attempt. It knows nothing of Kafka: it takes a rendered body and returns
//! the outcome of an attempt.
//!
//! Split by role: [`client`] (the pooled transport and one try), [`request`] (the header block and
//! the request of one try), [`signing`] (Standard Webhooks and `X-Amplitude-Signature`),
//! [`policy`] (the pure retry decision) and [`attempt`] (the tries of one attempt on tokio's clock).

pub mod attempt;
pub mod client;
pub mod policy;
pub mod request;
pub mod signing;
#[cfg(test)]
mod tests;

pub use attempt::AttemptPolicy;
pub use client::{BuildError, Client, ClientOptions};
pub use policy::{classify, Decision, TransportError};

use bytes::Bytes;
use std::time::Duration;

/// What a request carries, named in the `x-hookpipe-type` header so receivers can dispatch on it.
/// Serialized (in parked and dead-lettered records) as that same header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// An event (`events.track`).
    #[serde(rename = "events.track")]
    Track,
    /// A user: an identify update, or the user carried by an event (`events.identify`).
    #[serde(rename = "events.identify")]
    Identify,
    /// A batch of a cohort's membership change (`cohorts.computed`).
    #[serde(rename = "cohorts.computed")]
    Cohort,
    /// An Amplitude `$exposure` event (`experiments.exposure`).
    #[serde(rename = "experiments.exposure")]
    Exposure,
}

impl Kind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Track => "events.track",
            Kind::Identify => "events.identify",
            Kind::Cohort => "cohorts.computed",
            Kind::Exposure => "experiments.exposure",
        }
    }
}

/// A destination's endpoint, built from the validated config. Its `Debug` output redacts header
/// values and secrets.
#[derive(Clone)]
pub struct Endpoint {
    /// Destination name (for errors and metrics, never secrets).
    pub name: String,
    /// http or https URL.
    pub url: String,
    /// Up to five custom headers (already validated), sent after the two preset ones.
    pub headers: Vec<(String, String)>,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one HTTP try, from send to the end of the response head.
    pub request_timeout: Duration,
    /// Standard Webhooks secrets (`whsec_...`), newest first; empty: no signing.
    pub signing_secrets: Vec<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("header_names", &header_names)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("signing_secrets", &self.signing_secrets.len())
            .finish()
    }
}

/// One delivery: the same id across every try, attempt and restart.
#[derive(Debug, Clone)]
pub struct Request {
    /// Stable delivery id, sent as `x-hookpipe-delivery-id` (and `webhook-id` when signing).
    pub id: String,
    /// What the body carries.
    pub kind: Kind,
    /// The rendered payload.
    pub body: Bytes,
}

/// One HTTP try within an attempt. Serialized into parked and dead-lettered records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Try {
    /// When the try started, in unix milliseconds.
    pub started_unix_ms: u64,
    /// The response status, if a response head arrived.
    pub status: Option<u16>,
    /// The transport error (connect refused, timeout, ...), if there was no response.
    pub error: Option<String>,
}

/// The outcome of one attempt (up to three tries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answered.
    Delivered {
        /// Every try of this attempt, the last one successful.
        tries: Vec<Try>,
    },
    /// No try succeeded: the delivery goes to the next attempt (or the dead-letter topic).
    Failed {
        /// Every try of this attempt.
        tries: Vec<Try>,
    },
}

impl Outcome {
    /// Every try of the attempt, in order.
    pub fn tries(&self) -> &[Try] {
        match self {
            Outcome::Delivered { tries } | Outcome::Failed { tries } => tries,
        }
    }

    /// Whether a try got a 2xx.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }
}
