//! The cache of forwarded answers (`[cache]`).
//!
//! As the pod's resolver (or a VNet's forwarder) the sidecar replaces a
//! caching resolver, and the upstream (Azure DNS) throttles queries per VM,
//! so answers to forwarded names are kept and answered again without asking
//! the upstream, as dnsmasq, CoreDNS's `cache`, dnsdist's packet cache and
//! unbound do.
//!
//! **What is kept.** The upstream's answer bytes, keyed by the question in
//! wire form: the name in lower case, type, class, whether the query had
//! EDNS, its DO bit and its CD bit. Kept are NOERROR answers with records
//! (for their smallest TTL, at most `max_ttl`), NXDOMAIN and NODATA answers
//! with an SOA in the authority section (for min(SOA TTL, SOA MINIMUM), at
//! most `max_negative_ttl`: RFC 2308), and the upstream's SERVFAIL (for
//! `servfail_ttl`, a few seconds). Never kept: truncated answers, other
//! rcodes, answers larger than 4096 bytes, answers carrying TSIG/SIG(0),
//! answers to queries with EDNS options other than a cookie or padding
//! (client subnet, NSID...: the answer may be meant for that client only),
//! answers to queries without RD (a resolver answers those from its own
//! cache, often partially; such queries are never answered from the cache
//! either), answers to another question than asked (type and class
//! compared exactly), and names inside the sidecar's own zones. The OPT
//! record of a kept answer loses its options (the upstream's cookie was for
//! the first client), as the sidecar's own answers have none.
//!
//! **Answering.** A hit copies the bytes into the send buffer and patches
//! them: the ID, RD and CD of the query; AD only for clients that asked for
//! it (AD or DO set, RFC 6840); the question name as asked (0x20 case
//! randomisation); every TTL decremented by the entry's age in whole
//! seconds. The offsets of the TTLs are found once, when the answer is
//! stored. An answer larger than the client takes over UDP is answered
//! with TC (header, question, OPT) instead, so the client retries over
//! TCP. Nothing is allocated; the table is split into [`SHARDS`]
//! mutex-guarded shards by the key's hash, so the UDP workers rarely meet
//! on a lock and never on a global one.
//!
//! **Serve-stale (RFC 8767).** When the upstream fails (every upstream timed
//! out, all are out of use, a limit refused the query, or the upstream
//! answered SERVFAIL or REFUSED), an entry that expired less than
//! `max_stale` ago answers instead, with every TTL set to [`STALE_TTL`]
//! (30 s, the RFC's recommendation), and for the next 30 s it answers at
//! once without asking the upstream again (the RFC's failure recheck
//! timer). SERVFAIL entries are never served stale, and an upstream's
//! SERVFAIL never replaces an answer that can still be served stale.
//!
//! **Prefetch** (`prefetch`, `prefetch_hits`). Each entry counts its fresh
//! hits. A fresh hit on an entry hit at least `prefetch_hits` times, with
//! less than [`due::prefetch_window`] of its lifetime left, makes it due: the
//! hit is answered as usual, and the query is offered (once per entry, never
//! waited on) to [`super::prefetch`], which refreshes the entry in the
//! background. The refreshed answer is a new entry (new lifetime, hits from
//! zero). Stale answers, SERVFAIL entries and RD=0 queries never make an
//! entry due.
//!
//! **Bounds.** At most `max_entries` answers and `max_bytes` bytes (answer,
//! key, TTL offsets and [`ENTRY_OVERHEAD`] of bookkeeping each), split
//! evenly over the shards; negative and SERVFAIL entries take at most half
//! of each, so a flood of nonexistent names cannot push out the answers in
//! use. Room is made with the CLOCK algorithm (a hit sets an entry's
//! reference bit; the hand clears it and takes the first entry without
//! one), taking entries that can no longer be served at all first. A full
//! shard admits a new name only on its second miss in the recent past (a
//! doorkeeper, as in TinyLFU: one bit per name hash in 32 KiB, cleared after
//! 65536 first sightings): names asked once, a scan or a flood of random
//! names, neither push out answers in use nor cost an eviction each. The
//! cache has its own bound rather than a share of `[limits] memory`: that
//! budget refuses queries when it is used up, and a full cache must not.
//!
//! Time comes from a [`Clock`], in milliseconds, read once per batch by the
//! UDP workers; the tests, the fuzz harness and the load test's replay use
//! a manual one (`testing`, compiled only for them).
//!
//! Where each idea lives: this file holds [`Cache`] (lookups, inserts,
//! reconfiguration, flushing); `key` the key and which queries have one;
//! `keep` which answers are kept and how; `entry` one kept answer and its
//! time; `write` answering from it; `stale` serve-stale; `due` the
//! prefetch bookkeeping; `shard` one shard of the table; `evict` the bounds
//! and the CLOCK hand; `doorkeeper` the admission of new names to a full
//! shard; `clock` the time; `testing` the test-only clock and counters.

