//! The transport: one pooled hyper-util client per destination, and the one HTTP try.
//!
//! - Connections: HTTP/1.1 over plain TCP; HTTP/1.1 or HTTP/2 over TLS, chosen by ALPN. TLS is
//!   rustls (ring) with the webpki (Mozilla) roots, so no system certificate store is needed.
//! - Pool: keep-alive, idle connections kept [`ClientOptions::pool_idle_timeout`], up to
//!   [`ClientOptions::pool_max_idle_per_host`] idle per host so high concurrency reuses instead of
//!   reconnecting; `TCP_NODELAY` on, TCP keep-alive probes on.
//! - Time: the connect timeout bounds TCP connect; the request timeout bounds one try from send to
//!   the end of the response head (connect included). After the head, the body is drained (bounded
//!   by the request timeout again, and by [`ClientOptions::max_response_body`] bytes) so the
//!   connection returns to the pool; a body that is too big or too slow is dropped, and with it the
//!   connection. The status alone decides the outcome.
//! - Redirects are never followed: a 3xx is a failed try (hyper does not follow them).

use super::attempt::{self, AttemptPolicy};
use super::policy::{classify, Decision, TransportError};
use super::request::{HeaderError, Prepared};
use super::signing::{Signer, SigningError};
use super::{Endpoint, Outcome, Request, Try};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Tuning of a destination's client beyond what the config's [`Endpoint`] says. [`Default`] is
/// what production uses; tests shorten the attempt policy.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Most idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// Most response-body bytes read to keep a connection reusable; past it the connection is
    /// dropped.
    pub max_response_body: usize,
    /// Tries, backoff and budget within one attempt.
    pub attempt: AttemptPolicy,
    /// Certificate authorities trusted besides the webpki (Mozilla) roots, for receivers behind a
    /// private CA. Empty by default.
    pub extra_root_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Request timeouts of particular kinds, instead of the endpoint's `request_timeout` (cohort
    /// batches have their own, `cohorts.request_timeout`). Kept by the client, so every attempt
    /// of a request, the first or one from a retry tier (whose records carry the kind), gets
    /// its kind's timeout.
    pub kind_timeouts: Vec<(super::Kind, Duration)>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 1024,
            max_response_body: 64 * 1024,
            attempt: AttemptPolicy::default(),
            extra_root_certificates: Vec::new(),
            kind_timeouts: Vec::new(),
        }
    }
}

