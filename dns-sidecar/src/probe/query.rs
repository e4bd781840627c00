//! The probe query and how its answer (or error) becomes an observation.

use std::error::Error as _;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::observation::{FailureCause, FailureKind, ProbeFailure, ServerState};

/// One round trip, no grants needed beyond LOGIN and CONNECT:
/// * `pg_is_in_recovery()` and `transaction_read_only` are libpq's
///   `target_session_attrs=read-write` test, so a primary with
///   `default_transaction_read_only = on` counts as read-only;
/// * the timeline is the first 8 hex digits of the current WAL file name,
///   which changes the moment a standby is promoted (unlike
///   `pg_control_checkpoint()`, which lags until the next checkpoint and is
///   not executable by ordinary roles);
/// * the replay lag is WAL received but not yet replayed, in bytes;
/// * the WAL position: where a primary writes, or what a standby has
///   replayed (reader aliases with a lag limit compare the two);
/// * standbys: what the WAL receiver has received (advancing while it
///   streams) and the timeline it receives on (visible only to roles with
///   `pg_read_all_stats`, NULL otherwise); both say whether a fenced server
///   follows the current primary (`decision::fence`, rule 5).
pub(super) const FULL: &str = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), \
     CASE WHEN pg_is_in_recovery() THEN NULL \
          ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
     CASE WHEN pg_is_in_recovery() \
          THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint END, \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()::text END, \
     (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1)";

/// Fallback when the WAL functions are not allowed for the probe role (some
/// managed services revoke them): everything but the timeline, lag and position.
pub(super) const BASIC: &str =
    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), NULL, NULL, NULL, NULL, NULL";

/// Runs `sql` (one of the above) and parses its single row.
pub(super) async fn run(client: &Client, sql: &str) -> Result<ServerState, tokio_postgres::Error> {
    let msgs = client.simple_query(sql).await?;
    let row = msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    let get = |i: usize| row.and_then(|r| r.get(i));
    Ok(ServerState {
        in_recovery: get(0) == Some("t"),
        read_only: get(1) != Some("off"),
        timeline: get(2).and_then(|s| s.parse().ok()),
        replay_lag_bytes: get(3).and_then(|s| s.parse().ok()),
        wal_lsn: get(4).and_then(crate::observation::parse_lsn),
        received_lsn: get(5).and_then(crate::observation::parse_lsn),
        received_timeline: get(6).and_then(|s| s.parse().ok()),
        fresh_connection: false,
    })
}

/// Whether the error says the probe role may not call a function.
pub(super) fn is_permission_denied(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
}

/// Turns a driver error into a failure, deciding whether the server is
/// certainly gone (refused, closed, shutting down) or it might be a blip, and
/// naming its [`FailureCause`].
pub(super) fn classify(e: &tokio_postgres::Error) -> ProbeFailure {
    let definite_sql = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
    ];
    let mut definite = e.is_closed() || e.code().is_some_and(|c| definite_sql.contains(c));
    let mut io_cause = None;
    let mut tls = false;
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            definite |= matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
            );
            io_cause = io_cause.or(match io.kind() {
                ConnectionRefused => Some(FailureCause::Refused),
                ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe => Some(FailureCause::Closed),
                _ => None,
            });
        }
        tls |= s.is::<native_tls::Error>();
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    let cause = match e.code() {
        Some(c) if *c == SqlState::ADMIN_SHUTDOWN => FailureCause::Terminated,
        Some(c) if definite_sql.contains(c) => FailureCause::Unavailable,
        // Class 28: invalid authorization specification.
        Some(c) if c.code().starts_with("28") => FailureCause::Auth,
        Some(_) => FailureCause::Server,
        // A reset inside a TLS handshake is a cut connection, not a TLS fault.
        None => io_cause.unwrap_or(if e.is_closed() {
            FailureCause::Closed
        } else if tls {
            FailureCause::Tls
        } else {
            FailureCause::Other
        }),
    };
    ProbeFailure {
        kind: if definite {
            FailureKind::Definite
        } else {
            FailureKind::Ambiguous
        },
        cause,
        message,
    }
}

/// [`classify`] for the new connection that replaces a kept one the server
/// ended: if this session is ended as well (closed, or "terminating
/// connection due to administrator command") the failure is ambiguous, not
/// definite (its cause stays what it was). Someone is ending sessions (an operator, an idle timeout), which
/// does not prove the server is down; a server that is going away refuses
/// the next connection or says it is shutting down, which stays definite.
pub(super) fn classify_retry(e: &tokio_postgres::Error) -> ProbeFailure {
    let mut f = classify(e);
    if e.is_closed() || e.code() == Some(&SqlState::ADMIN_SHUTDOWN) {
        f.kind = FailureKind::Ambiguous;
    }
    f
}
