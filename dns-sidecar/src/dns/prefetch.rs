//! Prefetch (`[cache] prefetch`): popular cached answers are refreshed
//! shortly before they expire, off the query path, so a busy sidecar's hit
//! rate does not dip at every TTL boundary (CoreDNS's `cache { prefetch }`,
//! Unbound's `prefetch: yes`).
//!
//! The cache decides *which* entry is due ([`super::cache`]: a fresh hit on
//! an entry hit at least `prefetch_hits` times, in the last tenth of its
//! lifetime, once per entry) and offers a copy of the query that hit it to
//! a [`Queue`]: bounded ([`QUEUE`]), never waited on (a full queue drops
//! the refresh, counted), so a UDP worker never blocks. The hit itself is
//! answered from the cache at once.
//!
//! [`run`], a supervised task on the runtime, takes the refreshes and sends
//! each through the same forwarding policy as a client's cache miss
//! ([`super::admission`]: the forwarder of the name's `[[forward]]` zone,
//! else `[upstream]`'s; an in-flight slot and its bytes of the memory
//! budget; the first upstream in use and the upstreams' health; the handler
//! in force, so a reload's upstreams and cache rules apply; a zone with
//! `cache = false` keeps, and so refreshes, nothing). Unlike a client's
//! query it has no client rate (the sidecar asks, not a client), it never
//! takes the last half of `forward_in_flight` (client misses come first),
//! and it never spends an upstream's trial: when every upstream is out of
//! use it is dropped (counted) and health checks decide. At most
//! [`CONCURRENT`] refreshes wait on upstreams at once. The upstream's
//! answer is kept by the cache's ordinary rules ([`Forwarding::keep`]): a new
//! entry with a whole new lifetime; a SERVFAIL or REFUSED never replaces
//! the entry; a failed refresh leaves it to expire as it would have.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch, Semaphore};

use super::admission;
use super::forward::SLOW_COST;
use super::forwarding::Forwarding;
use super::handler::SharedHandler;
use super::message::Transport;
use crate::metrics::CacheMetrics;

/// Refreshes waiting to be sent, at most.
pub(crate) const QUEUE: usize = 256;
/// Refreshes waiting on upstreams at once, at most.
pub(crate) const CONCURRENT: usize = 32;

/// The bounded queue of refreshes between the cache (any thread) and
/// [`run`] (the runtime).
pub struct Queue {
    tx: mpsc::Sender<Box<[u8]>>,
    rx: Mutex<Option<mpsc::Receiver<Box<[u8]>>>>,
}

impl Default for Queue {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Queue {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Queue {
    /// Offers the refresh of `query`'s entry without waiting; a full queue
    /// (or one nobody takes from) drops it, counted.
    pub(crate) fn offer(&self, query: &[u8], m: &CacheMetrics) {
        if self.tx.try_send(query.into()).is_err() {
            m.prefetch_dropped.inc();
        }
    }

    /// The receiving end, once (to [`run`], or a simulation).
    pub fn take(&self) -> Option<Refreshes> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take().map(Refreshes)
    }
}

/// The refreshes offered: each is the query (raw bytes) whose hit made its
/// entry due.
pub struct Refreshes(mpsc::Receiver<Box<[u8]>>);

impl Refreshes {
    /// The next refresh, if one is waiting (the tests' and the load test's
    /// replay; the prefetcher awaits them).
    #[cfg(any(test, feature = "testing"))]
    pub fn try_next(&mut self) -> Option<Box<[u8]>> {
        self.0.try_recv().ok()
    }

    async fn next(&mut self) -> Option<Box<[u8]>> {
        self.0.recv().await
    }
}

/// Sends the refreshes of the process-wide cache until `shutdown`.
pub(super) async fn run(handler: SharedHandler, mut shutdown: watch::Receiver<bool>) {
    let Some(mut jobs) = handler.load().forwarding().cache().prefetch_queue().take() else {
        // Taken already (a second server on the same cache): that one sends them.
        crate::shutdown::stopped(&mut shutdown).await;
        return;
    };
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    loop {
        let query = tokio::select! {
            _ = crate::shutdown::stopped(&mut shutdown) => return,
            q = jobs.next() => match q {
                Some(q) => q,
                None => return,
            },
        };
        let h = handler.load_full();
        let m = h.forwarding().cache().metrics().clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            m.prefetch_dropped.inc();
            continue;
        };
        tokio::spawn(async move {
            if refresh(h.forwarding(), &query).await {
                m.prefetches.inc();
            } else {
                m.prefetch_dropped.inc();
            }
            drop(slot);
        });
    }
}

/// Sends one refresh upstream and keeps the answer (see the module doc).
/// False when it was not sent.
async fn refresh(f: &Forwarding, query: &[u8]) -> bool {
    // The zone's forwarder (`[[forward]]`, else `[upstream]`), as a
    // client's miss is routed; a zone that keeps nothing refreshes nothing.
    let Ok(route) = admission::route(f, query) else {
        return false;
    };
    let fwd = f.zones().get(route);
    if !fwd.caches() || fwd.all_down() {
        return false;
    }
    let Ok(_ticket) = admission::admit_refresh(f, SLOW_COST + query.len() as u64) else {
        return false;
    };
    // Over TCP when the UDP answer is truncated: the cache keeps answers of
    // up to 4096 bytes, which a client may have fetched over TCP.
    match fwd.forward(query, Transport::Tcp).await {
        Ok(answer) => {
            if !admission::stale_instead(answer[3]) {
                f.keep(query, &answer);
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "prefetch failed");
            f.count_upstream_error(fwd.zone(), &e);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::fixture::fixture;

    #[test]
    fn refreshes_never_take_the_half_of_the_slots_and_budget_client_misses_need() {
        let (_, h, _) = fixture();
        let f = h.forwarding();
        let g = f.guard();
        let limits = f.limits().clone();
        let half = limits.forward_in_flight / 2;
        let held: Vec<_> = (0..half - 1).map(|_| g.try_forward(100, &limits).unwrap()).collect();
        let one = admission::admit_refresh(f, 100).expect("below half: admitted");
        assert_eq!(g.in_flight(), half, "it holds a slot like a client's miss");
        assert!(
            admission::admit_refresh(f, 100).is_err(),
            "half the slots in use: refused"
        );
        assert!(g.try_forward(100, &limits).is_ok(), "a client's miss still gets one");
        drop(one);
        drop(held);
        assert_eq!(g.in_flight(), 0);
        // The memory budget likewise: a client's big reservation past half.
        let big = g.try_bytes(limits.memory / 2, &limits).unwrap();
        assert!(admission::admit_refresh(f, 100).is_err(), "half the budget in use");
        drop(big);
        assert!(admission::admit_refresh(f, 100).is_ok());
        assert_eq!(g.used(), 0, "tickets give everything back");
    }

    #[test]
    fn a_full_queue_drops_the_refresh_and_counts_it() {
        let q = Queue::default();
        let m = CacheMetrics::default();
        for _ in 0..QUEUE + 3 {
            q.offer(b"query", &m);
        }
        assert_eq!(m.prefetch_dropped.get(), 3);
        let mut r = q.take().unwrap();
        assert_eq!(std::iter::from_fn(|| r.try_next()).count(), QUEUE);
        q.offer(b"again", &m);
        assert_eq!(r.try_next().as_deref(), Some(&b"again"[..]), "room again once taken");
    }
}
