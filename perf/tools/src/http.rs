//! A small pooled HTTP/1.1 client (hyper-util), used by the control relay and the sink's tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A keep-alive client for plain-HTTP POSTs. Cloning is shallow.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with an idle pool large enough for a few hundred concurrent requests.
    pub fn new() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(512)
            .build(connector);
        Client { inner }
    }

    /// POSTs `body` as JSON to `url` and returns the response status once the response body is
    /// drained (so the connection goes back to the pool).
    pub async fn post(
        &self,
        url: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<u16, String> {
        let mut req = hyper::Request::post(url).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("request to {url}: {e}"))?;
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("POST {url}: reading response: {e}"))?;
        Ok(status)
    }
}
