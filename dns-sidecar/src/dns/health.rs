//! Health checks of the upstreams taken out of use, off the query path.
//!
//! The circuit breaker itself (when an upstream goes out of use, and the
//! shared per-address state) lives in [`super::guard`]; the query path only
//! reads it. This task is what brings an upstream back: it asks each one out
//! of use whether it answers again (see [`super::forward::Forwarder::check`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::guard::Guard;
use super::handler::SharedHandler;
use super::tcp;
use crate::shared::Shared;

/// Every `[upstream] health_check` (at most every second), asks each upstream that is out of use
/// whether it answers again (see [`super::guard::UpstreamState`]).
/// Also refreshes the gauges of the limits (memory, in flight, TCP).
pub(super) async fn health_checks(
    handler: SharedHandler,
    shared: Arc<Shared>,
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
