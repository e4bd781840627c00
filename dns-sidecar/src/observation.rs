//! What a probe reports. Shared by the probers (which produce it) and the
//! decision function (which consumes it); it carries no connection state.

use std::time::{Duration, Instant};

use crate::config::ServerId;

/// One finished probe of one server.
#[derive(Debug, Clone)]
pub struct Observation {
    pub server: ServerId,
    /// When the probe finished.
    pub at: Instant,
    /// How long the probe took (connect included when it connected).
    pub latency: Duration,
    pub outcome: Result<ServerState, ProbeFailure>,
}

/// An observation as a prober sends it: tagged with the server's id rather
/// than its position, because positions change when the config is reloaded
/// while the prober keeps running.
#[derive(Debug, Clone)]
pub struct Tagged {
    pub server: std::sync::Arc<str>,
    pub obs: Observation,
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
    /// Whether this result came from a brand-new connection.
    pub fresh_connection: bool,
}

impl ServerState {
    pub fn writable(&self) -> bool {
        !self.in_recovery && !self.read_only
    }

    /// Short description for logs: `writable, timeline 2` / `standby, lag 0 B`.
    pub fn describe(&self) -> String {
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
        if let Some(l) = self.replay_lag_bytes {
            s.push_str(&format!(", replay lag {l} B"));
        }
        s
    }
}

/// Parses PostgreSQL's text form of an LSN (`16/B374D848`) into a byte offset.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let (hi, lo) = (u32::from_str_radix(hi, 16).ok()?, u32::from_str_radix(lo, 16).ok()?);
    Some(u64::from(hi) << 32 | u64::from(lo))
}

/// An LSN in PostgreSQL's text form.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Why a probe failed, and how sure we are that the server is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server certainly is not serving: connection refused or closed, or it
    /// said it is shutting down / starting up. Counts as down at once.
    Definite,
    /// Could be a blip: deadline exceeded, TLS or authentication errors, other
    /// errors. Counts as down after `fall` in a row.
    Ambiguous,
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
