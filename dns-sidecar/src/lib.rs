//! dns-sidecar: an authoritative DNS alias that follows the writable
//! PostgreSQL server across failovers.
//!
//! Data flows one way:
//! config -> one prober task per server (`probe`) -> the engine (`engine`)
//! running the pure decision (`decision::decide`) -> an immutable routes
//! snapshot (`routes::Routes`) in an `ArcSwap` -> the DNS side (`dns`), which
//! only reads the snapshot. The admin listener reads the status snapshot and
//! sends overrides to the engine.
//!
//! [`run`] starts all of it on listeners the caller bound, so tests run the
//! real server on port 0 and the binary stays a thin wrapper.
//!
//! # The public API
//!
//! Small on purpose: everything else is private to the crate, so that the
//! compiler reports what nothing uses (and, with the `testing` feature, warns
//! of a `pub` item nothing outside can reach: new items are `pub(crate)`
//! unless exported here). Its users:
//!
//! - **The binary** (`src/main.rs`): [`daemon::run`] (`dns-sidecar run`),
//!   [`client`] (`dns-sidecar admin ...`), `demo` (`dns-sidecar demo`,
//!   feature `demo`), [`config::Config`] (`dns-sidecar check-config`) and
//!   [`lower_priority`] for its runtime's threads.
//! - **Embedders and the integration tests** (`tests/integration`): [`start`]
//!   / [`run`] on [`Listeners`], the [`Running`] sidecar (its [`Shared`]
//!   state, [`control::Control`], reload and stop), the admin API's client
//!   ([`client::Client`]) and its JSON ([`status`], [`control::Override`]).
//! - **Tests, benches and the fuzz crate only**: `testing` (feature
//!   `testing`, never in the product): the admin listener alone, the
//!   decision, the DNS side's fixture and fuzz targets, the cache on a
//!   manual clock.
//!
//! The testbed (`tests/testbed`) does not use this crate: the crate uses it.

#![cfg_attr(feature = "testing", warn(unreachable_pub))]
// `testing` re-exports internals (the decision, the cache, the DNS side's
// plan) whose docs link to their private neighbours; those links are for
// contributors and resolve in `cargo doc --document-private-items`.
#![cfg_attr(feature = "testing", allow(rustdoc::private_intra_doc_links))]

// The public API (see the module doc): the entry points of the binary and
// the admin CLI, the config and the admin API's types.
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;

// Everything else is the crate's own: private, so that the compiler reports
// what nothing uses.
mod admin;
mod credential;
mod decision;
mod dns;
mod engine;
mod episodes;
#[cfg(feature = "testing")]
mod failpoint;
mod hook;
mod listeners;
mod metrics;
mod name;
mod observation;
mod probe;
mod routes;
mod shared;
mod shutdown;
mod statefile;
mod status_reader;
mod supervise;
mod wallclock;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::control::Control;
use crate::metrics::ResultLabel;
use crate::probe::supervisor::{Probers, SetupError};
use crate::supervise::{Death, Supervisor};

pub use dns::lower_priority;
#[cfg(test)]
use listeners::bind_group;
use listeners::to_tokio;
pub use listeners::Listeners;
pub use shared::Shared;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}/{proto}: {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Probe(#[from] SetupError),
    #[error(transparent)]
    Names(#[from] dns::NameConversion),
    #[error("upstream {upstream} is this sidecar's own listener {listener}; forwarding to it would loop")]
    ForwardLoop { upstream: SocketAddr, listener: SocketAddr },
    /// A long-lived task died while serving (see [`Running::died`]).
    #[error("{0}; stopped")]
    Died(Death),
}

/// Why a reload was rejected (the old config keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("the engine has stopped")]
    Stopped,
}

/// Runs the sidecar until `shutdown` resolves, then stops gracefully; or
/// until a long-lived task dies: then it stops too and returns
/// [`RunError::Died`].
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let mut running = start(config, listeners)?;
    let died = tokio::select! {
        _ = shutdown => None,
        d = running.died() => Some(d),
    };
    running.stop().await;
    died.map_or(Ok(()), |d| Err(RunError::Died(d)))
}

/// How long [`Running::died`] waits, after a task ended, for the panic that
/// may have caused it.
const SETTLE: Duration = Duration::from_millis(100);

