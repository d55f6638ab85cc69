//! The request of one try: the destination's header block, built once, plus the per-delivery and
//! per-try headers.
//!
//! # Headers on the wire, in order
//! 1. Preset, always sent, never overridable: `content-type: application/json`,
//!    `user-agent: Amplitude/Webhook/1.0`.
//! 2. The destination's custom headers (at most five), in configuration order.
//! 3. Per delivery and try:
//!    - `x-hookpipe-type`: what the body carries (`events.track`, `events.identify`,
//!      `cohorts.computed`, `experiments.exposure`);
//!    - `x-hookpipe-delivery-id`: the delivery id, the same across every try, attempt and restart,
//!      so receivers de-duplicate on it;
//!    - `x-hookpipe-attempt`: the attempt number across attempts (1 = the first attempt, up to
//!      10 with Amplitude's schedule) and `x-hookpipe-try`: the try within that attempt (1 to 3).
//!      Informational only: receivers must not de-duplicate on them.
//!    - when signing secrets are set: `webhook-id`, `webhook-timestamp`, `webhook-signature` and
//!      `x-amplitude-signature` (see [`super::signing`]).
//!
//! Custom headers may not reuse any name from 1 or 3, nor the framing headers (`host`,
//! `content-length`, `transfer-encoding`, `connection`...), which the HTTP stack owns.

use super::signing::Signer;
use super::Request;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method, Uri};
use http_body_util::Full;

/// Most custom headers a destination may set, besides the two preset ones (Amplitude's limit).
pub const MAX_CUSTOM_HEADERS: usize = 5;

/// The preset `User-Agent`, Amplitude's.
pub const USER_AGENT_VALUE: &str = "Amplitude/Webhook/1.0";

/// Header names hookpipe sets itself; a custom header may not use them.
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "x-hookpipe-type",
    "x-hookpipe-delivery-id",
    "x-hookpipe-attempt",
    "x-hookpipe-try",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-amplitude-signature",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// A destination's URL or custom header that cannot be used. Header values are never included
/// (they are often credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The URL does not parse, is not http/https, or has no host.
    #[error("url: {reason}")]
    Url {
        /// What is wrong with it.
        reason: String,
    },
    /// More than [`MAX_CUSTOM_HEADERS`] custom headers.
    #[error("headers: {count} custom headers, at most {MAX_CUSTOM_HEADERS}")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A header name that is not a valid HTTP token.
    #[error("headers[{index}]: {name:?} is not a valid header name")]
    BadName {
        /// 0-based position among the custom headers.
        index: usize,
        /// The offending name.
        name: String,
    },
    /// A header value with a control character (CR, LF, NUL...).
    #[error("headers[{index}] ({name}): the value contains a control character (CR, LF, ...)")]
    BadValue {
        /// 0-based position among the custom headers.
        index: usize,
        /// The header's name.
        name: String,
    },
    /// A custom header that would override one hookpipe sets.
    #[error("headers[{index}]: {name:?} is set by hookpipe and cannot be overridden")]
    Reserved {
        /// 0-based position among the custom headers.
        index: usize,
        /// The header's name.
        name: String,
    },
}

/// The parts of every request to one destination that never change, built once: the URI and the
/// header block (preset and custom headers, validated). Public so benchmarks measure the real
/// request building; the pipeline reaches it through [`super::Client`].
#[derive(Debug, Clone)]
pub struct Prepared {
    uri: Uri,
    base: HeaderMap,
}

/// The delivery id cannot be sent as a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("delivery id is not a valid header value (control character or non-visible byte)")]
pub struct BadDeliveryId;