/// Why a destination's client cannot be built. Names the destination; never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The URL or a custom header is unusable.
    #[error("destination {destination:?}: {source}")]
    Header {
        /// The destination's name.
        destination: String,
        /// What is wrong.
        #[source]
        source: HeaderError,
    },
    /// A signing secret is unusable.
    #[error("destination {destination:?}: {source}")]
    Signing {
        /// The destination's name.
        destination: String,
        /// What is wrong.
        #[source]
        source: SigningError,
    },
    /// An extra root certificate is not a usable CA certificate.
    #[error("destination {destination:?}: extra root certificate #{index}: {source}")]
    RootCertificate {
        /// The destination's name.
        destination: String,
        /// 1-based position in [`ClientOptions::extra_root_certificates`].
        index: usize,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the TLS configuration (should not happen with the built-in provider).
    #[error("destination {destination:?}: TLS setup failed: {source}")]
    Tls {
        /// The destination's name.
        destination: String,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

type Http = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Inner {
    name: String,
    http: Http,
    prepared: Prepared,
    signer: Option<Signer>,
    request_timeout: Duration,
    options: ClientOptions,
}

/// A destination's HTTP client: pooled keep-alive connections (HTTP/1.1 and HTTP/2, rustls with
/// the webpki roots), no redirects followed, response bodies drained with a size cap.
/// Cloning is shallow (one `Arc`): every clone shares the pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("destination", &self.inner.name)
            .field("signing", &self.inner.signer.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client for an endpoint with the default [`ClientOptions`]; fails on an unusable
    /// URL, header or signing secret.
    pub fn new(endpoint: Endpoint) -> Result<Client, BuildError> {
        Client::with_options(endpoint, ClientOptions::default())
    }

    /// Builds the client for an endpoint with explicit options.
    pub fn with_options(endpoint: Endpoint, options: ClientOptions) -> Result<Client, BuildError> {
        let name = endpoint.name;
        let prepared = Prepared::new(&endpoint.url, &endpoint.headers).map_err(|source| {
            BuildError::Header {
                destination: name.clone(),
                source,
            }
        })?;
        let signer =
            Signer::new(&endpoint.signing_secrets).map_err(|source| BuildError::Signing {
                destination: name.clone(),
                source,
            })?;

        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(endpoint.connect_timeout));
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        let tls = tls_config(&name, &options.extra_root_certificates)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Client {
            inner: Arc::new(Inner {
                name,
                http,
                prepared,
                signer,
                request_timeout: endpoint.request_timeout,
                options,
            }),
        })
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Makes one attempt: up to three tries on 5xx, 429, connection errors and timeouts, 100 ms
    /// doubling backoff with 50% jitter, no new try later than 4 s after the attempt began. Sends
    /// `x-hookpipe-attempt: 1`; see [`Client::attempt_numbered`] for later attempts.
    pub async fn attempt(&self, request: &Request) -> Outcome {
        self.attempt_numbered(request, 1).await
    }

    /// Makes attempt number `attempt` (1-based across attempts, sent as `x-hookpipe-attempt`) with
    /// the schedule of [`super::attempt`].
    pub async fn attempt_numbered(&self, request: &Request, attempt: u32) -> Outcome {
        let mut rng = fastrand::Rng::new();
        attempt::run(&self.inner.options.attempt, &mut rng, |try_no| {
            self.send_try(request, attempt, try_no)
        })
        .await
    }

    /// One HTTP try: its record and the policy's decision on it.
    async fn send_try(&self, request: &Request, attempt: u32, try_no: u32) -> (Try, Decision) {
        let inner = &*self.inner;
        let started = SystemTime::now();
        let since_epoch = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut record = Try {
            started_unix_ms: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
            status: None,
            error: None,
        };
        let req = match inner.prepared.build(
            request,
            attempt,
            try_no,
            inner.signer.as_ref(),
            since_epoch.as_secs(),
        ) {
            Ok(req) => req,
            Err(e) => {
                record.error = Some(e.to_string());
                return (record, Decision::GiveUp);
            }
        };
        let timeout = inner
            .options
            .kind_timeouts
            .iter()
            .find(|(kind, _)| *kind == request.kind)
            .map_or(inner.request_timeout, |&(_, t)| t);
        let response = match tokio::time::timeout(timeout, inner.http.request(req)).await {
            Err(_) => Err(TransportError::Timeout(timeout)),
            Ok(Err(e)) => Err(transport_error(&e)),
            Ok(Ok(response)) => Ok(response),
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                let decision = classify(Err(&e), SystemTime::now());
                tracing::debug!(destination = %inner.name, attempt, try_no, error = %e, "delivery try failed");
                record.error = Some(e.to_string());
                return (record, decision);
            }
        };
        let status = response.status();
        let decision = classify(Ok((status, response.headers())), SystemTime::now());
        record.status = Some(status.as_u16());
        tracing::debug!(destination = %inner.name, attempt, try_no, status = status.as_u16(), "delivery try answered");
        let body = response.into_body();
        let _ = tokio::time::timeout(timeout, drain(body, inner.options.max_response_body)).await;
        (record, decision)
    }
}

/// rustls with the ring provider, its safe default protocol versions, and the webpki roots plus
/// any extra CAs. ALPN (h2, http/1.1) is added by the connector builder.
fn tls_config(
    destination: &str,
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<rustls::ClientConfig, BuildError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (i, cert) in extra_roots.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|source| BuildError::RootCertificate {
                destination: destination.to_string(),
                index: i + 1,
                source,
            })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|source| BuildError::Tls {
        destination: destination.to_string(),
        source,
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// Reads and discards a response body up to `cap` bytes, so an HTTP/1.1 connection can go back to
/// the pool. Returns early (dropping the body, and so the connection) past the cap or on error.
async fn drain(mut body: hyper::body::Incoming, cap: usize) {
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len());
                    if seen > cap {
                        return;
                    }
                }
            }
            Err(_) => return,
        }
    }
}

/// Turns hyper-util's error into ours, keeping the whole cause chain (hyper's top-level message
/// alone is just "client error (Connect)").
#[cold]
fn transport_error(e: &hyper_util::client::legacy::Error) -> TransportError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if e.is_connect() {
        TransportError::Connect(text)
    } else {
        TransportError::Connection(text)
    }
}
