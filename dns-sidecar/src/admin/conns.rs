//! The open admin connections: at most `[admin] max_connections` in all and
//! `max_connections_per_client` per client address.
//!
//! A connection is either *waiting* (for its request's headers, or idle
//! between keep-alive requests) or *busy* (a request is being answered).
//! When a new connection finds no place, a waiting one is closed to make
//! room, the one that has waited longest: first among the new connection's
//! own address when that address is at its cap (a client that floods only
//! pushes out its own connections), else among all. Only when every
//! candidate is busy is the new connection closed.
//!
//! Busy connections cannot fill the table: requests that wait on their
//! client (a body to read) hold at most a quarter of the places (see
//! [`super::gate::body_places`]); every other request is answered from
//! memory at once. So a new connection, such as the kubelet's probe, always
//! finds a waiting connection to replace, even when it comes from the same
//! address as a flood.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// The table of open connections.
#[derive(Default)]
pub(super) struct Conns {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    map: HashMap<ConnId, Entry>,
    next: u64,
}

/// A connection's key in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ConnId(u64);

struct Entry {
    /// The client's address (IPv4-mapped IPv6 as IPv4).
    ip: IpAddr,
    /// Since when it waits for a request; `None` while busy.
    since: Option<Instant>,
    /// Notified to close it.
    close: Arc<Notify>,
}

/// Why a new connection was let in at the expense of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Evicted {
    /// The table was full: the longest-waiting connection of anyone.
    Oldest,
    /// Its address was at its cap: that address's longest-waiting one.
    SameClient,
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The table is full and every connection is busy.
    MaxConnections,
    /// Its address is at its cap and all of its connections are busy.
    PerClient,
}

/// A connection's place; dropping it frees the place.
pub(super) struct Place {
    pub(super) id: ConnId,
    conns: Arc<Conns>,
    pub(super) close: Arc<Notify>,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `ip`, making room if needed.
    pub(super) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        cap: usize,
        per_client: usize,
    ) -> Result<(Place, Option<Evicted>), Refused> {
        let ip = ip.to_canonical();
        let mut t = self.lock();
        let mine = t.map.values().filter(|e| e.ip == ip).count();
        let evicted = if mine >= per_client {
            let victim = t.longest_waiting(|e| e.ip == ip).ok_or(Refused::PerClient)?;
            t.close(victim);
            Some(Evicted::SameClient)
        } else if t.map.len() >= cap {
            let victim = t.longest_waiting(|_| true).ok_or(Refused::MaxConnections)?;
            t.close(victim);
            Some(Evicted::Oldest)
        } else {
            None
        };
        t.next += 1;
        let id = ConnId(t.next);
        let close = Arc::new(Notify::new());
        t.map.insert(
            id,
            Entry {
                ip,
                since: Some(Instant::now()),
                close: close.clone(),
            },
        );
        Ok((
            Place {
                id,
                conns: self.clone(),
                close,
            },
            evicted,
        ))
    }

    /// Marks a connection busy (a request is being answered) or waiting.
    pub(super) fn set_waiting(&self, id: ConnId, waiting: bool) {
        if let Some(e) = self.lock().map.get_mut(&id) {
            e.since = waiting.then(Instant::now);
        }
    }
}

impl Table {
    fn longest_waiting(&self, which: impl Fn(&Entry) -> bool) -> Option<ConnId> {
        self.map
            .iter()
            .filter(|(_, e)| which(e))
            .filter_map(|(id, e)| e.since.map(|t| (t, *id)))
            .min()
            .map(|(_, id)| id)
    }

    fn close(&mut self, id: ConnId) {
        if let Some(e) = self.map.remove(&id) {
            e.close.notify_one();
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.conns.lock().map.remove(&self.id);
    }
}

/// Marks its connection busy while it lives (a request being answered).
pub(super) struct Busy(Arc<Conns>, ConnId);

impl Busy {
    pub(super) fn new(conns: Arc<Conns>, id: ConnId) -> Busy {
        conns.set_waiting(id, false);
        Busy(conns, id)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set_waiting(self.1, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_address_makes_room_among_its_own_connections() {
        let c = Arc::new(Conns::default());
        let flood = ip("10.0.0.1");
        let other = c.admit(ip("10.0.0.2"), 10, 3).unwrap().0;
        let mut held: Vec<Place> = (0..3).map(|_| c.admit(flood, 10, 3).unwrap().0).collect();
        // The oldest of the flood's own goes, not the other client's (older) one.
        let (p, ev) = c.admit(flood, 10, 3).unwrap();
        assert_eq!(ev, Some(Evicted::SameClient));
        assert!(!c.lock().map.contains_key(&held[0].id));
        assert!(c.lock().map.contains_key(&other.id));
        held.push(p);
        // All of the flood's connections busy: its next one is refused, others still come in.
        let busy: Vec<Busy> = held[1..].iter().map(|p| Busy::new(c.clone(), p.id)).collect();
        assert_eq!(c.admit(flood, 10, 3).err(), Some(Refused::PerClient));
        assert!(c.admit(ip("10.0.0.3"), 10, 3).is_ok());
        drop(busy);
        assert!(c.admit(flood, 10, 3).is_ok());
    }

    #[test]
    fn a_full_table_makes_room_by_the_longest_waiting_or_refuses() {
        let c = Arc::new(Conns::default());
        let a = c.admit(ip("10.0.0.1"), 2, 8).unwrap().0;
        let b = c.admit(ip("::ffff:10.0.0.2"), 2, 8).unwrap().0;
        let (_n, ev) = c.admit(ip("10.0.0.3"), 2, 8).unwrap();
        assert_eq!(ev, Some(Evicted::Oldest));
        assert!(!c.lock().map.contains_key(&a.id));
        let _busy = [Busy::new(c.clone(), b.id), Busy::new(c.clone(), _n.id)];
        assert_eq!(c.admit(ip("10.0.0.4"), 2, 8).err(), Some(Refused::MaxConnections));
        // The mapped address counts as the IPv4 one.
        assert_eq!(c.lock().map.values().filter(|e| e.ip == ip("10.0.0.2")).count(), 1);
    }
}