impl Prepared {
    /// Validates the URL and custom headers and builds the header block.
    pub fn new(url: &str, headers: &[(String, String)]) -> Result<Prepared, HeaderError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| HeaderError::Url {
                reason: e.to_string(),
            })?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            Some(other) => {
                return Err(HeaderError::Url {
                    reason: format!("scheme {other:?} is not http or https"),
                })
            }
            None => {
                return Err(HeaderError::Url {
                    reason: "no scheme (want http:// or https://)".into(),
                })
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(HeaderError::Url {
                reason: "no host".into(),
            });
        }
        if headers.len() > MAX_CUSTOM_HEADERS {
            return Err(HeaderError::TooMany {
                count: headers.len(),
            });
        }
        let mut base = HeaderMap::with_capacity(2 + headers.len() + 8);
        base.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        base.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (index, (name, value)) in headers.iter().enumerate() {
            let header =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeaderError::BadName {
                    index,
                    name: name.clone(),
                })?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(HeaderError::Reserved {
                    index,
                    name: name.clone(),
                });
            }
            let mut v = HeaderValue::from_str(value).map_err(|_| HeaderError::BadValue {
                index,
                name: name.clone(),
            })?;
            // Custom values are often credentials: keep them out of Debug output.
            v.set_sensitive(true);
            base.append(header, v);
        }
        Ok(Prepared { uri, base })
    }

    /// The request of one try. `unix_secs` is the wall clock at send time (the signature's
    /// timestamp). Allocates the header map once, at its final size (no clone of the header block
    /// followed by growth), and uses static values for the usual attempt and try numbers.
    pub fn build(
        &self,
        request: &Request,
        attempt: u32,
        try_no: u32,
        signer: Option<&Signer>,
        unix_secs: u64,
    ) -> Result<http::Request<Full<Bytes>>, BadDeliveryId> {
        let id = HeaderValue::from_str(&request.id).map_err(|_| BadDeliveryId)?;
        let extra = if signer.is_some() { 8 } else { 4 };
        let mut headers = HeaderMap::with_capacity(self.base.len() + extra);
        for (name, value) in &self.base {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(
            HeaderName::from_static("x-hookpipe-type"),
            HeaderValue::from_static(request.kind.as_str()),
        );
        headers.insert(
            HeaderName::from_static("x-hookpipe-delivery-id"),
            id.clone(),
        );
        headers.insert(
            HeaderName::from_static("x-hookpipe-attempt"),
            small_number(attempt),
        );
        headers.insert(
            HeaderName::from_static("x-hookpipe-try"),
            small_number(try_no),
        );
        if let Some(signer) = signer {
            let sig = signer.standard_signature(&request.id, unix_secs, &request.body);
            let amp = signer.amplitude_signature(&request.body);
            headers.insert(HeaderName::from_static("webhook-id"), id);
            headers.insert(
                HeaderName::from_static("webhook-timestamp"),
                HeaderValue::from(unix_secs),
            );
            // Base64 and "v1," are always valid header bytes.
            headers.insert(
                HeaderName::from_static("webhook-signature"),
                HeaderValue::try_from(sig).map_err(|_| BadDeliveryId)?,
            );
            headers.insert(
                HeaderName::from_static("x-amplitude-signature"),
                HeaderValue::try_from(amp).map_err(|_| BadDeliveryId)?,
            );
        }
        let mut req = http::Request::new(Full::new(request.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// `n` as a header value; the numbers of almost every attempt and try are static (no allocation).
fn small_number(n: u32) -> HeaderValue {
    match n {
        1 => HeaderValue::from_static("1"),
        2 => HeaderValue::from_static("2"),
        3 => HeaderValue::from_static("3"),
        n => HeaderValue::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::Kind;

    #[test]
    fn small_numbers_read_like_any_number() {
        for n in [1, 2, 3, 4, 10, 123_456] {
            assert_eq!(small_number(n), HeaderValue::from(n), "{n}");
        }
    }

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn urls() {
        assert!(Prepared::new("http://127.0.0.1:9/x", &[]).is_ok());
        assert!(Prepared::new("https://example.com/hook?a=1", &[]).is_ok());
        for bad in ["ftp://x/", "example.com/hook", "not a url", "http:///path"] {
            let e = Prepared::new(bad, &[]).unwrap_err();
            assert!(matches!(e, HeaderError::Url { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn custom_header_rules() {
        let six = hdrs(&[
            ("a", "1"),
            ("b", "1"),
            ("c", "1"),
            ("d", "1"),
            ("e", "1"),
            ("f", "1"),
        ]);
        assert_eq!(
            Prepared::new("http://h/", &six).unwrap_err(),
            HeaderError::TooMany { count: 6 }
        );
        let e = Prepared::new(
            "http://h/",
            &hdrs(&[("ok", "1"), ("Content-Type", "text/plain")]),
        )
        .unwrap_err();
        assert_eq!(
            e,
            HeaderError::Reserved {
                index: 1,
                name: "Content-Type".into()
            }
        );
        let e = Prepared::new("http://h/", &hdrs(&[("bad name", "1")])).unwrap_err();
        assert!(matches!(e, HeaderError::BadName { index: 0, .. }));
        let e = Prepared::new(
            "http://h/",
            &hdrs(&[("Authorization", "Bearer x\r\nEvil: 1")]),
        )
        .unwrap_err();
        assert!(matches!(e, HeaderError::BadValue { index: 0, .. }));
        assert!(!e.to_string().contains("Bearer"), "{e}");
    }

    #[test]
    fn header_block_order_and_per_try_headers() {
        let p = Prepared::new(
            "http://h/hook",
            &hdrs(&[("Authorization", "Bearer s3cret"), ("X-Team", "growth")]),
        )
        .unwrap();
        let req = Request {
            id: "d-1".into(),
            kind: Kind::Identify,
            body: Bytes::from_static(b"{}"),
        };
        let r = p.build(&req, 2, 3, None, 0).unwrap();
        assert_eq!(r.method(), Method::POST);
        let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "user-agent",
                "authorization",
                "x-team",
                "x-hookpipe-type",
                "x-hookpipe-delivery-id",
                "x-hookpipe-attempt",
                "x-hookpipe-try"
            ]
        );
        let h = r.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["user-agent"], "Amplitude/Webhook/1.0");
        assert_eq!(h["x-hookpipe-type"], "events.identify");
        assert_eq!(h["x-hookpipe-delivery-id"], "d-1");
        assert_eq!(h["x-hookpipe-attempt"], "2");
        assert_eq!(h["x-hookpipe-try"], "3");
        assert!(!format!("{h:?}").contains("s3cret"));
        assert!(h.get("webhook-signature").is_none());
    }

    #[test]
    fn bad_delivery_id_is_an_error_not_a_panic() {
        let p = Prepared::new("http://h/", &[]).unwrap();
        let req = Request {
            id: "a\nb".into(),
            kind: Kind::Track,
            body: Bytes::new(),
        };
        assert_eq!(p.build(&req, 1, 1, None, 0).unwrap_err(), BadDeliveryId);
    }
}
