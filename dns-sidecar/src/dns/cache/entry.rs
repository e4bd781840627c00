//! One kept answer: its layout in a single allocation, its cost against
//! the bounds, and its time (when it was stored, how long it stays fresh).

use super::evict::ShardLimits;
use super::keep::Keep;
use super::ENTRY_OVERHEAD;

/// What kind of answer an entry holds, which decides its TTL cap, its
/// share of the bounds and whether it may be served stale or prefetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// NOERROR with records.
    Positive,
    /// NXDOMAIN, or NOERROR without records (NODATA), with an SOA.
    Negative,
    /// The upstream's SERVFAIL.
    ServFail,
}

pub(super) struct Entry {
    pub(super) hash: u64,
    /// The key, then the offsets of the answer's TTL fields (u16, little
    /// endian), then the answer with its TTLs capped: one allocation.
    data: Box<[u8]>,
    key_len: u16,
    ttls: u16,
    /// When it was stored (ms, [`super::clock::Clock`] time).
    pub(super) stored: u64,
    /// Seconds it stays fresh: its smallest (capped) TTL.
    pub(super) lifetime: u32,
    pub(super) kind: Kind,
    /// Set by a hit, cleared by the eviction hand.
    pub(super) referenced: bool,
    /// While `now` is before this, it is answered stale without asking the
    /// upstream (the upstream failed recently); 0 = not in that state.
    pub(super) stale_until: u64,
    /// Fresh hits since it was stored (saturating): its popularity.
    pub(super) hits: u32,
    /// Its refresh was offered (at most once per entry: see
    /// [`super::due::prefetch_window`]).
    pub(super) prefetched: bool,
}

impl Entry {
    /// The entry for `answer` under `key` (hash `hash`), stored at `now`,
    /// kept as `kept` says with its TTL fields at `ttls`: the key, the
    /// offsets and the answer built in place, in one allocation.
    pub(super) fn new(hash: u64, key: &[u8], answer: &[u8], kept: &Keep, ttls: &[u16], now: u64) -> Entry {
        let mut data = Vec::with_capacity(key.len() + 2 * ttls.len() + kept.len);
        data.extend_from_slice(key);
        for t in ttls {
            data.extend_from_slice(&t.to_le_bytes());
        }
        let at = data.len();
        data.extend_from_slice(&answer[..kept.len]);
        kept.apply(&mut data[at..], ttls);
        Entry {
            hash,
            data: data.into_boxed_slice(),
            key_len: key.len() as u16,
            ttls: ttls.len() as u16,
            stored: now,
            lifetime: kept.lifetime,
            kind: kept.kind,
            referenced: false,
            stale_until: 0,
            hits: 0,
            prefetched: false,
        }
    }

    #[inline]
    pub(super) fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    #[inline]
    pub(super) fn answer(&self) -> &[u8] {
        &self.data[self.key_len as usize + 2 * self.ttls as usize..]
    }

    #[inline]
    pub(super) fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let at = self.key_len as usize;
        self.data[at..at + 2 * self.ttls as usize]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as usize)
    }

    /// Bytes it counts against `max_bytes`.
    pub(super) fn cost(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD
    }

    #[inline]
    pub(super) fn expires(&self) -> u64 {
        self.stored + self.lifetime as u64 * 1000
    }

    #[inline]
    pub(super) fn fresh(&self, now: u64) -> bool {
        now < self.expires()
    }

    /// Whole seconds since it was stored: what its TTLs are decremented by.
    #[inline]
    pub(super) fn age(&self, now: u64) -> u32 {
        ((now - self.stored) / 1000) as u32
    }

    /// Can still answer at `now`, fresh or stale.
    pub(super) fn useful(&self, now: u64, l: &ShardLimits) -> bool {
        self.fresh(now) || self.stale_ok(now, l)
    }

    /// A negative or SERVFAIL entry: counted in the denials' share.
    pub(super) fn denial(&self) -> bool {
        self.kind != Kind::Positive
    }
}
