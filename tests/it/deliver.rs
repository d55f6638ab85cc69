//! `deliver::Client` against real HTTP/1.1 receivers on 127.0.0.1: statuses, retries within an
//! attempt, timeouts, redirects not followed, keep-alive reuse, capped response bodies, headers on
//! the wire, and signatures checked by an independent implementation (PyPI `standardwebhooks`).
//!
//! The receiver here is deliberately raw (tokio TCP, hand-written HTTP/1.1) so it can count
//! connections, stall, and send oversized bodies exactly as scripted.

use bytes::Bytes;
use hookpipe::deliver::{AttemptPolicy, Client, ClientOptions, Endpoint, Kind, Outcome, Request};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the receiver answers to one request.
#[derive(Clone)]
enum Reply {
    /// A response with a status, extra headers and a body.
    Status(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Read the request, then answer nothing for this long, then close.
    Stall(Duration),
}

fn status(code: u16) -> Reply {
    Reply::Status(code, Vec::new(), b"ok".to_vec())
}

/// One request as received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    /// Header names lower-cased, in wire order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Which connection (0-based, in accept order) carried it.
    connection: usize,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A scripted HTTP/1.1 receiver: request `i` (0-based, over all connections) gets `script(i)`.
struct Receiver {
    url: String,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let (c, r) = (connections.clone(), received.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let n = c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, n, script.clone(), r.clone()));
            }
        });
        Receiver {
            url,
            connections,
            received,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Serves one keep-alive connection until the client closes it or a reply ends it.
async fn serve(
    mut stream: TcpStream,
    connection: usize,
    script: Script,
    received: Arc<Mutex<Vec<Received>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let path = request_line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buf.len() < body_start + len {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[body_start..body_start + len].to_vec();
        buf.drain(..body_start + len);
        let index = {
            let mut all = received.lock().unwrap();
            all.push(Received {
                path,
                headers,
                body,
                connection,
                at: Instant::now(),
            });
            all.len() - 1
        };
        match script(index) {
            Reply::Stall(d) => {
                tokio::time::sleep(d).await;
                return;
            }
            Reply::Status(code, extra, body) => {
                let mut out = format!(
                    "HTTP/1.1 {code} Scripted\r\ncontent-length: {}\r\n",
                    body.len()
                );
                for (n, v) in extra {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("\r\n");
                if stream.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
                for chunk in body.chunks(64 * 1024) {
                    if stream.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Reads until the end of a request head; returns its length (without the blank line).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn endpoint(url: &str) -> Endpoint {
    Endpoint {
        name: "test".into(),
        url: url.into(),
        headers: vec![
            ("Authorization".into(), "Bearer t0ken".into()),
            ("X-Team".into(), "growth".into()),
        ],
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        signing_secrets: Vec::new(),
    }
}

fn request(id: &str) -> Request {
    Request {
        id: id.into(),
        kind: Kind::Track,
        body: Bytes::from_static(br#"{"event_type":"click","user_id":"u1"}"#),
    }
}

fn statuses(outcome: &Outcome) -> Vec<Option<u16>> {
    outcome.tries().iter().map(|t| t.status).collect()
}

/// Bounds every test: nothing here may hang the suite.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test took longer than 30 s")
}

#[tokio::test]
async fn ok_200_one_try_with_every_header_on_the_wire() {
    let rx = Receiver::start(|_| status(200)).await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    let outcome = bounded(client.attempt(&request("d-200"))).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    assert_eq!(statuses(&outcome), [Some(200)]);
    assert!(outcome.tries()[0].error.is_none());
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/hook");
    assert_eq!(r.body, br#"{"event_type":"click","user_id":"u1"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("user-agent"), Some("Amplitude/Webhook/1.0"));
    assert_eq!(r.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(r.header("x-team"), Some("growth"));
    assert_eq!(r.header("x-hookpipe-type"), Some("events.track"));
    assert_eq!(r.header("x-hookpipe-delivery-id"), Some("d-200"));
    assert_eq!(r.header("x-hookpipe-attempt"), Some("1"));
    assert_eq!(r.header("x-hookpipe-try"), Some("1"));
    assert_eq!(
        r.header("webhook-signature"),
        None,
        "unsigned without secrets"
    );
    // Preset headers come first, then the custom ones in configuration order.
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    let pos = |h: &str| names.iter().position(|n| *n == h).unwrap();
    assert!(pos("content-type") < pos("authorization"));
    assert!(pos("user-agent") < pos("authorization"));
    assert!(pos("authorization") < pos("x-team"));
}

#[tokio::test]
async fn two_500s_then_200_is_delivered_on_the_third_try_with_one_id() {
    let rx = Receiver::start(|i| if i < 2 { status(500) } else { status(200) }).await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    let outcome = bounded(client.attempt_numbered(&request("d-500"), 4)).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    assert_eq!(statuses(&outcome), [Some(500), Some(500), Some(200)]);
    let got = rx.received();
    assert_eq!(got.len(), 3);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.header("x-hookpipe-delivery-id"), Some("d-500"));
        assert_eq!(r.header("x-hookpipe-attempt"), Some("4"));
        assert_eq!(
            r.header("x-hookpipe-try"),
            Some((i + 1).to_string().as_str())
        );
    }
    // The backoff waits at least its lower jitter bound (50 ms, then 100 ms).
    assert!(got[1].at - got[0].at >= Duration::from_millis(50));
    assert!(got[2].at - got[1].at >= Duration::from_millis(100));
    // Try start times are recorded in unix ms, in order.
    let t = outcome.tries();
    assert!(
        t[0].started_unix_ms <= t[1].started_unix_ms
            && t[1].started_unix_ms <= t[2].started_unix_ms
    );
    assert!(t[0].started_unix_ms > 1_600_000_000_000);
}

#[tokio::test]
async fn three_500s_fail_the_attempt_after_exactly_three_tries() {
    let rx = Receiver::start(|_| status(503)).await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    let outcome = bounded(client.attempt(&request("d-503"))).await;
    assert!(!outcome.is_delivered());
    assert_eq!(statuses(&outcome), [Some(503); 3]);
    assert_eq!(rx.received().len(), 3);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let rx = Receiver::start(|i| {
        if i == 0 {
            Reply::Status(429, vec![("retry-after", "1".into())], Vec::new())
        } else {
            status(200)
        }
    })
    .await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    let outcome = bounded(client.attempt(&request("d-429"))).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    assert_eq!(statuses(&outcome), [Some(429), Some(200)]);
    let got = rx.received();
    assert!(
        got[1].at - got[0].at >= Duration::from_secs(1),
        "came back before Retry-After"
    );
}

#[tokio::test]
async fn retry_after_beyond_the_budget_ends_the_attempt() {
    let rx =
        Receiver::start(|_| Reply::Status(429, vec![("retry-after", "30".into())], Vec::new()))
            .await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    let outcome = bounded(client.attempt(&request("d-429-long"))).await;
    assert!(!outcome.is_delivered());
    assert_eq!(statuses(&outcome), [Some(429)]);
}

#[tokio::test]
async fn a_receiver_stalling_past_the_request_timeout_fails_each_try() {
    let rx = Receiver::start(|_| Reply::Stall(Duration::from_secs(20))).await;
    let ep = Endpoint {
        request_timeout: Duration::from_millis(300),
        ..endpoint(&rx.url)
    };
    let client = Client::new(ep).unwrap();
    let began = Instant::now();
    let outcome = bounded(client.attempt(&request("d-stall"))).await;
    assert!(!outcome.is_delivered());
    assert_eq!(outcome.tries().len(), 3);
    for t in outcome.tries() {
        assert_eq!(t.status, None);
        let e = t.error.as_deref().unwrap();
        assert!(e.contains("timed out"), "{e}");
    }
    // Three timeouts and two backoffs, well under the receiver's 20 s stall.
    assert!(began.elapsed() < Duration::from_secs(10));
    assert_eq!(rx.received().len(), 3);
}

#[tokio::test]
async fn a_400_is_one_try() {
    let rx = Receiver::start(|_| status(400)).await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    let outcome = bounded(client.attempt(&request("d-400"))).await;
    assert!(!outcome.is_delivered());
    assert_eq!(statuses(&outcome), [Some(400)]);
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let rx = Receiver::start(|i| {
        if i == 0 {
            Reply::Status(301, vec![("location", "/elsewhere".into())], Vec::new())
        } else {
            status(200)
        }
    })
    .await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    let outcome = bounded(client.attempt(&request("d-301"))).await;
    assert!(!outcome.is_delivered());
    assert_eq!(statuses(&outcome), [Some(301)]);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/hook");
}

#[tokio::test]
async fn connection_refused_is_retried_then_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    let client = Client::new(endpoint(&url)).unwrap();
    let outcome = bounded(client.attempt(&request("d-refused"))).await;
    assert!(!outcome.is_delivered());
    assert_eq!(outcome.tries().len(), 3);
    for t in outcome.tries() {
        let e = t.error.as_deref().unwrap();
        assert!(e.starts_with("connect error"), "{e}");
    }
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let rx = Receiver::start(|_| status(200)).await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    for i in 0..50 {
        let outcome = bounded(client.attempt(&request(&format!("d-ka-{i}")))).await;
        assert!(outcome.is_delivered());
    }
    assert_eq!(rx.received().len(), 50);
    assert_eq!(
        rx.connections(),
        1,
        "every request over one keep-alive connection"
    );
    // Clones share the pool.
    let clone = client.clone();
    assert!(bounded(clone.attempt(&request("d-ka-clone")))
        .await
        .is_delivered());
    assert_eq!(rx.connections(), 1);
}

#[tokio::test]
async fn a_huge_response_body_is_capped_and_its_connection_dropped() {
    // 8 MiB answer to the first request, small ones after.
    let rx = Receiver::start(|i| {
        if i == 0 {
            Reply::Status(200, Vec::new(), vec![b'x'; 8 << 20])
        } else {
            status(200)
        }
    })
    .await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    let outcome = bounded(client.attempt(&request("d-huge"))).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    let outcome = bounded(client.attempt(&request("d-after"))).await;
    assert!(outcome.is_delivered(), "{outcome:?}");
    // The first connection was not drained to the end (it would take reading 8 MiB) but dropped.
    assert_eq!(rx.connections(), 2);
    let got = rx.received();
    assert_eq!(got[1].connection, 1);
}

#[tokio::test]
async fn a_body_under_the_cap_is_drained_and_the_connection_reused() {
    let rx = Receiver::start(|_| Reply::Status(500, Vec::new(), vec![b'e'; 60 * 1024])).await;
    let client = Client::new(endpoint(&rx.url)).unwrap();
    let outcome = bounded(client.attempt(&request("d-60k"))).await;
    assert_eq!(statuses(&outcome), [Some(500); 3]);
    assert_eq!(rx.connections(), 1);
}

#[tokio::test]
async fn attempt_policy_is_configurable() {
    let rx = Receiver::start(|_| status(502)).await;
    let options = ClientOptions {
        attempt: AttemptPolicy {
            max_tries: 1,
            ..AttemptPolicy::default()
        },
        ..ClientOptions::default()
    };
    let client = Client::with_options(endpoint(&rx.url), options).unwrap();
    let outcome = bounded(client.attempt(&request("d-1try"))).await;
    assert_eq!(statuses(&outcome), [Some(502)]);
}

#[test]
fn unusable_endpoints_are_errors_naming_the_destination() {
    let e = Client::new(Endpoint {
        name: "braze".into(),
        ..endpoint("ftp://127.0.0.1/")
    })
    .unwrap_err();
    assert!(
        e.to_string().starts_with("destination \"braze\": url:"),
        "{e}"
    );
    let e = Client::new(Endpoint {
        name: "braze".into(),
        headers: vec![("User-Agent".into(), "mine".into())],
        ..endpoint("http://127.0.0.1/")
    })
    .unwrap_err();
    assert!(e.to_string().contains("cannot be overridden"), "{e}");
    let e = Client::new(Endpoint {
        signing_secrets: vec!["topsecret".into()],
        ..endpoint("http://127.0.0.1/")
    })
    .unwrap_err();
    assert!(e.to_string().contains("whsec_"), "{e}");
    assert!(!e.to_string().contains("topsecret"), "{e}");
}

#[test]
fn debug_output_redacts_secrets() {
    let ep = Endpoint {
        signing_secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
        ..endpoint("http://127.0.0.1/")
    };
    let text = format!("{ep:?}");
    assert!(
        !text.contains("t0ken") && !text.contains("MfKQ9r8"),
        "{text}"
    );
    let client_text = format!("{:?}", Client::new(ep).unwrap());
    assert!(
        !client_text.contains("t0ken") && !client_text.contains("MfKQ9r8"),
        "{client_text}"
    );
}

/// Verifies the signature headers of a received request with PyPI's `standardwebhooks` (the
/// reference implementation of the scheme) for each secret separately, and the
/// `X-Amplitude-Signature` with Python's own `hmac`. Returns `None` when the module is absent.
fn python_verify(secret: &str, received: &Received) -> Option<Result<(), String>> {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, json, sys
try:
    from standardwebhooks.webhooks import Webhook
except ImportError:
    sys.exit(3)
req = json.load(sys.stdin)
body = base64.b64decode(req["body"])
Webhook(req["secret"]).verify(body, req["headers"])
key = base64.b64decode(req["secret"][len("whsec_"):])
want = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
if req["amplitude"] is not None and req["amplitude"] != want:
    sys.exit("x-amplitude-signature mismatch: %s != %s" % (req["amplitude"], want))
print("verified")
"#;
    use base64::Engine;
    let headers: serde_json::Map<String, serde_json::Value> = received
        .headers
        .iter()
        .filter(|(n, _)| n.starts_with("webhook-"))
        .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let input = serde_json::json!({
        "secret": secret,
        "headers": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(&received.body),
        "amplitude": received.header("x-amplitude-signature"),
    });
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(3) => None,
        Some(0) => Some(Ok(())),
        _ => Some(Err(String::from_utf8_lossy(&out.stderr).into_owned())),
    }
}

#[tokio::test]
async fn signatures_verify_with_the_standardwebhooks_reference_library() {
    let new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let old = "whsec_c2Vjb25kIGtleSBmb3Igcm90YXRpb24gdGVzdHM="; // "second key for rotation tests"
    let other = "whsec_bm90IG9uZSBvZiBvdXJzIGF0IGFsbA=="; // "not one of ours at all"
    let rx = Receiver::start(|i| if i == 0 { status(500) } else { status(200) }).await;
    let ep = Endpoint {
        signing_secrets: vec![new.into(), old.into()],
        ..endpoint(&rx.url)
    };
    let client = Client::new(ep).unwrap();
    let outcome = bounded(client.attempt(&request("msg_2Kq"))).await;
    assert!(outcome.is_delivered());
    let got = rx.received();
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(r.header("webhook-id"), Some("msg_2Kq"));
        let sigs = r.header("webhook-signature").unwrap();
        assert_eq!(
            sigs.split(' ').count(),
            2,
            "one signature per secret: {sigs}"
        );
        let ts: u64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(ts.abs_diff(now) < 60);
        assert!(r.header("x-amplitude-signature").is_some());
    }
    let r = &got[1];
    // Old and new secret both verify (rotation); a foreign secret does not.
    let Some(verdict) = python_verify(new, r) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "python3 module standardwebhooks is missing in CI: pip install standardwebhooks"
            );
        }
        eprintln!(
            "SKIPPED: python3 module standardwebhooks is absent (pip install standardwebhooks)"
        );
        return;
    };
    verdict.unwrap();
    // The X-Amplitude-Signature uses the first secret only, so check it with that one; for the
    // others, verify the Standard Webhooks headers alone.
    let mut without_amp = r.clone();
    without_amp
        .headers
        .retain(|(n, _)| n != "x-amplitude-signature");
    python_verify(old, &without_amp).unwrap().unwrap();
    let err = python_verify(other, &without_amp).unwrap().unwrap_err();
    assert!(err.contains("No matching signature"), "{err}");
    // A tampered body fails.
    let mut tampered = without_amp.clone();
    tampered.body = br#"{"event_type":"forged"}"#.to_vec();
    assert!(python_verify(new, &tampered).unwrap().is_err());
}

/// A private CA and a certificate for 127.0.0.1 it signed, made with the `openssl` command;
/// `None` when `openssl` is not installed.
struct Certs {
    ca: rustls::pki_types::CertificateDer<'static>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn make_certs() -> Option<Certs> {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=hookpipe test CA",
        ],
    ]
    .concat())?;
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat())?;
    std::fs::write(
        d.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ])?;
    Some(Certs {
        ca: rustls::pki_types::CertificateDer::from_pem_file(d.join("ca.crt")).unwrap(),
        chain: vec![rustls::pki_types::CertificateDer::from_pem_file(d.join("srv.crt")).unwrap()],
        key: rustls::pki_types::PrivateKeyDer::from_pem_file(d.join("srv.key")).unwrap(),
    })
}

