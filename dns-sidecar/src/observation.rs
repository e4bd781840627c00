//! What a probe reports. Shared by the probers (which produce it) and the
//! decision function (which consumes it); it carries no connection state.
//!
//! Two shapes of the same facts, one per side of the seam: a prober sends a
//! [`ProbeReport`] naming its server by id, and the engine resolves that id
//! against the config in force into an [`Observation`] naming the server by
//! its index, which is what `decide()` consumes. Neither carries a
//! placeholder: a report cannot know the index (positions change when the
//! config is reloaded while the prober keeps running).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ServerId;

/// One finished probe of one server, as its prober reports it.
#[derive(Debug, Clone)]
pub(crate) struct ProbeReport {
    /// The server's id (its key under `[servers]`), stable across reloads.
    pub(crate) server: Arc<str>,
    /// When the probe finished.
    pub(crate) at: Instant,
    /// How long the probe took (connect included when it connected).
    pub(crate) latency: Duration,
    pub(crate) outcome: Result<ServerState, ProbeFailure>,
    /// Whether the probe opened a new connection (`None`: it used the kept
    /// one) and whether that connect (TCP, TLS, login) succeeded; counted by
    /// `dns_sidecar_probe_connects_total`.
    pub(crate) connect: Option<Result<(), FailureCause>>,
    /// How long the probe query took on an open connection (connect, TLS
    /// and login excluded): the round trip `prefer = "nearest"` compares.
    pub(crate) rtt: Option<Duration>,
}

impl ProbeReport {
    /// The report as an observation of the server at `index` in the config
    /// in force (the caller looked the id up).
    pub(crate) fn observation(self, index: ServerId) -> Observation {
        Observation {
            server: index,
            at: self.at,
            outcome: self.outcome,
            rtt: self.rtt,
        }
    }
}

/// One finished probe of one server, as the decision function consumes it.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The server's index in the config in force.
    pub server: ServerId,
    /// When the probe finished.
    pub at: Instant,
    pub outcome: Result<ServerState, ProbeFailure>,
    /// The probe query's round trip on an open connection (see
    /// [`ProbeReport::rtt`]).
    pub rtt: Option<Duration>,
}

/// A server's state as its probe query saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// `pg_is_in_recovery()`: a standby (or a replica not yet promoted).
    pub in_recovery: bool,
    /// `transaction_read_only` of a fresh transaction: true on standbys and on
    /// primaries with `default_transaction_read_only = on` (Azure's storage-full
    /// mode). libpq's `read-write` test uses exactly this.
    pub read_only: bool,
    /// The timeline WAL is being written on (primaries only; `None` when
    /// unknown). Used to break ties between two writable servers.
    pub timeline: Option<u32>,
    /// Standbys: WAL received but not yet replayed, in bytes.
    pub replay_lag_bytes: Option<u64>,
    /// The WAL position, as a byte offset (an LSN): where a primary writes
    /// (`pg_current_wal_lsn()`), or what a standby has replayed
    /// (`pg_last_wal_replay_lsn()`). Reader aliases compare the two to
    /// measure how far a standby is behind (see [`crate::decision::lag`]).
    /// `None` when unknown (WAL functions revoked).
    pub wal_lsn: Option<u64>,
    /// Standbys: WAL received and flushed by the WAL receiver
    /// (`pg_last_wal_receive_lsn()`). It only *advances* while the receiver
    /// streams, which is what lifts a fence when the timeline below cannot be
    /// read (see [`crate::decision::fence`]). `None` on primaries.
    pub received_lsn: Option<u64>,
    /// Standbys: the timeline the WAL receiver receives on
    /// (`pg_stat_wal_receiver.received_tli`). PostgreSQL shows it only to
    /// roles with `pg_read_all_stats` (e.g. `pg_monitor`); `None` otherwise,
    /// or when no receiver runs. Equal to the primary's timeline: the standby
    /// follows that primary's lineage; older: it follows a branch that was
    /// left (see [`crate::decision::truth`]).
    pub received_timeline: Option<u32>,
    /// Whether this result came from a brand-new connection.
    pub fresh_connection: bool,
}

impl ServerState {
    pub(crate) fn writable(&self) -> bool {
        !self.in_recovery && !self.read_only
    }

    /// Short description for logs: `writable, timeline 2` / `standby, lag 0 B`.
    pub(crate) fn describe(&self) -> String {
        let role = if self.writable() {
            "writable"
        } else if self.in_recovery {
            "standby"
        } else {
            "read-only primary"
        };
        let mut s = role.to_string();
        if let Some(t) = self.timeline {
            s.push_str(&format!(", timeline {t}"));
        }
        if let Some(t) = self.received_timeline {
            s.push_str(&format!(", receiving timeline {t}"));
        }
        if let Some(l) = self.replay_lag_bytes {
            s.push_str(&format!(", replay lag {l} B"));
        }
        s
    }
}

/// Parses PostgreSQL's text form of an LSN (`16/B374D848`) into a byte offset.
pub(crate) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let (hi, lo) = (u32::from_str_radix(hi, 16).ok()?, u32::from_str_radix(lo, 16).ok()?);
    Some(u64::from(hi) << 32 | u64::from(lo))
}

/// An LSN in PostgreSQL's text form.
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Why a probe failed, and how sure we are that the server is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    /// How sure: decides how fast the server counts as down.
    pub(crate) kind: FailureKind,
    /// What happened, for code that must tell failures apart (the probe
    /// metric's `timeout` label); never parse `message` for that.
    pub(crate) cause: FailureCause,
    /// What happened, for humans: logs, `/status` and the history.
    pub(crate) message: String,
}

/// How sure a failure makes us that the server is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The server certainly is not serving: connection refused or closed, or it
    /// said it is shutting down / starting up. Counts as down at once.
    Definite,
    /// Could be a blip: deadline exceeded, TLS or authentication errors, other
    /// errors. Counts as down after `fall` in a row.
    Ambiguous,
}

/// What made a probe fail. Independent of [`FailureKind`]: the same cause
/// can be definite on a first attempt and ambiguous on a retry (see
/// `probe::query::classify_retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureCause {
    /// No answer within the probe deadline (a frozen server, a black-holed
    /// network path); the prober gave up and dropped the connection.
    Timeout,
    /// The TCP connect was refused: nothing listens on the port.
    Refused,
    /// The connection was closed, reset or cut short by the server or the
    /// network.
    Closed,
    /// The server ended the session (SQLSTATE 57P01): a fast shutdown, or
    /// someone's `pg_terminate_backend`.
    Terminated,
    /// The server said it crashed or is still starting up or shutting down
    /// (SQLSTATE 57P02, 57P03).
    Unavailable,
    /// The server rejected the login (SQLSTATE class 28: a wrong password,
    /// no `pg_hba.conf` entry).
    Auth,
    /// The server answered with another error (the probe query failed,
    /// too many connections, a missing database).
    Server,
    /// The TLS handshake failed (certificate, host name, protocol).
    Tls,
    /// Anything else the driver reported (name resolution, a local I/O
    /// error, an unexpected message).
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x300_0060));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_lsn("3000060"), None);
        assert_eq!(parse_lsn("x/1"), None);
    }
}
