//! Identical questions in flight share one upstream query.
//!
//! When a popular name expires, every client asking for it misses the cache
//! at once; each would otherwise send its own upstream query. The relays
//! (one per UDP worker) share this table instead: the first miss for a
//! question is sent upstream and registered here by its key; later misses
//! for the same question, from any worker, wait on it (each with its own
//! ticket of the budget and in-flight slot) and get the same answer, with
//! their own ID, question case and RD bit. At most [`MAX_WAITERS`] wait on
//! one query; beyond that a query is sent on its own.
//!
//! The key is the forwarding cache's (the name without regard to case, type,
//! class, EDNS, DO and CD: what selects a cache entry) plus the RD bit, so
//! only queries whose answers may be the same are coalesced. Queries with
//! EDNS options that may make the answer client-specific (client subnet...)
//! are never coalesced.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::cache::{entry_key, KEY_MAX};
use super::guard::Ticket;
use super::message::HEADER_LEN;
use super::question::Question;

/// Clients that may wait on one upstream query besides the first.
pub const MAX_WAITERS: usize = 64;
const SHARDS: usize = 16;

/// The coalescing key of a query (see the module doc).
pub type Key = Box<[u8]>;

/// A client waiting on another query's answer.
pub struct Waiter {
    pub client: SocketAddr,
    /// Its query as sent (its ID, question case and flags).
    pub query: Box<[u8]>,
    pub started: Instant,
    pub _ticket: Ticket,
}

/// What [`Coalesce::join`] did.
pub enum Joined {
    /// The first for its question: send it upstream (the waiter is given
    /// back), and [`Coalesce::take`] the waiters with its key when it is
    /// answered or fails.
    Leader(Key, Waiter),
    /// Waits on the query in flight (the waiter is kept).
    Waiting,
    /// Not coalesced (a client-specific query, or too many waiters): send it
    /// on its own. The waiter (its ticket) is given back.
    Alone(Waiter),
}

pub struct Coalesce {
    shards: Box<[Mutex<HashMap<Key, Vec<Waiter>>>]>,
    hasher: RandomState,
}

impl Default for Coalesce {
    fn default() -> Self {
        Coalesce {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Coalesce {
    fn shard(&self, key: &[u8]) -> MutexGuard<'_, HashMap<Key, Vec<Waiter>>> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the query of `w` (read as `qn`): leader, waiter, or alone.
    pub fn join(&self, qn: &Question, w: Waiter) -> Joined {
        if !qn.plain {
            return Joined::Alone(w);
        }
        let mut buf = [0u8; KEY_MAX];
        let k = entry_key(&w.query, qn, &mut buf);
        let mut key = Vec::with_capacity(k.len() + 1);
        key.extend_from_slice(k);
        key.push(w.query[2] & 0x01);
        let key: Key = key.into_boxed_slice();
        let mut shard = self.shard(&key);
        match shard.get_mut(&key) {
            Some(waiters) if waiters.len() < MAX_WAITERS => {
                waiters.push(w);
                Joined::Waiting
            }
            Some(_) => Joined::Alone(w),
            None => {
                shard.insert(key.clone(), Vec::new());
                Joined::Leader(key, w)
            }
        }
    }
    /// The query registered as `key` is done: its waiters, to be answered.
    pub fn take(&self, key: &[u8]) -> Vec<Waiter> {
        self.shard(key).remove(key).unwrap_or_default()
    }

    /// Questions in flight.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// `answer` (the upstream's, to another client's identical question) made
/// the answer to `query`: its ID, question name as asked and RD bit. Returns
/// false when the answer is too short to carry the question.
pub fn adapt(answer: &mut [u8], query: &[u8], qn: &Question) -> bool {
    if answer.len() < qn.qname_end || query.len() < qn.qname_end {
        return false;
    }
    answer[..2].copy_from_slice(&query[..2]);
    answer[2] = (answer[2] & !0x01) | (query[2] & 0x01);
    answer[HEADER_LEN..qn.qname_end].copy_from_slice(&query[HEADER_LEN..qn.qname_end]);
    true
}
