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
//! compared exactly), and names inside the sidecar's own zones. The OPT record of a kept
//! answer loses its options (the upstream's cookie was for the first
//! client), as the sidecar's own answers have none.
//!
//! **Answering.** A hit copies the bytes into the send buffer and patches
//! them: the ID, RD and CD of the query; AD only for clients that asked for
//! it (AD or DO set, RFC 6840); the question name as asked (0x20 case
//! randomisation); every TTL decremented by the entry's age in whole
//! seconds. The offsets of the TTLs are found once, when the answer is
//! stored. An answer larger than the client takes over UDP is answered
//! with TC (header, question, OPT) instead, so the client retries over TCP. Nothing is allocated; the table is split into [`SHARDS`]
//! mutex-guarded shards by the key's hash, so the UDP workers rarely meet on
//! a lock and never on a global one.
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
//! less than [`prefetch_window`] of its lifetime left, makes it due: the
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
//! UDP workers; tests and the fuzz harness use a manual one.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::message::{same_question, skip_name, truncated_raw, HEADER_LEN};
use super::names::within_any;
use super::prefetch::Queue;
use super::question::Question;
use crate::config::CacheSettings;
use crate::metrics::CacheMetrics;

/// TTL of stale answers, and how long one is given before the upstream is
/// asked again (RFC 8767 section 4 recommends 30 s).
pub const STALE_TTL: u32 = 30;
/// Shards (each with its own lock and an even share of the bounds).
pub const SHARDS: usize = 16;
/// Largest answer kept (the largest the sidecar relays over UDP).
pub const MAX_ANSWER: usize = 4096;
/// Bytes counted per entry besides its answer, key and TTL offsets: the
/// entry itself, its slot in the map, the allocator's header.
pub const ENTRY_OVERHEAD: u64 = 96;
/// A key: the name (at most 255 bytes), type, class and one byte of flags.
pub(super) const KEY_MAX: usize = 255 + 5;

/// Where the cache's time comes from (milliseconds since it was created).
pub enum Clock {
    Real(Instant),
    /// Moved by hand (tests, the fuzz harness).
    Manual(AtomicU64),
}

impl Clock {
    fn now(&self) -> u64 {
        match self {
            Clock::Real(epoch) => epoch.elapsed().as_millis() as u64,
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// NOERROR with records.
    Positive,
    /// NXDOMAIN, or NOERROR without records (NODATA), with an SOA.
    Negative,
    /// The upstream's SERVFAIL.
    ServFail,
}

struct Entry {
    hash: u64,
    /// The key, then the offsets of the answer's TTL fields (u16, little
    /// endian), then the answer with its TTLs capped: one allocation.
    data: Box<[u8]>,
    key_len: u16,
    ttls: u16,
    /// When it was stored (ms, [`Clock`] time).
    stored: u64,
    /// Seconds it stays fresh: its smallest (capped) TTL.
    lifetime: u32,
    kind: Kind,
    /// Set by a hit, cleared by the eviction hand.
    referenced: bool,
    /// While `now` is before this, it is answered stale without asking the
    /// upstream (the upstream failed recently); 0 = not in that state.
    stale_until: u64,
    /// Fresh hits since it was stored (saturating): its popularity.
    hits: u32,
    /// Its refresh was offered (at most once per entry: see [`prefetch_window`]).
    prefetched: bool,
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    fn answer(&self) -> &[u8] {
        &self.data[self.key_len as usize + 2 * self.ttls as usize..]
    }

    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let at = self.key_len as usize;
        self.data[at..at + 2 * self.ttls as usize]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as usize)
    }

    fn cost(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD
    }

    fn expires(&self) -> u64 {
        self.stored + self.lifetime as u64 * 1000
    }

    fn fresh(&self, now: u64) -> bool {
        now < self.expires()
    }

    /// May be answered stale at `now` (whether or not the upstream failed).
    fn stale_ok(&self, now: u64, l: &ShardLimits) -> bool {
        l.serve_stale && self.kind != Kind::ServFail && now.saturating_sub(self.expires()) <= l.max_stale_ms
    }

    fn useful(&self, now: u64, l: &ShardLimits) -> bool {
        self.fresh(now) || self.stale_ok(now, l)
    }

    fn denial(&self) -> bool {
        self.kind != Kind::Positive
    }

