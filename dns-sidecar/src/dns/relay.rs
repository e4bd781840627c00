//! Forwarding for the UDP workers, without the async runtime.
//!
//! Each UDP worker owns a relay: a small pool of upstream-facing sockets on
//! random ports (replaced regularly, see [`ROTATE_AFTER`]), a table of
//! pending queries keyed by a random upstream ID, and a thread that receives
//! upstream answers in batches (`recvmmsg`), matches them to their query
//! (ID, the socket it was sent from, the upstream's address and the
//! question), restores the client's ID and sends them back from the
//! client-facing socket.
//!
//! Nothing here queues: a query is taken only with a [`Ticket`] (one
//! in-flight slot and its bytes of the memory budget); without one, or when
//! every upstream is out of use (the circuit breaker in [`super::guard`]),
//! [`Relay::submit`] says no and the worker answers SERVFAIL at once. A query
//! with no answer within the upstream timeout counts as a failure of that
//! upstream and moves to the next one in use; after the last, SERVFAIL.
//! Upstream answers larger than [`MAX_UDP_ANSWER`], or than the client
//! takes (its EDNS size capped by ours, 512 without EDNS), are answered with
//! TC set.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::debug;

use super::cache::{Cache, Found};
use super::forward::{same_question, ForwardError, Upstream, MAX_UDP_ANSWER};
use super::guard::{Guard, Refusal, Ticket};
use super::handler::Handler;
use super::mmsg::{sockaddr_to_std, Batch, WORKER_BATCH};
use super::question::question;
use super::sched::lower_priority;
use crate::metrics::{rcode_index, Limited, QueryKind};
use crate::shared::Shared;

const BATCH: usize = 32;
/// How often pending queries are checked for timeouts (and how long the
/// receiving thread waits for upstream answers at most).
const SWEEP: Duration = Duration::from_millis(20);
/// Upstream sockets per address family.
const POOL: usize = 4;
/// A socket is replaced by one on a new random port after this long...
const ROTATE_AFTER: Duration = Duration::from_secs(60);
/// ... or after this many queries, whichever comes first.
const ROTATE_QUERIES: u32 = 10_000;
/// Bytes charged to the budget per pending query, besides the query itself
/// (the entry, its table and queue slots, allocator overhead).
pub const PENDING_COST: u64 = 256;

struct Pending {
    client: SocketAddr,
    /// The query as the client sent it (its ID included).
    query: Box<[u8]>,
    upstreams: Arc<[Upstream]>,
    /// Index of the upstream asked last.
    tried: usize,
    /// Serial of the socket it was sent from.
    sock: u64,
    deadline: Instant,
    started: Instant,
    handler: Arc<Handler>,
    _ticket: Ticket,
}

/// One upstream-facing socket of the pool.
struct Slot {
    sock: Arc<UdpSocket>,
    serial: u64,
    v6: bool,
    born: Instant,
    used: u32,
}

/// Upstream IDs are random: a multiplication spreads them over the map's
/// buckets and tags (SipHash would cost more than the lookup).
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Ids = std::hash::BuildHasherDefault<IdHasher>;

struct State {
    pending: HashMap<u16, Pending, Ids>,
    /// (deadline, id) in the order queries were sent; deadlines only grow
    /// for one timeout, so the sweep looks at the front only.
    deadlines: VecDeque<(Instant, u16)>,
    slots: Vec<Slot>,
    /// Sockets replaced by newer ones, kept until their queries are done.
    retired: Vec<(Slot, Instant)>,
    next: usize,
    serial: u64,
    /// The socket (serial) this worker batch sends from, per family (v4,
    /// v6): the batch's queries leave together, with one `sendmmsg`.
    current: [Option<u64>; 2],
}

pub struct Relay {
    client: UdpSocket,
    state: Mutex<State>,
    guard: Arc<Guard>,
    shared: Arc<Shared>,
    /// Upstream answers are kept here; stale answers come from here when
    /// the upstream fails.
    cache: Arc<Cache>,
}

