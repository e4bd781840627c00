//! DNS over TCP (RFC 7766), hardened against clients that hold connections.
//!
//! * Clients outside `[dns] allow` are closed at accept.
//! * At most `tcp_connections` connections, and `tcp_connections_per_client`
//!   from one address. When the global cap is reached, the connection that
//!   has been idle (waiting for its next query) the longest is closed to make
//!   room; if none is idle, the new one is closed.
//! * A connection gets `tcp_idle_timeout` from the end of one answer to the
//!   complete next query (a client trickling bytes gains nothing), and
//!   `tcp_write_timeout` to take each answer (a client that never reads is
//!   closed, not kept forever).
//! * Each connection and its buffers are charged to the memory budget; the
//!   read buffer is the size the client announced (at most [`MAX_QUERY`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::timeout_at;
use tracing::debug;

use super::admission;
use super::forward::SLOW_COST;
use super::guard::Ticket;
use super::handler::{Handler, SharedHandler};
use super::message::Transport;
use super::plan::{Chase, Pick, Plan, Request};
use super::reply::Reply;
use crate::config::Limits;
use crate::metrics::{Limited, Metrics};
use crate::routes::Asker;

/// Queries over TCP so far: a rotating reader alias's turn (TCP is not
/// the hot path, so one shared counter is fine here).
static TCP_QUERIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Largest query accepted over TCP; a longer length prefix closes the
/// connection (queries are a few dozen bytes; UDP takes at most 4096 too).
pub(super) const MAX_QUERY: usize = 4096;
/// Bytes charged per open connection besides its buffers (task, socket
/// state, tokio's registration).
pub(super) const CONN_COST: u64 = 4096;

/// The open connections, for the caps and idle eviction.
#[derive(Default)]
pub(super) struct Registry {
    inner: Mutex<Inner>,
    /// Signalled when the last connection closes (for shutdown).
    pub(crate) empty: Notify,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Entry>,
    per_client: HashMap<IpAddr, usize>,
    next: u64,
}

struct Entry {
    ip: IpAddr,
    /// Since when it waits for its next query; `None` while answering.
    idle_since: Option<Instant>,
    close: Arc<Notify>,
}

/// A connection's place in the registry; dropping it frees the place.
pub(super) struct Place {
    id: u64,
    registry: Arc<Registry>,
    pub(crate) close: Arc<Notify>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections.
    pub(super) fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether no connection is open.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits a connection from `ip`, evicting the longest-idle one when the
    /// global cap is reached.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize, per_client: usize) -> Result<Place, Limited> {
        let mut inner = self.lock();
        if inner.per_client.get(&ip).copied().unwrap_or(0) >= per_client {
            return Err(Limited::TcpPerClient);
        }
        if inner.conns.len() >= cap {
            let victim = inner
                .conns
                .iter()
                .filter_map(|(id, e)| e.idle_since.map(|t| (t, *id)))
                .min();
            let Some((_, id)) = victim else {
                return Err(Limited::TcpConnections);
            };
            if let Some(e) = inner.conns.remove(&id) {
                e.close.notify_one();
                dec(&mut inner.per_client, e.ip);
            }
            debug!("tcp connection cap reached; closed the longest-idle connection");
        }
        inner.next += 1;
        let id = inner.next;
        let close = Arc::new(Notify::new());
        inner.conns.insert(
            id,
            Entry {
                ip,
                idle_since: Some(Instant::now()),
                close: close.clone(),
            },
        );
        *inner.per_client.entry(ip).or_default() += 1;
        Ok(Place {
            id,
            registry: self.clone(),
            close,
        })
    }
}

fn dec(per_client: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = per_client.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_client.remove(&ip);
        }
    }
}

impl Place {
    fn set_idle(&self, idle: bool) {
        if let Some(e) = self.registry.lock().conns.get_mut(&self.id) {
            e.idle_since = if idle { Some(Instant::now()) } else { None };
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(e) = inner.conns.remove(&self.id) {
            dec(&mut inner.per_client, e.ip);
        }
        if inner.conns.is_empty() {
            self.registry.empty.notify_waiters();
        }
    }
}

/// Accepts connections until shutdown, each answered on a task of its own.
pub(super) async fn accept_loop(
    listener: TcpListener,
    handler: SharedHandler,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "tcp accept error");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        };
        let h = handler.load_full();
        let fwd = h.forwarding();
        let ip = peer.ip().to_canonical();
        if !admission::allows(fwd, ip) {
            continue;
        }
        let limits = fwd.limits();
        let place = match registry.admit(ip, limits.tcp_connections, limits.tcp_connections_per_client) {
            Ok(p) => p,
            Err(why) => {
                fwd.guard().refused(why);
                continue;
            }
        };
        let Ok(ticket) = fwd.guard().try_bytes(CONN_COST, limits) else {
            continue;
        };
        metrics.tcp_connections.set(registry.len() as i64);
        let conn = Connection {
            peer,
            handler: handler.clone(),
            metrics: metrics.clone(),
            place,
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            conn.serve(stream, ticket, shutdown).await;
        });
    }
}

/// What a connection does after one query.
enum Next {
    Continue,
    /// Close normally (the client went away).
    Close,
    /// Close with a reset: answers the client never took would otherwise sit
    /// in the kernel (behind a zero window, with the FIN after them) for
    /// minutes after we let go; a reset frees them and tells the client.
    Reset,
}

fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
}

/// One accepted connection and what answering it uses.
struct Connection {
    peer: SocketAddr,
    handler: SharedHandler,
    metrics: Arc<Metrics>,
    place: Place,
}

impl Connection {
    /// Answers length-prefixed queries, in order, until the client closes,
    /// goes idle, is too slow to read, or we shut down.
    async fn serve(self, mut stream: TcpStream, mut ticket: Ticket, mut shutdown: watch::Receiver<bool>) {
        let mut last = Instant::now();
        loop {
            let h = self.handler.load_full();
            let limits = h.forwarding().limits().clone();
            self.place.set_idle(true);
            let read = async {
                let len = stream.read_u16().await.ok()? as usize;
                if !(12..=MAX_QUERY).contains(&len) {
                    return None;
                }
                ticket.grow(len as u64, &limits).ok()?;
                let mut buf = vec![0u8; len];
                stream.read_exact(&mut buf).await.ok()?;
                Some(buf)
            };
            let buf = tokio::select! {
                r = timeout_at((last + limits.tcp_idle_timeout).into(), read) => match r {
                    Ok(Some(b)) => b,
                    _ => return,
                },
                _ = self.place.close.notified() => {
                    h.forwarding().guard().refused(Limited::TcpEvicted);
                    return reset(stream);
                }
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            };
            self.place.set_idle(false);
            // An eviction notice that raced with this query's arrival still
            // closes the connection: it no longer holds a place.
            let next = tokio::select! {
                r = self.answer(&h, &mut stream, &buf, &mut ticket, &limits) => r,
                _ = self.place.close.notified() => {
                    h.forwarding().guard().refused(Limited::TcpEvicted);
                    Next::Reset
                }
            };
            match next {
                Next::Continue => {}
                Next::Close => return,
                Next::Reset => return reset(stream),
            }
            last = Instant::now();
        }
    }

    /// Answers the query `buf` and writes the answer, within
    /// `tcp_write_timeout`.
    async fn answer(
        &self,
        h: &Handler,
        stream: &mut TcpStream,
        buf: &[u8],
        ticket: &mut Ticket,
        limits: &Limits,
    ) -> Next {
        let started = Instant::now();
        let reply = self.reply(h, buf).await;
        ticket.shrink_to(CONN_COST);
        if let Some(reply) = reply {
            let resp = &reply.bytes;
            if ticket.grow(resp.len() as u64 + 2, limits).is_err() {
                return Next::Reset;
            }
            let mut out = Vec::with_capacity(resp.len() + 2);
            out.extend_from_slice(&(resp.len() as u16).to_be_bytes());
            out.extend_from_slice(resp);
            match tokio::time::timeout(limits.tcp_write_timeout, stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Next::Close,
                Err(_) => {
                    h.forwarding().guard().refused(Limited::TcpWriteTimeout);
                    return Next::Reset;
                }
            }
            ticket.shrink_to(CONN_COST);
            reply.count(&self.metrics, started.elapsed().as_secs_f64());
        }
        Next::Continue
    }

    /// The answer to `buf`: from the full path, waiting on an upstream if
    /// admitted (the same admission as UDP's: rate, in-flight, budget).
    async fn reply(&self, h: &Handler, buf: &[u8]) -> Option<Reply> {
        let asker = Asker {
            seq: TCP_QUERIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            client: Some(self.peer.ip()),
        };
        let fwd = h.forwarding();
        match h.plan(buf, Transport::Tcp, Pick::Asked(asker)) {
            Plan::Reply(r) => Some(r),
            Plan::Drop => None,
            plan @ (Plan::Forward(_) | Plan::Chase(_)) => match admission::admit(fwd, self.peer.ip(), SLOW_COST) {
                Ok(_flight) => fwd.complete(plan, buf, Transport::Tcp).await,
                Err(why) => match &plan {
                    Plan::Forward(Request(req)) => admission::refusal(fwd, req, buf, why, Transport::Tcp),
                    Plan::Chase(Chase { req, .. }) => fwd.encoder().refuse(req, why.rcode(), Transport::Tcp),
                    _ => None,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_eviction() {
        let r = Arc::new(Registry::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let p1 = r.admit(a, 3, 2).unwrap();
        let p2 = r.admit(a, 3, 2).unwrap();
        assert_eq!(r.admit(a, 3, 2).err(), Some(Limited::TcpPerClient));
        p2.set_idle(false);
        let _p3 = r.admit(b, 3, 2).unwrap();
        // Full: the longest-idle connection (p1; p2 is busy) makes room.
        let _p4 = r.admit(b, 3, 2).unwrap();
        assert_eq!(r.len(), 3);
        assert!(!r.lock().conns.contains_key(&p1.id));
        drop(p1);
        assert_eq!(r.len(), 3, "an evicted place is not removed twice");
        // Nothing idle left but p3/p4 (idle since admission) -> they go next;
        // with every connection busy, new ones are refused.
        for e in r.lock().conns.values_mut() {
            e.idle_since = None;
        }
        assert_eq!(
            r.admit("127.0.0.4".parse().unwrap(), 3, 2).err(),
            Some(Limited::TcpConnections)
        );
        drop(p2);
        assert_eq!(r.len(), 2);
        assert_eq!(r.lock().per_client.get(&a), None);
    }
}
