//! The relay's upstream-facing sockets: a small pool per address family on
//! random ports, replaced regularly, and the table of pending queries by
//! upstream ID.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Pending;

/// Upstream sockets per address family.
const POOL: usize = 4;
/// A socket is replaced by one on a new random port after this long...
const ROTATE_AFTER: Duration = Duration::from_secs(60);
/// ... or after this many queries, whichever comes first.
const ROTATE_QUERIES: u32 = 10_000;

/// One upstream-facing socket of the pool.
pub(super) struct Slot {
    pub(super) sock: Arc<UdpSocket>,
    pub(super) serial: u64,
    pub(super) v6: bool,
    pub(super) born: Instant,
    pub(super) used: u32,
}

/// Upstream IDs are random: a multiplication spreads them over the map's
/// buckets and tags (SipHash would cost more than the lookup).
#[derive(Default)]
pub(super) struct IdHasher(u64);

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

pub(super) struct State {
    pub(super) pending: HashMap<u16, Pending, Ids>,
    /// (deadline, id) of every pending query, earliest first: exactly one
    /// entry per entry of `pending`, removed with it (so bounded by the
    /// in-flight limit and paid for by its ticket). Ordered by deadline,
    /// whatever each query's timeout.
    pub(super) deadlines: BTreeSet<(Instant, u16)>,
    pub(super) slots: Vec<Slot>,
    /// Sockets replaced by newer ones, kept until their queries are done.
    pub(super) retired: Vec<(Slot, Instant)>,
    pub(super) next: usize,
    pub(super) serial: u64,
    /// The socket (serial) this worker batch sends from, per family (v4,
    /// v6): the batch's queries leave together, with one `sendmmsg`.
    pub(super) current: [Option<u64>; 2],
}

impl State {
    /// The next socket of the pool for this family (opened on first use).
    pub(super) fn socket(&mut self, v6: bool) -> io::Result<(Arc<UdpSocket>, u64)> {
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
    pub(super) fn maintain(&mut self) {
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
