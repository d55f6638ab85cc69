//! The retry decision within one attempt, kept apart from the transport: a pure function from the
//! outcome of one HTTP try (a status and its headers, or a transport error) to [`Decision`], so
//! tests can pin the policy without a socket.
//!
//! The policy is Amplitude's: a 2xx is a success; 5xx, 429, connection errors and timeouts are
//! worth another try within the attempt; everything else (4xx other than 429, 3xx redirects, 1xx
//! left as a final answer) ends the attempt at once. The attempt loop
//! ([`super::attempt`]) decides whether a retry still fits the attempt's time budget.

use http::{HeaderMap, StatusCode};
use std::time::{Duration, SystemTime};

/// What to do after one HTTP try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The receiver accepted the delivery (2xx).
    Success,
    /// Worth another try within this attempt. `after` is the receiver's `Retry-After` (only read on
    /// 429 and 503), already converted to a wait from now; `None` means "use the backoff".
    Retry {
        /// The wait the receiver asked for, if it asked.
        after: Option<Duration>,
    },
    /// Another try within this attempt would not help (4xx, 3xx, ...): end the attempt.
    GiveUp,
}

/// Why a try got no response head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The TCP or TLS connection could not be set up (refused, unreachable, DNS, handshake, or the
    /// connect timeout).
    #[error("connect error: {0}")]
    Connect(String),
    /// No response head arrived within the request timeout.
    #[error("timed out after {0:?} waiting for the response head")]
    Timeout(Duration),
    /// The connection broke while sending the request or reading the response head (reset,
    /// closed early, malformed response).
    #[error("connection error: {0}")]
    Connection(String),
}

/// Classifies one try. `now` is the wall clock, used only to turn an HTTP-date `Retry-After` into a
/// wait, so the function stays pure.
///
/// Every transport error is retryable: a refused connection, a pooled connection the receiver
/// closed under us, and a timeout are all transient from where we stand.
pub fn classify(
    result: Result<(StatusCode, &HeaderMap), &TransportError>,
    now: SystemTime,
) -> Decision {
    let (status, headers) = match result {
        Ok(head) => head,
        Err(_) => return Decision::Retry { after: None },
    };
    if status.is_success() {
        return Decision::Success;
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        return Decision::Retry {
            after: retry_after(headers, now),
        };
    }
    if status.is_server_error() {
        return Decision::Retry { after: None };
    }
    Decision::GiveUp
}

/// Reads `Retry-After` (RFC 9110 §10.2.3): either delay-seconds or an HTTP-date. A date in the past
/// means "now" (zero wait). An unreadable value is ignored (`None`), as if absent.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurd values: they simply will not fit any budget.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    fn status(code: u16, headers: &HeaderMap) -> Decision {
        classify(
            Ok((StatusCode::from_u16(code).unwrap(), headers)),
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn success_is_any_2xx() {
        let h = HeaderMap::new();
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(status(code, &h), Decision::Success, "{code}");
        }
    }

    #[test]
    fn server_errors_and_429_retry() {
        let h = HeaderMap::new();
        for code in [500, 502, 503, 504, 599, 429] {
            assert_eq!(status(code, &h), Decision::Retry { after: None }, "{code}");
        }
    }

    #[test]
    fn client_errors_and_redirects_give_up() {
        let h = HeaderMap::new();
        for code in [
            400, 401, 403, 404, 408, 410, 413, 422, 301, 302, 303, 307, 308, 304, 101,
        ] {
            assert_eq!(status(code, &h), Decision::GiveUp, "{code}");
        }
    }

    #[test]
    fn every_transport_error_retries() {
        for e in [
            TransportError::Connect("refused".into()),
            TransportError::Timeout(Duration::from_secs(1)),
            TransportError::Connection("reset".into()),
        ] {
            assert_eq!(
                classify(Err(&e), SystemTime::UNIX_EPOCH),
                Decision::Retry { after: None }
            );
        }
    }

    #[test]
    fn retry_after_seconds_on_429_and_503() {
        let h = with_retry_after("2");
        let want = Decision::Retry {
            after: Some(Duration::from_secs(2)),
        };
        assert_eq!(status(429, &h), want);
        assert_eq!(status(503, &h), want);
    }

    #[test]
    fn retry_after_is_ignored_on_other_statuses() {
        let h = with_retry_after("2");
        assert_eq!(status(500, &h), Decision::Retry { after: None });
        assert_eq!(status(502, &h), Decision::Retry { after: None });
        assert_eq!(status(400, &h), Decision::GiveUp);
    }

    #[test]
    fn retry_after_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777; three seconds later:
        let h = with_retry_after("Sun, 06 Nov 1994 08:49:40 GMT");
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        // A date in the past means no wait.
        let h = with_retry_after("Sun, 06 Nov 1994 08:49:30 GMT");
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
    }

    #[test]
    fn unreadable_retry_after_is_absent() {
        let now = SystemTime::UNIX_EPOCH;
        for v in ["soon", "-1", "1.5", ""] {
            assert_eq!(retry_after(&with_retry_after(v), now), None, "{v:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        // Huge values saturate rather than fail.
        assert_eq!(
            retry_after(&with_retry_after("99999999999999999999999"), now),
            Some(Duration::from_secs(u64::MAX))
        );
    }
}
