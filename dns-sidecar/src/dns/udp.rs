//! Batched UDP serving, off the async runtime.
//!
//! Each UDP socket (several per address, bound with SO_REUSEPORT so the
//! kernel spreads clients over them; on a port-0 listener duplicates of one
//! socket without it, see `bind_group` in listeners.rs) gets a thread that
//! receives up to [`WORKER_BATCH`] datagrams with one `recvmmsg`, answers what it can from the
//! precomputed [`FastTable`] or synchronously through the full handler, and
//! sends all answers with one `sendmmsg`. No task is spawned and nothing is
//! allocated per query on that path. Forwarded queries go to the worker's
//! [`Relay`] (which keeps upstream sockets of both address families); the
//! rare queries that must wait on an upstream otherwise (an alias whose
//! target's addresses are not cached yet) are handed to the tokio runtime
//! (`slow`), which answers them through its own handle on
//! the same socket. Neither ever blocks the worker: when a limit is reached
//! (memory budget, in-flight count, the client's rate, every upstream out of
//! use: the policy is [`super::admission`]'s) the query is answered at once,
//! so alias and zone answers in the same batch never wait behind forwarding.
//!
//! Clients outside `[dns] allow` get REFUSED, built from the raw header
//! without decoding the query.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::admission::{self, Denied};
use super::cache::Found;
use super::fast::{Fast, FastTable};
use super::forward_zones::RouteId;
use super::forwarding::Forwarding;
use super::handler::{Handler, SharedHandler};
use super::message::{must_drop, refused_from_raw, Transport};
use super::mmsg::{sockaddr_to_std, Batch, WORKER_BATCH};
use super::plan::{Pick, Plan, Request};
use super::question::Question;
use super::relay::{Outbox, Relay};
use super::slow::{slow, slow_answers, SlowJob};
use crate::metrics::{rcode_index, Metrics, QueryKind};
use crate::routes::Asker;

/// Receive buffer per datagram (queries are small; EDNS caps answers lower).
const BUF: usize = 4096;
/// How often a worker checks for shutdown while idle.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Starts one worker thread per socket, and the runtime tasks that answer
/// their slow queries. Must be called inside the tokio runtime. The relays
/// and workers reach the guard through the handler in force.
pub(super) fn spawn(
    sockets: Vec<UdpSocket>,
    handler: SharedHandler,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut threads = Vec::new();
    // One table of questions in flight for every worker's relay.
    let coalesce = Arc::new(super::coalesce::Coalesce::default());
    for (i, sock) in sockets.into_iter().enumerate() {
        // The worker blocks in recvmmsg (waking every IDLE_CHECK to look for
        // shutdown), so the socket stays in blocking mode; slow answers are
        // sent from the runtime with a plain sendto on a duplicate of it,
        // which does not block in practice for UDP.
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(IDLE_CHECK))?;
        let sender = Arc::new(sock.try_clone()?);
        // Unbounded, but every job in it holds a ticket of the budget.
        let (tx, rx) = mpsc::unbounded_channel::<SlowJob>();
        tokio::spawn(slow_answers(rx, sender, metrics.clone()));
        let relay = Relay::new(sock.try_clone()?, metrics.clone(), coalesce.clone());
        let (r, relay_stop) = (relay.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("dns-relay-{i}"))
                .spawn(move || r.run(relay_stop))?,
        );
        let (handler, metrics, stop) = (handler.clone(), metrics.clone(), stop.clone());
        let t = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || Worker::new(sock, handler, metrics, tx, relay).run(&stop))?;
        threads.push(t);
    }
    Ok(threads)
}

/// The snapshots a fast table was built from. Holding them (not just their
/// addresses) keeps a freed snapshot's address from being reused by a new one
/// while we compare.
struct Generation(Arc<Handler>, Arc<crate::routes::Routes>, Arc<super::targets::Targets>);

impl Generation {
    fn same(&self, other: &Generation) -> bool {
        Arc::ptr_eq(&self.0, &other.0) && Arc::ptr_eq(&self.1, &other.1) && Arc::ptr_eq(&self.2, &other.2)
    }
}

struct Worker {
    sock: UdpSocket,
    handler: SharedHandler,
    metrics: Arc<Metrics>,
    slow: mpsc::UnboundedSender<SlowJob>,
    relay: Arc<Relay>,
    table: Option<(Generation, FastTable)>,
    rx: Batch,
    /// What the batch being answered writes.
    out: Out,
    /// Full batches received in a row.
    full_streak: u32,
    /// Queries received so far: a rotating reader alias's turn.
    seq: u64,
}

/// What one batch writes: its answers, the queries it relays and its
/// counts (added to the metrics once per batch).
struct Out {
    tx: Batch,
    /// Answers written so far.
    n: usize,
    /// Queries relayed in this batch, sent together at its end.
    outbox: Outbox,
    /// Answers per \[kind\]\[rcode\] in this batch, added to the metrics once.
    counts: [[u64; 8]; 4],
    /// Cache hits, misses and stale answers in this batch.
    cached: [u64; 3],
}

