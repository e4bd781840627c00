//! The mapping between the decision's clock (`Instant`, monotonic) and
//! wall-clock Unix seconds (`/status`, the state file).
//!
//! Both directions take any value and never panic: values come from a file
//! that may be damaged or hand-edited, and `Instant`/`SystemTime` arithmetic
//! panics on overflow. A restored moment is never in the future: a time after
//! the epoch (a clock stepped back since the file was written) is the epoch.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    instant: Instant,
    /// Unix seconds at `instant`.
    unix: f64,
}

impl WallClock {
    /// `instant` and `system` read at (about) the same moment.
    pub(crate) fn new(instant: Instant, system: SystemTime) -> WallClock {
        let unix = system.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        WallClock { instant, unix }
    }

    /// Now (for tests; the engine pairs its own readings).
    #[cfg(test)]
    pub(crate) fn now() -> WallClock {
        WallClock::new(Instant::now(), SystemTime::now())
    }

    /// The `Instant` of Unix time `unix`: at most the epoch, and the epoch
    /// itself when the value cannot be represented (or is not a number).
    pub(crate) fn instant(&self, unix: f64) -> Instant {
        let before = self.unix - unix;
        if before.is_nan() || before <= 0.0 {
            return self.instant;
        }
        Duration::try_from_secs_f64(before)
            .ok()
            .and_then(|d| self.instant.checked_sub(d))
            .unwrap_or(self.instant)
    }

    /// Unix seconds of `at` (0 rather than before 1970).
    pub(crate) fn unix(&self, at: Instant) -> f64 {
        let t = match at.checked_duration_since(self.instant) {
            Some(after) => self.unix + after.as_secs_f64(),
            None => self.unix - self.instant.saturating_duration_since(at).as_secs_f64(),
        };
        t.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trips_past_times_and_clamps_the_future_and_absurd() {
        let c = WallClock::now();
        let back = c.unix - 30.0;
        let i = c.instant(back);
        assert!((c.unix(i) - back).abs() < 0.001, "{} vs {back}", c.unix(i));
        for absurd in [1e19, 1e300, f64::MAX, f64::INFINITY, f64::NAN, c.unix + 5.0] {
            assert_eq!(c.instant(absurd), c.instant, "{absurd}");
        }
        // Far before the boot of the monotonic clock: the epoch, not a panic.
        for absurd in [-1e19, -1e300, f64::MIN, f64::NEG_INFINITY, 0.0] {
            let i = c.instant(absurd);
            assert!(i <= c.instant);
            assert!(c.unix(i) >= 0.0);
        }
    }

    proptest! {
        #[test]
        fn never_panics(unix in any::<f64>(), secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let c = WallClock::now();
            let i = c.instant(unix);
            prop_assert!(i <= c.instant);
            prop_assert!(c.unix(i).is_finite());
            if let Some(later) = c.instant.checked_add(Duration::new(secs, nanos)) {
                prop_assert!(c.unix(later) >= c.unix);
            }
        }
    }
}
