//! A prober's cadence: when its next probe is due, at `interval` or, while
//! the server is in the incident set, at `incident_interval`.

use std::time::{Duration, Instant};

use crate::config::ProbeTiming;

/// When the next probe of one server is due: `interval` after the last one
/// started, or `incident_interval` while the server is in the incident set.
/// A probe that overran its period is followed at once (never two at a time).
#[derive(Debug, Clone)]
pub(super) struct Cadence {
    interval: Duration,
    incident_interval: Duration,
    /// In the incident set.
    pub(super) fast: bool,
    last_start: Option<Instant>,
    /// When the next probe is due.
    pub(super) next: Instant,
}

impl Cadence {
    /// The first probe is due at once.
    pub(super) fn new(timing: &ProbeTiming, now: Instant) -> Cadence {
        Cadence {
            interval: timing.interval,
            incident_interval: timing.incident_interval,
            fast: false,
            last_start: None,
            next: now,
        }
    }

    fn period(&self) -> Duration {
        if self.fast {
            self.incident_interval
        } else {
            self.interval
        }
    }

    /// A probe that started at `started` has finished at `now`.
    pub(super) fn probed(&mut self, started: Instant, now: Instant) {
        self.last_start = Some(started);
        self.next = (started + self.period()).max(now);
    }

    /// The server is (`true`) or is not in the incident set, as of `now`.
    /// Entering it makes a probe due at once; leaving it returns to
    /// `interval` counted from the last probe's start.
    pub(super) fn set_fast(&mut self, fast: bool, now: Instant) {
        if fast == self.fast {
            return;
        }
        self.fast = fast;
        self.next = match (fast, self.last_start) {
            (true, _) | (false, None) => self.next.min(now),
            (false, Some(s)) => (s + self.interval).max(now),
        };
    }
}