/// Why [`Relay::submit`] did not take a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTaken {
    /// No upstream is configured.
    NoUpstream,
    /// Every upstream is out of use.
    Down,
    /// A limit was reached.
    Limit(Refusal),
}

impl Relay {
    /// A relay answering through `client` (a handle on the worker's socket).
    pub fn new(client: UdpSocket, guard: Arc<Guard>, shared: Arc<Shared>, cache: Arc<Cache>) -> Arc<Relay> {
        let state = State {
            pending: HashMap::default(),
            deadlines: VecDeque::new(),
            slots: Vec::new(),
            retired: Vec::new(),
            next: 0,
            serial: 0,
            current: [None; 2],
        };
        Arc::new(Relay {
            client,
            state: Mutex::new(state),
            guard,
            shared,
            cache,
        })
    }

    /// A stale answer to `query` from the cache, written into `out` (the
    /// upstream failed); counted.
    fn stale(&self, handler: &Handler, query: &[u8], out: &mut [u8]) -> Option<usize> {
        let qn = question(query, handler.max_udp())?;
        let m = self.cache.metrics();
        match self.cache.stale(query, &qn, qn.udp_limit, self.cache.now(), out) {
            Found::Stale(n) => {
                m.stale.inc();
                Some(n)
            }
            Found::Fresh(n) => {
                m.hits.inc();
                Some(n)
            }
            Found::Miss | Found::Off => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new worker batch begins: its queries go out from the next socket of
    /// the pool (the pool still turns, batch by batch).
    pub fn new_batch(&self) {
        self.lock().current = [None; 2];
    }

    /// Registers `query` from `client` for the first upstream of `handler`
    /// in use, and puts it in `outbox` (sent at the end of the worker's batch).
    pub fn submit(
        &self,
        handler: &Arc<Handler>,
        query: &[u8],
        client: SocketAddr,
        started: Instant,
        outbox: &mut Outbox,
    ) -> Result<(), NotTaken> {
        let Some(fwd) = handler.forwarder() else {
            return Err(NotTaken::NoUpstream);
        };
        let upstreams = fwd.upstreams().clone();
        let Some(first) = upstreams.iter().position(|u| !u.state.is_down()) else {
            return Err(NotTaken::Down);
        };
        let ticket = self
            .guard
            .try_forward(PENDING_COST + query.len() as u64, handler.limits())
            .map_err(NotTaken::Limit)?;
        let to = upstreams[first].addr;
        let (id, sock) = {
            let mut st = self.lock();
            let (sock, serial) = match st.socket(to.is_ipv6()) {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "cannot open an upstream socket");
                    return Err(NotTaken::Limit(Refusal::Memory));
                }
            };
            let id = loop {
                let id: u16 = rand::random();
                if !st.pending.contains_key(&id) {
                    break id;
                }
            };
            let deadline = started + fwd.timeout();
            st.pending.insert(
                id,
                Pending {
                    client,
                    query: query.into(),
                    upstreams,
                    tried: first,
                    sock: serial,
                    deadline,
                    started,
                    handler: handler.clone(),
                    _ticket: ticket,
                },
            );
            st.deadlines.push_back((deadline, id));
            (id, sock)
        };
        outbox.push(&sock, to, query, id);
        Ok(())
    }

