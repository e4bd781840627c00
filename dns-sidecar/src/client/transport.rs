//! Talking to the admin listener: one HTTP/1.1 request per connection
//! through hyper's client.
//!
//! hyper does the framing (chunked bodies, `Content-Length`, header
//! parsing); this file adds what an operator's tool needs around it: the
//! `host:port` the operator typed, one deadline for the connect and one for
//! the exchange, errors that say where it went wrong, and a blocking API,
//! because the CLI is a short-lived synchronous program (and `health` runs as
//! a container HEALTHCHECK where no curl is installed).

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::args::Conn;
use super::error::{io_reason, ClientError};

/// Largest answer body read (a `/status` with many servers is a few hundred
/// KiB); past it the answer is refused rather than held in memory.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// The deadline of the connect, and then of the exchange, unless `--timeout`
/// says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub(crate) reason: String,
    /// Names as received (lower case from hyper); look them up with
    /// [`Response::header`].
    pub(crate) headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The answer if it is a 2xx, else [`ClientError::Refused`] carrying the
    /// listener's explanation.
    pub(super) fn ok(self) -> Result<Response, ClientError> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(ClientError::Refused {
                status: self.status,
                reason: self.reason,
                body: self.body,
            })
        }
    }
}

/// A client for one admin listener.
#[derive(Debug, Clone)]
pub struct Client {
    pub(super) addr: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// `addr` is `host:port` (an `http://` prefix is tolerated).
    pub fn new(addr: &str, token: Option<String>) -> Client {
        let addr = addr
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Client {
            addr,
            token,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// From the CLI flags: reads the token file or `DNS_SIDECAR_ADMIN_TOKEN`.
    pub(crate) fn from_conn(conn: &Conn) -> Result<Client, ClientError> {
        let mut c = Client::new(&conn.admin, conn.token()?);
        if let Some(t) = conn.timeout() {
            c.timeout = t;
        }
        Ok(c)
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request("GET", path, &[], None)
    }

    /// `POST path` with a JSON body and the bearer token, if any.
    pub(crate) fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<Response, ClientError> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        self.request("POST", path, &headers, Some(body.to_string().as_bytes()))
    }

    /// One request on a fresh connection; any status is returned as is.
    ///
    /// `headers` are sent before the `Content-Type: application/json` that
    /// goes with a body, so a caller's own `Content-Type` is the one a
    /// server reading the first value sees (the tests of the listener's
    /// guards rely on it).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let targets = self.resolve()?;
        block_on(async {
            let stream = self.connect(&targets).await?;
            let exchange = self.exchange(stream, method, path, headers, body);
            tokio::time::timeout(self.timeout, exchange)
                .await
                .unwrap_or_else(|_| Err(self.io(&std::io::Error::from(std::io::ErrorKind::TimedOut))))
        })
        .unwrap_or_else(|e| Err(self.io(&e)))
    }

    /// The addresses of `host:port`, with the system resolver (the admin
    /// address may be a name, e.g. a Kubernetes service).
    fn resolve(&self) -> Result<Vec<SocketAddr>, ClientError> {
        self.addr
            .to_socket_addrs()
            .map(|addrs| addrs.collect())
            .map_err(|e| ClientError::Resolve {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })
    }

    /// The first address that accepts within the deadline, each tried in
    /// turn (a name may have an IPv6 address nobody listens on).
    async fn connect(&self, targets: &[SocketAddr]) -> Result<TcpStream, ClientError> {
        let mut last = None;
        for a in targets {
            match tokio::time::timeout(self.timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(std::io::ErrorKind::TimedOut.into()),
            }
        }
        let reason = last
            .map(|e| io_reason(&e))
            .unwrap_or_else(|| "the name has no addresses".into());
        Err(ClientError::Connect {
            addr: self.addr.clone(),
            reason,
        })
    }