/// What every query of one batch is answered with.
struct BatchCx<'a> {
    handler: &'a Arc<Handler>,
    fwd: &'a Arc<Forwarding>,
    table: &'a FastTable,
    relay: &'a Relay,
    slow: &'a mpsc::UnboundedSender<SlowJob>,
    /// The cache's clock at the batch's start.
    now: u64,
    started: Instant,
    /// Queries refused at a limit are dropped rather than answered.
    overloaded: bool,
}

/// Full batches in a row (datagrams waiting behind them all along) after
/// which the worker counts as overloaded.
const OVERLOAD_STREAK: u32 = 4;

impl Worker {
    fn new(
        sock: UdpSocket,
        handler: SharedHandler,
        metrics: Arc<Metrics>,
        slow: mpsc::UnboundedSender<SlowJob>,
        relay: Arc<Relay>,
    ) -> Worker {
        Worker {
            sock,
            handler,
            metrics,
            slow,
            relay,
            table: None,
            rx: Batch::new(WORKER_BATCH, BUF),
            out: Out {
                tx: Batch::new(WORKER_BATCH, BUF),
                n: 0,
                outbox: Outbox::default(),
                counts: [[0; 8]; 4],
                cached: [0; 3],
            },
            full_streak: 0,
            seq: 0,
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        let fd = self.sock.as_raw_fd();
        while !stop.load(Ordering::Relaxed) {
            let n = self.rx.recv(fd);
            if n > 0 {
                self.batch(n);
            }
        }
    }

    fn refresh_table(&mut self) {
        let h = self.handler.load_full();
        let gen = Generation(h.clone(), h.answerer().routes(), h.answerer().addresses());
        if self.table.as_ref().is_some_and(|(g, _)| g.same(&gen)) {
            return;
        }
        let table = FastTable::build(&gen.0, &gen.1);
        if let Some((_, old)) = self.table.replace((gen, table)) {
            old.flush_shares();
        }
    }

    fn batch(&mut self, n: usize) {
        // Full batches in a row mean datagrams keep waiting in the socket:
        // the worker is behind (a burst fills one or two). Then queries
        // refused at a limit are dropped rather than answered (half of their
        // cost is the answer's send), so the CPU goes to the answers that
        // matter and the queue in front of them shrinks.
        self.full_streak = if n == WORKER_BATCH {
            self.full_streak.saturating_add(1)
        } else {
            0
        };
        let overloaded = self.full_streak >= OVERLOAD_STREAK;
        self.refresh_table();
        let started = Instant::now();
        let (gen, table) = self.table.as_ref().expect("built above");
        self.relay.new_batch();
        let fwd = gen.0.forwarding();
        let cx = BatchCx {
            handler: &gen.0,
            fwd,
            table,
            relay: &self.relay,
            slow: &self.slow,
            now: fwd.cache().now(),
            started,
            overloaded,
        };
        for i in 0..n {
            self.out.query(&cx, &mut self.rx, i, &mut self.seq);
        }
        table.flush_shares();
        // The upstream starts on the relayed queries, then the answers go.
        self.out.outbox.flush();
        self.out.tx.send(self.sock.as_raw_fd(), std::mem::take(&mut self.out.n));
        self.out.publish(&self.metrics, started.elapsed().as_secs_f64());
    }
}

impl Out {
    /// Answers datagram `i` of `rx`, or relays it, or hands it to the
    /// runtime. Alias and zone answers come first: they never wait on
    /// anything. (The worker's hot loop: its helpers are inlined.)
    #[inline]
    fn query(&mut self, cx: &BatchCx<'_>, rx: &mut Batch, i: usize, seq: &mut u64) {
        let peer_addr = *rx.addr(i);
        // A datagram larger than its slot is larger than any query we accept.
        let Some(q) = rx.received(i) else { return };
        let q: &[u8] = q;
        let Some(peer) = sockaddr_to_std(&peer_addr) else {
            return;
        };
        if !admission::allows(cx.fwd, peer.ip()) {
            if must_drop(q) {
                return;
            }
            let r = refused_from_raw(q);
            self.tx.buf_mut(self.n)[..r.len()].copy_from_slice(&r);
            self.tx.address_reply(self.n, r.len(), rx, i);
            self.counts[QueryKind::Other as usize][rcode_index(5)] += 1;
            self.n += 1;
            return;
        }
        // A rotating reader alias's turn: this worker's own count.
        *seq = seq.wrapping_add(1);
        let asker = Asker {
            seq: *seq,
            client: Some(peer.ip()),
        };
        let answer = match cx.table.classify(q, self.tx.buf_mut(self.n), asker) {
            Fast::Answer(len, kind) => Some((len, kind)),
            // Forwarded names, without decoding. A name nothing forwards:
            // the full path.
            Fast::Forward(f) => match admission::route(cx.fwd, q) {
                Ok(route) => self
                    .forwarded(cx, q, &f, route, peer)
                    .map(|len| (len, QueryKind::Forwarded)),
                Err(_) => self.full(cx, q, peer, asker),
            },
            Fast::Neither => self.full(cx, q, peer, asker),
        };
        if let Some((len, kind)) = answer {
            self.tx.address_reply(self.n, len, rx, i);
            let rcode = (self.tx.buf_mut(self.n)[3] & 0x0F) as u16;
            self.counts[kind as usize][rcode_index(rcode)] += 1;
            self.n += 1;
        }
    }