    /// Receives upstream answers until `stop` is set and nothing is pending
    /// (or five seconds have passed since `stop`).
    pub fn run(self: Arc<Relay>, stop: Arc<AtomicBool>) {
        // Below the UDP workers: when the relay and a worker compete for a
        // CPU (a flood of forwarded names), the worker, which answers the
        // aliases, wins. Lowering our own priority needs no privilege.
        lower_priority(10);
        let mut batch = Batch::new(BATCH, MAX_UDP_ANSWER);
        // The answers to the clients, sent together per received batch.
        let mut tx = Batch::new(BATCH, MAX_UDP_ANSWER);
        // Where stale answers to timed-out queries are written.
        let mut scratch = vec![0u8; MAX_UDP_ANSWER];
        let mut stopping_since: Option<Instant> = None;
        let mut last_sweep = Instant::now();
        let mut fds: Vec<(libc::pollfd, u64)> = Vec::new();
        let mut polled: Vec<libc::pollfd> = Vec::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if self.lock().pending.is_empty() || since.elapsed() > Duration::from_secs(5) {
                    return;
                }
            }
            fds.clear();
            {
                let st = self.lock();
                for s in st.slots.iter().chain(st.retired.iter().map(|(s, _)| s)) {
                    fds.push((
                        libc::pollfd {
                            fd: s.sock.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        s.serial,
                    ));
                }
            }
            if fds.is_empty() {
                std::thread::sleep(SWEEP);
            } else {
                polled.clear();
                polled.extend(fds.iter().map(|(p, _)| *p));
                // SAFETY: `polled` is a valid array of pollfds; the sockets stay
                // open because only this thread closes them (in `maintain`).
                unsafe {
                    libc::poll(
                        polled.as_mut_ptr(),
                        polled.len() as libc::nfds_t,
                        SWEEP.as_millis() as i32,
                    )
                };
                for (p, (_, serial)) in polled.iter().zip(&fds) {
                    if p.revents & libc::POLLIN != 0 {
                        let n = batch.recv_nowait(p.fd);
                        self.answers(&mut batch, n, *serial, &mut tx);
                    }
                }
            }
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = Instant::now();
                self.sweep(&mut scratch);
                self.lock().maintain();
            }
        }
    }

    /// Relays the `n` datagrams in `batch`, received on socket `serial`, and
    /// keeps them in the cache; when the upstream answered SERVFAIL or
    /// REFUSED, a stale answer from the cache goes to the client instead.
    fn answers(&self, batch: &mut Batch, n: usize, serial: u64, tx: &mut Batch) {
        let now = self.cache.now();
        let mut counts = [0u64; 8];
        let mut out = 0;
        // One latency observation per batch (as the UDP workers do): the
        // longest wait in it. The histogram takes a lock per observation.
        let mut longest: Option<Duration> = None;
        for i in 0..n {
            let Some(from) = sockaddr_to_std(batch.addr(i)) else {
                continue;
            };
            let truncated = batch.truncated(i);
            let answer = batch.data(i);
            if answer.len() < 12 {
                continue;
            }
            let id = u16::from_be_bytes([answer[0], answer[1]]);
            let p = {
                let mut st = self.lock();
                match st.pending.get(&id) {
                    Some(p)
                        if p.sock == serial && p.upstreams[p.tried].addr == from && same_question(&p.query, answer) =>
                    {
                        st.pending.remove(&id)
                    }
                    _ => None,
                }
            };
            let Some(p) = p else { continue };
            let u = &p.upstreams[p.tried];
            if let Some(fwd) = p.handler.forwarder() {
                fwd.record(u, true);
            }
            let len = if truncated {
                // Too big to relay: tell the client to retry over TCP.
                let Some(n) = truncated_into(&p.handler, &p.query, tx.buf_mut(out)) else {
                    continue;
                };
                n
            } else {
                answer[..2].copy_from_slice(&p.query[..2]);
                let failed = matches!(answer[3] & 0x0F, 2 | 5);
                match failed
                    .then(|| self.stale(&p.handler, &p.query, tx.buf_mut(out)))
                    .flatten()
                {
                    Some(n) => n,
                    None => {
                        if let Some(qn) = question(&p.query, p.handler.max_udp()) {
                            self.cache.insert(&p.query, &qn, answer, now);
                        }
                        // Larger than the client takes over UDP: TC, so it
                        // retries over TCP (kept whole for that above).
                        if answer.len() > p.handler.udp_limit_of(&p.query) {
                            let Some(n) = truncated_into(&p.handler, &p.query, tx.buf_mut(out)) else {
                                continue;
                            };
                            n
                        } else {
                            tx.buf_mut(out)[..answer.len()].copy_from_slice(answer);
                            answer.len()
                        }
                    }
                }
            };
            tx.address_to(out, len, p.client);
            counts[rcode_index((tx.buf_mut(out)[3] & 0x0F) as u16)] += 1;
            out += 1;
            longest = longest.max(Some(p.started.elapsed()));
        }
        // Every answer of the batch with one sendmmsg.
        tx.send(self.client.as_raw_fd(), out);
        if let Some(l) = longest {
            self.shared.metrics.latency(QueryKind::Forwarded, l.as_secs_f64());
        }
        for (r, c) in counts.iter().enumerate() {
            if *c > 0 {
                self.shared.metrics.answered_n(QueryKind::Forwarded, r, *c);
            }
        }
    }

    /// Moves timed-out queries to the next upstream in use, or answers
    /// (stale from the cache, else SERVFAIL).
    fn sweep(&self, scratch: &mut [u8]) {
        let now = Instant::now();
        let mut failed = Vec::new();
        let mut resend = Vec::new();
        {
            let mut st = self.lock();
            while let Some(&(deadline, id)) = st.deadlines.front() {
                if deadline > now {
                    break;
                }
                st.deadlines.pop_front();
                let Some(p) = st.pending.get(&id) else { continue };
                if p.deadline != deadline {
                    continue; // resent since; a later queue entry covers it
                }
                let u = p.upstreams[p.tried].clone();
                let err = ForwardError::Timeout {
                    addr: u.addr,
                    timeout: p.handler.forwarder().map_or(Duration::ZERO, |f| f.timeout()),
                };
                if let Some(fwd) = p.handler.forwarder() {
                    fwd.record(&u, false);
                }
                let next = (p.tried + 1..p.upstreams.len()).find(|&i| !p.upstreams[i].state.is_down());
                let v6 = next.map(|i| p.upstreams[i].addr.is_ipv6());
                let sock = v6.and_then(|v6| st.socket(v6).ok());
                match (next, sock) {
                    (Some(i), Some((sock, serial))) => {
                        let p = st.pending.get_mut(&id).expect("present above");
                        p.tried = i;
                        p.sock = serial;
                        p.deadline = now + err_timeout(&err);
                        let mut out = p.query.to_vec();
                        out[..2].copy_from_slice(&id.to_be_bytes());
                        resend.push((sock, out, p.upstreams[i].addr, p.handler.clone(), err));
                        let d = p.deadline;
                        st.deadlines.push_back((d, id));
                    }
                    _ => {
                        if let Some(p) = st.pending.remove(&id) {
                            failed.push((p, err));
                        }
                    }
                }
            }
        }
        for (sock, out, to, handler, err) in resend {
            handler.count_upstream_error(&err);
            let _ = sock.send_to(&out, to);
        }
        for (p, err) in failed {
            let stale = self.stale(&p.handler, &p.query, scratch);
            let failed;
            let bytes: &[u8] = match stale {
                Some(n) => {
                    p.handler.count_upstream_error(&err);
                    &scratch[..n]
                }
                None => match p.handler.forward_failed(&p.query, &err) {
                    Some(b) => {
                        failed = b;
                        &failed
                    }
                    None => continue,
                },
            };
            let _ = self.client.send_to(bytes, p.client);
            self.shared
                .metrics
                .answered(QueryKind::Forwarded, (bytes[3] & 0x0F) as u16);
        }
    }
}