/// An HTTPS receiver (ALPN h2 and http/1.1) answering 200, recording each request's HTTP version.
async fn tls_receiver(
    certs: &Certs,
) -> (
    String,
    Arc<Mutex<Vec<http::Version>>>,
    tokio::task::JoinHandle<()>,
) {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs.chain.clone(), certs.key.clone_key())
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = versions.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(req.version());
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(Bytes::from_static(b"ok")),
                            ))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    (url, versions, task)
}

#[tokio::test]
async fn https_with_a_private_ca_negotiates_http2() {
    let Some(certs) = make_certs() else {
        eprintln!("SKIPPED: the openssl command is not installed");
        return;
    };
    let (url, versions, task) = tls_receiver(&certs).await;
    let options = ClientOptions {
        extra_root_certificates: vec![certs.ca.clone()],
        ..ClientOptions::default()
    };
    let client = Client::with_options(endpoint(&url), options).unwrap();
    for i in 0..3 {
        let outcome = bounded(client.attempt(&request(&format!("tls-{i}")))).await;
        assert!(outcome.is_delivered(), "{outcome:?}");
    }
    assert_eq!(*versions.lock().unwrap(), [http::Version::HTTP_2; 3]);
    task.abort();
}

#[tokio::test]
async fn https_to_an_untrusted_certificate_fails_every_try() {
    let Some(certs) = make_certs() else {
        eprintln!("SKIPPED: the openssl command is not installed");
        return;
    };
    let (url, versions, task) = tls_receiver(&certs).await;
    // Only the webpki roots: the private CA is not trusted.
    let client = Client::new(endpoint(&url)).unwrap();
    let outcome = bounded(client.attempt(&request("tls-untrusted"))).await;
    assert!(!outcome.is_delivered());
    assert_eq!(outcome.tries().len(), 3);
    let e = outcome.tries()[0].error.as_deref().unwrap();
    assert!(
        e.starts_with("connect error") && e.contains("certificate"),
        "{e}"
    );
    assert!(versions.lock().unwrap().is_empty());
    task.abort();
}