mod clock;
mod doorkeeper;
mod due;
mod entry;
mod evict;
mod keep;
mod key;
mod shard;
mod stale;
#[cfg(any(test, feature = "testing"))]
mod testing;
#[cfg(test)]
mod tests;
mod write;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;

use super::names::within_any;
use super::prefetch::Queue;
use super::question::Question;
use crate::config::CacheSettings;
use crate::metrics::CacheMetrics;
use clock::Clock;
use doorkeeper::Doorkeeper;
use entry::{Entry, Kind};
use evict::ShardLimits;
use keep::{denial_at_a_glance, keepable, MAX_RECORDS};
use key::{cacheable, key_of};
use shard::{lock, Shard};
use write::{write, Ttls};

#[cfg(test)]
use due::prefetch_window;
pub(super) use key::{entry_key, KEY_MAX};
pub(crate) use stale::STALE_TTL;

/// Shards (each with its own lock and an even share of the bounds).
pub(crate) const SHARDS: usize = 16;
/// Largest answer kept (the largest the sidecar relays over UDP).
pub(crate) const MAX_ANSWER: usize = 4096;
/// Bytes counted per entry besides its answer, key and TTL offsets: the
/// entry itself, its slot in the map, the allocator's header.
pub(crate) const ENTRY_OVERHEAD: u64 = 96;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A fresh answer of this many bytes was written.
    Fresh(usize),
    /// A stale answer (RFC 8767) of this many bytes was written.
    Stale(usize),
    /// Nothing usable (counts as a miss).
    Miss,
    /// The cache is off.
    Off,
}

pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Clock,
    enabled: AtomicBool,
    settings: ArcSwap<CacheSettings>,
    /// Zone apexes in wire form: names at or below them are never kept.
    zones: ArcSwap<Vec<Vec<u8>>>,
    metrics: CacheMetrics,
    /// Admits a new name to a full shard on its second miss.
    doorkeeper: Doorkeeper,
    /// Refreshes of popular entries due (see [`super::prefetch`]).
    prefetch: Queue,
}

impl Cache {
    /// A cache on the real clock.
    pub(crate) fn new(settings: &CacheSettings, metrics: CacheMetrics) -> Cache {
        Cache::with_clock(settings, metrics, Clock::Real(Instant::now()))
    }

    fn with_clock(settings: &CacheSettings, metrics: CacheMetrics, clock: Clock) -> Cache {
        let shards = (0..SHARDS)
            .map(|i| Mutex::new(Shard::with_limits(ShardLimits::of(settings, i))))
            .collect();
        Cache {
            shards,
            hasher: RandomState::new(),
            clock,
            enabled: AtomicBool::new(settings.enabled),
            settings: ArcSwap::from_pointee(settings.clone()),
            zones: ArcSwap::from_pointee(Vec::new()),
            metrics,
            doorkeeper: Doorkeeper::default(),
            prefetch: Queue::default(),
        }
    }

    /// The cache's time, in ms.
    #[inline]
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// The refreshes of popular entries that came due (`[cache] prefetch`).
    pub fn prefetch_queue(&self) -> &Queue {
        &self.prefetch
    }

    /// Applies (new) settings and the zones the sidecar serves. Changed
    /// settings empty the cache (its entries were kept under the old
    /// ones); otherwise it is kept, but for names now at or below one of
    /// `zones` (a zone added by a reload answers them from now on).
    pub(crate) fn configure(&self, settings: &CacheSettings, zones: Vec<Vec<u8>>) {
        let changed = **self.settings.load() != *settings;
        self.settings.store(Arc::new(settings.clone()));
        self.enabled.store(settings.enabled, Ordering::Relaxed);
        for (i, shard) in self.shards.iter().enumerate() {
            let mut s = lock(shard);
            s.limits = ShardLimits::of(settings, i);
            if changed {
                s.clear(&self.metrics);
                continue;
            }
            s.remove_where(|name| within_any(&zones, name), &self.metrics);
        }
        self.zones.store(Arc::new(zones));
    }

