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
//! Nothing here queues: a query is taken only when [`super::admission`]
//! admits it (the client's rate, one in-flight slot and its bytes of the
//! memory budget, an upstream in use or due a trial); otherwise
//! [`Relay::submit`] says why not and the worker answers at once. Identical
//! questions in flight share one upstream query ([`super::coalesce`]). A
//! query with no answer within the upstream timeout makes that upstream
//! suspect (health checks decide, see [`super::health`]) and moves to the
//! next one in use; after the last, a stale answer or SERVFAIL, remembered
//! for the name (`[cache] servfail_ttl`). Pending queries wait in a queue
//! ordered by deadline (a query may have its own), each entry removed with
//! its query and paid for by its ticket. Upstream answers larger than
//! [`MAX_UDP_ANSWER`], or than the recipient takes (its EDNS size capped by
//! ours, 512 without EDNS), are answered with TC set.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::debug;

use super::admission::{self, Denied};
use super::cache::Found;
use super::coalesce::{self, Coalesce, Joined, Key, Waiter};
use super::forward::{same_question, ForwardError, Forwarder, Upstream, MAX_UDP_ANSWER};
use super::forward_zones::RouteId;
use super::forwarding::Forwarding;
use super::guard::Ticket;
use super::mmsg::{sockaddr_to_std, Batch, WORKER_BATCH};
use super::question::question;
use super::sched::lower_priority;
use crate::metrics::{rcode_index, Metrics, QueryKind};

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
/// (the entry, its table and deadline-queue slots, its coalescing key,
/// allocator overhead); a query waiting on another's is charged the same.
pub const PENDING_COST: u64 = 512;

struct Pending {
    client: SocketAddr,
    /// The query as the client sent it (its ID included).
    query: Box<[u8]>,
    upstreams: Arc<[Upstream]>,
    /// The zone whose upstreams they are (its forwarder in `forwarding`).
    route: RouteId,
    /// Index of the upstream asked last.
    tried: usize,
    /// Serial of the socket it was sent from.
    sock: u64,
    deadline: Instant,
    started: Instant,
    /// The forwarding context it was admitted by (its config's).
    forwarding: Arc<Forwarding>,
    /// Its key in the coalescing table, when others may wait on it.
    key: Option<Key>,
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
    /// (deadline, id) of every pending query, earliest first: exactly one
    /// entry per entry of `pending`, removed with it (so bounded by the
    /// in-flight limit and paid for by its ticket). Ordered by deadline,
    /// whatever each query's timeout.
    deadlines: BTreeSet<(Instant, u16)>,
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
    /// The listening address `client` is bound to (what its answers leave
    /// from: queries coalesce only with others received on it).
    local: SocketAddr,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    /// Questions in flight, shared by every relay.
    coalesce: Arc<Coalesce>,
}

impl Relay {
    /// A relay answering through `client` (a handle on the worker's socket).
    pub fn new(client: UdpSocket, metrics: Arc<Metrics>, coalesce: Arc<Coalesce>) -> Arc<Relay> {
        let state = State {
            pending: HashMap::default(),
            deadlines: BTreeSet::new(),
            slots: Vec::new(),
            retired: Vec::new(),
            next: 0,
            serial: 0,
            current: [None; 2],
        };
        let local = client
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Arc::new(Relay {
            local,
            client,
            state: Mutex::new(state),
            metrics,
            coalesce,
        })
    }

