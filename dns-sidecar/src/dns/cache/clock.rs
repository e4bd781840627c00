//! Where the cache's time comes from: milliseconds since the cache was
//! created. The UDP workers read it once per batch, so every answer of a
//! batch is aged alike and the clock is not read per query.

#[cfg(any(test, feature = "testing"))]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The cache's clock: the real one in the product; one moved by hand in
/// the tests, the fuzz harness and the load test's replay.
pub(crate) enum Clock {
    Real(Instant),
    /// Moved by hand (`Cache::advance`).
    #[cfg(any(test, feature = "testing"))]
    Manual(AtomicU64),
}

impl Clock {
    /// Milliseconds since the cache was created.
    #[inline]
    pub(super) fn now(&self) -> u64 {
        match self {
            Clock::Real(epoch) => epoch.elapsed().as_millis() as u64,
            #[cfg(any(test, feature = "testing"))]
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}