/// The TC answer to `query` written into `buf`; its length.
fn truncated_into(handler: &Handler, query: &[u8], buf: &mut [u8]) -> Option<usize> {
    let b = handler.truncated(query)?;
    buf.get_mut(..b.len())?.copy_from_slice(&b);
    Some(b.len())
}

/// Largest query an [`Outbox`] slot holds; a larger one (rare: queries
/// are a few dozen bytes) is sent on its own.
const OUT_SLOT: usize = 512;

/// The queries a UDP worker relays in one batch: sent together, one
/// `sendmmsg` per upstream socket (normally one: a batch uses one socket
/// per address family), when the batch is done.
pub struct Outbox {
    batch: Batch,
    sock: Option<Arc<UdpSocket>>,
    n: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            batch: Batch::new(WORKER_BATCH, OUT_SLOT),
            sock: None,
            n: 0,
        }
    }
}

impl Outbox {
    /// Adds `query`, with upstream ID `id`, for `to` from `sock`.
    fn push(&mut self, sock: &Arc<UdpSocket>, to: SocketAddr, query: &[u8], id: u16) {
        if query.len() > OUT_SLOT {
            let mut out = query.to_vec();
            out[..2].copy_from_slice(&id.to_be_bytes());
            if let Err(e) = sock.send_to(&out, to) {
                debug!(error = %e, upstream = %to, "relay send failed; will retry or fail at the timeout");
            }
            return;
        }
        if self.n == self.batch.capacity() || self.sock.as_ref().is_some_and(|s| !Arc::ptr_eq(s, sock)) {
            self.flush();
        }
        let buf = self.batch.buf_mut(self.n);
        buf[..query.len()].copy_from_slice(query);
        buf[..2].copy_from_slice(&id.to_be_bytes());
        self.batch.address_to(self.n, query.len(), to);
        self.n += 1;
        self.sock = Some(sock.clone());
    }

