//! The bounds, and making room within them.
//!
//! At most `max_entries` answers and `max_bytes` bytes (answer, key, TTL
//! offsets and [`super::ENTRY_OVERHEAD`] of bookkeeping each), split evenly
//! over the shards; negative and SERVFAIL entries take at most half of
//! each, so a flood of nonexistent names cannot push out the answers in
//! use. Room is made with the CLOCK algorithm (a hit sets an entry's
//! reference bit; the hand clears it and takes the first entry without
//! one), taking entries that can no longer be served at all first.

use super::shard::Shard;
use super::SHARDS;
use crate::config::CacheSettings;
use crate::metrics::CacheMetrics;

/// One shard's share of the bounds, and the settings read under its lock.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ShardLimits {
    entries: usize,
    bytes: u64,
    pub(super) serve_stale: bool,
    pub(super) max_stale_ms: u64,
    /// Hits that make an entry due a refresh; 0 = no prefetch.
    pub(super) prefetch_hits: u32,
}

impl ShardLimits {
    /// Shard `shard`'s limits under `s` (all zero when the cache is off).
    pub(super) fn of(s: &CacheSettings, shard: usize) -> ShardLimits {
        if !s.enabled {
            return ShardLimits::default();
        }
        let entries = s.max_entries / SHARDS + usize::from(shard < s.max_entries % SHARDS);
        ShardLimits {
            entries,
            bytes: s.max_bytes / SHARDS as u64,
            serve_stale: s.serve_stale,
            max_stale_ms: s.max_stale.as_millis() as u64,
            prefetch_hits: if s.prefetch { s.prefetch_hits } else { 0 },
        }
    }
}

impl Shard {
    /// Whether a new entry (a negative or SERVFAIL one when `denial`) would
    /// have to push out another (or cannot be kept at all).
    pub(super) fn full(&self, denial: bool) -> bool {
        let l = &self.limits;
        // A typical entry: a ~100-byte answer, its key and bookkeeping.
        let cost = 256;
        self.entries + 1 > l.entries
            || self.bytes + cost > l.bytes
            || (denial && (self.denials + 1 > l.entries / 2 || self.denial_bytes + cost > l.bytes / 2))
    }

    /// Frees room for an entry of `cost` bytes (a negative or SERVFAIL one
    /// when `denial`). False when it can never fit this shard.
    pub(super) fn make_room(&mut self, cost: u64, denial: bool, now: u64, m: &CacheMetrics) -> bool {
        let l = self.limits;
        if l.entries == 0 || cost > l.bytes || (denial && (l.entries / 2 == 0 || cost > l.bytes / 2)) {
            return false;
        }
        // Two turns of the hand always suffice: the first clears every
        // reference bit it passes.
        let mut steps = 2 * self.slots.len() + 2;
        loop {
            let over_all = self.entries + 1 > l.entries || self.bytes + cost > l.bytes;
            let over_denials = denial && (self.denials + 1 > l.entries / 2 || self.denial_bytes + cost > l.bytes / 2);
            if !over_all && !over_denials {
                return true;
            }
            if steps == 0 || self.slots.is_empty() {
                return false;
            }
            steps -= 1;
            let i = self.hand % self.slots.len();
            self.hand = i + 1;
            let Some(e) = self.slots[i].as_mut() else { continue };
            let useful = e.useful(now, &l);
            if useful {
                // Only the denials are over their share: keep positive answers.
                if !over_all && !e.denial() {
                    continue;
                }
                if e.referenced {
                    e.referenced = false;
                    continue;
                }
            }
            self.remove(i, m);
            if useful {
                m.evictions.inc();
            }
        }
    }
}
