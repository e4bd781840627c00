//! The upstream client on the async runtime: relays queries outside our
//! zones to the configured resolvers for TCP clients, resolves alias targets
//! (the background refresher, and alias answers a UDP worker hands over),
//! and health-checks upstreams out of use. The UDP workers' own forwarding
//! is the relay's, off the runtime; both share the upstreams' health through
//! the guard.
//!
//! Forwarded queries are relayed as raw bytes with a fresh random ID and a
//! fresh socket (random source port), so the upstream's answer comes back
//! faithfully: rcode, every section and its EDNS, exactly as sent. Each
//! upstream gets `timeout`; after all fail the caller answers SERVFAIL.
//! Which upstream is asked is [`super::admission`]'s policy; a timeout only
//! makes the upstream suspect (see [`super::health`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use super::admission::{self, Denied};
use super::guard::{Guard, UpstreamState};
use super::message::{self, Transport};
use crate::config::UpstreamSettings;

/// Largest upstream answer taken over UDP; a bigger one is answered with
/// TC set so the client retries over TCP (our own answers never exceed
/// 4096 bytes either).
pub(super) const MAX_UDP_ANSWER: usize = 4096;

/// Bytes charged per query answered through the runtime (UDP queries handed
/// over by a worker, TCP queries that wait on an upstream): its task, a
/// socket and a receive buffer of [`MAX_UDP_ANSWER`] bytes, the parsed query.
pub(super) const SLOW_COST: u64 = 16 * 1024;

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("upstream {addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("upstream {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("no upstream is configured")]
    NoUpstream,
    #[error("every upstream is out of use after failed health checks")]
    AllDown,
    #[error("the upstream's answer is larger than {MAX_UDP_ANSWER} bytes")]
    TooBig,
}

/// One upstream and its health.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<UpstreamState>,
}

/// One zone's upstream client (the `[upstream]` default's, or a
/// `[[forward]]` zone's: see [`super::forward_zones`]).
#[derive(Clone)]
pub(crate) struct Forwarder {
    /// The zone's name (`.` for the default): its metrics and logs label.
    zone: Arc<str>,
    /// Whether its answers may be cached (`[[forward]] cache`).
    cache: bool,
    upstreams: Arc<[Upstream]>,
    timeout: Duration,
    /// A health check's deadline: `timeout`, at most `health_check` (a
    /// check is over before the next is due).
    check_timeout: Duration,
    max_fails: u32,
    /// For health bookkeeping; `None` for the background target refresher,
    /// which keeps no health (it serves stale answers instead).
    guard: Option<Arc<Guard>>,
}

impl Forwarder {
    /// The forwarder of one zone's upstreams (`[upstream]`: zone `.`), the
    /// one way one is built.
    ///
    /// With `guard` (the query path: every handler), its upstreams share
    /// their health with every other forwarder of `guard` for the same zone
    /// (the relays, the next reload's handler while the zone's servers are
    /// unchanged): a timeout makes an upstream suspect, and `max_fails`
    /// failed health checks in a row take it out of use (see
    /// [`super::health`]). Without (the background target refresher), it
    /// keeps no health and suspects nothing: the refresher serves stale
    /// answers instead.
    pub(crate) fn new(zone: &str, settings: &UpstreamSettings, cache: bool, guard: Option<&Arc<Guard>>) -> Forwarder {
        let states = match guard {
            Some(g) => {
                let (states, fresh) = g.health.zone(zone, &settings.servers);
                if fresh {
                    // A new or changed zone starts with every upstream in use.
                    for &addr in &settings.servers {
                        g.metrics().upstream_up(zone, addr, true);
                    }
                }
                states
            }
            None => settings.servers.iter().map(|_| Arc::default()).collect(),
        };
        let upstreams = settings
            .servers
            .iter()
            .zip(states)
            .map(|(&addr, state)| Upstream { addr, state })
            .collect();
        Forwarder {
            zone: zone.into(),
            cache,
            upstreams,
            timeout: settings.timeout,
            check_timeout: settings.timeout.min(settings.health_check),
            max_fails: if guard.is_some() { settings.max_fails } else { u32::MAX },
            guard: guard.cloned(),
        }
    }

