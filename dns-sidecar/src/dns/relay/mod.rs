//! Forwarding for the UDP workers, without the async runtime.
//!
//! Each UDP worker owns a relay: a small pool of upstream-facing sockets on
//! random ports (replaced regularly, see `pool::ROTATE_AFTER`), a table of
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

mod answers;
mod outbox;
mod pool;
mod sweep;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::debug;

use super::admission::{self, Denied};
use super::cache::Found;
use super::coalesce::{Coalesce, Joined, Key, Waiter};
use super::forward::{ForwardError, Forwarder, Upstream, MAX_UDP_ANSWER};
use super::forward_zones::RouteId;
use super::forwarding::Forwarding;
use super::guard::Ticket;
use super::mmsg::Batch;
use super::question::question;
use super::sched::lower_priority;
use crate::metrics::Metrics;
pub(crate) use outbox::Outbox;
use pool::State;

const BATCH: usize = 32;
/// How often pending queries are checked for timeouts (and how long the
/// receiving thread waits for upstream answers at most).
const SWEEP: Duration = Duration::from_millis(20);
/// Bytes charged to the budget per pending query, besides the query itself
/// (the entry, its table and deadline-queue slots, its coalescing key,
/// allocator overhead); a query waiting on another's is charged the same.
pub(super) const PENDING_COST: u64 = 512;

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

pub(super) struct Relay {
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
    pub(super) fn new(client: UdpSocket, metrics: Arc<Metrics>, coalesce: Arc<Coalesce>) -> Arc<Relay> {
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
    pub(super) fn new_batch(&self) {
        self.lock().current = [None; 2];
    }

    /// Admits `query` from `client` (see [`super::admission`]) and either
    /// has it wait on an identical question in flight, or registers it for
    /// the first upstream of its zone's forwarder in `forwarding` (`route`,
    /// from [`admission::route`]; in use, or due a trial) and puts it in
    /// `outbox` (sent at the end of the worker's batch). The refusal,
    /// counted, says how to answer at once.
    pub(super) fn submit(
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
    pub(super) fn run(self: Arc<Relay>, stop: Arc<AtomicBool>) {
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
}

impl Pending {
    /// The forwarder of the zone this query goes to.
    fn forwarder(&self) -> &Forwarder {
        self.forwarding.zones().get(self.route)
    }
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
