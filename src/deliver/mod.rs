//! Delivery: one pooled HTTP client per destination, the preset and custom headers, signing, and
//! the tries within one attempt. It knows nothing of Kafka: it takes a rendered body and returns
//! the outcome of an attempt.
//!
//! CONTRACT (being written; these signatures are what the pipeline uses).

use bytes::Bytes;
use std::time::Duration;

/// What a request carries, named in the `x-hookpipe-type` header so receivers can dispatch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An event (`events.track`).
    Track,
    /// A user: an identify update, or the user carried by an event (`events.identify`).
    Identify,
    /// A batch of a cohort's membership change (`cohorts.computed`).
    Cohort,
    /// An Amplitude `$exposure` event (`experiments.exposure`).
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

/// A destination's endpoint, built from the validated config.
#[derive(Debug, Clone)]
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

/// One HTTP try within an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A destination's HTTP client: pooled keep-alive connections (HTTP/1.1 and HTTP/2, rustls with
/// the webpki roots), no redirects followed, response bodies drained with a size cap.
/// Cloning is shallow.
#[derive(Debug, Clone)]
pub struct Client {}

impl Client {
    /// Builds the client for an endpoint; fails on an unusable URL or header.
    pub fn new(_endpoint: Endpoint) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
        unimplemented!("delivery under construction")
    }

    /// Makes one attempt: up to three tries on 5xx, 429, connection errors and timeouts, 100 ms
    /// doubling backoff with 50% jitter, no new try later than 4 s after the attempt began.
    pub async fn attempt(&self, _request: &Request) -> Outcome {
        unimplemented!("delivery under construction")
    }
}
