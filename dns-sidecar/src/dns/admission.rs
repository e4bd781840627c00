//! One policy for "cannot forward now": which queries may wait on an
//! upstream, which upstream they go to, and what a query that may not (or
//! whose upstreams failed) is answered instead. The UDP workers, their
//! relays, the runtime's slow path and TCP all ask here, so a change to the
//! policy cannot miss a path.
//!
//! In order, for a query that needs an upstream (a cache miss, a chased
//! alias target):
//!
//! 1. The allow list (`[dns] allow`) was checked when it arrived, for every
//!    query ([`allows`]): REFUSED (UDP) or a closed connection (TCP).
//! 2. [`admit`]: the client's rate (`forward_rate`, `forward_burst`): REFUSED
//!    beyond it, never a stale answer (a client over its rate gets nothing
//!    of the upstream's). Then one in-flight slot and its bytes of the memory
//!    budget (`forward_in_flight`, `memory`): SERVFAIL without them.
//! 3. [`route`]: which zone's upstreams: the `[[forward]]` zone that is the
//!    name's longest suffix, else `[upstream]`; neither: REFUSED, as the full
//!    path answers a name nothing forwards. Each zone has its own upstreams,
//!    timeout, health and cache policy ([`super::forward_zones`]); the steps
//!    below apply to the zone's upstreams only, so one zone's dead upstreams
//!    never refuse another zone's names.
//!    [`first_upstream`]: the zone's first upstream in use; when every one is
//!    out of use, one that is due a trial (see [`super::health`]); else
//!    SERVFAIL.
//! 4. Whatever refused the query in 2 and 3, but the rate and a name with no
//!    route, a stale answer from the cache (RFC 8767; never for a zone with
//!    `cache = false`) is sent instead of SERVFAIL when there is one
//!    ([`Denied::stale_ok`]); so is it when the upstream answers SERVFAIL or
//!    REFUSED or every upstream tried timed out ([`stale_instead`]).
//! 5. A query whose every upstream timed out is remembered for its name
//!    ([`remember_timeout`]): a SERVFAIL entry in the forwarding cache for
//!    `[cache] servfail_ttl`, so that a name that keeps timing out is
//!    answered at once, and the upstream's health is left to health checks.
//!
//! Every refusal is counted in `dns_sidecar_limited_total` here. Nothing
//! here allocates or locks: a few atomics per forwarded query, none per
//! cached or alias answer.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;

use super::forward::Upstream;
use super::forward_zones::RouteId;
use super::forwarding::Forwarding;
use super::guard::Ticket;
use super::health::Health;
use crate::metrics::Limited;

/// Why a query that needs an upstream is not sent to one now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// Over the client's `forward_rate`.
    Rate,
    /// `forward_in_flight` queries already wait on upstreams.
    InFlight,
    /// The memory budget is used up.
    Memory,
    /// No upstream is configured for the name (no `[[forward]]` zone
    /// matches, and no `[upstream]`).
    NoUpstream,
    /// Every upstream is out of use, and none is due a trial.
    Down,
}

impl Denied {
    /// The answer's rcode: REFUSED over the rate and for a name nothing
    /// forwards (as the full path answers it), SERVFAIL otherwise.
    pub(super) fn rcode(self) -> ResponseCode {
        match self {
            Denied::Rate | Denied::NoUpstream => ResponseCode::Refused,
            _ => ResponseCode::ServFail,
        }
    }

    /// Whether a stale answer from the cache may be sent instead.
    pub(super) fn stale_ok(self) -> bool {
        !matches!(self, Denied::Rate | Denied::NoUpstream)
    }

    fn limited(self) -> Limited {
        match self {
            Denied::Rate => Limited::Rate,
            Denied::InFlight => Limited::InFlight,
            Denied::Memory => Limited::Memory,
            Denied::NoUpstream | Denied::Down => Limited::UpstreamDown,
        }
    }
}

/// Whether a client at `ip` may query at all (`[dns] allow`); a refusal
/// is counted.
#[inline]
pub(super) fn allows(f: &Forwarding, ip: IpAddr) -> bool {
    let ok = super::guard::allowed(f.allow(), ip);
    if !ok {
        f.guard().refused(Limited::Acl);
    }
    ok
}

