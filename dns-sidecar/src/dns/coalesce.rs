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
//! only queries whose answers may be the same are coalesced, and the
//! listening address the query came in on (the answer must leave from it:
//! workers of one address share it, another address's do not). Queries with
//! EDNS options that may make the answer client-specific (client subnet...)
//! are never coalesced.
//!
//! The key needs no forward zone: the zone is a function of the name
//! ([`super::forward_zones`]), so identical questions go to the same zone's
//! upstreams and share its cache policy (a `cache = false` zone's answer is
//! shared with those waiting on it, never kept). Only across a reload that
//! moves a name to another zone may a waiter get the answer of the query
//! its old zone's upstream was already asked.

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
pub(super) const MAX_WAITERS: usize = 64;
const SHARDS: usize = 16;

/// The coalescing key of a query (see the module doc).
pub(super) type Key = Box<[u8]>;

/// A client waiting on another query's answer.
pub(super) struct Waiter {
    pub(crate) client: SocketAddr,
    /// Its query as sent (its ID, question case and flags).
    pub(crate) query: Box<[u8]>,
    pub(crate) started: Instant,
    pub(crate) _ticket: Ticket,
}

/// What [`Coalesce::join`] did.
pub(super) enum Joined {
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

/// One shard: the questions in flight (by key) and who waits on each.
type Shard = HashMap<Key, Vec<Waiter>>;

pub(super) struct Coalesce {
    shards: Box<[Mutex<Shard>]>,
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
    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the query of `w` (read as `qn`), received on the listening
    /// address `local`: leader, waiter, or alone.
    pub(super) fn join(&self, qn: &Question, local: SocketAddr, w: Waiter) -> Joined {
        if !qn.plain {
            return Joined::Alone(w);
        }
        let mut buf = [0u8; KEY_MAX];
        let k = entry_key(&w.query, qn, &mut buf);
        let mut key = Vec::with_capacity(k.len() + 1 + 18);
        key.extend_from_slice(k);
        key.push(w.query[2] & 0x01);
        match local.ip() {
            std::net::IpAddr::V4(ip) => key.extend_from_slice(&ip.octets()),
            std::net::IpAddr::V6(ip) => key.extend_from_slice(&ip.octets()),
        }
        key.extend_from_slice(&local.port().to_be_bytes());
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
    pub(super) fn take(&self, key: &[u8]) -> Vec<Waiter> {
        self.shard(key).remove(key).unwrap_or_default()
    }

    /// Questions in flight.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// `answer` (the upstream's, to another client's identical question) made
/// the answer to `query`: its ID, question name as asked and RD bit. Returns
/// false when the answer is too short to carry the question.
pub(super) fn adapt(answer: &mut [u8], query: &[u8], qn: &Question) -> bool {
    if answer.len() < qn.qname_end || query.len() < qn.qname_end {
        return false;
    }
    answer[..2].copy_from_slice(&query[..2]);
    answer[2] = (answer[2] & !0x01) | (query[2] & 0x01);
    answer[HEADER_LEN..qn.qname_end].copy_from_slice(&query[HEADER_LEN..qn.qname_end]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::fixture::fixture;
    use crate::dns::question::question;

    /// A query for `name` (wire labels given as text), type A, with `rd`.
    fn query(id: u16, name: &str, rd: bool) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[u8::from(rd), 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.').filter(|l| !l.is_empty()) {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn identical_questions_wait_on_the_first_and_get_its_answer_as_their_own() {
        let (_, h, _) = fixture();
        let c = Coalesce::default();
        let waiter = |q: &[u8]| Waiter {
            client: "127.0.0.1:1".parse().unwrap(),
            query: q.into(),
            started: Instant::now(),
            _ticket: h
                .forwarding()
                .guard()
                .try_forward(100, h.forwarding().limits())
                .unwrap(),
        };
        let first = query(1, "www.example.test", true);
        let qn = question(&first, 1232).unwrap();
        let here: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let Joined::Leader(key, _) = c.join(&qn, here, waiter(&first)) else {
            panic!("the first is the leader")
        };
        // The same name in another case: waits.
        let second = query(2, "WWW.Example.TEST", true);
        let qn2 = question(&second, 1232).unwrap();
        assert!(matches!(c.join(&qn2, here, waiter(&second)), Joined::Waiting));
        // RD=0 is another question (its answer may differ), and so is another name.
        let rd0 = query(3, "www.example.test", false);
        assert!(matches!(
            c.join(&question(&rd0, 1232).unwrap(), here, waiter(&rd0)),
            Joined::Leader(..)
        ));
        let other = query(4, "ftp.example.test", true);
        assert!(matches!(
            c.join(&question(&other, 1232).unwrap(), here, waiter(&other)),
            Joined::Leader(..)
        ));
        // The same question received on another listening address: its
        // answer must leave from there.
        assert!(matches!(
            c.join(&qn2, "127.0.0.1:5353".parse().unwrap(), waiter(&second)),
            Joined::Leader(..)
        ));
        assert_eq!(c.len(), 4);
        for _ in 1..MAX_WAITERS {
            assert!(matches!(c.join(&qn2, here, waiter(&second)), Joined::Waiting));
        }
        assert!(
            matches!(c.join(&qn2, here, waiter(&second)), Joined::Alone(_)),
            "bounded waiters per question"
        );
        let waiters = c.take(&key);
        assert_eq!(waiters.len(), MAX_WAITERS);
        assert!(c.take(&key).is_empty(), "taken once");
        assert_eq!(c.len(), 3);
        assert_eq!(
            h.forwarding().guard().in_flight(),
            MAX_WAITERS,
            "only the waiters hold tickets (leaders are given back)"
        );

        // The leader's answer, made the second client's.
        let mut answer = first.clone();
        answer[2] |= 0x80;
        answer.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
        answer[7] = 1;
        assert!(adapt(&mut answer, &waiters[0].query, &qn2));
        assert_eq!(&answer[..2], &[0, 2], "its own ID");
        assert_eq!(&answer[12..qn2.qname_end], &second[12..qn2.qname_end], "its own case");
        assert_eq!(answer[2], 0x81, "QR, and its RD");
    }
}