    /// A forwarded name going to `route`: from the cache, or relayed to
    /// its zone's upstreams (no answer now), or refused at once. The
    /// answer's length, when one was written.
    #[inline]
    fn forwarded(
        &mut self,
        cx: &BatchCx<'_>,
        q: &[u8],
        f: &Question,
        route: RouteId,
        peer: SocketAddr,
    ) -> Option<usize> {
        // A zone with `cache = false`: never from the cache.
        let caches = cx.fwd.zones().get(route).caches();
        let found = if caches {
            cx.fwd
                .cache()
                .answer(q, f, f.udp_limit, cx.now, self.tx.buf_mut(self.n))
        } else {
            Found::Off
        };
        if let Some(len) = self.count_cached(found) {
            return Some(len);
        }
        self.cached[1] += u64::from(found == Found::Miss);
        match cx.relay.submit(cx.fwd, route, q, peer, cx.started, &mut self.outbox) {
            Ok(()) => None,
            Err(why) => self.refused(cx, q, f, caches, why),
        }
    }

    /// Counts an answer the cache wrote (fresh or stale) and gives its
    /// length; `None` when it wrote none.
    #[inline]
    fn count_cached(&mut self, found: Found) -> Option<usize> {
        match found {
            Found::Fresh(len) => {
                self.cached[0] += 1;
                Some(len)
            }
            Found::Stale(len) => {
                self.cached[2] += 1;
                Some(len)
            }
            Found::Miss | Found::Off => None,
        }
    }

    /// A forwarded name refused with `why`: a stale answer rather than
    /// SERVFAIL when the cache has one; nothing under overload.
    #[inline]
    fn refused(&mut self, cx: &BatchCx<'_>, q: &[u8], f: &Question, caches: bool, why: Denied) -> Option<usize> {
        let stale = if why.stale_ok() && caches {
            cx.fwd.cache().stale(q, f, f.udp_limit, cx.now, self.tx.buf_mut(self.n))
        } else {
            Found::Miss
        };
        if let Some(len) = self.count_cached(stale) {
            return Some(len);
        }
        if cx.overloaded {
            return None;
        }
        cx.table.refuse(q, f, why.rcode().low(), self.tx.buf_mut(self.n))
    }

    /// What the fast path does not answer: the full path's answer written
    /// into the next slot, or the query relayed or handed to the runtime.
    fn full(&mut self, cx: &BatchCx<'_>, q: &[u8], peer: SocketAddr, asker: Asker) -> Option<(usize, QueryKind)> {
        let reply = match cx.handler.plan(q, Transport::Udp, Pick::Asked(asker)) {
            Plan::Reply(r) => Some(r),
            Plan::Drop => None,
            Plan::Forward(Request(req)) => {
                let submitted = admission::route(cx.fwd, q)
                    .and_then(|route| cx.relay.submit(cx.fwd, route, q, peer, cx.started, &mut self.outbox));
                match submitted {
                    Ok(()) => None,
                    // Under overload a refusal is dropped; a stale answer
                    // (never SERVFAIL or REFUSED itself) is sent.
                    Err(why) => admission::refusal(cx.fwd, &req, q, why, Transport::Udp)
                        .filter(|r| !cx.overloaded || r.rcode() != why.rcode().low() as u16),
                }
            }
            plan => slow(cx.slow, cx.fwd, plan, q, peer, cx.started),
        };
        match reply {
            Some(r) if r.bytes.len() <= BUF => {
                self.tx.buf_mut(self.n)[..r.bytes.len()].copy_from_slice(&r.bytes);
                Some((r.bytes.len(), r.kind))
            }
            _ => None,
        }
    }

    /// Adds the batch's counts to the metrics (and clears them); `elapsed`
    /// is the time the batch took.
    fn publish(&mut self, m: &Metrics, elapsed: f64) {
        for (n, c) in self
            .cached
            .iter_mut()
            .zip([&m.cache.hits, &m.cache.misses, &m.cache.stale])
        {
            if *n > 0 {
                c.inc_by(std::mem::take(n));
            }
        }
        for (k, kind) in [
            QueryKind::Alias,
            QueryKind::Authoritative,
            QueryKind::Forwarded,
            QueryKind::Other,
        ]
        .into_iter()
        .enumerate()
        {
            let total: u64 = self.counts[k].iter().sum();
            if total == 0 {
                continue;
            }
            for (r, c) in self.counts[k].iter_mut().enumerate() {
                if *c > 0 {
                    m.answered_n(kind, r, *c);
                    *c = 0;
                }
            }
            // One observation per batch and kind: the time the batch took.
            m.latency(kind, elapsed);
        }
    }
}
