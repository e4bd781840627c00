//! The DNS side: UDP and TCP listeners and the query handler.
//!
//! Built on hickory-proto's wire codec rather than hickory-server's request
//! pipeline, because the stock server answers QR-set datagrams, does not echo
//! the question exactly and mishandles other classes (measured); owning the
//! loop also lets the hot path stay free of per-query task spawns for
//! anything answered from the snapshot. Hickory types do not leave this module.

pub mod fast;
#[doc(hidden)]
pub mod fixture;
#[cfg(test)]
mod fast_tests;
mod forward;
mod handler;
mod message;
mod mmsg;
mod relay;
pub mod targets;
mod udp;
mod zone;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::debug;

pub use forward::ForwardError;
pub use handler::{Handler, Plan, Reply};
pub use zone::NameConversion;


/// How the query arrived, which bounds the answer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// At most this many queries wait on upstreams at once; more are dropped
/// (the client retries) rather than growing memory without bound.
const MAX_IN_FLIGHT: usize = 4096;
/// At most this many open TCP connections.
const MAX_TCP_CONNECTIONS: usize = 512;
/// A TCP connection idle for this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The handler in force; swapped whole on a config reload.
pub type SharedHandler = Arc<ArcSwap<Handler>>;

/// How long shutdown waits for queries that are already being answered.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves until `shutdown` is true, then stops accepting and waits (at most
/// [`DRAIN`]) for queries already in progress (upstream waits, open TCP
/// exchanges) to be answered. UDP sockets are served by batched worker
/// threads (see `udp`); TCP by the runtime.
pub async fn serve(handler: SharedHandler, shared: Arc<crate::shared::Shared>, udp: Vec<std::net::UdpSocket>, tcp: Vec<TcpListener>, shutdown: watch::Receiver<bool>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let conns = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads = match udp::spawn(udp, handler.clone(), shared, in_flight.clone(), stop.clone()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the UDP workers; serving TCP only");
            Vec::new()
        }
    };
    let mut tasks = JoinSet::new();
    for l in tcp {
        tasks.spawn(tcp_loop(l, handler.clone(), conns.clone(), shutdown.clone()));
    }
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
        let _a = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
        let _b = conns.acquire_many(MAX_TCP_CONNECTIONS as u32).await;
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::warn!("shutdown: some queries were still waiting on upstreams after {DRAIN:?}; dropping them");
    }
}

async fn tcp_loop(listener: TcpListener, handler: SharedHandler, conns: Arc<Semaphore>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    debug!(error = %e, "tcp accept error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            debug!("too many tcp connections; closing a new one");
            continue;
        };
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        tokio::spawn(async move {
            tcp_connection(stream, handler, shutdown).await;
            drop(permit);
        });
    }
}

/// Answers length-prefixed queries on one connection, in order, until the
/// client closes, goes idle, or we shut down.
async fn tcp_connection(mut stream: TcpStream, handler: SharedHandler, mut shutdown: watch::Receiver<bool>) {
    loop {
        let len = tokio::select! {
            r = tokio::time::timeout(TCP_IDLE, stream.read_u16()) => match r {
                Ok(Ok(len)) => len as usize,
                _ => return,
            },
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        let mut buf = vec![0u8; len];
        if tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await.map_or(true, |r| r.is_err()) {
            return;
        }
        let started = Instant::now();
        let h = handler.load_full();
        if let Some(reply) = h.handle(&buf, Transport::Tcp).await {
            let resp = &reply.bytes;
            let mut out = Vec::with_capacity(resp.len() + 2);
            out.extend_from_slice(&(resp.len() as u16).to_be_bytes());
            out.extend_from_slice(resp);
            if stream.write_all(&out).await.is_err() {
                return;
            }
            h.count(&reply, started.elapsed().as_secs_f64());
        }
    }
}
