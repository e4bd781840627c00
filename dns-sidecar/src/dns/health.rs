//! Upstream health, judged by health checks (as CoreDNS's `forward` plugin
//! does), never by one name's failures.
//!
//! A client query that times out is a fact about its *name* first: a dead
//! domain (nameservers that never answer) times out at a perfectly healthy
//! resolver. So a timeout only makes the upstream *suspect*: the health task
//! asks it `. NS` at once (see [`super::forward::Forwarder::check`]). Only
//! `max_fails` failed health checks in a row take it out of use; any answer
//! (to a health check or to a client query) puts it back. The timed-out
//! name itself is remembered for `[cache] servfail_ttl` (a SERVFAIL entry in
//! the forwarding cache, see [`super::admission`]) and costs nothing else.
//!
//! When every upstream is out of use, forwarding does not stop: one query
//! per upstream every [`TRIAL_EVERY`] is still sent to it (the others are
//! answered at once: stale from the cache, else SERVFAIL), so a health check
//! that misjudges cannot black out every name, and the first answer puts the
//! upstream back in use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::guard::Guard;
use super::handler::SharedHandler;
use super::tcp;
use crate::config::Config;
use crate::metrics::Metrics;

/// While every upstream is out of use, one query per upstream this often is
/// still sent to it.
pub(super) const TRIAL_EVERY: Duration = Duration::from_millis(250);
/// Suspicion-triggered health checks of one upstream start at most this
/// often (a wave of timeouts asks once, not once per query).
const SUSPECT_GAP: Duration = Duration::from_millis(50);

/// Health of one upstream, shared by every forwarder and relay.
#[derive(Debug, Default)]
pub(crate) struct UpstreamState {
    /// Failed health checks in a row.
    fails: AtomicU32,
    down: AtomicBool,
    /// A client query to it timed out since its last health check.
    suspect: AtomicBool,
    /// When (ms since [`Health`]'s epoch, plus one) a query was last let
    /// through while every upstream was out of use; 0 = never.
    last_trial: AtomicU64,
}

impl UpstreamState {
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// An answer arrived (to a client query or a health check): the
    /// upstream (of forward zone `zone`) is usable.
    pub(crate) fn success(&self, zone: &str, addr: SocketAddr, metrics: &Metrics) {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        // A load first: every answer comes here, and the swap (a locked
        // read-modify-write) is only needed when the upstream was out.
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            info!(upstream = %addr, zone, "upstream answers again; forwarding to it");
            metrics.upstream_up(zone, addr, true);
        }
    }

    /// A client query timed out (or could not be sent): the upstream may be
    /// sick, or only the name. Returns whether this is news (the health
    /// task should be woken).
    pub(crate) fn suspect(&self) -> bool {
        !self.suspect.load(Ordering::Relaxed) && !self.suspect.swap(true, Ordering::Relaxed)
    }

    /// A health check got no answer: after `max_fails` in a row the upstream
    /// is taken out of use.
    pub(crate) fn check_failed(&self, zone: &str, addr: SocketAddr, max_fails: u32, metrics: &Metrics) {
        let n = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= max_fails && !self.down.swap(true, Ordering::Relaxed) {
            warn!(upstream = %addr, zone, failed_checks = n, "upstream taken out of use after failed health checks; forwarding to it only as a trial while no upstream of its zone is in use");
            metrics.upstream_up(zone, addr, false);
        }
    }

    /// Whether the health task should ask it now: out of use, suspect, or
    /// on a run of failed checks.
    fn needs_check(&self) -> bool {
        self.is_down() || self.suspect.load(Ordering::Relaxed) || self.fails.load(Ordering::Relaxed) != 0
    }

    /// Takes this upstream's trial slot (see the module doc) at `now_ms`.
    pub(crate) fn try_trial(&self, now_ms: u64) -> bool {
        let every = TRIAL_EVERY.as_millis() as u64;
        let last = self.last_trial.load(Ordering::Relaxed);
        (last == 0 || now_ms + 1 >= last + every)
            && self
                .last_trial
                .compare_exchange(last, now_ms + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Every upstream's state, per forward zone (the `[upstream]` default is
/// zone `.`); shared across reloads. A zone's health is its own: the same
/// resolver listed by two zones has two states (one zone's dead domain
/// cannot take the other's resolver out of use). Also wakes the health task
/// when a query makes an upstream suspect.
pub(crate) struct Health {
    map: Mutex<HashMap<Box<str>, ZoneHealth>>,
    wake: Notify,
    epoch: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            map: Mutex::default(),
            wake: Notify::new(),
            epoch: Instant::now(),
        }
    }
}

/// One zone's upstreams (in order) and their states.
struct ZoneHealth {
    servers: Vec<SocketAddr>,
    states: Vec<Arc<UpstreamState>>,
}