    /// Counts a fresh hit at `now`; true when it makes the entry due a
    /// refresh (see the module doc): popular enough, in its last tenth,
    /// not refreshed yet, not a SERVFAIL. True once per entry.
    fn hit(&mut self, now: u64, l: &ShardLimits) -> bool {
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

/// How long before its expiry (ms) a popular entry of `lifetime` seconds
/// is refreshed when hit: the last tenth of its lifetime, at least one
/// second (half the lifetime for a 1-second entry), as CoreDNS's default
/// 10% rounds up to a whole second; so the refresh has time to come back
/// before the entry expires.
pub fn prefetch_window(lifetime: u32) -> u64 {
    let life = u64::from(lifetime) * 1000;
    (life / 10).max(1000.min(life / 2))
}

/// One shard's share of the bounds, and the settings read under its lock.
#[derive(Debug, Clone, Copy, Default)]
struct ShardLimits {
    entries: usize,
    bytes: u64,
    serve_stale: bool,
    max_stale_ms: u64,
    /// Hits that make an entry due a refresh; 0 = no prefetch.
    prefetch_hits: u32,
}

impl ShardLimits {
    fn of(s: &CacheSettings, shard: usize) -> ShardLimits {
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

/// The map's keys are already hashes (SipHash with a random key).
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b) ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Shard {
    /// Key hash -> slot.
    map: HashMap<u64, u32, BuildHasherDefault<Identity>>,
    /// The CLOCK ring.
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    hand: usize,
    entries: usize,
    bytes: u64,
    denials: usize,
    denial_bytes: u64,
    limits: ShardLimits,
}

impl Shard {
    fn get(&mut self, hash: u64, key: &[u8]) -> Option<&mut Entry> {
        let i = *self.map.get(&hash)? as usize;
        self.slots[i].as_mut().filter(|e| e.key() == key)
    }

    fn remove(&mut self, i: usize, m: &CacheMetrics) -> Option<Entry> {
        let e = self.slots[i].take()?;
        self.map.remove(&e.hash);
        self.free.push(i as u32);
        let cost = e.cost();
        self.entries -= 1;
        self.bytes -= cost;
        if e.denial() {
            self.denials -= 1;
            self.denial_bytes -= cost;
        }
        m.entries.dec();
        m.bytes.dec_by(cost as i64);
        Some(e)
    }

    fn clear(&mut self, m: &CacheMetrics) {
        for i in 0..self.slots.len() {
            self.remove(i, m);
        }
        *self = Shard {
            limits: self.limits,
            ..Shard::default()
        };
    }

    /// Whether a new entry (a negative or SERVFAIL one when `denial`) would
    /// have to push out another (or cannot be kept at all).
    fn full(&self, denial: bool) -> bool {
        let l = &self.limits;
        // A typical entry: a ~100-byte answer, its key and bookkeeping.
        let cost = 256;
        self.entries + 1 > l.entries
            || self.bytes + cost > l.bytes
            || (denial && (self.denials + 1 > l.entries / 2 || self.denial_bytes + cost > l.bytes / 2))
    }

    /// Frees room for an entry of `cost` bytes (a negative or SERVFAIL one
    /// when `denial`). False when it can never fit this shard.
    fn make_room(&mut self, cost: u64, denial: bool, now: u64, m: &CacheMetrics) -> bool {
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

    fn put(&mut self, e: Entry, now: u64, m: &CacheMetrics) -> bool {
        // The same key (or, once in 2^64, another key with the same hash)
        // is replaced.
        if let Some(&i) = self.map.get(&e.hash) {
            self.remove(i as usize, m);
        }
        let cost = e.cost();
        if !self.make_room(cost, e.denial(), now, m) {
            return false;
        }
        let i = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.entries += 1;
        self.bytes += cost;
        if e.denial() {
            self.denials += 1;
            self.denial_bytes += cost;
        }
        m.entries.inc();
        m.bytes.inc_by(cost as i64);
        self.map.insert(e.hash, i as u32);
        self.slots[i] = Some(e);
        true
    }
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
    /// The doorkeeper: one bit per key hash, set by a name's first miss
    /// while its shard is full (see [`Cache::admit`]).
    seen: Box<[AtomicU64]>,
    /// Bits set since the doorkeeper was last cleared.
    seen_sets: AtomicU64,
    /// Refreshes of popular entries due (see [`super::prefetch`]).
    prefetch: Queue,
}

/// Bits of the doorkeeper (32 KiB).
const SEEN_BITS: usize = 1 << 18;
/// It is cleared after this many first sightings (a quarter of its bits:
/// few false "seen before").
const SEEN_RESET: u64 = (SEEN_BITS / 4) as u64;

/// How TTLs are written into an answer.
#[derive(Clone, Copy)]
enum Ttls {
    /// Decremented by this many seconds.
    Aged(u32),
    /// All [`STALE_TTL`].
    Stale,
}

impl Cache {
    /// A cache on the real clock.
    pub fn new(settings: &CacheSettings, metrics: CacheMetrics) -> Cache {
        Cache::with_clock(settings, metrics, Clock::Real(Instant::now()))
    }

    /// A cache whose time only moves with [`Cache::advance`].
    pub fn manual(settings: &CacheSettings, metrics: CacheMetrics) -> Cache {
        Cache::with_clock(settings, metrics, Clock::Manual(AtomicU64::new(0)))
    }

    fn with_clock(settings: &CacheSettings, metrics: CacheMetrics, clock: Clock) -> Cache {
        let shards = (0..SHARDS)
            .map(|i| {
                Mutex::new(Shard {
                    limits: ShardLimits::of(settings, i),
                    ..Shard::default()
                })
            })
            .collect();
        Cache {
            shards,
            hasher: RandomState::new(),
            clock,
            enabled: AtomicBool::new(settings.enabled),
            settings: ArcSwap::from_pointee(settings.clone()),
            zones: ArcSwap::from_pointee(Vec::new()),
            metrics,
            seen: (0..SEEN_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            seen_sets: AtomicU64::new(0),
            prefetch: Queue::default(),
        }
    }

    /// Whether a new key may push out another: only on its second miss
    /// (since the doorkeeper was last cleared). A name asked once (a scan,
    /// a flood of random names) is not kept in a full cache, so it neither
    /// pushes out answers in use nor costs an eviction.
    fn admit(&self, hash: u64) -> bool {
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

    /// Moves a manual clock forward (no effect on the real one).
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(t) = &self.clock {
            t.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// The cache's time, in ms.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &CacheMetrics {
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
    pub fn configure(&self, settings: &CacheSettings, zones: Vec<Vec<u8>>) {
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
            let inside: Vec<usize> = s
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.as_ref().filter(|e| within_any(&zones, name_of(e.key()))).map(|_| i))
                .collect();
            for i in inside {
                s.remove(i, &self.metrics);
            }
        }
        self.zones.store(Arc::new(zones));
    }

    /// [`Cache::configure`] with `config`'s `[cache]` and zones.
    pub fn configure_from(&self, config: &crate::config::Config) {
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
    pub fn flush(&self, below: Option<&[u8]>) -> usize {
        let below: Option<Vec<Vec<u8>>> = below.map(|b| vec![b.to_vec()]);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut s = lock(shard);
            let hit: Vec<usize> = s
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    e.as_ref()
                        .filter(|e| below.as_ref().is_none_or(|b| within_any(b, name_of(e.key()))))
                        .map(|_| i)
                })
                .collect();
            for i in hit {
                s.remove(i, &self.metrics);
                removed += 1;
            }
        }
        removed
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

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(hash >> 32) as usize % SHARDS])
    }

    /// Runs `f` on the entry for query `q` (read as `qn`) under its shard's
    /// lock, with that shard's limits; [`Found::Off`] when the cache is off,
    /// [`Found::Miss`] when the query cannot be kept or nothing is stored.
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
                let age = ((now - e.stored) / 1000) as u32;
                return write(e, q, qn, limit, Ttls::Aged(age), out).map_or(Found::Miss, Found::Fresh);
            }
            if now < e.stale_until && e.stale_ok(now, l) {
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

    /// The upstream failed for `q`: answers from an entry that expired less
    /// than `max_stale` ago (or a fresh one stored meanwhile), and answers
    /// it stale without asking the upstream for the next [`STALE_TTL`] s.
    pub fn stale(&self, q: &[u8], qn: &Question, limit: usize, now: u64, out: &mut [u8]) -> Found {
        self.with_entry(q, qn, |e, l| {
            if e.fresh(now) {
                let age = ((now - e.stored) / 1000) as u32;
                return write(e, q, qn, limit, Ttls::Aged(age), out).map_or(Found::Miss, Found::Fresh);
            }
            if !e.stale_ok(now, l) {
                return Found::Miss;
            }
            e.stale_until = now + STALE_TTL as u64 * 1000;
            e.referenced = true;
            write(e, q, qn, limit, Ttls::Stale, out).map_or(Found::Miss, Found::Stale)
        })
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
        if within_any(&self.zones.load(), name_of(key)) {
            return false;
        }
        let hash = self.hasher.hash_one(key);
        {
            // A full shard takes a new name only on its second miss.
            let shard = self.shard(hash);
            let denial = answer.len() < HEADER_LEN || answer[3] & 0x0F != 0 || answer[6..8] == [0, 0];
            if !shard.map.contains_key(&hash) && shard.full(denial) && !self.admit(hash) {
                return false;
            }
        }
        let settings = self.settings.load();
        let mut ttls = [0u16; MAX_RECORDS];
        let Some(kept) = keepable(q, qn, answer, &settings, &mut ttls) else {
            return false;
        };
        let ttls = &ttls[..kept.ttls];
        let mut data = Vec::with_capacity(key.len() + 2 * ttls.len() + kept.len);
        data.extend_from_slice(key);
        for t in ttls {
            data.extend_from_slice(&t.to_le_bytes());
        }
        let at = data.len();
        data.extend_from_slice(&answer[..kept.len]);
        let a = &mut data[at..];
        for &t in ttls {
            let t = t as usize;
            let ttl = u32::from_be_bytes([a[t], a[t + 1], a[t + 2], a[t + 3]]).min(kept.cap);
            let ttl = if kept.soa == Some(t) {
                ttl.min(kept.negative)
            } else {
                ttl
            };
            a[t..t + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        if let Some(o) = kept.opt_rdlen {
            a[o..o + 2].copy_from_slice(&[0, 0]);
        }
        let entry = Entry {
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
        };
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

/// Whether answers to this query may come from, and go into, the cache:
/// it asks for recursion (RD; a resolver answers RD=0 from its own cache
/// only, often partially: a CNAME without its address, which must not be
/// handed to the next RD=1 client, and an RD=0 client must not get an
/// answer the upstream would only give with recursion), and it carries no
/// EDNS option that makes the answer specific to the client.
fn cacheable(qn: &Question) -> bool {
    qn.rd && qn.plain
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key of `q`: its name in lower case, type, class (IN), and one byte
/// for EDNS (0 none, 1 EDNS, 2 EDNS with DO) and CD (4).
fn key_of<'b>(q: &[u8], qn: &Question, buf: &'b mut [u8; KEY_MAX]) -> &'b [u8] {
    let name = &q[HEADER_LEN..qn.qname_end];
    let n = name.len();
    buf[..n].copy_from_slice(name);
    if qn.upper {
        buf[..n].make_ascii_lowercase();
    }
    buf[n..n + 2].copy_from_slice(&qn.qtype.to_be_bytes());
    buf[n + 2..n + 4].copy_from_slice(&[0, 1]);
    buf[n + 4] = qn.edns as u8 | ((q[3] & 0x10) >> 2);
    &buf[..n + 5]
}

/// The key that selects `q`'s entry (see [`key_of`]); the relay also
/// coalesces identical questions in flight by it.
pub(super) fn entry_key<'b>(q: &[u8], qn: &Question, buf: &'b mut [u8; KEY_MAX]) -> &'b [u8] {
    key_of(q, qn, buf)
}

fn name_of(key: &[u8]) -> &[u8] {
    &key[..key.len() - 5]
}

/// Copies `e`'s answer into `out` for query `q`, patched (see the module
/// doc); larger than `limit` (the client's UDP size), the TC answer
/// instead, so the client retries over TCP; `None` when it does not fit
/// `out`.
fn write(e: &Entry, q: &[u8], qn: &Question, limit: usize, ttls: Ttls, out: &mut [u8]) -> Option<usize> {
    let a = e.answer();
    if a.len() > limit {
        return truncated_raw(q, qn, out);
    }
    if a.len() > out.len() {
        return None;
    }
    let out = &mut out[..a.len()];
    out.copy_from_slice(a);
    out[0] = q[0];
    out[1] = q[1];
    out[2] = (out[2] & !0x01) | (q[2] & 0x01);
    out[3] = (out[3] & !0x10) | (q[3] & 0x10);
    // RFC 6840 5.8: AD only for a client that set AD or DO.
    if q[3] & 0x20 == 0 && qn.edns != 2 {
        out[3] &= !0x20;
    }
    out[HEADER_LEN..qn.qname_end].copy_from_slice(&q[HEADER_LEN..qn.qname_end]);
    for o in e.ttl_offsets() {
        let ttl = match ttls {
            Ttls::Aged(age) => u32::from_be_bytes([out[o], out[o + 1], out[o + 2], out[o + 3]]).saturating_sub(age),
            Ttls::Stale => STALE_TTL,
        };
        out[o..o + 4].copy_from_slice(&ttl.to_be_bytes());
    }
    Some(a.len())
}

/// Records an answer may have to be kept (a 4096-byte answer holds fewer).
const MAX_RECORDS: usize = 512;

/// How an answer is kept (see [`keepable`]).
struct Keep {
    /// Bytes kept: the answer, without the OPT options when it had some.
    len: usize,
    /// TTL fields (their offsets are in the caller's array).
    ttls: usize,
    /// Every TTL is capped at this.
    cap: u32,
    /// The SOA of a negative answer (its TTL offset), whose TTL is also
    /// capped at its MINIMUM, `negative` (RFC 2308).
    soa: Option<usize>,
    negative: u32,
    /// Offset of the OPT record's RDLENGTH when its options are dropped.
    opt_rdlen: Option<usize>,
    lifetime: u32,
    kind: Kind,
}

/// Whether `a`, the upstream's answer to `q`, may be kept, and how: the
/// offsets of its TTL fields go into `ttls`; the returned [`Keep`] says how
/// to cap them, whether the OPT options go, how long the answer lives. See
/// the module doc for what is kept.
fn keepable(q: &[u8], qn: &Question, a: &[u8], s: &CacheSettings, ttls: &mut [u16; MAX_RECORDS]) -> Option<Keep> {
    if a.len() > MAX_ANSWER || a.len() < HEADER_LEN {
        return None;
    }
    // A response (QR) to a QUERY (opcode 0), not truncated (TC).
    if a[2] & 0x80 == 0 || a[2] & 0x7A != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]) as usize;
    let qend = qn.end();
    if count(4) != 1 || !same_question(&q[..qend], a) {
        return None;
    }
    let (an, ns, ar) = (count(6), count(8), count(10));
    let total = an + ns + ar;
    if total > MAX_RECORDS {
        return None;
    }
    let kind = match a[3] & 0x0F {
        0 if an > 0 => Kind::Positive,
        0 | 3 => Kind::Negative,
        2 => Kind::ServFail,
        _ => return None,
    };
    let cap = match kind {
        Kind::Positive => s.max_ttl,
        Kind::Negative => s.max_negative_ttl,
        Kind::ServFail => s.servfail_ttl,
    };
    if cap == 0 {
        return None;
    }
    let mut keep = Keep {
        len: a.len(),
        ttls: 0,
        cap,
        soa: None,
        negative: u32::MAX,
        opt_rdlen: None,
        lifetime: cap,
        kind,
    };
    let mut opt = false;
    let mut at = qend;
    for i in 0..total {
        let authority = i >= an && i < an + ns;
        let additional = i >= an + ns;
        at = skip_name(a, at).ok()?;
        let fixed = a.get(at..at + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let rdata_at = at + 10;
        let rdata = a.get(rdata_at..rdata_at + rdlen)?;
        match rtype {
            41 => {
                // One OPT, in the additional section, no extended rcode.
                if !additional || opt || fixed[4] != 0 {
                    return None;
                }
                opt = true;
                if rdlen > 0 {
                    // Options are dropped when nothing follows them (always,
                    // in practice); otherwise the answer is not kept.
                    if i + 1 != total || rdata_at + rdlen != a.len() {
                        return None;
                    }
                    keep.opt_rdlen = Some(at + 8);
                    keep.len = rdata_at;
                }
            }
            // Signed answers (TSIG, SIG(0)) are for one exchange only.
            250 | 24 if additional => return None,
            _ => {
                let mut ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
                if rtype == 6 && authority {
                    // RFC 2308: a negative answer lives min(SOA TTL, MINIMUM).
                    if rdlen < 22 {
                        return None;
                    }
                    if kind == Kind::Negative && keep.soa.is_none() {
                        keep.negative = u32::from_be_bytes([
                            rdata[rdlen - 4],
                            rdata[rdlen - 3],
                            rdata[rdlen - 2],
                            rdata[rdlen - 1],
                        ]);
                        keep.soa = Some(at + 4);
                        ttl = ttl.min(keep.negative);
                    } else if kind == Kind::Negative {
                        return None; // two SOAs: not a negative answer we know
                    }
                }
                ttls[keep.ttls] = (at + 4) as u16;
                keep.ttls += 1;
                keep.lifetime = keep.lifetime.min(ttl);
            }
        }
        at = rdata_at + rdlen;
    }
    // Trailing bytes, or (RFC 2308) a negative answer without an SOA.
    if at != a.len() || (kind == Kind::Negative && keep.soa.is_none()) || keep.lifetime == 0 {
        return None;
    }
    Some(keep)
}
