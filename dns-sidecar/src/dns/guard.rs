//! What keeps hostile or heavy traffic from taking the sidecar down: one
//! memory budget and one in-flight count for everything that grows with
//! traffic, the client allow list, the per-client rate limit on forwarded
//! queries, and the upstreams' health (judged by health checks: see
//! [`super::health`]).
//!
//! Every check here is a few atomic operations, so the UDP workers can make
//! them per datagram. Nothing waits: when a limit is reached the caller
//! refuses the query at once (SERVFAIL, REFUSED or a closed connection).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub(crate) use super::health::{Health, UpstreamState};
use crate::config::{Cidr, Limits};
use crate::metrics::{Limited, Metrics};

/// Process-wide counters shared by the UDP workers, relays, slow path and
/// TCP connections. Limits come from the handler in force (so a reload
/// changes them); the counts live here so they survive a reload.
pub(crate) struct Guard {
    /// Bytes reserved by live [`Ticket`]s.
    used: AtomicU64,
    /// Queries waiting on an upstream.
    in_flight: AtomicUsize,
    pub(crate) rate: RateLimiter,
    pub(crate) health: Health,
    metrics: Arc<Metrics>,
}

/// Why a query or connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The memory budget is used up.
    Memory,
    /// Too many queries wait on upstreams.
    InFlight,
}

impl Guard {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Arc<Guard> {
        Arc::new(Guard {
            used: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            rate: RateLimiter::new(RATE_BUCKETS),
            health: Health::default(),
            metrics,
        })
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts one refusal.
    pub(crate) fn refused(&self, why: Limited) {
        self.metrics().limited(why);
    }

    /// Reserves `bytes` of the budget and one in-flight slot for a query
    /// that will wait on an upstream.
    pub(crate) fn try_forward(self: &Arc<Self>, bytes: u64, limits: &Limits) -> Result<Ticket, Refusal> {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed);
        if n >= limits.forward_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.refused(Limited::InFlight);
            return Err(Refusal::InFlight);
        }
        match self.try_bytes(bytes, limits) {
            Ok(mut t) => {
                t.flight = true;
                Ok(t)
            }
            Err(e) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Reserves `bytes` of the budget.
    pub(crate) fn try_bytes(self: &Arc<Self>, bytes: u64, limits: &Limits) -> Result<Ticket, Refusal> {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > limits.memory {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            self.refused(Limited::Memory);
            return Err(Refusal::Memory);
        }
        Ok(Ticket {
            guard: self.clone(),
            bytes,
            flight: false,
        })
    }

    /// Bytes reserved now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Queries waiting on upstreams now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A reservation; dropping it gives the bytes (and the in-flight slot) back.
pub(crate) struct Ticket {
    guard: Arc<Guard>,
    bytes: u64,
    flight: bool,
}

impl Ticket {
    /// Grows the reservation by `more` bytes, if the budget allows.
    pub(crate) fn grow(&mut self, more: u64, limits: &Limits) -> Result<(), Refusal> {
        let t = self.guard.try_bytes(more, limits)?;
        self.bytes += t.bytes;
        std::mem::forget(t);
        Ok(())
    }

    /// Shrinks the reservation to `bytes` (never grows it).
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.guard.used.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
            self.bytes = bytes;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.guard.used.fetch_sub(self.bytes, Ordering::Relaxed);
        if self.flight {
            self.guard.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether `ip` may query, by the allow list.
pub(crate) fn allowed(allow: &[Cidr], ip: IpAddr) -> bool {
    allow.iter().any(|c| c.contains(ip))
}

/// Token buckets per client, in a fixed table: clients hash (with a random
/// key) into [`RATE_BUCKETS`] slots, so memory does not grow with the number
/// of sources (a spoofed flood from many addresses only shares buckets).
/// Each slot is one atomic word: the time of the last update (ms, wrapping)
/// and the tokens spent (in 1/64), so an untouched slot is a full bucket.
pub(crate) struct RateLimiter {
    slots: Box<[AtomicU64]>,
    key: std::collections::hash_map::RandomState,
    epoch: Instant,
}

const RATE_BUCKETS: usize = 16384;
const UNIT: u64 = 64;

impl RateLimiter {
    pub(crate) fn new(n: usize) -> RateLimiter {
        RateLimiter {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            key: Default::default(),
            epoch: Instant::now(),
        }
    }

    /// Takes one token for `ip` (IPv6: its /64); false when the bucket is empty.
    /// `rate` 0 means no limit.
    pub(crate) fn allow(&self, ip: IpAddr, rate: u32, burst: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let key: u128 = match ip.to_canonical() {
            IpAddr::V4(v) => u32::from(v) as u128,
            IpAddr::V6(v) => (u128::from(v) >> 64) | (1 << 127),
        };
        let slot = &self.slots[(self.key.hash_one(key) % self.slots.len() as u64) as usize];
        let now = self.epoch.elapsed().as_millis() as u32;
        let capacity = (burst.max(1) as u64 * UNIT).min(u32::MAX as u64);
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let (then, spent) = ((cur >> 32) as u32, cur & 0xFFFF_FFFF);
            let elapsed = now.wrapping_sub(then) as u64;
            let refill = elapsed.saturating_mul(rate as u64 * UNIT) / 1000;
            let spent = spent.saturating_sub(refill);
            if spent + UNIT > capacity {
                return false;
            }
            let next = ((now as u64) << 32) | (spent + UNIT);
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_allows_a_burst_then_refuses() {
        let r = RateLimiter::new(64);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let ok = (0..100).filter(|_| r.allow(ip, 10, 20)).count();
        assert_eq!(ok, 20, "the burst, then nothing (no time passed)");
        assert!(
            r.allow("10.0.0.2".parse().unwrap(), 10, 20) || r.slots.len() < 2,
            "another client has its own bucket"
        );
        assert!((0..1000).all(|_| r.allow(ip, 0, 0)), "rate 0 = no limit");
        std::thread::sleep(std::time::Duration::from_millis(250));
        let ok = (0..100).filter(|_| r.allow(ip, 10, 20)).count();
        assert!((1..=4).contains(&ok), "refilled at 10/s: {ok}");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let r = RateLimiter::new(1024);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        assert_eq!((0..10).filter(|_| r.allow(a, 1, 5)).count(), 5);
        assert!(!r.allow(b, 1, 5), "same /64, same bucket");
    }

    #[test]
    fn allow_list() {
        let allow = Cidr::loopback();
        assert!(allowed(&allow, "127.0.0.1".parse().unwrap()));
        assert!(allowed(&allow, "127.9.9.9".parse().unwrap()));
        assert!(allowed(&allow, "::1".parse().unwrap()));
        assert!(allowed(&allow, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!allowed(&allow, "10.0.0.1".parse().unwrap()));
        assert!(!allowed(&allow, "::2".parse().unwrap()));
    }
}
