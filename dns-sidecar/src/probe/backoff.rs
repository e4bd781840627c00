//! Spacing of new connections to a server whose connects keep failing.
//!
//! The probe cadence alone would open a new connection (TCP, TLS, a login)
//! at every probe of a server that refuses or hangs up: every
//! `incident_interval` (10 ms) during an incident, from every sidecar of a
//! fleet, at a server that is already in trouble. So after each failed
//! probe on a new connection, the next connect waits a capped exponential
//! backoff, counted from the start of the failed attempt: the incident
//! interval after the first failure, twice that after the second, doubling
//! up to [`CAP`]. Each wait is shortened by a random factor in
//! [`JITTER`] so that sidecars that lost a server at the same moment do not
//! keep connecting in step.
//!
//! A single failure never delays the next connect beyond the cadence (its
//! wait is at most the incident interval, which no cadence undercuts), so a
//! session ended once (an operator's `pg_terminate_backend`) is replaced at
//! once. Any successful probe on a new connection starts over. Probes on a
//! kept connection are never held back: a server that is still connected
//! (a replica about to be promoted) is seen at the cadence.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// The longest wait between two connects to a failing server: about one
/// attempt every 2 s once the backoff has grown (after ~1 s at a 10 ms
/// incident interval).
pub(super) const CAP: Duration = Duration::from_secs(2);

/// The factor each wait is multiplied by, drawn anew for each wait.
pub(super) const JITTER: RangeInclusive<f64> = 0.75..=1.0;

/// Consecutive failed connects of one server, and when the next may start.
#[derive(Debug, Clone, Default)]
pub(super) struct ConnectBackoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl ConnectBackoff {
    /// The wait after `failures` consecutive failures (at least one), before
    /// jitter: `base`, `2 * base`, `4 * base`, ... up to [`CAP`].
    pub(super) fn delay(base: Duration, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        base.saturating_mul(1 << doublings).min(CAP)
    }

    /// A probe that opened a new connection at `started` failed; `jitter` is
    /// a factor in [`JITTER`] ([`draw_jitter`] in production).
    pub(super) fn failed(&mut self, started: Instant, base: Duration, jitter: f64) {
        self.failures = self.failures.saturating_add(1);
        let wait = Self::delay(base, self.failures).mul_f64(jitter.clamp(0.0, 1.0));
        self.not_before = Some(started + wait);
    }

    /// A probe on a new connection succeeded: the next failure starts over.
    pub(super) fn succeeded(&mut self) {
        *self = ConnectBackoff::default();
    }

    /// When the next new connection may be opened (`None`: at once).
    pub(super) fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    /// Consecutive failed connects.
    pub(super) fn failures(&self) -> u32 {
        self.failures
    }
}

/// A jitter factor in [`JITTER`].
pub(super) fn draw_jitter() -> f64 {
    rand::random_range(JITTER)
}
