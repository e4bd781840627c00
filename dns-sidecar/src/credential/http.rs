//! One HTTP/1.1 request per connection to a token endpoint, through the
//! hyper client the admin CLI already uses, over TCP or native-tls (the
//! crates the sidecar links anyway), under one deadline. Bodies are bounded.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::endpoint::Url;

/// Largest answer read (a token answer is a few KiB).
const MAX_BODY: usize = 256 * 1024;

/// Time for the connect, TLS, request and answer together.
pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

/// A status and body.
#[derive(Debug)]
pub(super) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// A request: `GET` without a body, or `POST` with a form body.
pub(super) struct Request<'a> {
    pub(crate) method: &'static str,
    /// Path and query.
    pub(crate) target: String,
    pub(crate) headers: &'a [(&'a str, &'a str)],
    /// `application/x-www-form-urlencoded` body.
    pub(crate) form: Option<String>,
}

/// Sends `req` to `url` on a fresh connection.
pub(super) async fn send(url: &Url, req: Request<'_>) -> Result<Response, String> {
    tokio::time::timeout(TIMEOUT, send_now(url, req))
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {} within {TIMEOUT:?}", url.authority())))
}

async fn send_now(url: &Url, req: Request<'_>) -> Result<Response, String> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", url.authority()))?;
    if url.tls {
        let connector = native_tls::TlsConnector::new().map_err(|e| format!("TLS setup: {e}"))?;
        let tls = tokio_native_tls::TlsConnector::from(connector)
            .connect(&url.host, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", url.authority()))?;
        exchange(tls, url, req).await
    } else {
        exchange(tcp, url, req).await
    }
}

async fn exchange<S>(io: S, url: &Url, req: Request<'_>) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = hyper::Request::builder()
        .method(req.method)
        .uri(&req.target)
        .header("Host", url.authority())
        .header("Connection", "close")
        .header("Accept", "application/json")
        .header("User-Agent", concat!("dns-sidecar/", env!("CARGO_PKG_VERSION")));
    for (k, v) in req.headers {
        b = b.header(*k, *v);
    }
    let body = match req.form {
        Some(f) => {
            b = b.header("Content-Type", "application/x-www-form-urlencoded");
            Full::new(Bytes::from(f))
        }
        None => Full::new(Bytes::new()),
    };
    let request = b.body(body).map_err(|e| format!("bad request: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP with {}: {e}", url.authority()))?;
    let connection = tokio::spawn(connection);
    let result = async {
        let answer = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP with {}: {e}", url.authority()))?;
        let (head, body) = answer.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {}: {e}", url.authority()))?
            .to_bytes();
        Ok(Response {
            status: head.status.as_u16(),
            body,
        })
    }
    .await;
    connection.abort();
    result
}