    /// A stale answer to `query` from the cache, written into `out` (the
    /// upstream failed); counted.
    fn stale(&self, fwd: &Forwarding, query: &[u8], out: &mut [u8]) -> Option<usize> {
        let qn = question(query, fwd.encoder().max_udp())?;
        let cache = fwd.cache();
        let m = cache.metrics();
        match cache.stale(query, &qn, qn.udp_limit, cache.now(), out) {
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

    /// Whether the cache can answer `query` stale (every upstream is out of
    /// use: that answer goes at once, no trial).
    fn has_stale(&self, fwd: &Forwarding, query: &[u8]) -> bool {
        let Some(qn) = question(query, fwd.encoder().max_udp()) else {
            return false;
        };
        let mut scratch = [0u8; MAX_UDP_ANSWER];
        let cache = fwd.cache();
        matches!(
            cache.stale(query, &qn, qn.udp_limit, cache.now(), &mut scratch),
            Found::Stale(_) | Found::Fresh(_)
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new worker batch begins: its queries go out from the next socket of
    /// the pool (the pool still turns, batch by batch).
    pub fn new_batch(&self) {
        self.lock().current = [None; 2];
    }

    /// Admits `query` from `client` (see [`super::admission`]) and either
    /// has it wait on an identical question in flight, or registers it for
    /// the first upstream of its zone's forwarder in `forwarding` (`route`,
    /// from [`admission::route`]; in use, or due a trial) and puts it in
    /// `outbox` (sent at the end of the worker's batch). The refusal,
    /// counted, says how to answer at once.
    pub fn submit(
        &self,
        forwarding: &Arc<Forwarding>,
        route: RouteId,
        query: &[u8],
        client: SocketAddr,
        started: Instant,
        outbox: &mut Outbox,
    ) -> Result<(), Denied> {
        let fwd = forwarding.zones().get(route);
        let ticket = admission::admit(forwarding, client.ip(), PENDING_COST + query.len() as u64)?;
        let upstreams = fwd.upstreams().clone();
        let first = admission::first_upstream(forwarding, &upstreams, || {
            fwd.caches() && self.has_stale(forwarding, query)
        })?;
        let w = Waiter {
            client,
            query: query.into(),
            started,
            _ticket: ticket,
        };
        let (w, key) = match question(query, forwarding.encoder().max_udp()) {
            Some(qn) => match self.coalesce.join(&qn, self.local, w) {
                Joined::Waiting => return Ok(()),
                Joined::Leader(key, w) => (w, Some(key)),
                Joined::Alone(w) => (w, None),
            },
            None => (w, None),
        };
        let to = upstreams[first].addr;
        let (id, sock) = {
            let mut st = self.lock();
            let (sock, serial) = match st.socket(to.is_ipv6()) {
                Ok(s) => s,
                Err(e) => {
                    drop(st);
                    debug!(error = %e, "cannot open an upstream socket");
                    // Rare; those that joined meanwhile retry (no answer).
                    if let Some(k) = key {
                        self.coalesce.take(&k);
                    }
                    return Err(Denied::Memory);
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
                    query: w.query,
                    upstreams,
                    route,
                    tried: first,
                    sock: serial,
                    deadline,
                    started,
                    forwarding: forwarding.clone(),
                    key,
                    _ticket: w._ticket,
                },
            );
            st.deadlines.insert((deadline, id));
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

    /// Relays the `n` datagrams in `batch`, received on socket `serial`, to
    /// their client and every client waiting on the same question, and keeps
    /// them in the cache; when the upstream answered SERVFAIL or REFUSED, a
    /// stale answer from the cache goes to a client instead when it has one.
    fn answers(&self, batch: &mut Batch, n: usize, serial: u64, tx: &mut Batch) {
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
                        let p = st.pending.remove(&id).expect("present above");
                        st.deadlines.remove(&(p.deadline, id));
                        Some(p)
                    }
                    _ => None,
                }
            };
            let Some(p) = p else { continue };
            let u = &p.upstreams[p.tried];
            let fwd = p.forwarder();
            fwd.record(u, true);
            let caches = fwd.caches();
            let waiters = p.key.as_ref().map(|k| self.coalesce.take(k)).unwrap_or_default();
            // A stale answer instead of the upstream's failure only from a
            // zone whose answers are cached.
            let failed = !truncated && caches && admission::stale_instead(answer[3]);
            let mut leader_stale = false;
            let recipients = std::iter::once((&p.query, p.client, p.started))
                .chain(waiters.iter().map(|w| (&w.query, w.client, w.started)));
            for (k, (query, client, started)) in recipients.enumerate() {
                if out == tx.capacity() {
                    tx.send(self.client.as_raw_fd(), out);
                    out = 0;
                }
                let Some(len) = self.deliver(&p.forwarding, query, answer, truncated, failed, tx.buf_mut(out)) else {
                    continue;
                };
                leader_stale |= k == 0 && failed && len.1;
                tx.address_to(out, len.0, client);
                counts[rcode_index((tx.buf_mut(out)[3] & 0x0F) as u16)] += 1;
                out += 1;
                longest = longest.max(Some(started.elapsed()));
            }
            if !truncated && !leader_stale && caches {
                if let Some(qn) = question(&p.query, p.forwarding.encoder().max_udp()) {
                    let cache = p.forwarding.cache();
                    cache.insert(&p.query, &qn, answer, cache.now());
                }
            }
        }
        // Every answer of the batch with one sendmmsg.
        tx.send(self.client.as_raw_fd(), out);
        if let Some(l) = longest {
            self.metrics.latency(QueryKind::Forwarded, l.as_secs_f64());
        }
        for (r, c) in counts.iter().enumerate() {
            if *c > 0 {
                self.metrics.answered_n(QueryKind::Forwarded, r, *c);
            }
        }
    }

    /// Writes into `buf` the answer to `query` from the upstream's `answer`
    /// (to that query or an identical one): a TC answer when it was too big
    /// for UDP, a stale answer when it `failed` and the cache has one, else
    /// the answer with the query's ID, question case and RD. Returns its
    /// length and whether it came from the cache.
    fn deliver(
        &self,
        fwd: &Forwarding,
        query: &[u8],
        answer: &[u8],
        truncated: bool,
        failed: bool,
        buf: &mut [u8],
    ) -> Option<(usize, bool)> {
        // Too big to relay, or larger than this recipient takes over UDP
        // (the cache keeps it whole for its TCP retry): TC.
        if truncated || answer.len() > fwd.encoder().udp_limit_of(query) {
            return Some((truncated_into(fwd, query, buf)?, false));
        }
        if failed {
            if let Some(n) = self.stale(fwd, query, buf) {
                return Some((n, true));
            }
        }
        let qn = question(query, fwd.encoder().max_udp());
        let out = buf.get_mut(..answer.len())?;
        out.copy_from_slice(answer);
        match qn {
            Some(qn) => {
                if !coalesce::adapt(out, query, &qn) {
                    return None;
                }
            }
            None => out[..2].copy_from_slice(&query[..2]),
        }
        Some((answer.len(), false))
    }

    /// Moves timed-out queries to the next upstream in use, or answers them
    /// and those waiting on them (stale from the cache, else SERVFAIL, which
    /// the name is remembered by: see [`admission::remember_timeout`]).
    fn sweep(&self, scratch: &mut [u8]) {
        let now = Instant::now();
        let mut failed = Vec::new();
        let mut resend = Vec::new();
        {
            let mut st = self.lock();
            while let Some(&(deadline, id)) = st.deadlines.first() {
                if deadline > now {
                    break;
                }
                st.deadlines.pop_first();
                let Some(p) = st.pending.get(&id) else { continue };
                let u = p.upstreams[p.tried].clone();
                let fwd = p.forwarder();
                let timeout = fwd.timeout();
                let err = ForwardError::Timeout { addr: u.addr, timeout };
                fwd.record(&u, false);
                let next = admission::next_upstream(&p.upstreams, p.tried);
                let v6 = next.map(|i| p.upstreams[i].addr.is_ipv6());
                let sock = v6.and_then(|v6| st.socket(v6).ok());
                match (next, sock) {
                    (Some(i), Some((sock, serial))) => {
                        let p = st.pending.get_mut(&id).expect("present above");
                        p.tried = i;
                        p.sock = serial;
                        p.deadline = now + timeout;
                        let mut out = p.query.to_vec();
                        out[..2].copy_from_slice(&id.to_be_bytes());
                        resend.push((sock, out, p.upstreams[i].addr, p.forwarding.clone(), p.route, err));
                        let d = p.deadline;
                        st.deadlines.insert((d, id));
                    }
                    _ => {
                        if let Some(p) = st.pending.remove(&id) {
                            failed.push((p, err));
                        }
                    }
                }
            }
        }
        for (sock, out, to, fwd, route, err) in resend {
            fwd.count_upstream_error(fwd.zones().get(route).zone(), &err);
            let _ = sock.send_to(&out, to);
        }
        for (p, err) in failed {
            let waiters = p.key.as_ref().map(|k| self.coalesce.take(k)).unwrap_or_default();
            let fwd = p.forwarder();
            p.forwarding.count_upstream_error(fwd.zone(), &err);
            let caches = fwd.caches();
            let recipients = std::iter::once((&p.query, p.client)).chain(waiters.iter().map(|w| (&w.query, w.client)));
            let mut remembered = false;
            for (query, client) in recipients {
                let stale = if caches {
                    self.stale(&p.forwarding, query, scratch)
                } else {
                    None
                };
                let servfail;
                let bytes: &[u8] = match stale {
                    Some(n) => &scratch[..n],
                    None => match p.forwarding.encoder().servfail(query) {
                        Some(b) => {
                            servfail = b;
                            if !remembered {
                                admission::remember_timeout(&p.forwarding, query, &servfail);
                                remembered = true;
                            }
                            &servfail
                        }
                        None => continue,
                    },
                };
                let _ = self.client.send_to(bytes, client);
                self.metrics.answered(QueryKind::Forwarded, (bytes[3] & 0x0F) as u16);
            }
        }
    }
}

impl Pending {
    /// The forwarder of the zone this query goes to.
    fn forwarder(&self) -> &Forwarder {
        self.forwarding.zones().get(self.route)
    }
}

/// The TC answer to `query` written into `buf`; its length.
fn truncated_into(fwd: &Forwarding, query: &[u8], buf: &mut [u8]) -> Option<usize> {
    let b = fwd.encoder().truncated(query)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::fixture::fixture;

    fn query(id: u16, label: &str) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
        q.extend_from_slice(&[7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn the_deadline_queue_holds_one_entry_per_pending_query_and_is_paid_for_by_it() {
        let (_, h, _) = fixture();
        let f = h.forwarding().clone();
        // The client socket answers go to: our own, on loopback.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = client.local_addr().unwrap();
        let relay = Relay::new(
            client.try_clone().unwrap(),
            Arc::new(crate::metrics::Metrics::new()),
            Arc::new(Coalesce::default()),
        );
        let mut outbox = Outbox::default();
        let now = Instant::now();
        // Deadlines out of the order of sending: an older query sent later.
        let (late, early) = (query(1, "late"), query(2, "early"));
        let route = admission::route(&f, &late).unwrap();
        relay.submit(&f, route, &late, me, now, &mut outbox).unwrap();
        relay
            .submit(&f, route, &early, me, now - Duration::from_secs(10), &mut outbox)
            .unwrap();
        // An identical question waits on the first: no entry of its own.
        relay
            .submit(&f, route, &query(3, "LATE"), me, now, &mut outbox)
            .unwrap();
        outbox.flush();
        {
            let st = relay.lock();
            assert_eq!((st.pending.len(), st.deadlines.len()), (2, 2));
            let first = st.deadlines.first().unwrap().1;
            assert_eq!(st.pending[&first].query[..], early[..], "ordered by deadline");
        }
        let charged = 3 * PENDING_COST + (2 * late.len() + early.len()) as u64;
        assert_eq!(f.guard().used(), charged);
        // The sweep answers the expired query and drops its entry and charge;
        // the other is not due.
        relay.sweep(&mut [0u8; MAX_UDP_ANSWER]);
        {
            let st = relay.lock();
            assert_eq!((st.pending.len(), st.deadlines.len()), (1, 1));
        }
        assert_eq!(f.guard().used(), charged - PENDING_COST - early.len() as u64);
        let mut buf = [0u8; 512];
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, _) = client.recv_from(&mut buf).expect("the expired query is answered");
        assert_eq!((&buf[..2], buf[3] & 0x0F), (&[0u8, 2][..], 2), "SERVFAIL, its ID");
        assert!(n >= 12);
    }
}
