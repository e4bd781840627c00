//! Test-only handles on the cache: a clock moved by hand, and counts of
//! what it holds. Compiled for the unit tests and with the `testing`
//! feature (the fixture of the micro-benchmarks, the fuzz harness, the load
//! test's replay); never in the product.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::clock::Clock;
use super::shard::lock;
use super::Cache;
use crate::config::CacheSettings;
use crate::metrics::CacheMetrics;

impl Cache {
    /// A cache whose time only moves with [`Cache::advance`].
    pub fn manual(settings: &CacheSettings, metrics: CacheMetrics) -> Cache {
        Cache::with_clock(settings, metrics, Clock::Manual(AtomicU64::new(0)))
    }

    /// Moves a manual clock forward (no effect on the real one).
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(t) = &self.clock {
            t.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held now (as counted against `max_bytes`).
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }
}
