//! A real HTTP receiver on 127.0.0.1 standing in for a customer's webhook.
//!
//! It records every request (method, path, headers, body, arrival time on tokio's clock) and
//! answers as a [`Script`] says, request by request: a status, a 429 with `Retry-After`, a stall
//! before answering, a closed connection, the first K requests failing, or a seeded share of
//! 500s. It speaks HTTP/1.1 and HTTP/2 (prior knowledge), so it serves any client hookpipe
//! builds. It never panics on odd input: bodies over [`MAX_BODY`] get a 413 and are recorded with
//! the reason, and nothing it serves depends on the request being well-formed JSON.
//!
//! The server runs on the tokio runtime that started it and stops when the [`Receiver`] is dropped.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Largest request body a receiver reads unless [`Receiver::with_max_body`] says otherwise;
/// larger ones are answered 413.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// This status with an empty body.
    Status(u16),
    /// 429 Too Many Requests with this `Retry-After` value (seconds or an HTTP date, as given).
    TooManyRequests {
        /// The `Retry-After` header value, sent verbatim (odd values test the client's parsing).
        retry_after: String,
    },
    /// A status with extra headers and a body.
    Full {
        /// Status code.
        status: u16,
        /// Extra response headers (invalid names or values are skipped).
        headers: Vec<(String, String)>,
        /// Response body.
        body: Vec<u8>,
    },
    /// Wait this long (on tokio's clock, so paused-time tests work), then answer with the inner reply.
    Stall(Duration, Box<Reply>),
    /// Answer nothing: an HTTP/1.1 connection is closed, an HTTP/2 stream is reset.
    Close,
}

impl Reply {
    /// 200 OK, what a healthy webhook answers.
    pub fn ok() -> Reply {
        Reply::Status(200)
    }

    /// The status this reply ends in, or `None` when it closes the connection.
    pub fn final_status(&self) -> Option<u16> {
        match self {
            Reply::Status(s) | Reply::Full { status: s, .. } => Some(*s),
            Reply::TooManyRequests { .. } => Some(429),
            Reply::Stall(_, inner) => inner.final_status(),
            Reply::Close => None,
        }
    }
}

/// Decides the reply to each request; it sees the request as recorded (its `index` is its
/// arrival number, from 0). Cheap to clone.
#[derive(Clone)]
pub struct Script(Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>);

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Script(..)")
    }
}

impl Script {
    /// A script from any function of the request.
    pub fn new(f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Script {
        Script(Arc::new(f))
    }

    /// The same reply to every request.
    pub fn always(reply: Reply) -> Script {
        Script::new(move |_| reply.clone())
    }

    /// `failure` for the first `k` requests, 200 after.
    pub fn fail_first(k: usize, failure: Reply) -> Script {
        Script::new(move |r| {
            if r.index < k {
                failure.clone()
            } else {
                Reply::ok()
            }
        })
    }

    /// The replies in order, then `then` for every later request.
    pub fn sequence(replies: Vec<Reply>, then: Reply) -> Script {
        Script::new(move |r| {
            replies
                .get(r.index)
                .cloned()
                .unwrap_or_else(|| then.clone())
        })
    }

    /// A 500 for each request with probability `share` (0.0..=1.0), else 200; seeded, so a run
    /// is repeatable for a given arrival order.
    pub fn share_of_500s(share: f64, seed: u64) -> Script {
        let rng = Mutex::new(fastrand::Rng::with_seed(seed));
        let share = share.clamp(0.0, 1.0);
        Script::new(move |_| {
            let roll = lock(&rng).f64();
            if roll < share {
                Reply::Status(500)
            } else {
                Reply::ok()
            }
        })
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Arrival number, from 0, in the order bodies finished arriving.
    pub index: usize,
    /// HTTP method.
    pub method: Method,
    /// Path and query, as sent (`/hook?x=1`).
    pub path: String,
    /// HTTP version of the connection.
    pub version: Version,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body (empty if it could not be read; see `body_error`).
    pub body: Bytes,
    /// Why the body could not be read (too large, connection reset), if so.
    pub body_error: Option<String>,
    /// When the body finished arriving, on tokio's clock.
    pub at: tokio::time::Instant,
    /// The reply the script chose (a 413 for unreadable bodies).
    pub reply: Reply,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive) as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics naming the request when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request #{} {} {} body is not JSON ({e}): {}",
                self.index,
                self.method,
                self.path,
                self.body_str()
            )
        })
    }

    /// Whether the receiver answered this request with a 2xx (what a sender counts as delivered).
    pub fn succeeded(&self) -> bool {
        self.reply
            .final_status()
            .is_some_and(|s| (200..300).contains(&s))
    }
}