impl Health {
    /// The states of `zone`'s upstreams `servers`, in order: the ones it had
    /// when its list is unchanged (a reload keeps a zone's health), fresh
    /// ones (every upstream in use) when the list changed or the zone is
    /// new. Returns whether they are fresh.
    pub(crate) fn zone(&self, zone: &str, servers: &[SocketAddr]) -> (Vec<Arc<UpstreamState>>, bool) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(z) = m.get(zone).filter(|z| z.servers == servers) {
            return (z.states.clone(), false);
        }
        let states: Vec<Arc<UpstreamState>> = servers.iter().map(|_| Arc::default()).collect();
        let z = ZoneHealth {
            servers: servers.to_vec(),
            states: states.clone(),
        };
        m.insert(zone.into(), z);
        (states, true)
    }

    /// Forgets the zones not in `keep` (after a reload removed them).
    pub(crate) fn retain<'a>(&self, keep: impl Iterator<Item = &'a str>) {
        let keep: Vec<&str> = keep.collect();
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|z, _| keep.contains(&&**z));
    }

    /// A query to `u` timed out: have it health-checked soon.
    pub(crate) fn suspect(&self, u: &UpstreamState) {
        if u.suspect() {
            self.wake.notify_one();
        }
    }

    /// Milliseconds since this table was made (the trial clock).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Health-checks the upstreams of every zone that are suspect (at once),
/// out of use or on a run of failed checks (every shortest `health_check`
/// of any zone, at most every second). Also refreshes the gauges of the limits (memory, in flight, TCP).
pub(super) async fn health_checks(
    handler: SharedHandler,
    config: Arc<ArcSwap<Config>>,
    metrics: Arc<Metrics>,
    guard: Arc<Guard>,
    tcp: Arc<tcp::Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // The shortest `health_check` of any zone, at most a second.
        let every = config
            .load()
            .upstreams()
            .map(|(_, u)| u.health_check)
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = guard.health.wake.notified() => {
                // A wave of timeouts wakes us once per gap, not per query.
                tokio::time::sleep(SUSPECT_GAP).await;
            }
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
        let m = &metrics;
        m.memory_used.set(guard.used() as i64);
        m.in_flight.set(guard.in_flight() as i64);
        m.tcp_connections.set(tcp.len() as i64);
        let h = handler.load_full();
        let mut checks = JoinSet::new();
        for fwd in h.forwarding().zones().all() {
            for u in fwd.upstreams().iter().filter(|u| u.state.needs_check()) {
                // Suspicions raised while this check runs ask again.
                u.state.suspect.store(false, Ordering::Relaxed);
                let (fwd, u) = (fwd.clone(), u.clone());
                checks.spawn(async move {
                    if !fwd.check(&u).await {
                        tracing::debug!(upstream = %u.addr, zone = fwd.zone(), "health check: no answer");
                    }
                });
            }
        }
        while checks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failed_checks_take_an_upstream_out_of_use() {
        let m = Metrics::new();
        let addr: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let u = UpstreamState::default();
        // Timeouts of client queries, however many, only make it suspect.
        assert!(u.suspect());
        for _ in 0..100 {
            assert!(!u.suspect(), "already suspect: no new wake-up");
        }
        assert!(!u.is_down() && u.needs_check());
        u.check_failed(".", addr, 3, &m);
        u.check_failed(".", addr, 3, &m);
        assert!(!u.is_down(), "two failed checks of three");
        u.success(".", addr, &m);
        u.check_failed(".", addr, 3, &m);
        u.check_failed(".", addr, 3, &m);
        assert!(!u.is_down(), "an answer reset the run");
        u.check_failed(".", addr, 3, &m);
        assert!(u.is_down(), "three failed checks in a row");
        u.success(".", addr, &m);
        assert!(!u.is_down());
    }

    #[test]
    fn a_zone_keeps_its_states_while_its_servers_are_unchanged() {
        let m = Metrics::new();
        let h = Health::default();
        let a: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:53".parse().unwrap();
        let (corp, fresh) = h.zone("corp.test.", &[a, b]);
        assert!(fresh);
        corp[0].check_failed("corp.test.", a, 1, &m);
        // The same list (a reload that did not touch the zone): the same states.
        let (again, fresh) = h.zone("corp.test.", &[a, b]);
        assert!(!fresh && again[0].is_down() && Arc::ptr_eq(&again[1], &corp[1]));
        // The same resolver in another zone has a health of its own.
        let (other, _) = h.zone(".", &[a]);
        assert!(!other[0].is_down(), "one zone's failures are not another's");
        // A changed list (order included) starts fresh.
        let (changed, fresh) = h.zone("corp.test.", &[b, a]);
        assert!(fresh && changed.iter().all(|s| !s.is_down()));
        let (back, fresh) = h.zone("corp.test.", &[a, b]);
        assert!(
            fresh && !back[0].is_down(),
            "the old states are gone once the list changed"
        );
        // Zones a reload dropped are forgotten.
        h.retain(["."].into_iter());
        let (_, fresh) = h.zone("corp.test.", &[a, b]);
        assert!(fresh);
        let (_, fresh) = h.zone(".", &[a]);
        assert!(!fresh);
    }

    #[test]
    fn one_trial_per_upstream_per_interval() {
        let u = UpstreamState::default();
        assert!(u.try_trial(0));
        assert!(!u.try_trial(0));
        assert!(!u.try_trial(TRIAL_EVERY.as_millis() as u64 - 1));
        assert!(u.try_trial(TRIAL_EVERY.as_millis() as u64));
        assert!(!u.try_trial(TRIAL_EVERY.as_millis() as u64 + 5));
    }
}