    /// Sends the request and reads the whole answer on `stream`.
    async fn exchange(
        &self,
        stream: TcpStream,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let request = self.build(method, path, headers, body)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.hyper_error(&e, false))?;
        // The connection task moves the bytes; it ends when the answer is
        // read (we asked for `Connection: close`) or the request is dropped.
        let connection = tokio::spawn(connection);
        let result = async {
            let answer = sender
                .send_request(request)
                .await
                .map_err(|e| self.hyper_error(&e, false))?;
            let (head, body) = answer.into_parts();
            let body = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| self.body_error(e))?
                .to_bytes();
            let reason = match head.extensions.get::<hyper::ext::ReasonPhrase>() {
                Some(r) => String::from_utf8_lossy(r.as_bytes()).into_owned(),
                None => head.status.canonical_reason().unwrap_or_default().to_string(),
            };
            Ok(Response {
                status: head.status.as_u16(),
                reason,
                headers: head
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
        .await;
        connection.abort();
        result
    }

    /// The request: `Host` is the address as the operator typed it, and
    /// `Connection: close`, since a one-shot CLI has nothing to keep alive
    /// and the listener can free the connection at once.
    fn build(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let bad = |detail: String| ClientError::Request {
            addr: self.addr.clone(),
            detail,
        };
        let method =
            hyper::Method::from_bytes(method.as_bytes()).map_err(|e| bad(format!("method {method:?}: {e}")))?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.addr)
            .header(USER_AGENT, concat!("dns-sidecar/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "*/*")
            .header(CONNECTION, "close");
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(format!("header {k:?}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| bad(format!("header {k}: {e}")))?;
            request = request.header(name, value);
        }
        if let Some(b) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_LENGTH, b.len());
        }
        let payload = Full::new(Bytes::copy_from_slice(body.unwrap_or_default()));
        request.body(payload).map_err(|e| bad(format!("{path:?}: {e}")))
    }

    fn io(&self, e: &std::io::Error) -> ClientError {
        ClientError::Io {
            addr: self.addr.clone(),
            reason: io_reason(e),
        }
    }

    /// A failed exchange: a broken socket as an I/O failure, anything the
    /// peer sent wrong (garbage, bad framing, an answer cut short) as "this
    /// is not the admin listener speaking HTTP". `in_body`: the head had
    /// arrived, so a closed connection cut the answer short.
    fn hyper_error(&self, e: &hyper::Error, in_body: bool) -> ClientError {
        let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
        let cut_short =
            e.is_incomplete_message() || io.is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof);
        match io {
            _ if cut_short => ClientError::Protocol {
                addr: self.addr.clone(),
                detail: if in_body {
                    "the connection closed before the answer was complete".into()
                } else {
                    "the connection closed without an answer".into()
                },
            },
            // hyper's body decoders report bad framing (a chunk size that
            // is not hex) as I/O errors of these kinds: the peer's fault.
            Some(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) =>
            {
                ClientError::Protocol {
                    addr: self.addr.clone(),
                    detail: io.to_string(),
                }
            }
            Some(io) => self.io(io),
            None => ClientError::Protocol {
                addr: self.addr.clone(),
                detail: e.to_string(),
            },
        }
    }

    fn body_error(&self, e: Box<dyn std::error::Error + Send + Sync>) -> ClientError {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            return self.hyper_error(e, true);
        }
        ClientError::Protocol {
            addr: self.addr.clone(),
            detail: if e.is::<http_body_util::LengthLimitError>() {
                format!("the answer is larger than {} MiB", MAX_RESPONSE >> 20)
            } else {
                e.to_string()
            },
        }
    }
}

/// Runs `work` to completion on a small current-thread runtime: the CLI is
/// synchronous and makes one request. Called from inside a runtime (tests,
/// a tool embedding the client), where a second runtime may not block the
/// thread, it runs on a scoped thread of its own.
fn block_on<F>(work: F) -> std::io::Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(work))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|s| {
        s.spawn(run)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    //! The transport against real local servers: a `TcpListener` that sends
    //! canned bytes, so framing that axum never produces (chunk extensions,
    //! HTTP/1.0 close-delimited bodies, garbage) is covered too.

    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    use super::*;

    /// Serves one connection: reads the request (head and
    /// `Content-Length` body, so closing does not reset the connection),
    /// sends it back on the channel, writes `answer` and closes. With `None`
    /// it holds the connection open without answering until `hold` ends.
    fn serve_once(answer: Option<&'static [u8]>) -> (String, mpsc::Receiver<String>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break raw.len(),
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            };
            let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
            let len: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.trim().parse().unwrap());
            while raw.len() < head_end + len {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&raw).into_owned());
            match answer {
                Some(a) => {
                    s.write_all(a).unwrap();
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    // Let the client read to the end before the socket goes.
                    let _ = s.read(&mut buf);
                }
                None => {
                    let _ = s.read(&mut buf);
                }
            }
        });
        (addr, rx, thread)
    }

    fn answer(raw: &'static [u8]) -> Result<Response, ClientError> {
        let (addr, _, thread) = serve_once(Some(raw));
        let r = Client::new(&addr, None).get("/x");
        thread.join().unwrap();
        r
    }

    #[test]
    fn reads_plain_chunked_and_close_delimited_answers() {
        let r = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx: y\r\n\r\nok\nEXTRA").unwrap();
        assert_eq!(
            (r.status, r.reason.as_str(), r.body.as_str(), r.header("X")),
            (200, "OK", "ok\n", Some("y"))
        );
        let r = answer(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n5;x=1\r\nready\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
        let r = answer(b"HTTP/1.0 404 Not Found\r\n\r\nrest of it").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "rest of it"));
        // A reason phrase of the server's own is kept.
        let r = answer(b"HTTP/1.1 418 Short And Stout\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.reason.as_str()), (418, "Short And Stout"));
    }

    #[test]
    fn broken_answers_are_protocol_errors() {
        let err = answer(b"").unwrap_err();
        assert!(
            matches!(&err, ClientError::Protocol { detail, .. } if detail.contains("without an answer")),
            "{err}"
        );
        let err = answer(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
        assert!(
            err.to_string().contains("is it the dns-sidecar admin listener?"),
            "{err}"
        );
        let err = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").unwrap_err();
        assert!(
            matches!(&err, ClientError::Protocol { detail, .. } if detail.contains("before the answer was complete")),
            "{err}"
        );
        let err = answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
    }

    #[test]
    fn sends_what_the_listener_expects() {
        let (addr, seen, thread) = serve_once(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"));
        let r = Client::new(&format!("http://{addr}/"), Some("s3cret".into()))
            .post_json("/drain", &serde_json::json!({ "server": "a" }))
            .unwrap();
        thread.join().unwrap();
        assert_eq!(r.ok().unwrap().body, "ok\n");
        let req = seen.recv().unwrap().to_ascii_lowercase();
        assert!(req.starts_with("post /drain http/1.1\r\n"), "{req}");
        for line in [
            format!("host: {addr}\r\n"),
            "authorization: bearer s3cret\r\n".into(),
            "content-type: application/json\r\n".into(),
            "content-length: 14\r\n".into(),
            "connection: close\r\n".into(),
        ] {
            assert!(req.contains(&line), "{line:?} missing from {req}");
        }
        assert!(req.ends_with("\r\n\r\n{\"server\":\"a\"}"), "{req}");

        // A caller's own Content-Type comes first, so a server reading the
        // first value sees it.
        let (addr, seen, thread) = serve_once(Some(
            b"HTTP/1.1 415 Unsupported Media Type\r\ncontent-length: 0\r\n\r\n",
        ));
        let r = Client::new(&addr, None)
            .request("POST", "/cache/flush", &[("Content-Type", "text/plain")], Some(b"{}"))
            .unwrap();
        thread.join().unwrap();
        assert_eq!(r.status, 415);
        let req = seen.recv().unwrap().to_ascii_lowercase();
        let plain = req.find("content-type: text/plain").unwrap();
        let json = req.find("content-type: application/json").unwrap();
        assert!(plain < json, "{req}");
    }

    #[test]
    fn a_silent_listener_times_out_and_a_closed_port_is_refused() {
        let (addr, _, thread) = serve_once(None);
        let start = std::time::Instant::now();
        let err = Client::new(&addr, None)
            .with_timeout(Duration::from_millis(300))
            .get("/status")
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Io { reason, .. } if reason == "timed out"),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
        thread.join().unwrap();

        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = Client::new(&closed.to_string(), None).get("/").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the admin listener at {closed}: connection refused; is dns-sidecar running with [admin] enabled?"
            )
        );
        let err = Client::new("no-port-here", None).get("/").unwrap_err();
        assert!(matches!(err, ClientError::Resolve { .. }), "{err}");
    }

    /// Tests and tools call the blocking client from async code too.
    #[tokio::test]
    async fn works_from_inside_a_runtime() {
        let (addr, _, thread) = serve_once(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n"));
        let r = Client::new(&addr, None).get("/readyz").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
        thread.join().unwrap();
    }
}
