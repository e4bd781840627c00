//! The single error type of the testbed.
//!
//! Every failure names *what* the testbed was doing, because the typical
//! reader is a developer looking at a failed CI run: "initdb for pg-a.test
//! failed" plus the server log tail is actionable, a bare `io::Error` is not.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Result alias used throughout this crate.
pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, driving or stopping the
/// throwaway PostgreSQL / dnsmasq processes.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A program the testbed needs is not installed. `hint` is the command
    /// that installs it on Debian 12 (the CI image), e.g.
    /// `apt-get install -y postgresql-15`.
    #[error("required program `{name}` was not found; install it with: {hint}")]
    MissingBinary { name: String, hint: String },

    /// We run as root, but the OS user PostgreSQL must run as does not exist.
    #[error("OS user `{name}` does not exist (PostgreSQL refuses to run as root); create it with: {hint}")]
    MissingUser { name: String, hint: String },

    /// An external command ran but exited unsuccessfully. `output` holds its
    /// stderr followed by its stdout, trimmed.
    #[error("{what} failed ({status}): {output}")]
    Command {
        what: String,
        status: ExitStatus,
        output: String,
    },

    /// A filesystem or process-spawning operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// Something did not happen within its bound (a server did not become
    /// ready, a command hung, a promote did not finish, ...).
    #[error("{what} did not finish within {waited:?}{}", detail_suffix(.detail))]
    Timeout {
        what: String,
        waited: Duration,
        detail: String,
    },

    /// The caller asked for something the testbed refuses to do, e.g. to
    /// listen on a non-loopback address.
    #[error("invalid testbed options: {0}")]
    InvalidOptions(String),

    /// A server-side failure; wraps the immediate cause and carries the tail
    /// of the server's own log file, which is where PostgreSQL and dnsmasq
    /// explain what is actually wrong.
    #[error("{what}; last lines of {}:\n{log_tail}", .log.display())]
    Server {
        what: String,
        log: PathBuf,
        log_tail: String,
        #[source]
        source: Box<TestbedError>,
    },

    /// An operation that needs a running server found none
    /// (no `postmaster.pid`, or the process is gone).
    #[error("{0} is not running")]
    NotRunning(String),

    /// No TCP/UDP port could be found that is free on every requested address.
    #[error("no free port found on {0} after many attempts")]
    NoFreePort(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl TestbedError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TestbedError::Io {
            what: what.into(),
            source,
        }
    }

    /// Wrap `self` with the tail of a server log.
    pub(crate) fn with_log(self, what: impl Into<String>, log: &std::path::Path) -> Self {
        TestbedError::Server {
            what: what.into(),
            log: log.to_path_buf(),
            log_tail: crate::process::log_tail(log, 30),
            source: Box::new(self),
        }
    }
}
