//! Damping is time, not probe count.
//!
//! `fall` and `rise` (and a lag limit's `rise`) are counts of probes at the
//! configured `interval`: `fall = 3` with `interval = 100ms` promises that
//! ambiguous failures must last about 300 ms before a server counts as down.
//! Probes are not always that far apart: the incident cadence
//! (`incident_interval`) probes the target every 10 ms once it fails, and
//! the connect backoff spaces them further. Counting probes alone let three
//! ambiguous failures within 36 ms take a server down; counting time alone
//! would let one slow failure do it. So a run needs both:
//!
//! **A run of `n` probes in a row (all failed, or all good) counts for a
//! threshold `k` (`fall` or `rise`) when `n >= k` and the run has lasted,
//! from its first probe to this one, at least `(k - 1) × interval` less half
//! an interval** (slack for timer jitter: at the configured cadence the
//! `k`-th probe of a run lands `(k - 1) × interval` after the first, give or
//! take scheduling). At the configured cadence this is exactly the old count;
//! faster probing judges no sooner; slower probing (a backoff, a deadline
//! longer than the interval) is judged by the count, as before.
//!
//! With `k = 1` a single probe counts at once. Definite failures (refused,
//! closed, shutting down) are not damped at all, and a server seen in a new
//! role (a promoted standby) is seen at its first probe: the incident cadence
//! speeds up *seeing* a definite change, not the judgement of an ambiguous
//! one.

use std::time::Instant;

use crate::config::Config;

/// Whether a run of `n` probes that began at `since` (its first probe) and
/// reached `at` counts for threshold `k`.
pub(super) fn lasted(n: u32, k: u32, since: Option<Instant>, at: Instant, config: &Config) -> bool {
    if n < k {
        return false;
    }
    let interval = config.probe.interval;
    let need = (interval * k.saturating_sub(1)).saturating_sub(interval / 2);
    since.is_none_or(|s| at.saturating_duration_since(s) >= need)
}