/// Admits a query from `client` that will wait on an upstream, holding
/// `bytes` of the budget while it waits: the client's rate, then an
/// in-flight slot and the bytes. The refusal is counted.
pub(super) fn admit(f: &Forwarding, client: IpAddr, bytes: u64) -> Result<Ticket, Denied> {
    let g = f.guard();
    let limits = f.limits();
    if !g.rate.allow(client, limits.forward_rate, limits.forward_burst) {
        g.refused(Denied::Rate.limited());
        return Err(Denied::Rate);
    }
    // (The guard counts its own refusals.)
    g.try_forward(bytes, limits).map_err(|r| match r {
        super::guard::Refusal::Memory => Denied::Memory,
        super::guard::Refusal::InFlight => Denied::InFlight,
    })
}

/// Admits a background refresh of a cached answer ([`super::prefetch`]):
/// an in-flight slot and `bytes` of the budget, as a client's query needs,
/// but no client rate (the sidecar asks, not a client), and only while
/// less than half of `forward_in_flight` and of `memory` is in use, so
/// that refreshes never take what client misses need. Refusals here are counted by
/// the prefetcher, not as a client's.
pub(super) fn admit_refresh(f: &Forwarding, bytes: u64) -> Result<Ticket, Denied> {
    let g = f.guard();
    let limits = f.limits();
    if g.in_flight() >= limits.forward_in_flight / 2 || g.used() + bytes > limits.memory / 2 {
        return Err(Denied::InFlight);
    }
    g.try_forward(bytes, limits).map_err(|r| match r {
        super::guard::Refusal::Memory => Denied::Memory,
        super::guard::Refusal::InFlight => Denied::InFlight,
    })
}

/// Which zone's forwarder query `raw` goes to (see [`Forwarding::route`]):
/// [`Denied::NoUpstream`] when none, not counted as a limit (the full path
/// answers such a name REFUSED too).
#[inline]
pub(super) fn route(f: &Forwarding, raw: &[u8]) -> Result<RouteId, Denied> {
    f.route(raw).ok_or(Denied::NoUpstream)
}

/// The upstream a query goes to first: the first in use. When none is, a
/// stale answer at once is better than a trial (`stale` says whether the
/// cache has one: then [`Denied::Down`], and the caller sends it); without
/// one, the first upstream due a trial (see [`super::health`]). A refusal
/// is counted.
pub(super) fn first_upstream(
    f: &Forwarding,
    upstreams: &[Upstream],
    stale: impl FnOnce() -> bool,
) -> Result<usize, Denied> {
    let found = pick(upstreams, &f.guard().health, stale);
    if let Err(why) = found {
        f.guard().refused(why.limited());
    }
    found
}

/// [`first_upstream`] without counting (the runtime's forwarder counts
/// through its caller).
pub(super) fn pick(upstreams: &[Upstream], health: &Health, stale: impl FnOnce() -> bool) -> Result<usize, Denied> {
    if upstreams.is_empty() {
        return Err(Denied::NoUpstream);
    }
    if let Some(i) = upstreams.iter().position(|u| !u.state.is_down()) {
        return Ok(i);
    }
    if stale() {
        return Err(Denied::Down);
    }
    let now = health.now_ms();
    upstreams
        .iter()
        .position(|u| u.state.try_trial(now))
        .ok_or(Denied::Down)
}

/// Whether every upstream is out of use.
pub(super) fn all_down(upstreams: &[Upstream]) -> bool {
    upstreams.iter().all(|u| u.state.is_down())
}

/// The next upstream in use after `tried`, for a query whose upstream timed
/// out (no trial: a query gets one trial at most).
pub(super) fn next_upstream(upstreams: &[Upstream], tried: usize) -> Option<usize> {
    (tried + 1..upstreams.len()).find(|&i| !upstreams[i].state.is_down())
}

/// Whether the upstream's answer with rcode `rcode` should be replaced by a
/// stale answer from the cache when there is one (RFC 8767): SERVFAIL and
/// REFUSED say the upstream could not answer.
#[inline]
pub(super) fn stale_instead(rcode: u8) -> bool {
    matches!(rcode & 0x0F, 2 | 5)
}

