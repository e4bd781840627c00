//! The CLI side of the admin listener: `dns-sidecar status | pin | unpin |
//! drain | undrain | unfence | flush-cache | health`.
//!
//! A deliberately tiny HTTP/1.1 client over `std::net::TcpStream` (one
//! request per connection, `Connection: close`): the admin listener is on
//! loopback or a private address, and `health` runs as a container
//! HEALTHCHECK where no curl is installed.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::DEFAULT_ADMIN_LISTEN;
use crate::control::Override;
use crate::status::{HistoryEntry, Status};

/// Environment variable holding the admin token itself (`--token-file` wins).
pub const TOKEN_ENV: &str = "DNS_SIDECAR_ADMIN_TOKEN";

/// Largest answer read (a `/status` with many servers is a few hundred KiB).
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// How many history entries `status` shows.
const HISTORY_SHOWN: usize = 10;

/// Where the admin listener is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// Address of the admin listener (`host:port`).
    #[arg(long = "admin", value_name = "ADDR", env = "DNS_SIDECAR_ADMIN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin: String,
    /// File holding the admin bearer token (else the DNS_SIDECAR_ADMIN_TOKEN
    /// environment variable, else none).
    #[arg(long, value_name = "FILE", env = "DNS_SIDECAR_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
}

/// The subcommands that talk to a running sidecar.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Show what every alias answers and why, the servers, and recent decisions.
    Status {
        #[command(flatten)]
        conn: Conn,
        /// Print the raw `/status` JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Make ALIAS answer SERVER whatever the probes say (until `unpin`).
    Pin {
        /// Alias name, e.g. prod.db.internal (any case, trailing dot optional).
        alias: String,
        /// Server id, the key of its [servers.<id>] table.
        server: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove the pin of ALIAS; it follows the probes again.
    Unpin {
        /// Alias name, e.g. prod.db.internal.
        alias: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Never choose SERVER for any alias (until `undrain`).
    Drain {
        /// Server id, the key of its [servers.<id>] table.
        server: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Let SERVER be chosen again.
    Undrain {
        /// Server id, the key of its [servers.<id>] table.
        server: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Lift ALIAS's fence on SERVER (and lower its timeline floor to SERVER's
    /// timeline), or every fence of ALIAS and its floor. Only once the server
    /// was rebuilt, or the cluster recreated: a fenced server has diverged.
    Unfence {
        /// Alias name, e.g. prod.db.internal.
        alias: String,
        /// Server id; omit to lift every fence of the alias.
        server: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Empty the cache of forwarded answers, or drop NAME and the names
    /// below it (a record fixed upstream, a negative answer to forget now).
    FlushCache {
        /// A name, e.g. example.com (any case, trailing dot optional); omit
        /// to empty the whole cache.
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Exit 0 if the sidecar is ready, 1 if not or unreachable (for a
    /// container HEALTHCHECK; no curl needed).
    Health {
        #[command(flatten)]
        conn: Conn,
        /// Print nothing on success.
        #[arg(short, long)]
        quiet: bool,
    },
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve the admin address `{addr}`: {reason}; use host:port, e.g. --admin {DEFAULT_ADMIN_LISTEN}")]
    Resolve { addr: String, reason: String },
    #[error("cannot reach the admin listener at {addr}: {reason}; is dns-sidecar running with [admin] enabled?")]
    Connect { addr: String, reason: String },
    #[error("talking to the admin listener at {addr}: {reason}")]
    Io { addr: String, reason: String },
    #[error("unexpected answer from {addr} (is it the dns-sidecar admin listener?): {detail}")]
    Protocol { addr: String, detail: String },
    #[error("cannot read the admin token file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin token file {} is empty", path.display())]
    EmptyToken { path: PathBuf },
    #[error("refused ({status} {reason}): {}{}", body.trim_end(), hint(*status))]
    Refused { status: u16, reason: String, body: String },
    #[error("the /status document from {addr} does not parse: {source}")]
    Json {
        addr: String,
        #[source]
        source: serde_json::Error,
    },
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => "\n  hint: pass --token-file FILE or set DNS_SIDECAR_ADMIN_TOKEN to the token of [admin] token_file/token_env",
        _ => "",
    }
}

/// A person-readable reason for an I/O error ("connection refused").
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        TimedOut | WouldBlock => "timed out".into(),
        ConnectionReset => "connection reset by peer".into(),
        ConnectionAborted => "connection aborted".into(),
        UnexpectedEof => "connection closed before the answer was complete".into(),
        _ => e.to_string(),
    }
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
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
    fn ok(self) -> Result<Response, ClientError> {
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
    addr: String,
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
            timeout: Duration::from_secs(5),
        }
    }

    /// From the CLI flags: reads the token file or `DNS_SIDECAR_ADMIN_TOKEN`.
    pub fn from_conn(conn: &Conn) -> Result<Client, ClientError> {
        let token = match &conn.token_file {
            Some(path) => {
                let t = std::fs::read_to_string(path).map_err(|source| ClientError::TokenFile {
                    path: path.clone(),
                    source,
                })?;
                let t = t.trim();
                if t.is_empty() {
                    return Err(ClientError::EmptyToken { path: path.clone() });
                }
                Some(t.to_string())
            }
            None => std::env::var(TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        };
        let mut c = Client::new(&conn.admin, token);
        if conn.timeout.is_finite() && conn.timeout > 0.0 {
            c.timeout = Duration::from_secs_f64(conn.timeout.min(3600.0));
        }
        Ok(c)
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request("GET", path, &[], None)
    }

    /// `POST path` with a JSON body and the bearer token, if any.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<Response, ClientError> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        self.request("POST", path, &headers, Some(body.to_string().as_bytes()))
    }

    /// One request on a fresh connection; any status is returned as is.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let mut stream = self.connect()?;
        let io = |e: std::io::Error| ClientError::Io {
            addr: self.addr.clone(),
            reason: io_reason(&e),
        };
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dns-sidecar/{}\r\nAccept: */*\r\nConnection: close\r\n",
            self.addr,
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in headers {
            let _ = write!(req, "{k}: {v}\r\n");
        }
        if let Some(b) = body {
            let _ = write!(req, "Content-Type: application/json\r\nContent-Length: {}\r\n", b.len());
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        stream.write_all(&bytes).map_err(io)?;
        let mut raw = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
        parse_response(&raw).map_err(|detail| ClientError::Protocol {
            addr: self.addr.clone(),
            detail,
        })
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let addrs: Vec<SocketAddr> = match self.addr.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                return Err(ClientError::Resolve {
                    addr: self.addr.clone(),
                    reason: e.to_string(),
                })
            }
        };
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
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

    /// `GET /status`, parsed, plus the raw JSON.
    pub fn status(&self) -> Result<(Status, String), ClientError> {
        let r = self.get("/status")?.ok()?;
        let s = serde_json::from_str(&r.body).map_err(|source| ClientError::Json {
            addr: self.addr.clone(),
            source,
        })?;
        Ok((s, r.body))
    }

    /// `GET /readyz`: whether the sidecar is ready, and what it said.
    pub fn ready(&self) -> Result<(bool, String), ClientError> {
        let r = self.get("/readyz")?;
        match r.status {
            200 => Ok((true, r.body)),
            503 => Ok((false, r.body)),
            _ => Err(ClientError::Refused {
                status: r.status,
                reason: r.reason,
                body: r.body,
            }),
        }
    }

    /// Sends an override; returns the engine's summary.
    pub fn apply(&self, op: &Override) -> Result<String, ClientError> {
        let body = serde_json::to_value(op).expect("an Override serialises");
        let path = match op {
            Override::Pin { .. } => "/pin",
            Override::Unpin { .. } => "/unpin",
            Override::Drain { .. } => "/drain",
            Override::Undrain { .. } => "/undrain",
            Override::Unfence { .. } => "/unfence",
        };
        let mut body = body;
        if let Some(m) = body.as_object_mut() {
            m.remove("op");
        }
        Ok(self.post_json(path, &body)?.ok()?.body)
    }
}

/// Parses a complete HTTP/1.1 answer (status line, headers, body with
/// `Content-Length`, chunked, or up to the end of the connection).
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        if raw.is_empty() {
            "the connection closed without an answer".to_string()
        } else {
            "no complete HTTP header".to_string()
        }
    })?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the HTTP header is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:?}"));
    }
    let status: u16 = code.parse().map_err(|_| format!("bad status line: {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let resp = |body: Vec<u8>| Response {
        status,
        reason: reason.clone(),
        headers: headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let rest = &raw[end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return dechunk(rest).map(resp);
    }
    if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad Content-Length {len:?}"))?;
        if rest.len() < len {
            return Err(format!("the body ended after {} of {len} bytes", rest.len()));
        }
        return Ok(resp(rest[..len].to_vec()));
    }
    Ok(resp(rest.to_vec()))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Runs one CLI command, printing to `out`. `Ok(false)` means "ran, but the
/// answer is a failure" (only `health`: not ready), for exit code 1.
pub fn run(cmd: &AdminCommand, out: &mut dyn Write) -> Result<bool, ClientError> {
    let (conn, op) = match cmd {
        AdminCommand::Status { conn, json } => {
            let client = Client::from_conn(conn)?;
            let (status, raw) = client.status()?;
            let text = if *json {
                raw
            } else {
                render_status(&status, client.addr(), now())
            };
            let _ = write!(out, "{text}");
            return Ok(true);
        }
        AdminCommand::Health { conn, quiet } => {
            let client = Client::from_conn(conn)?;
            let (ready, body) = client.ready()?;
            if !ready || !quiet {
                let _ = writeln!(out, "{}", body.trim_end());
            }
            return Ok(ready);
        }
        AdminCommand::FlushCache { name, conn } => {
            let body = match name {
                Some(n) => serde_json::json!({ "name": n }),
                None => serde_json::json!({}),
            };
            let summary = Client::from_conn(conn)?.post_json("/cache/flush", &body)?.ok()?.body;
            let _ = writeln!(out, "{}", summary.trim_end());
            return Ok(true);
        }
        AdminCommand::Pin { alias, server, conn } => (
            conn,
            Override::Pin {
                alias: alias.clone(),
                server: server.clone(),
            },
        ),
        AdminCommand::Unpin { alias, conn } => (conn, Override::Unpin { alias: alias.clone() }),
        AdminCommand::Drain { server, conn } => (conn, Override::Drain { server: server.clone() }),
        AdminCommand::Undrain { server, conn } => (conn, Override::Undrain { server: server.clone() }),
        AdminCommand::Unfence { alias, server, conn } => (
            conn,
            Override::Unfence {
                alias: alias.clone(),
                server: server.clone(),
            },
        ),
    };
    let summary = Client::from_conn(conn)?.apply(&op)?;
    let _ = writeln!(out, "{}", summary.trim_end());
    Ok(true)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// "12s ago", "3m05s ago", "2h10m ago", "4d ago"; `-` for none.
pub fn ago(then: Option<f64>, now: f64) -> String {
    let Some(then) = then else { return "-".into() };
    let d = now - then;
    if !d.is_finite() || d < 1.0 {
        return "just now".into();
    }
    let s = d as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m{:02}s ago", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m ago", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h ago", s / 86_400, s % 86_400 / 3600),
    }
}

/// "0 B", "12.0 KiB", "3.4 MiB".
pub use crate::decision::lag::bytes;

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let n = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("  ");
        for (i, c) in cells.enumerate() {
            if i + 1 < n {
                let _ = write!(s, "{c:<w$}  ", w = width[i]);
            } else {
                s.push_str(c);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, &mut header.iter().copied());
    for r in rows {
        line(out, &mut r.iter().map(String::as_str));
    }
}

fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// The human-readable `status` output.
pub fn render_status(s: &Status, addr: &str, now: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dns-sidecar at {addr}: {} (status from {})",
        if s.ready { "ready" } else { "NOT READY" },
        if s.generated_at > 0.0 {
            ago(Some(s.generated_at), now)
        } else {
            "never".into()
        }
    );
    out.push_str("\nAliases\n");
    if s.aliases.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .aliases
            .iter()
            .map(|a| {
                let target = match (&a.server, &a.target, &a.last_server) {
                    (Some(s), Some(t), _) => format!("{s} ({t})"),
                    (Some(s), None, _) => s.clone(),
                    (None, Some(t), _) => t.clone(),
                    (None, None, Some(last)) => format!("- (last: {last})"),
                    (None, None, None) => "-".into(),
                };
                vec![
                    a.name.clone(),
                    a.role.clone(),
                    a.answer.clone(),
                    target,
                    ago(a.since, now),
                    or_dash(a.pinned.as_deref()),
                    or_dash(Some(&a.reason)),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "ALIAS",
                "ROLE",
                "ANSWER",
                "SERVER (TARGET)",
                "SINCE",
                "PINNED",
                "REASON",
            ],
            &rows,
        );
    }
    let fences: Vec<Vec<String>> = s
        .aliases
        .iter()
        .flat_map(|a| {
            a.fences.iter().map(|f| {
                vec![
                    a.name.clone(),
                    f.server.clone(),
                    f.kind.clone(),
                    if f.holding { "HOLDING" } else { "-" }.into(),
                    f.since.map_or("-".into(), |t| ago(Some(t), now)),
                    f.reason.clone(),
                ]
            })
        })
        .collect();
    if !fences.is_empty() {
        out.push_str("\nFences (the alias will not move to these servers; see `dns-sidecar unfence --help`)\n");
        table(
            &mut out,
            &["ALIAS", "SERVER", "KIND", "HOLDING", "SINCE", "REASON"],
            &fences,
        );
    }
    let lagging: Vec<Vec<String>> = s
        .aliases
        .iter()
        .flat_map(|a| {
            a.lagging.iter().map(|l| {
                vec![
                    a.name.clone(),
                    l.server.clone(),
                    l.good_probes.to_string(),
                    l.since.map_or("-".into(), |t| ago(Some(t), now)),
                    l.reason.clone(),
                ]
            })
        })
        .collect();
    if !lagging.is_empty() {
        out.push_str("\nLagging standbys (kept off until within the alias's lag limit for `rise` probes in a row)\n");
        table(&mut out, &["ALIAS", "SERVER", "GOOD PROBES", "SINCE", "LAG"], &lagging);
    }
    out.push_str("\nServers\n");
    if s.servers.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .servers
            .iter()
            .map(|v| {
                let state = match (v.writable, v.in_recovery, v.read_only) {
                    (Some(true), _, _) => "writable",
                    (_, Some(true), _) => "standby",
                    (_, _, Some(true)) => "read-only",
                    _ => "unknown",
                };
                // Behind the primary when known (what max_lag limits), else
                // received but not replayed.
                let lag = match (v.in_recovery, v.lag_bytes, v.replay_lag_bytes) {
                    (Some(true), Some(l), _) => bytes(l),
                    (Some(true), None, Some(l)) => format!("{} (unreplayed)", bytes(l)),
                    _ => "-".into(),
                };
                let err = match (&v.last_error, v.consecutive_failures) {
                    (Some(e), n) if n > 0 => format!("{e} ({n} in a row)"),
                    (Some(e), _) => e.clone(),
                    (None, _) => "-".into(),
                };
                vec![
                    v.server.clone(),
                    if v.up { "up" } else { "DOWN" }.into(),
                    if v.drained { "drained" } else { "-" }.into(),
                    state.into(),
                    v.timeline.map_or("-".into(), |t| t.to_string()),
                    lag,
                    if v.last_success.is_some() {
                        ago(v.last_success, now)
                    } else {
                        "never".into()
                    },
                    err,
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "SERVER",
                "UP",
                "DRAINED",
                "STATE",
                "TIMELINE",
                "LAG",
                "LAST OK",
                "LAST ERROR",
            ],
            &rows,
        );
    }
    let shown = s.history.len().min(HISTORY_SHOWN);
    let _ = writeln!(out, "\nHistory (last {shown} of {})", s.history.len());
    if s.history.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = s.history[s.history.len() - shown..]
            .iter()
            .map(|h: &HistoryEntry| {
                let subject = match (&h.alias, &h.server) {
                    (Some(a), Some(v)) => format!("{a} ({v})"),
                    (Some(a), None) => a.clone(),
                    (None, Some(v)) => v.clone(),
                    (None, None) => "-".into(),
                };
                vec![ago(Some(h.at), now), h.kind.clone(), subject, h.message.clone()]
            })
            .collect();
        table(&mut out, &["WHEN", "KIND", "SUBJECT", "MESSAGE"], &rows);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{AliasStatus, LagStatus, ServerStatus};

    #[test]
    fn parses_plain_and_chunked_answers() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx: y\r\n\r\nok\nEXTRA").unwrap();
        assert_eq!(
            (r.status, r.reason.as_str(), r.body.as_str(), r.header("X")),
            (200, "OK", "ok\n", Some("y"))
        );
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n5;x=1\r\nready\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nrest of it").unwrap();
        assert_eq!(r.body, "rest of it");
        assert!(parse_response(b"").unwrap_err().contains("without an answer"));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
            .unwrap_err()
            .contains("5 of 10"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err());
    }

    #[test]
    fn relative_times_and_sizes() {
        assert_eq!(ago(None, 100.0), "-");
        assert_eq!(ago(Some(99.5), 100.0), "just now");
        assert_eq!(ago(Some(200.0), 100.0), "just now");
        assert_eq!(ago(Some(88.0), 100.0), "12s ago");
        assert_eq!(ago(Some(0.0), 185.0), "3m05s ago");
        assert_eq!(ago(Some(0.0), 7800.0), "2h10m ago");
        assert_eq!(ago(Some(0.0), 3.0 * 86_400.0 + 7200.0), "3d02h ago");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(12 * 1024), "12.0 KiB");
        assert_eq!(bytes(3_565_158), "3.4 MiB");
    }

    #[test]
    fn status_tables() {
        let s = Status {
            ready: true,
            generated_at: 1000.0,
            aliases: vec![
                AliasStatus {
                    name: "prod.db.internal.".into(),
                    role: "read-write".into(),
                    answer: "cname".into(),
                    server: Some("westus2".into()),
                    target: Some("pg-westus2.example.".into()),
                    since: Some(988.0),
                    reason: "westus2 is writable".into(),
                    pinned: Some("westus2".into()),
                    ..Default::default()
                },
                AliasStatus {
                    name: "ro.db.internal.".into(),
                    role: "prefer-standby".into(),
                    lagging: vec![LagStatus {
                        server: "centralus".into(),
                        reason: "20.0 MiB behind westus2 (max_lag 16.0 MiB)".into(),
                        since: Some(990.0),
                        good_probes: 1,
                    }],
                    ..Default::default()
                },
            ],
            servers: vec![
                ServerStatus {
                    server: "eastus".into(),
                    up: false,
                    drained: true,
                    last_error: Some("connection refused".into()),
                    consecutive_failures: 4,
                    ..Default::default()
                },
                ServerStatus {
                    server: "westus2".into(),
                    up: true,
                    writable: Some(false),
                    in_recovery: Some(true),
                    timeline: Some(2),
                    replay_lag_bytes: Some(2048),
                    last_success: Some(999.5),
                    ..Default::default()
                },
                ServerStatus {
                    server: "centralus".into(),
                    up: true,
                    in_recovery: Some(true),
                    replay_lag_bytes: Some(0),
                    lag_bytes: Some(20 << 20),
                    last_success: Some(999.5),
                    ..Default::default()
                },
            ],
            history: (0..15)
                .map(|i| HistoryEntry {
                    at: 900.0 + i as f64,
                    kind: "server_up".into(),
                    server: Some(format!("s{i}")),
                    message: format!("m{i}"),
                    ..Default::default()
                })
                .collect(),
        };
        let t = render_status(&s, "127.0.0.1:9153", 1000.0);
        assert!(t.starts_with("dns-sidecar at 127.0.0.1:9153: ready"), "{t}");
        assert!(t.contains("prod.db.internal.  read-write      cname   westus2 (pg-westus2.example.)  12s ago  westus2  westus2 is writable"), "{t}");
        assert!(t.contains("eastus     DOWN  drained  unknown  -         -                     never     connection refused (4 in a row)"), "{t}");
        assert!(
            t.contains("westus2    up    -        standby  2         2.0 KiB (unreplayed)  just now  -"),
            "{t}"
        );
        assert!(
            t.contains("centralus  up    -        standby  -         20.0 MiB              just now  -"),
            "{t}"
        );
        assert!(
            t.contains("ro.db.internal.  centralus  1            10s ago  20.0 MiB behind westus2 (max_lag 16.0 MiB)"),
            "{t}"
        );
        assert!(t.contains("History (last 10 of 15)"), "{t}");
        assert!(
            !t.contains(" m4\n") && t.contains(" m5\n") && t.contains(" m14\n"),
            "{t}"
        );
        let empty = render_status(&Status::default(), "x:1", 5.0);
        assert!(
            empty.contains("NOT READY (status from never)") && empty.contains("(none)"),
            "{empty}"
        );
    }
}
