//! dns-sidecar: an authoritative DNS alias that follows the writable
//! PostgreSQL server across failovers.
//!
//! Data flows one way:
//! config -> one [`probe::Prober`] task per server -> [`engine`] running the
//! pure [`decision::decide`] -> an immutable [`routes::Routes`] snapshot in an
//! `ArcSwap` -> the [`dns`] handler, which only reads the snapshot.
//!
//! [`run`] starts all of it on listeners the caller bound, so tests run the
//! real server on port 0 and the binary stays a thin wrapper.

pub mod admin;
pub mod config;
pub mod control;
pub mod decision;
pub mod demo;
pub mod dns;
pub mod engine;
pub mod metrics;
pub mod name;
pub mod observation;
pub mod probe;
pub mod routes;
pub mod shared;
pub mod shutdown;
pub mod status;
pub mod testbed;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::config::Config;
use crate::routes::{Routes, SharedRoutes};

/// Sockets bound before the server starts (so a port 0 can be learned, and
/// privileged ports bound before dropping privileges).
pub struct Listeners {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

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
    #[error("server `{server}`: {source}")]
    Tls {
        server: String,
        #[source]
        source: probe::TlsSetupError,
    },
    #[error(transparent)]
    Names(#[from] dns::NameConversion),
    #[error("upstream {upstream} is this sidecar's own listener {listener}; forwarding to it would loop")]
    ForwardLoop { upstream: SocketAddr, listener: SocketAddr },
}

impl Listeners {
    /// Binds UDP and TCP on each address. Port 0 picks one free port that is
    /// free for both protocols.
    pub fn bind(addrs: &[SocketAddr]) -> Result<Listeners, RunError> {
        let mut l = Listeners { udp: Vec::new(), tcp: Vec::new() };
        for &addr in addrs {
            let (u, t) = bind_pair(addr)?;
            l.udp.push(u);
            l.tcp.push(t);
        }
        Ok(l)
    }

    /// The addresses actually bound (UDP and TCP share them).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|s| s.local_addr().ok()).collect()
    }
}

fn bind_pair(addr: SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener), RunError> {
    let attempts = if addr.port() == 0 { 50 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = std::net::UdpSocket::bind(addr).map_err(|source| RunError::Bind { addr, proto: "udp", source })?;
        let bound = udp.local_addr().map_err(|source| RunError::Bind { addr, proto: "udp", source })?;
        match std::net::TcpListener::bind(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => last = Some(RunError::Bind { addr: bound, proto: "tcp", source }),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Runs the sidecar until `shutdown` resolves, then stops probes and
/// listeners and returns.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let running = start(config, listeners)?;
    shutdown.await;
    running.stop().await;
    Ok(())
}

/// A started sidecar; see [`run`]. Exposed so callers (the demo, tests) can
/// watch the routes snapshot while it runs.
pub struct Running {
    pub routes: SharedRoutes,
    pub config: Arc<Config>,
    pub local_addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

/// Starts probes, the engine and the DNS listeners; must be called inside a
/// tokio runtime.
pub fn start(config: Config, listeners: Listeners) -> Result<Running, RunError> {
    let local_addrs = listeners.local_addrs();
    if let Some(up) = &config.upstream {
        for &u in &up.servers {
            if let Some(&l) = local_addrs.iter().find(|&&l| crate::config::forwards_to_self(l, u)) {
                return Err(RunError::ForwardLoop { upstream: u, listener: l });
            }
        }
    }
    let config = Arc::new(config);
    let routes: SharedRoutes = Arc::new(ArcSwap::from_pointee(Routes::pending(&config)));
    let handler = Arc::new(dns::Handler::new(&config, routes.clone())?);
    let mut probers = Vec::new();
    for (id, server) in config.servers.iter().enumerate() {
        let p = probe::Prober::new(id, server, config.probe).map_err(|source| RunError::Tls { server: server.id.clone(), source })?;
        probers.push(p);
    }
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for (u, t) in listeners.udp.into_iter().zip(listeners.tcp) {
        let addr = u.local_addr().ok();
        let bind_err = |proto, source| RunError::Bind { addr: addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()), proto, source };
        u.set_nonblocking(true).map_err(|e| bind_err("udp", e))?;
        t.set_nonblocking(true).map_err(|e| bind_err("tcp", e))?;
        udp.push(tokio::net::UdpSocket::from_std(u).map_err(|e| bind_err("udp", e))?);
        tcp.push(tokio::net::TcpListener::from_std(t).map_err(|e| bind_err("tcp", e))?);
    }

    let (stop, stop_rx) = watch::channel(false);
    let (obs_tx, obs_rx) = mpsc::channel(1024);
    let mut tasks = tokio::task::JoinSet::new();
    for p in probers {
        tasks.spawn(p.run(obs_tx.clone(), stop_rx.clone()));
    }
    drop(obs_tx);
    tasks.spawn(engine::run(config.clone(), obs_rx, routes.clone(), stop_rx.clone()));
    tasks.spawn(dns::serve(handler, udp, tcp, stop_rx));
    info!(listen = ?local_addrs, aliases = config.aliases.len(), servers = config.servers.len(), "dns-sidecar started");
    Ok(Running { routes, config, local_addrs, stop, tasks })
}

impl Running {
    /// Stops everything; waits at most a few seconds for tasks to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), all).await.is_err() {
            self.tasks.abort_all();
        }
        info!("dns-sidecar stopped");
    }
}