/// A started sidecar; see [`start`].
pub struct Running {
    pub shared: Arc<Shared>,
    pub control: Control,
    /// The DNS addresses bound.
    pub local_addrs: Vec<SocketAddr>,
    /// The admin listener's address, when enabled.
    pub admin_addr: Option<SocketAddr>,
    handler: dns::SharedHandler,
    /// What the DNS side keeps across reloads (each handler is built on it).
    dns: dns::ProcessWide,
    probers: Probers,
    observations: mpsc::Sender<observation::ProbeReport>,
    reconfigure: mpsc::Sender<engine::Reconfigure>,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    /// The admin listener stops last, so that `/healthz` says "failing" or
    /// "stopping" while the rest goes down, rather than nothing.
    /// (A set of its own: dropping `Running` aborts it, as it does the rest.)
    admin: (watch::Sender<bool>, tokio::task::JoinSet<()>),
    supervisor: Supervisor,
    deaths: mpsc::UnboundedReceiver<Death>,
}

fn check_loop(config: &Config, local: &[SocketAddr]) -> Result<(), RunError> {
    // `[upstream]` and every `[[forward]]` zone.
    for (_, up) in config.upstreams() {
        for &u in &up.servers {
            if let Some(&l) = local.iter().find(|&&l| config::forwards_to_self(l, u)) {
                return Err(RunError::ForwardLoop {
                    upstream: u,
                    listener: l,
                });
            }
        }
    }
    Ok(())
}

/// The DNS side's process-wide parts for `shared`'s config, and the
/// handler in force built on them.
fn dns_side(shared: &Shared) -> Result<(dns::ProcessWide, dns::SharedHandler), RunError> {
    let config = shared.config.load_full();
    let metrics = shared.metrics.clone();
    let cache = Arc::new(dns::cache::Cache::new(&config.cache, metrics.cache.clone()));
    cache.configure_from(&config);
    let _ = shared.cache.set(cache.clone());
    let on = dns::ProcessWide {
        guard: dns::Guard::new(metrics.clone()),
        metrics,
        routes: shared.routes.clone(),
        addresses: Arc::default(),
        cache,
    };
    let handler = Arc::new(ArcSwap::from_pointee(dns::Handler::new(&config, &on)?));
    Ok((on, handler))
}

/// Starts the admin listener, when there is one, in a set of its own: it
/// stops last (see [`Running::stop`]). Returns its stop signal and task.
fn spawn_admin(
    sup: &Supervisor,
    admin: Option<tokio::net::TcpListener>,
    shared: &Arc<Shared>,
    control: &Control,
) -> (watch::Sender<bool>, tokio::task::JoinSet<()>) {
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let mut admin_task = tokio::task::JoinSet::new();
    if let Some(a) = admin {
        admin_task.spawn(sup.watch(
            "admin listener",
            admin::serve(a, shared.clone(), control.clone(), admin_stop_rx),
        ));
    }
    (admin_stop, admin_task)
}

/// Starts probes, the engine, the DNS listeners and the admin listener; must
/// be called inside a tokio runtime.
pub fn start(config: Config, listeners: Listeners) -> Result<Running, RunError> {
    let local_addrs = listeners.local_addrs();
    check_loop(&config, &local_addrs)?;
    let admin_addr = listeners.admin_addr();
    let shared = Arc::new(Shared::new(config));
    let config = shared.config.load_full();
    let (dns, handler) = dns_side(&shared)?;
    let (udp, tcp, admin) = to_tokio(listeners)?;

    let (stop, stop_rx) = watch::channel(false);
    let (supervisor, deaths) = Supervisor::new(stop_rx.clone(), shared.health.clone());
    let (obs_tx, obs_rx) = mpsc::channel(1024);
    let (control_tx, control_rx) = mpsc::channel(16);
    let (reconf_tx, reconf_rx) = mpsc::channel(1);
    let (hook_tx, hook_rx) = mpsc::channel(64);
    let (confirmed_tx, confirmed_rx) = mpsc::channel(16);
    let mut probers = Probers::new(
        shared.incident.subscribe(),
        supervisor.clone(),
        shared.metrics.credential_refreshes.clone(),
    );
    probers.sync(&config, &obs_tx)?;
    let control = Control::new(control_tx);
    let mut tasks = tokio::task::JoinSet::new();
    let inputs = engine::Inputs {
        observations: obs_rx,
        control: control_rx,
        reconfigure: reconf_rx,
        hooks: hook_tx,
        hooks_confirmed: confirmed_rx,
    };
    let sup = &supervisor;
    tasks.spawn(sup.watch("engine", engine::run(shared.clone(), inputs, stop_rx.clone())));
    tasks.spawn(sup.watch(
        "hook runner",
        hook::runner(hook_rx, confirmed_tx, shared.clone(), stop_rx.clone()),
    ));
    tasks.spawn(sup.watch(
        "targets refresher",
        dns::targets::refresher(shared.config.clone(), dns.addresses.clone(), stop_rx.clone()),
    ));
    tasks.spawn(sup.watch(
        "dns listeners",
        dns::serve(
            sup.clone(),
            handler.clone(),
            shared.config.clone(),
            shared.metrics.clone(),
            (udp, tcp),
            stop_rx.clone(),
        ),
    ));
    let admin = spawn_admin(sup, admin, &shared, &control);
    info!(listen = ?local_addrs, admin = ?admin_addr, aliases = config.aliases.len(), servers = config.servers.len(), "dns-sidecar started");
    Ok(Running {
        shared,
        control,
        local_addrs,
        admin_addr,
        handler,
        dns,
        probers,
        observations: obs_tx,
        reconfigure: reconf_tx,
        stop,
        tasks,
        admin,
        supervisor,
        deaths,
    })
}

