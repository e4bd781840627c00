//! State shared between the parts of a running sidecar. Every field is either
//! an `ArcSwap` snapshot (one writer, lock-free readers) or a metrics handle
//! (atomics), so sharing it never makes a reader wait.

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::routes::Routes;
use crate::status::Status;

pub struct Shared {
    /// The config in force (replaced on reload).
    pub config: ArcSwap<Config>,
    /// What aliases answer; written by the engine, read by the DNS handler.
    pub routes: ArcSwap<Routes>,
    /// The `/status` document; written by the engine, read by the admin listener.
    pub status: ArcSwap<Status>,
    pub metrics: Metrics,
    /// Server ids to probe at the incident interval (written by the engine
    /// while an alias has no matching candidate, read by the probers).
    pub incident: tokio::sync::watch::Sender<std::sync::Arc<std::collections::BTreeSet<String>>>,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        Shared {
            routes: ArcSwap::from_pointee(Routes::pending(&config)),
            status: ArcSwap::from_pointee(Status::default()),
            config: ArcSwap::from_pointee(config),
            metrics: Metrics::new(),
            incident: tokio::sync::watch::Sender::new(std::sync::Arc::default()),
        }
    }
}
