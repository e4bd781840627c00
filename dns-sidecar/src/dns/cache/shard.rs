//! One shard of the table: a map from key hash to a slot of the CLOCK
//! ring, and what it holds counted against its share of the bounds.
//!
//! The table is split into [`super::SHARDS`] mutex-guarded shards by the
//! key's hash, so the UDP workers rarely meet on a lock and never on a
//! global one. Making room (the bounds and the CLOCK hand) is in
//! [`super::evict`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};

use super::entry::Entry;
use super::evict::ShardLimits;
use crate::metrics::CacheMetrics;

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
pub(super) struct Shard {
    /// Key hash -> slot.
    map: HashMap<u64, u32, BuildHasherDefault<Identity>>,
    /// The CLOCK ring.
    pub(super) slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    pub(super) hand: usize,
    pub(super) entries: usize,
    pub(super) bytes: u64,
    pub(super) denials: usize,
    pub(super) denial_bytes: u64,
    pub(super) limits: ShardLimits,
}

/// Locks a shard; a panic under its lock leaves it usable (every change
/// keeps the counts consistent before it could panic).
#[inline]
pub(super) fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shard {
    /// An empty shard with these limits.
    pub(super) fn with_limits(limits: ShardLimits) -> Shard {
        Shard {
            limits,
            ..Shard::default()
        }
    }

    /// Whether an entry (under this key, or another with its hash) is
    /// held: a new one would replace it rather than push out another.
    pub(super) fn holds(&self, hash: u64) -> bool {
        self.map.contains_key(&hash)
    }

    /// The entry under `key` (whose hash is `hash`), if any.
    #[inline]
    pub(super) fn get(&mut self, hash: u64, key: &[u8]) -> Option<&mut Entry> {
        let i = *self.map.get(&hash)? as usize;
        self.slots[i].as_mut().filter(|e| e.key() == key)
    }

    pub(super) fn remove(&mut self, i: usize, m: &CacheMetrics) -> Option<Entry> {
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

    /// Removes the entries whose key's name (lower case, wire form)
    /// `hit` selects; returns how many.
    pub(super) fn remove_where(&mut self, hit: impl Fn(&[u8]) -> bool, m: &CacheMetrics) -> usize {
        let found: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().filter(|e| hit(super::key::name_of(e.key()))).map(|_| i))
            .collect();
        for &i in &found {
            self.remove(i, m);
        }
        found.len()
    }

    pub(super) fn clear(&mut self, m: &CacheMetrics) {
        for i in 0..self.slots.len() {
            self.remove(i, m);
        }
        *self = Shard::with_limits(self.limits);
    }

    /// Keeps `e`, replacing the entry under the same key, when room can be
    /// made for it ([`Shard::make_room`]); returns whether it was kept.
    pub(super) fn put(&mut self, e: Entry, now: u64, m: &CacheMetrics) -> bool {
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