impl Running {
    /// Swaps in a new config without dropping answers: the new DNS handler
    /// and probers are built first (any failure rejects the reload and the old
    /// config keeps serving), then the engine carries its state over (servers
    /// whose settings are unchanged keep their connections and probe state),
    /// then the handler is swapped. Listener addresses cannot change without
    /// a restart; a reload that changes them is applied except for that, with
    /// a warning.
    pub async fn reload(&mut self, config: Config) -> Result<(), ReloadError> {
        let result = self.try_reload(config).await;
        let label = if result.is_ok() { "ok" } else { "rejected" };
        self.shared
            .metrics
            .reloads
            .get_or_create(&ResultLabel { result: label.into() })
            .inc();
        result
    }

    async fn try_reload(&mut self, config: Config) -> Result<(), ReloadError> {
        check_loop(&config, &self.local_addrs)?;
        let old = self.shared.config.load_full();
        if config.dns.listen != old.dns.listen || config.admin.listen != old.admin.listen {
            warn!("listener addresses changed in the config; they apply at the next restart");
        }
        let handler = dns::Handler::new(&config, &self.dns).map_err(RunError::from)?;
        let config = Arc::new(config);
        let report = self.probers.sync(&config, &self.observations).map_err(RunError::from)?;
        let (done, wait) = oneshot::channel();
        self.reconfigure
            .send(engine::Reconfigure {
                config: config.clone(),
                done,
            })
            .await
            .map_err(|_| ReloadError::Stopped)?;
        wait.await.map_err(|_| ReloadError::Stopped)?;
        // Before the new handler answers: names of zones it adds leave the
        // cache, and no answer for them is kept from now on.
        self.dns.cache.configure_from(&config);
        self.handler.store(Arc::new(handler));
        // Zones the new config dropped lose their upstreams' health.
        self.dns.guard.health.retain(config.upstreams().map(|(zone, _)| zone));
        self.shared.config.store(config);
        info!(started = ?report.started, restarted = ?report.restarted, renamed = ?report.renamed, stopped = ?report.stopped, "configuration reloaded");
        Ok(())
    }

    /// Resolves when a long-lived task (the engine, a prober, the hook
    /// runner, the targets refresher, a DNS listener thread or task, the
    /// admin listener) has ended or panicked without being asked to stop:
    /// the sidecar is then broken (`/healthz` already fails), and the caller
    /// should [`Running::stop`] it and exit non-zero. Never resolves
    /// otherwise.
    /// The death named is the cause when one can be told: a panic reported
    /// within `SETTLE` (100 ms) of the first death wins over an end (tasks whose
    /// channels a panicking task dropped may end, and be reported, first).
    pub async fn died(&mut self) -> Death {
        let Some(first) = self.deaths.recv().await else {
            // Unreachable: `self.supervisor` keeps the channel open.
            return std::future::pending().await;
        };
        if first.cause != supervise::Cause::Ended {
            return first;
        }
        tokio::time::sleep(SETTLE).await;
        self.shared.health.death().unwrap_or(first)
    }

    /// The supervisor of this sidecar's tasks: wrap a task in
    /// `Supervisor::watch` to have its death reported by [`Running::died`].
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Stops gracefully: listeners stop accepting, queries in progress are
    /// answered, probe connections are closed; waits at most ten seconds,
    /// then (at most five more) for the admin listener, which stops last and
    /// answers `/healthz` with 503 meanwhile.
    pub async fn stop(mut self) {
        self.shared.health.set_stopping();
        let _ = self.stop.send(true);
        self.probers.stop_all().await;
        drop(self.observations);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all).await.is_err() {
            self.tasks.abort_all();
        }
        let (admin_stop, admin) = &mut self.admin;
        let _ = admin_stop.send(true);
        if tokio::time::timeout(Duration::from_secs(6), admin.join_next())
            .await
            .is_err()
        {
            admin.abort_all();
        }
        info!("dns-sidecar stopped");
    }
}

#[cfg(test)]
mod bind_tests;