/// Every upstream tried for `raw` timed out; `servfail` is the SERVFAIL sent
/// for it. Remembers it for the name (a SERVFAIL entry of the forwarding
/// cache, `[cache] servfail_ttl`), so that the name's next queries are
/// answered at once rather than each waiting on the upstream. A name that
/// can still be answered stale is not replaced (the cache's rule).
pub(super) fn remember_timeout(f: &Forwarding, raw: &[u8], servfail: &[u8]) {
    f.keep(raw, servfail);
}

/// The answer to a query refused with `why` (decoded as `req`, raw `raw`):
/// a stale answer from the cache when allowed and there is one, else
/// `why`'s rcode.
pub(super) fn refusal(
    f: &Forwarding,
    req: &hickory_proto::op::Message,
    raw: &[u8],
    why: Denied,
    transport: super::message::Transport,
) -> Option<super::reply::Reply> {
    if why.stale_ok() {
        if let Some(r) = f.stale(raw, transport) {
            return Some(r);
        }
    }
    f.encoder().refuse(req, why.rcode(), transport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::fixture::fixture;
    use crate::metrics::Metrics;

    fn upstreams(n: usize) -> Vec<Upstream> {
        (0..n)
            .map(|i| Upstream {
                addr: format!("127.0.0.1:{}", 5300 + i).parse().unwrap(),
                state: std::sync::Arc::default(),
            })
            .collect()
    }

    fn down(u: &Upstream) {
        u.state.check_failed(".", u.addr, 1, &Metrics::new());
    }

    #[test]
    fn the_first_upstream_in_use_else_a_stale_answer_else_a_trial() {
        let health = Health::default();
        let us = upstreams(2);
        assert_eq!(pick(&[], &health, || false), Err(Denied::NoUpstream));
        assert_eq!(pick(&us, &health, || panic!("not asked while one is in use")), Ok(0));
        down(&us[0]);
        assert_eq!(pick(&us, &health, || false), Ok(1), "the next in use");
        assert_eq!(next_upstream(&us, 0), Some(1));
        down(&us[1]);
        assert_eq!(next_upstream(&us, 0), None, "no trial on a retry");
        // Every upstream out of use: a stale answer beats a trial...
        assert_eq!(pick(&us, &health, || true), Err(Denied::Down));
        // ... else one trial per upstream per interval, then SERVFAIL.
        assert_eq!(pick(&us, &health, || false), Ok(0));
        assert_eq!(pick(&us, &health, || false), Ok(1));
        assert_eq!(pick(&us, &health, || false), Err(Denied::Down));
        assert!(all_down(&us));
    }

    #[test]
    fn refusals_and_what_answers_them() {
        assert_eq!(Denied::Rate.rcode(), ResponseCode::Refused);
        assert!(
            !Denied::Rate.stale_ok(),
            "over its rate a client gets nothing of the upstream's"
        );
        assert_eq!(Denied::NoUpstream.rcode(), ResponseCode::Refused, "as the full path");
        assert!(!Denied::NoUpstream.stale_ok());
        for d in [Denied::InFlight, Denied::Memory, Denied::Down] {
            assert_eq!(d.rcode(), ResponseCode::ServFail);
            assert!(d.stale_ok());
        }
        assert!(stale_instead(2) && stale_instead(5) && stale_instead(0x82));
        assert!(!stale_instead(0) && !stale_instead(3));
        // The rate comes first, and is per client.
        let (_, h, _) = fixture();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let burst = h.forwarding().limits().forward_burst as usize;
        assert!(
            burst > 0 && h.forwarding().limits().forward_rate > 0,
            "the defaults limit the rate"
        );
        // (Each ticket is dropped at once: only the rate can refuse.)
        let refused = (0..burst + 50)
            .filter(|_| admit(h.forwarding(), ip, 100).err() == Some(Denied::Rate))
            .count();
        assert!(
            (1..=50).contains(&refused),
            "{refused} refused after a burst of {burst}"
        );
        assert!(
            admit(h.forwarding(), "127.0.0.10".parse().unwrap(), 100).is_ok(),
            "another client's bucket"
        );
        assert_eq!(h.forwarding().guard().used(), 0, "refusals hold nothing");
    }
}