struct Inner {
    max_body: usize,
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<Script>,
    next_index: AtomicUsize,
    connections: AtomicUsize,
    /// (requests recorded, of which chosen to end in a 2xx), published on every record.
    counts: watch::Sender<(usize, usize)>,
}

/// The receiver: a server on 127.0.0.1 with an OS-chosen port, stopped on drop.
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: CancellationToken,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .field("requests", &self.count())
            .finish()
    }
}

/// Locks a mutex, ignoring poisoning: a test that panicked while holding it has already failed,
/// and the data (a list of records, a script) stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error a handler returns to make hyper drop the connection without answering.
#[derive(Debug)]
struct CloseConnection;

impl fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scripted connection close")
    }
}

impl std::error::Error for CloseConnection {}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> Receiver {
        Receiver::with_script(Script::always(Reply::ok())).await
    }

    /// A receiver that answers as `script` says.
    pub async fn with_script(script: Script) -> Receiver {
        Receiver::with_max_body(script, MAX_BODY).await
    }

    /// A receiver that answers as `script` says and reads at most `max_body` bytes of a body
    /// (a larger body is recorded empty with `body_error` set and answered 413).
    pub async fn with_max_body(script: Script, max_body: usize) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("binding the HTTP receiver on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("HTTP receiver address: {e}"));
        let inner = Arc::new(Inner {
            max_body,
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(script),
            next_index: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            counts: watch::Sender::new((0, 0)),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, inner.clone(), stop.clone()));
        Receiver { addr, inner, stop }
    }

    /// The base URL, `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The URL of `path` on this receiver (`path` should start with `/`).
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the script for requests arriving from now on (a destination going down, then
    /// coming back). Arrival numbers keep counting from where they were.
    pub fn set_script(&self, script: Script) {
        *lock(&self.inner.script) = script;
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.requests).clone()
    }

    /// How many requests have been recorded.
    pub fn count(&self) -> usize {
        self.inner.counts.borrow().0
    }

    /// How many TCP connections have been accepted (keep-alive reuse shows as few connections).
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Waits until at least `count` requests are recorded or `timeout` passes, then returns all
    /// recorded requests (fewer than `count` means the timeout passed: assert on the length).
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Recorded> {
        let mut rx = self.inner.counts.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|(n, _)| *n >= count)).await;
        self.requests()
    }

    /// How many requests the script chose to answer with a 2xx (counted when the reply is
    /// chosen: a stalled 2xx the client gave up on still counts).
    pub fn successes(&self) -> usize {
        self.inner.counts.borrow().1
    }

    /// Waits until at least `count` requests got a 2xx reply (see [`Receiver::successes`]) or
    /// `timeout` passes; returns those successful requests, in arrival order.
    pub async fn wait_for_successes(&self, count: usize, timeout: Duration) -> Vec<Recorded> {
        let mut rx = self.inner.counts.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|(_, ok)| *ok >= count)).await;
        lock(&self.inner.requests)
            .iter()
            .filter(|r| r.succeeded())
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors or a reset before accept: back off briefly and go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        inner.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let inner = inner.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(inner.clone(), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                // Errors here are clients hanging up or our scripted closes: nothing to report.
                _ = conn => {}
            }
        });
    }
}

async fn handle(
    inner: Arc<Inner>,
    req: http::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let (parts, body) = req.into_parts();
    let (body, body_error) = match Limited::new(body, inner.max_body).collect().await {
        Ok(collected) => (collected.to_bytes(), None),
        Err(e) => (Bytes::new(), Some(e.to_string())),
    };
    let index = inner.next_index.fetch_add(1, Ordering::Relaxed);
    let mut recorded = Recorded {
        index,
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned()),
        version: parts.version,
        headers: parts.headers,
        body,
        body_error,
        at: tokio::time::Instant::now(),
        reply: Reply::Status(413),
    };
    if recorded.body_error.is_none() {
        let script = lock(&inner.script).clone();
        recorded.reply = (script.0)(&recorded);
    }
    let reply = recorded.reply.clone();
    let succeeded = recorded.succeeded();
    {
        let mut requests = lock(&inner.requests);
        requests.push(recorded);
        let n = requests.len();
        inner
            .counts
            .send_modify(|(total, ok)| (*total, *ok) = (n, *ok + usize::from(succeeded)));
    }
    answer(reply).await
}