    /// Sends what was added. A failed send is a timeout later (the pending
    /// query moves to the next upstream or gets SERVFAIL).
    pub fn flush(&mut self) {
        if let Some(sock) = self.sock.take() {
            self.batch.send(sock.as_raw_fd(), self.n);
        }
        self.n = 0;
    }
}

fn err_timeout(e: &ForwardError) -> Duration {
    match e {
        ForwardError::Timeout { timeout, .. } => *timeout,
        _ => Duration::from_secs(1),
    }
}

impl State {
    /// The next socket of the pool for this family (opened on first use).
    fn socket(&mut self, v6: bool) -> io::Result<(Arc<UdpSocket>, u64)> {
        // The batch's socket, while it is in the pool.
        if let Some(serial) = self.current[usize::from(v6)] {
            if let Some(s) = self.slots.iter_mut().find(|s| s.serial == serial) {
                s.used += 1;
                return Ok((s.sock.clone(), s.serial));
            }
        }
        let count = self.slots.iter().filter(|s| s.v6 == v6).count();
        let i = if count < POOL {
            let sock = open(v6)?;
            self.serial += 1;
            self.slots.push(Slot {
                sock: Arc::new(sock),
                serial: self.serial,
                v6,
                born: Instant::now(),
                used: 0,
            });
            self.slots.len() - 1
        } else {
            self.next = self.next.wrapping_add(1);
            let nth = self.next % count;
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.v6 == v6)
                .nth(nth)
                .map_or(0, |(i, _)| i)
        };
        let s = &mut self.slots[i];
        s.used += 1;
        self.current[usize::from(v6)] = Some(s.serial);
        Ok((s.sock.clone(), s.serial))
    }

    /// Replaces sockets that are old or used enough with fresh ones (new
    /// random ports), and closes retired sockets once nothing sent from them
    /// can still be answered.
    fn maintain(&mut self) {
        let now = Instant::now();
        let pending = &self.pending;
        self.retired
            .retain(|(s, _)| pending.values().any(|p| p.sock == s.serial));
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.born.elapsed() >= ROTATE_AFTER || s.used >= ROTATE_QUERIES)
        {
            if let Ok(sock) = open(self.slots[i].v6) {
                self.serial += 1;
                let fresh = Slot {
                    sock: Arc::new(sock),
                    serial: self.serial,
                    v6: self.slots[i].v6,
                    born: now,
                    used: 0,
                };
                let old = std::mem::replace(&mut self.slots[i], fresh);
                if self.pending.values().any(|p| p.sock == old.serial) {
                    self.retired.push((old, now));
                }
            }
        }
    }
}

fn open(v6: bool) -> io::Result<UdpSocket> {
    let local: SocketAddr = if v6 {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let s = UdpSocket::bind(local)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The metric for a refusal.
pub fn limited(n: NotTaken) -> Limited {
    match n {
        NotTaken::Limit(Refusal::Memory) => Limited::Memory,
        NotTaken::Limit(Refusal::InFlight) => Limited::InFlight,
        NotTaken::Down | NotTaken::NoUpstream => Limited::UpstreamDown,
    }
}
