//! The serving loop: starts the UDP workers, the TCP accept loops and the
//! upstream health checks on the listeners it is given, and on shutdown
//! drains the queries already being answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::guard::Guard;
use super::handler::SharedHandler;
use super::{health, tcp, udp};
use crate::shared::Shared;

/// How long shutdown waits for queries that are already being answered.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves until `shutdown` is true, then stops accepting and waits (at most
/// [`DRAIN`]) for queries already in progress (upstream waits, open TCP
/// exchanges) to be answered. UDP sockets are served by batched worker
/// threads (see `udp`); TCP by the runtime; upstreams taken out of use are
/// health-checked by a task of their own, off the query path.
pub async fn serve(
    handler: SharedHandler,
    shared: Arc<Shared>,
    guard: Arc<Guard>,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<TcpListener>,
    shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(tcp::Registry::default());
    let stop = Arc::new(AtomicBool::new(false));
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
    tasks.spawn(health::health_checks(
        handler.clone(),
        shared.clone(),
        guard.clone(),
        registry.clone(),
        shutdown.clone(),
    ));
    let mut rx = shutdown.clone();
    crate::shutdown::stopped(&mut rx).await;
    stop.store(true, Ordering::Relaxed);
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
