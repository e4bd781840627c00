//! The DNS side: UDP and TCP listeners and the query handler.
//!
//! Built on hickory-proto's wire codec rather than hickory-server's request
//! pipeline, because the stock server answers QR-set datagrams, does not echo
//! the question exactly and mishandles other classes (measured); owning the
//! loop also lets the hot path stay free of per-query task spawns for
//! anything answered from the snapshot. Hickory types do not leave this module.

pub mod cache;
#[cfg(test)]
mod cache_tests;
pub mod fast;
#[cfg(test)]
mod fast_tests;
#[doc(hidden)]
pub mod fixture;
mod forward;
pub mod fuzz;
pub mod guard;
mod handler;
mod message;
mod mmsg;
mod relay;
pub mod targets;
mod tcp;
mod udp;
mod zone;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use forward::ForwardError;
pub use guard::Guard;
pub use handler::{Handler, Plan, Reply};
pub use zone::NameConversion;

/// How the query arrived, which bounds the answer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The handler in force; swapped whole on a config reload.
pub type SharedHandler = Arc<ArcSwap<Handler>>;

/// How long shutdown waits for queries that are already being answered.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves until `shutdown` is true, then stops accepting and waits (at most
/// [`DRAIN`]) for queries already in progress (upstream waits, open TCP
/// exchanges) to be answered. UDP sockets are served by batched worker
/// threads (see `udp`); TCP by the runtime; upstreams taken out of use are
/// health-checked by a task of their own, off the query path.
pub async fn serve(
    handler: SharedHandler,
    shared: Arc<crate::shared::Shared>,
    guard: Arc<Guard>,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<TcpListener>,
    shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(tcp::Registry::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads = match udp::spawn(udp, handler.clone(), shared.clone(), guard.clone(), stop.clone()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the UDP workers; serving TCP only");
            Vec::new()
        }
    };
    let mut tasks = JoinSet::new();
    for l in tcp {
        tasks.spawn(tcp::accept_loop(l, handler.clone(), registry.clone(), shutdown.clone()));
    }
    tasks.spawn(health_checks(
        handler.clone(),
        shared.clone(),
        guard.clone(),
        registry.clone(),
        shutdown.clone(),
    ));
    let mut rx = shutdown.clone();
    crate::shutdown::stopped(&mut rx).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    while tasks.join_next().await.is_some() {}
    let drained = async {
        while guard.in_flight() > 0 || !registry.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::warn!("shutdown: some queries were still waiting on upstreams after {DRAIN:?}; dropping them");
    }
}

/// Lowers the calling thread's scheduling priority by `nice` (Linux nice
/// values are per thread). Used for everything that may compete with the UDP
/// workers for a CPU under load: the relays, the async runtime's threads.
pub fn lower_priority(nice: i32) {
    // SAFETY: plain syscalls on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + nice).min(19));
    }
}

/// Every `[upstream] health_check` (at most every second), asks each upstream that is out of use
/// whether it answers again (see [`guard::UpstreamState`]).
/// Also refreshes the gauges of the limits (memory, in flight, TCP).
async fn health_checks(
    handler: SharedHandler,
    shared: Arc<crate::shared::Shared>,
    guard: Arc<Guard>,
    tcp: Arc<tcp::Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let every = shared
            .config
            .load()
            .upstream
            .as_ref()
            .map_or(Duration::from_secs(1), |u| u.health_check)
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
        let m = &shared.metrics;
        m.memory_used.set(guard.used() as i64);
        m.in_flight.set(guard.in_flight() as i64);
        m.tcp_connections.set(tcp.len() as i64);
        let h = handler.load_full();
        let Some(fwd) = h.forwarder() else { continue };
        let mut checks = JoinSet::new();
        for u in fwd.upstreams().iter().filter(|u| u.state.is_down()) {
            let (fwd, u) = (fwd.clone(), u.clone());
            checks.spawn(async move {
                if !fwd.check(&u).await {
                    tracing::debug!(upstream = %u.addr, "health check: still no answer");
                }
            });
        }
        while checks.join_next().await.is_some() {}
    }
}
