//! Serve-stale (RFC 8767): when the upstream fails, an entry that expired
//! less than `max_stale` ago answers instead.
//!
//! The upstream failed when every upstream timed out, all are out of use, a
//! limit refused the query, or the upstream answered SERVFAIL or REFUSED.
//! Every TTL of a stale answer is [`STALE_TTL`] (30 s, the RFC's
//! recommendation), and for the next 30 s the entry answers at once
//! without asking the upstream again (the RFC's failure recheck timer).
//! SERVFAIL entries are never served stale, and an upstream's SERVFAIL
//! never replaces an answer that can still be served stale
//! ([`super::Cache::insert`]).

use super::super::question::Question;
use super::entry::{Entry, Kind};
use super::evict::ShardLimits;
use super::write::{write, Ttls};
use super::{Cache, Found};

/// TTL of stale answers, and how long one is given before the upstream is
/// asked again (RFC 8767 section 4 recommends 30 s).
pub(crate) const STALE_TTL: u32 = 30;

impl Entry {
    /// May be answered stale at `now` (whether or not the upstream failed).
    #[inline]
    pub(super) fn stale_ok(&self, now: u64, l: &ShardLimits) -> bool {
        l.serve_stale && self.kind != Kind::ServFail && now.saturating_sub(self.expires()) <= l.max_stale_ms
    }

    /// Answers stale without asking the upstream: it failed for this entry
    /// less than [`STALE_TTL`] s ago.
    #[inline]
    pub(super) fn failing(&self, now: u64, l: &ShardLimits) -> bool {
        now < self.stale_until && self.stale_ok(now, l)
    }
}

impl Cache {
    /// The upstream failed for `q`: answers from an entry that expired less
    /// than `max_stale` ago (or a fresh one stored meanwhile), and answers
    /// it stale without asking the upstream for the next [`STALE_TTL`] s.
    pub(crate) fn stale(&self, q: &[u8], qn: &Question, limit: usize, now: u64, out: &mut [u8]) -> Found {
        self.with_entry(q, qn, |e, l| {
            if e.fresh(now) {
                return write(e, q, qn, limit, Ttls::Aged(e.age(now)), out).map_or(Found::Miss, Found::Fresh);
            }
            if !e.stale_ok(now, l) {
                return Found::Miss;
            }
            e.stale_until = now + STALE_TTL as u64 * 1000;
            e.referenced = true;
            write(e, q, qn, limit, Ttls::Stale, out).map_or(Found::Miss, Found::Stale)
        })
    }
}
