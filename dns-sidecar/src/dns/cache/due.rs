//! Prefetch bookkeeping: which fresh hit makes an entry due a refresh.
//!
//! The cache only decides and offers the query (once per entry, never
//! waited on); [`super::super::prefetch`] sends the refresh and keeps its
//! answer as a new entry.

use super::entry::{Entry, Kind};
use super::evict::ShardLimits;

/// How long before its expiry (ms) a popular entry of `lifetime` seconds
/// is refreshed when hit: the last tenth of its lifetime, at least one
/// second (half the lifetime for a 1-second entry), as CoreDNS's default
/// 10% rounds up to a whole second; so the refresh has time to come back
/// before the entry expires.
pub(super) fn prefetch_window(lifetime: u32) -> u64 {
    let life = u64::from(lifetime) * 1000;
    (life / 10).max(1000.min(life / 2))
}

impl Entry {
    /// Counts a fresh hit at `now`; true when it makes the entry due a
    /// refresh (see the module doc): popular enough, in its last tenth,
    /// not refreshed yet, not a SERVFAIL. True once per entry.
    #[inline]
    pub(super) fn hit(&mut self, now: u64, l: &ShardLimits) -> bool {
        self.hits = self.hits.saturating_add(1);
        if l.prefetch_hits == 0 || self.prefetched || self.kind == Kind::ServFail || self.hits < l.prefetch_hits {
            return false;
        }
        if self.expires().saturating_sub(now) > prefetch_window(self.lifetime) {
            return false;
        }
        self.prefetched = true;
        true
    }
}