    /// [`Cache::configure`] with `config`'s `[cache]` and zones.
    pub(crate) fn configure_from(&self, config: &crate::config::Config) {
        self.configure(
            &config.cache,
            config
                .zones
                .iter()
                .map(|z| super::names::wire(z.name.as_str()))
                .collect(),
        );
    }

    /// Removes every entry, or (with `below`, a lower-case wire-form name)
    /// the entries for that name and the names below it. Returns how many.
    pub(crate) fn flush(&self, below: Option<&[u8]>) -> usize {
        let below: Option<Vec<Vec<u8>>> = below.map(|b| vec![b.to_vec()]);
        let hit = |name: &[u8]| below.as_ref().is_none_or(|b| within_any(b, name));
        self.shards
            .iter()
            .map(|shard| lock(shard).remove_where(hit, &self.metrics))
            .sum()
    }

    #[inline]
    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(hash >> 32) as usize % SHARDS])
    }

    /// Runs `f` on the entry for query `q` (read as `qn`) under its shard's
    /// lock, with that shard's limits; [`Found::Off`] when the cache is off,
    /// [`Found::Miss`] when the query cannot be kept or nothing is stored.
    #[inline]
    fn with_entry(&self, q: &[u8], qn: &Question, f: impl FnOnce(&mut Entry, &ShardLimits) -> Found) -> Found {
        if !self.enabled() {
            return Found::Off;
        }
        if !cacheable(qn) {
            return Found::Miss;
        }
        let mut buf = [0u8; KEY_MAX];
        let key = key_of(q, qn, &mut buf);
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash);
        let l = shard.limits;
        match shard.get(hash, key) {
            Some(e) => f(e, &l),
            None => Found::Miss,
        }
    }

    /// Answers query `q` (read as `qn`) into `out` from a fresh entry, or
    /// from a stale one while the upstream is known to fail; `limit` is
    /// the largest answer the client takes.
    /// A fresh hit that makes its entry due a refresh offers `q` to the
    /// prefetch queue (without waiting; see [`super::prefetch`]).
    pub fn answer(&self, q: &[u8], qn: &Question, limit: usize, now: u64, out: &mut [u8]) -> Found {
        let mut due = false;
        let found = self.with_entry(q, qn, |e, l| {
            if e.fresh(now) {
                e.referenced = true;
                due = e.hit(now, l);
                return write(e, q, qn, limit, Ttls::Aged(e.age(now)), out).map_or(Found::Miss, Found::Fresh);
            }
            if e.failing(now, l) {
                e.referenced = true;
                return write(e, q, qn, limit, Ttls::Stale, out).map_or(Found::Miss, Found::Stale);
            }
            Found::Miss
        });
        if due {
            self.prefetch.offer(q, &self.metrics);
        }
        found
    }

    /// Keeps `answer`, the upstream's answer to `q`, if it may be kept.
    /// Returns whether it was. One allocation: the key, TTL offsets and
    /// answer, built in place.
    pub fn insert(&self, q: &[u8], qn: &Question, answer: &[u8], now: u64) -> bool {
        if !self.enabled() || !cacheable(qn) {
            return false;
        }
        let mut buf = [0u8; KEY_MAX];
        let key = key_of(q, qn, &mut buf);
        if within_any(&self.zones.load(), key::name_of(key)) {
            return false;
        }
        let hash = self.hasher.hash_one(key);
        {
            // A full shard takes a new name only on its second miss.
            let shard = self.shard(hash);
            let denial = denial_at_a_glance(answer);
            if !shard.holds(hash) && shard.full(denial) && !self.doorkeeper.admit(hash) {
                return false;
            }
        }
        let settings = self.settings.load();
        let mut ttls = [0u16; MAX_RECORDS];
        let Some(kept) = keepable(q, qn, answer, &settings, &mut ttls) else {
            return false;
        };
        let entry = Entry::new(hash, key, answer, &kept, &ttls[..kept.ttls], now);
        let mut shard = self.shard(hash);
        if kept.kind == Kind::ServFail {
            let l = shard.limits;
            // A failure does not push out what can answer for it.
            if shard
                .get(hash, key)
                .is_some_and(|old| old.kind != Kind::ServFail && old.useful(now, &l))
            {
                return false;
            }
        }
        shard.put(entry, now, &self.metrics)
    }
}