async fn answer(mut reply: Reply) -> Result<Response<Full<Bytes>>, CloseConnection> {
    loop {
        match reply {
            Reply::Stall(delay, inner) => {
                tokio::time::sleep(delay).await;
                reply = *inner;
            }
            Reply::Close => return Err(CloseConnection),
            Reply::Status(status) => return Ok(response(status, &[], Vec::new())),
            Reply::TooManyRequests { retry_after } => {
                return Ok(response(
                    429,
                    &[("retry-after".to_owned(), retry_after)],
                    Vec::new(),
                ))
            }
            Reply::Full {
                status,
                headers,
                body,
            } => return Ok(response(status, &headers, body)),
        }
    }
}

fn response(status: u16, headers: &[(String, String)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    //! The receiver's own behaviour, checked with a real hyper client over loopback.

    use super::*;
    use hyper_util::client::legacy::Client;

    type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

    fn client() -> TestClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    async fn post(client: &TestClient, url: &str, body: &str) -> Result<(u16, HeaderMap), String> {
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .header("x-test", "yes")
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, headers))
    }

    #[tokio::test]
    async fn records_method_path_headers_and_body_and_reuses_connections() {
        let rx = Receiver::start().await;
        let c = client();
        for i in 0..3 {
            let (status, _) = post(
                &c,
                &rx.url_for(&format!("/hook?i={i}")),
                &format!("{{\"i\":{i}}}"),
            )
            .await
            .expect("request");
            assert_eq!(status, 200);
        }
        let got = rx.wait_for(3, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].method, Method::POST);
        assert_eq!(got[1].path, "/hook?i=1");
        assert_eq!(got[1].header("X-Test"), Some("yes"));
        assert_eq!(got[2].json()["i"], 2);
        assert_eq!(
            got.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(got.iter().all(Recorded::succeeded));
        assert_eq!(
            rx.connections(),
            1,
            "keep-alive should reuse one connection"
        );
    }

    #[tokio::test]
    async fn fail_first_then_succeed_and_retry_after() {
        let rx = Receiver::with_script(Script::fail_first(
            2,
            Reply::TooManyRequests {
                retry_after: "7".into(),
            },
        ))
        .await;
        let c = client();
        let (s0, h0) = post(&c, &rx.url(), "{}").await.expect("first");
        let (s1, _) = post(&c, &rx.url(), "{}").await.expect("second");
        let (s2, _) = post(&c, &rx.url(), "{}").await.expect("third");
        assert_eq!((s0, s1, s2), (429, 429, 200));
        assert_eq!(
            h0.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("7")
        );
        assert_eq!(
            rx.wait_for_successes(1, Duration::from_secs(5)).await.len(),
            1
        );
        assert_eq!((rx.count(), rx.successes()), (3, 1));
    }

    #[tokio::test]
    async fn sequence_full_reply_and_script_swap() {
        let rx = Receiver::with_script(Script::sequence(
            vec![
                Reply::Status(503),
                Reply::Full {
                    status: 201,
                    headers: vec![
                        ("x-reply".into(), "hi".into()),
                        ("bad\nname".into(), "x".into()),
                    ],
                    body: b"created".to_vec(),
                },
            ],
            Reply::Status(204),
        ))
        .await;
        let c = client();
        assert_eq!(post(&c, &rx.url(), "a").await.expect("1").0, 503);
        let (s, h) = post(&c, &rx.url(), "b").await.expect("2");
        assert_eq!(
            (s, h.get("x-reply").and_then(|v| v.to_str().ok())),
            (201, Some("hi"))
        );
        assert_eq!(post(&c, &rx.url(), "c").await.expect("3").0, 204);
        rx.set_script(Script::always(Reply::Status(410)));
        assert_eq!(post(&c, &rx.url(), "d").await.expect("4").0, 410);
        let got = rx.requests();
        assert_eq!(got[3].index, 3);
        assert_eq!(got[0].body_str(), "a");
        assert!(!got[0].succeeded() && got[1].succeeded());
    }

    #[tokio::test]
    async fn close_drops_the_connection_without_an_answer() {
        let rx = Receiver::with_script(Script::sequence(vec![Reply::Close], Reply::ok())).await;
        let c = client();
        let first = post(&c, &rx.url(), "{}").await;
        assert!(
            first.is_err(),
            "a closed connection must not look like an answer: {first:?}"
        );
        assert_eq!(post(&c, &rx.url(), "{}").await.expect("second").0, 200);
        assert_eq!(rx.count(), 2, "the closed request is still recorded");
        assert_eq!(rx.requests()[0].reply.final_status(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn stall_waits_on_tokio_clock_before_answering() {
        let rx = Receiver::with_script(Script::always(Reply::Stall(
            Duration::from_secs(30),
            Box::new(Reply::Status(202)),
        )))
        .await;
        let c = client();
        let url = rx.url();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            let req = http::Request::post(url.as_str())
                .body(Full::new(Bytes::from_static(b"{}")))
                .expect("request");
            let resp = c.request(req).await.expect("answer");
            (resp.status().as_u16(), tokio::time::Instant::now())
        });
        // Recorded on arrival, before the stall ends.
        assert_eq!(rx.wait_for(1, Duration::from_secs(5)).await.len(), 1);
        let (status, answered) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("answered within the bound")
            .expect("client task");
        assert_eq!(status, 202);
        assert!(
            answered - start >= Duration::from_secs(30),
            "answered after {:?}",
            answered - start
        );
    }

    #[tokio::test]
    async fn share_of_500s_is_seeded_and_close_to_the_share() {
        let rx = Receiver::with_script(Script::share_of_500s(0.25, 42)).await;
        let c = client();
        let mut statuses = Vec::new();
        for _ in 0..200 {
            statuses.push(post(&c, &rx.url(), "{}").await.expect("request").0);
        }
        let fails = statuses.iter().filter(|s| **s == 500).count();
        assert!(
            (25..=75).contains(&fails),
            "{fails} of 200 failed, expected about 50"
        );
        assert!(statuses.iter().all(|s| *s == 500 || *s == 200));
        // Same seed, same decisions.
        let again = Script::share_of_500s(0.25, 42);
        let replay: Vec<u16> = rx
            .requests()
            .iter()
            .map(|r| (again.0)(r).final_status().unwrap_or(0))
            .collect();
        assert_eq!(replay, statuses);
    }

    #[tokio::test]
    async fn oversized_body_is_recorded_with_its_error_and_answered_413() {
        let rx = Receiver::with_max_body(Script::always(Reply::ok()), 16).await;
        let c = client();
        let (status, _) = post(&c, &rx.url(), &"x".repeat(100)).await.expect("answer");
        assert_eq!(status, 413);
        let (status, _) = post(&c, &rx.url(), "small").await.expect("answer");
        assert_eq!(status, 200);
        let got = rx.requests();
        assert_eq!(got.len(), 2);
        assert!(
            got[0].body.is_empty() && got[0].body_error.is_some(),
            "{:?}",
            got[0]
        );
        assert_eq!(got[1].body_str(), "small");
        assert_eq!(got[1].body_error, None);
    }

    #[tokio::test]
    async fn http2_prior_knowledge_and_wait_for_bound() {
        let rx = Receiver::start().await;
        let c: TestClient = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        assert_eq!(post(&c, &rx.url(), "{}").await.expect("h2").0, 200);
        assert_eq!(rx.requests()[0].version, Version::HTTP_2);
        let got = rx.wait_for(5, Duration::from_millis(200)).await;
        assert_eq!(
            got.len(),
            1,
            "wait_for returns what arrived when the bound passes"
        );

        // Close on HTTP/2 resets the stream: the client gets an error, not an answer.
        rx.set_script(Script::always(Reply::Close));
        let closed = post(&c, &rx.url(), "{}").await;
        assert!(
            closed.is_err(),
            "a reset stream must not look like an answer: {closed:?}"
        );
    }
}