    /// The zone label (`.` for `[upstream]`).
    pub(crate) fn zone(&self) -> &str {
        &self.zone
    }

    /// Whether this zone's answers may be kept in, and answered from, the
    /// cache (`[[forward]] cache`; always true for `[upstream]`).
    pub(crate) fn caches(&self) -> bool {
        self.cache
    }

    pub(crate) fn upstreams(&self) -> &Arc<[Upstream]> {
        &self.upstreams
    }

    /// Whether every upstream is out of use (see [`admission::all_down`]).
    pub(crate) fn all_down(&self) -> bool {
        self.guard.is_some() && admission::all_down(&self.upstreams)
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records the outcome of one client query at `u`: an answer shows it
    /// is alive; a timeout (or send error) only makes it suspect, which has
    /// it health-checked at once: the name may be the one at fault.
    pub(crate) fn record(&self, u: &Upstream, ok: bool) {
        if let Some(g) = &self.guard {
            if ok {
                u.state.success(&self.zone, u.addr, g.metrics());
            } else {
                g.health.suspect(&u.state);
            }
        }
    }

    /// A health check: asks `addr` for the root's NS over UDP; any answer
    /// (whatever its rcode) shows it is alive, as CoreDNS's forward plugin
    /// does; `max_fails` checks in a row without one take it out of use.
    pub(crate) async fn check(&self, u: &Upstream) -> bool {
        let q = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
        let ok = self.udp(u.addr, &q, Instant::now() + self.check_timeout).await.is_ok();
        match (&self.guard, ok) {
            (_, true) => self.record(u, true),
            (Some(g), false) => u.state.check_failed(&self.zone, u.addr, self.max_fails, g.metrics()),
            (None, false) => {}
        }
        ok
    }

    /// Sends `query` to each upstream in turn until one answers; returns the
    /// raw answer with the query's own ID. Over UDP a truncated answer is
    /// returned as is when the client asked over UDP (it will retry over TCP),
    /// and retried over TCP when the client is already on TCP.
    pub(crate) async fn forward(&self, query: &[u8], transport: Transport) -> Result<Vec<u8>, ForwardError> {
        // The first upstream in use (or due a trial when none is), then the
        // next ones in use: the admission policy, as the relays apply it.
        let first = match &self.guard {
            Some(g) => admission::pick(&self.upstreams, &g.health, || false),
            None if self.upstreams.is_empty() => Err(Denied::NoUpstream),
            None => Ok(0),
        };
        let mut at = match first {
            Ok(i) => Some(i),
            Err(Denied::NoUpstream) => return Err(ForwardError::NoUpstream),
            Err(_) => return Err(ForwardError::AllDown),
        };
        let mut last = ForwardError::AllDown;
        while let Some(i) = at {
            let u = &self.upstreams[i];
            at = if self.guard.is_some() {
                admission::next_upstream(&self.upstreams, i)
            } else {
                Some(i + 1).filter(|&n| n < self.upstreams.len())
            };
            let addr = u.addr;
            let deadline = Instant::now() + self.timeout;
            let result = match transport {
                Transport::Udp => self.udp(addr, query, deadline).await,
                Transport::Tcp => match self.udp(addr, query, deadline).await {
                    Ok(r) if r[2] & 0x02 != 0 => self.tcp(addr, query, deadline).await,
                    Err(ForwardError::TooBig) => self.tcp(addr, query, deadline).await,
                    other => other,
                },
            };
            match result {
                Ok(mut answer) => {
                    self.record(u, true);
                    answer[..2].copy_from_slice(&query[..2]);
                    return Ok(answer);
                }
                Err(ForwardError::TooBig) => {
                    self.record(u, true);
                    return Err(ForwardError::TooBig);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "upstream failed");
                    self.record(u, false);
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn udp(&self, addr: SocketAddr, query: &[u8], deadline: Instant) -> Result<Vec<u8>, ForwardError> {
        let io = |source| ForwardError::Io { addr, source };
        let local: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(local).await.map_err(io)?;
        // A connected socket only accepts datagrams from the upstream and
        // reports ICMP port-unreachable as an error at once.
        sock.connect(addr).await.map_err(io)?;
        let mut out = query.to_vec();
        let id: u16 = rand::random();
        out[..2].copy_from_slice(&id.to_be_bytes());
        sock.send(&out).await.map_err(io)?;
        // Sized to the largest answer we relay over UDP (one byte more to
        // see a bigger one), not 64 KiB per waiting query.
        let mut buf = vec![0u8; MAX_UDP_ANSWER + 1];
        loop {
            let n = match timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    return Err(ForwardError::Timeout {
                        addr,
                        timeout: self.timeout,
                    })
                }
                Ok(r) => r.map_err(io)?,
            };
            if answers(&out, &buf[..n.min(MAX_UDP_ANSWER)]) {
                if n > MAX_UDP_ANSWER {
                    return Err(ForwardError::TooBig);
                }
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    async fn tcp(&self, addr: SocketAddr, query: &[u8], deadline: Instant) -> Result<Vec<u8>, ForwardError> {
        let io = |source| ForwardError::Io { addr, source };
        let work = async {
            let mut s = TcpStream::connect(addr).await?;
            let mut out = Vec::with_capacity(query.len() + 2);
            out.extend_from_slice(&(query.len() as u16).to_be_bytes());
            out.extend_from_slice(query);
            let id: u16 = rand::random();
            out[2..4].copy_from_slice(&id.to_be_bytes());
            s.write_all(&out).await?;
            loop {
                let len = s.read_u16().await? as usize;
                let mut buf = vec![0u8; len];
                s.read_exact(&mut buf).await?;
                if answers(&out[2..], &buf) {
                    return Ok(buf);
                }
            }
        };
        match timeout_at(deadline, work).await {
            Err(_) => Err(ForwardError::Timeout {
                addr,
                timeout: self.timeout,
            }),
            Ok(r) => r.map_err(io),
        }
    }
}

/// Whether `answer` is the response to `query`: same ID, QR set, and the same
/// question (names compared without regard to case).
fn answers(query: &[u8], answer: &[u8]) -> bool {
    answer.len() >= 2 && answer[..2] == query[..2] && same_question(query, answer)
}

/// Whether `answer` is a response (QR set) to the question of `query`
/// (names compared without regard to case, type and class exactly:
/// [`message::same_question`]); IDs are not compared.
pub(super) fn same_question(query: &[u8], answer: &[u8]) -> bool {
    answer.len() > 2 && answer[2] & 0x80 != 0 && message::same_question(query, answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_answers() {
        // id 0x1234, RD, 1 question: "a." A IN
        let q = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1];
        let mut a = q.to_vec();
        a[2] |= 0x80;
        assert!(answers(&q, &a));
        a[13] = b'A';
        assert!(answers(&q, &a), "0x20 case changes are fine");
        a[13] = b'b';
        assert!(!answers(&q, &a), "another question");
        let mut a2 = q.to_vec();
        a2[2] |= 0x80;
        a2[0] = 0;
        assert!(!answers(&q, &a2), "another id");
        assert!(!answers(&q, &q), "not a response");
        // Type and class bytes are compared exactly, not without regard to
        // case: type 65 (HTTPS, 0x41 'A') is not type 97 (0x61 'a').
        let https = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 0x41, 0, 1];
        let mut other = https.to_vec();
        other[2] |= 0x80;
        assert!(answers(&https, &other));
        other[16] = 0x61;
        assert!(!answers(&https, &other), "another type");
        let mut class = https.to_vec();
        class[2] |= 0x80;
        class[18] = 3;
        assert!(!answers(&https, &class), "another class");
        assert_eq!(message::question_end(&q[..15]), None);
    }
}
