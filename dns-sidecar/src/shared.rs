//! State shared between the parts of a running sidecar. Every field is either
//! an `ArcSwap` snapshot (one writer, lock-free readers), a `watch` channel
//! (one writer, readers that wake on change) or a metrics handle (atomics), so
//! sharing it never makes a reader wait. The snapshots the DNS side reads
//! (config, routes) and the metrics are behind their own `Arc`, so the DNS
//! side is handed those and never this struct.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::routes::Routes;
use crate::status::Status;

pub struct Shared {
    /// The config in force (replaced on reload).
    pub config: Arc<ArcSwap<Config>>,
    /// What aliases answer; written by the engine, read by the DNS handler.
    pub(crate) routes: Arc<ArcSwap<Routes>>,
    /// The `/status` document; written by the engine, read by the admin listener.
    pub status: ArcSwap<Status>,
    pub metrics: Arc<Metrics>,
    /// Ids of the servers to probe at `probe.incident_interval` instead of
    /// `probe.interval` (initially none). Written by the engine while an alias
    /// has no matching target; each prober subscribes and switches cadence
    /// when its own id enters or leaves the set.
    pub incident: watch::Sender<Arc<BTreeSet<String>>>,
    /// The cache of forwarded answers, once the DNS side has started (the
    /// admin listener's `/cache/flush` empties it).
    pub(crate) cache: std::sync::OnceLock<Arc<crate::dns::cache::Cache>>,
    /// What `/healthz` says: failed by the first task death, or by a stop.
    pub(crate) health: Arc<crate::supervise::Health>,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        let metrics = Metrics::new();
        metrics.prepare(&config);
        Shared {
            routes: Arc::new(ArcSwap::from_pointee(Routes::pending(&config))),
            status: ArcSwap::from_pointee(Status::default()),
            config: Arc::new(ArcSwap::from_pointee(config)),
            metrics: Arc::new(metrics),
            incident: watch::Sender::new(Arc::default()),
            cache: std::sync::OnceLock::new(),
            health: Arc::default(),
        }
    }
}
