//! Forwarding for the UDP workers, without the async runtime.
//!
//! Each UDP worker owns a relay: one upstream-facing socket on a random port,
//! a table of pending queries keyed by a random upstream ID, and a thread
//! that receives upstream answers in batches (`recvmmsg`), matches them to
//! their query (ID, source address and question), restores the client's ID and
//! sends them back in batches (`sendmmsg`) from the client-facing socket. A
//! query that gets no answer within the upstream timeout moves on to the next
//! upstream; after the last, the client gets SERVFAIL. The socket has the
//! family of the first configured upstream, and only upstreams of that
//! family are tried here (a list of only the other family is left to the
//! runtime's per-query forwarder). Compared with a socket
//! and a task per query, this saves most system calls and all cross-thread
//! task wake-ups per forwarded query.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use super::forward::{same_question, ForwardError};
use super::handler::Handler;
use super::mmsg::Batch;
use crate::metrics::{rcode_index, QueryKind};
use crate::shared::Shared;

const BATCH: usize = 32;
const BUF: usize = 65535;
/// How often pending queries are checked for timeouts.
const SWEEP: Duration = Duration::from_millis(20);
/// Pending queries per relay; more are answered SERVFAIL at once.
const MAX_PENDING: usize = 4096;

struct Pending {
    client: SocketAddr,
    /// The query as the client sent it (its ID included).
    query: Vec<u8>,
    upstreams: Arc<[SocketAddr]>,
    /// Index of the upstream asked last.
    tried: usize,
    timeout: Duration,
    deadline: Instant,
    started: Instant,
    handler: Arc<Handler>,
}

pub struct Relay {
    upstream: UdpSocket,
    /// The upstream socket's family; upstreams of the other family are left
    /// to the runtime's forwarder.
    v6: bool,
    client: UdpSocket,
    pending: Mutex<HashMap<u16, Pending>>,
    shared: Arc<Shared>,
}

impl Relay {
    /// A relay answering through `client` (a handle on the worker's socket).
    /// Its upstream socket has the family of the first configured upstream
    /// (IPv4 when there is none).
    pub fn new(client: UdpSocket, shared: Arc<Shared>) -> io::Result<Arc<Relay>> {
        let v6 = shared.config.load().upstream.as_ref().and_then(|u| u.servers.first()).is_some_and(|a| a.is_ipv6());
        let local: SocketAddr = if v6 { "[::]:0".parse().expect("literal") } else { "0.0.0.0:0".parse().expect("literal") };
        let upstream = UdpSocket::bind(local)?;
        upstream.set_read_timeout(Some(SWEEP))?;
        Ok(Arc::new(Relay { upstream, v6, client, pending: Mutex::new(HashMap::new()), shared }))
    }

    /// Sends `query` from `client` to the first upstream of `handler`.
    /// Returns false when it cannot be taken (no upstream, table full).
    pub fn submit(&self, handler: &Arc<Handler>, query: &[u8], client: SocketAddr, started: Instant) -> bool {
        let Some(fwd) = handler.forwarder() else { return false };
        let upstreams: Arc<[SocketAddr]> = fwd.upstreams().iter().filter(|u| u.is_ipv6() == self.v6).copied().collect();
        let Some(&first) = upstreams.first() else { return false };
        let mut out = query.to_vec();
        let id = {
            let Ok(mut pending) = self.pending.lock() else { return false };
            if pending.len() >= MAX_PENDING {
                return false;
            }
            let id = loop {
                let id: u16 = rand::random();
                if !pending.contains_key(&id) {
                    break id;
                }
            };
            let timeout = fwd.timeout();
            pending.insert(id, Pending { client, query: query.to_vec(), upstreams, tried: 0, timeout, deadline: started + timeout, started, handler: handler.clone() });
            id
        };
        out[..2].copy_from_slice(&id.to_be_bytes());
        if let Err(e) = self.upstream.send_to(&out, first) {
            debug!(error = %e, upstream = %first, "relay send failed; will retry or fail at the timeout");
        }
        true
    }

    /// Receives upstream answers until `stop` is set and nothing is pending
    /// (or five seconds have passed since `stop`).
    pub fn run(self: Arc<Relay>, stop: Arc<AtomicBool>) {
        let fd = self.upstream.as_raw_fd();
        let mut batch = Batch::new(BATCH, BUF);
        let mut stopping_since: Option<Instant> = None;
        let mut last_sweep = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                let empty = self.pending.lock().map_or(true, |p| p.is_empty());
                if empty || since.elapsed() > Duration::from_secs(5) {
                    return;
                }
            }
            let n = batch.recv(fd);
            let mut counts = [0u64; 8];
            for i in 0..n {
                let Some(from) = super::udp::sockaddr_to_std(batch.addr(i)) else { continue };
                let Some(answer) = batch.received(i) else { continue };
                let len = answer.len();
                if len < 12 {
                    continue;
                }
                let id = u16::from_be_bytes([answer[0], answer[1]]);
                let p = {
                    let Ok(mut pending) = self.pending.lock() else { continue };
                    match pending.get(&id) {
                        Some(p) if p.upstreams.get(p.tried) == Some(&from) && same_question(&p.query, answer) => pending.remove(&id),
                        _ => None,
                    }
                };
                let Some(p) = p else { continue };
                answer[..2].copy_from_slice(&p.query[..2]);
                if let Err(e) = self.client.send_to(answer, p.client) {
                    debug!(error = %e, "relay answer send failed");
                    continue;
                }
                counts[rcode_index((answer[3] & 0x0F) as u16)] += 1;
                self.shared.metrics.latency(QueryKind::Forwarded, p.started.elapsed().as_secs_f64());
            }
            for (r, c) in counts.iter().enumerate() {
                if *c > 0 {
                    self.shared.metrics.answered_n(QueryKind::Forwarded, r, *c);
                }
            }
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = Instant::now();
                self.sweep();
            }
        }
    }

    /// Moves timed-out queries to the next upstream, or answers SERVFAIL.
    fn sweep(&self) {
        let now = Instant::now();
        let mut failed = Vec::new();
        let mut resend = Vec::new();
        if let Ok(mut pending) = self.pending.lock() {
            let expired: Vec<u16> = pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
            for id in expired {
                let Some(p) = pending.get_mut(&id) else { continue };
                let err = ForwardError::Timeout { addr: p.upstreams[p.tried], timeout: p.timeout };
                if p.tried + 1 < p.upstreams.len() {
                    p.tried += 1;
                    p.deadline = now + p.timeout;
                    let mut out = p.query.clone();
                    out[..2].copy_from_slice(&id.to_be_bytes());
                    resend.push((out, p.upstreams[p.tried], p.handler.clone(), err));
                } else if let Some(p) = pending.remove(&id) {
                    failed.push((p, err));
                }
            }
        }
        for (out, to, handler, err) in resend {
            handler.count_upstream_error(&err);
            let _ = self.upstream.send_to(&out, to);
        }
        for (p, err) in failed {
            if let Some(bytes) = p.handler.forward_failed(&p.query, &err) {
                let _ = self.client.send_to(&bytes, p.client);
                self.shared.metrics.answered(QueryKind::Forwarded, (bytes[3] & 0x0F) as u16);
            }
        }
    }
}
