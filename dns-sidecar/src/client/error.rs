//! Why an admin command failed, worded for the operator at the terminal.
//!
//! Each message says what to do next (the address format, whether the
//! listener is enabled, which flag carries the token): the CLI prints it as
//! is and exits 1, often from a HEALTHCHECK or a runbook step at 3 a.m.

use std::path::PathBuf;

use crate::config::DEFAULT_ADMIN_LISTEN;

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
    /// A method, path or header the HTTP library will not send (a caller's
    /// mistake, not the listener's).
    #[error("cannot send this request to {addr}: {detail}")]
    Request { addr: String, detail: String },
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

/// What to try next after a refusal; the listener's own answer says why.
fn hint(status: u16) -> &'static str {
    match status {
        401 => {
            "\n  hint: pass --token-file FILE or set DNS_SIDECAR_ADMIN_TOKEN to the token of [admin] token_file/token_env"
        }
        _ => "",
    }
}

/// A person-readable reason for an I/O error ("connection refused").
pub(super) fn io_reason(e: &std::io::Error) -> String {
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
