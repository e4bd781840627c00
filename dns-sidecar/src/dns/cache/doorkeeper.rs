//! The doorkeeper (as in TinyLFU): a full shard admits a new name only on
//! its second miss in the recent past.
//!
//! One bit per key hash in 32 KiB, cleared after 65536 first sightings.
//! Names asked once (a scan, a flood of random names) are not kept in a
//! full cache, so they neither push out answers in use nor cost an
//! eviction each. Lock-free: the bits are atomics, so any UDP worker asks
//! it without meeting another.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the doorkeeper (32 KiB).
const SEEN_BITS: usize = 1 << 18;
/// It is cleared after this many first sightings (a quarter of its bits:
/// few false "seen before").
const SEEN_RESET: u64 = (SEEN_BITS / 4) as u64;

pub(super) struct Doorkeeper {
    /// One bit per key hash, set by a name's first miss while its shard
    /// is full.
    seen: Box<[AtomicU64]>,
    /// Bits set since it was last cleared.
    seen_sets: AtomicU64,
}

impl Default for Doorkeeper {
    fn default() -> Self {
        Doorkeeper {
            seen: (0..SEEN_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            seen_sets: AtomicU64::new(0),
        }
    }
}

impl Doorkeeper {
    /// Whether a new key may push out another: only on its second miss
    /// (since the doorkeeper was last cleared).
    pub(super) fn admit(&self, hash: u64) -> bool {
        let i = (hash >> 40) as usize % SEEN_BITS;
        let bit = 1u64 << (i % 64);
        if self.seen[i / 64].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return true;
        }
        if self.seen_sets.fetch_add(1, Ordering::Relaxed) + 1 >= SEEN_RESET {
            self.seen_sets.store(0, Ordering::Relaxed);
            for w in self.seen.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        false
    }
}
