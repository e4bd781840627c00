//! Health checks are served apart. The admin listener's accept loop runs on
//! a thread of its own, and every new connection waits there for its first
//! bytes; they are looked at, not read: a `GET` or `HEAD` of `/healthz`,
//! `/readyz` or `/metrics` is then served on that thread, anything else is
//! handed to the main runtime. So a flood of connections, however much work
//! it queues on the main runtime, does not delay the kubelet's probe or
//! Prometheus' scrape: they wait only for the flood to be accepted (a few
//! microseconds per connection).

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Most connections held while they have not sent a byte; when full, the
/// oldest of them is closed to make room. A connection is held here only
/// until its first bytes are in (one turn of the event loop for any real
/// client), so no flood of connects can close a health check's connection
/// this way, and one that stays silent holds no place among
/// `max_connections`.
pub(super) const PENDING: usize = 256;

/// The connections that have not sent a byte yet, oldest first.
#[derive(Default)]
pub(super) struct Pending {
    inner: Mutex<(BTreeMap<u64, Arc<Notify>>, u64)>,
}

/// A place in [`Pending`]; dropping it frees the place.
pub(super) struct Ticket {
    pending: Arc<Pending>,
    id: u64,
    close: Arc<Notify>,
}

impl Pending {
    /// A place for a new connection, and whether the oldest silent one was
    /// closed to make room.
    pub(super) fn enter(self: &Arc<Self>) -> (Ticket, bool) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (held, next) = &mut *g;
        let evicted = held.len() >= PENDING;
        if evicted {
            if let Some((_, close)) = held.pop_first() {
                close.notify_one();
            }
        }
        *next += 1;
        let close = Arc::new(Notify::new());
        held.insert(*next, close.clone());
        (
            Ticket {
                pending: self.clone(),
                id: *next,
                close,
            },
            evicted,
        )
    }
}

impl Ticket {
    /// Returns when the connection must be closed to make room.
    pub(super) async fn closed(&self) {
        self.close.notified().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut g = self.pending.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.remove(&self.id);
    }
}

/// Returns once `stream`'s first bytes are in; an error if it ends (or
/// fails) before. Tokio's readiness can be a false positive (a fresh
/// connection reported readable with nothing to read), which would let a
/// silent connection take a place among `max_connections`: each readiness
/// is confirmed by a peek, and a false one cleared before waiting again.
pub(super) async fn first_bytes(stream: &TcpStream) -> std::io::Result<()> {
    loop {
        stream.readable().await?;
        let mut buf = [MaybeUninit::<u8>::uninit(); 1];
        match stream.try_io(tokio::io::Interest::READABLE, || {
            socket2::SockRef::from(stream).peek(&mut buf)
        }) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The request lines (their start) served on the accept loop's thread.
const HEALTH_CHECKS: [&[u8]; 6] = [
    b"GET /healthz",
    b"GET /readyz",
    b"GET /metrics",
    b"HEAD /healthz",
    b"HEAD /readyz",
    b"HEAD /metrics",
];

/// Whether the request already sent on `stream` is a health check, readiness
/// check or metrics scrape (looked at, not read).
pub(super) fn is_health_check(stream: &TcpStream) -> bool {
    let mut buf = [MaybeUninit::<u8>::uninit(); 16];
    let n = socket2::SockRef::from(stream).peek(&mut buf).unwrap_or(0);
    // SAFETY: recv(2) initialised the first `n` bytes (`n` <= the buffer's length).
    let got: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n.min(buf.len())) };
    starts_a_health_check(got)
}

/// `GET /readyz HTTP/1.1...`, `GET /metrics?x`: a listed request line whose
/// path ends there.
fn starts_a_health_check(got: &[u8]) -> bool {
    HEALTH_CHECKS.iter().any(|line| {
        got.strip_prefix(*line)
            .is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'?')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_silent_connection_makes_room() {
        let p = Arc::new(Pending::default());
        let first = p.enter();
        assert!(!first.1);
        let rest: Vec<_> = (1..PENDING).map(|_| p.enter()).collect();
        assert!(rest.iter().all(|(_, e)| !e));
        let (_new, evicted) = p.enter();
        assert!(evicted);
        assert!(!p.inner.lock().unwrap().0.contains_key(&first.0.id), "the oldest went");
        drop(rest);
        drop(first);
        assert_eq!(p.inner.lock().unwrap().0.len(), 1, "dropped tickets free their places");
    }

    #[test]
    fn health_checks_are_told_by_their_request_line() {
        for yes in [
            &b"GET /healthz HTTP/1.1\r\n"[..],
            b"GET /readyz HTTP/1.1",
            b"HEAD /metrics?name[]=x",
            b"GET /metrics HTTP/1.0",
        ] {
            assert!(starts_a_health_check(&yes[..yes.len().min(16)]), "{yes:?}");
        }
        for no in [
            &b"GET /readyzz HTTP/1.1"[..],
            b"POST /readyz HTTP/1.1",
            b"GET /status HTTP/1.1",
            b"GET /healthz",
            b"GET /health",
            b"",
            b"get /healthz HTTP/1.1",
        ] {
            assert!(!starts_a_health_check(&no[..no.len().min(16)]), "{no:?}");
        }
    }
}
