//! The upstream client: relays queries outside our zones to the configured
//! resolvers, and resolves alias targets.
//!
//! Forwarded queries are relayed as raw bytes with a fresh random ID and a
//! fresh socket (random source port), so the upstream's answer comes back
//! faithfully: rcode, every section and its EDNS, exactly as sent. Each
//! upstream gets `timeout`; after all fail the caller answers SERVFAIL.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use super::Transport;

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
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
}

#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `query` to each upstream in turn until one answers; returns the
    /// raw answer with the query's own ID. Over UDP a truncated answer is
    /// returned as is when the client asked over UDP (it will retry over TCP),
    /// and retried over TCP when the client is already on TCP.
    pub async fn forward(&self, query: &[u8], transport: Transport) -> Result<Vec<u8>, ForwardError> {
        let mut last = ForwardError::NoUpstream;
        for &addr in &self.upstreams {
            let deadline = Instant::now() + self.timeout;
            let result = match transport {
                Transport::Udp => self.udp(addr, query, deadline).await,
                Transport::Tcp => match self.udp(addr, query, deadline).await {
                    Ok(r) if r[2] & 0x02 != 0 => self.tcp(addr, query, deadline).await,
                    other => other,
                },
            };
            match result {
                Ok(mut answer) => {
                    answer[..2].copy_from_slice(&query[..2]);
                    return Ok(answer);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "upstream failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn udp(&self, addr: SocketAddr, query: &[u8], deadline: Instant) -> Result<Vec<u8>, ForwardError> {
        let io = |source| ForwardError::Io { addr, source };
        let local: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0".parse().expect("literal") } else { "[::]:0".parse().expect("literal") };
        let sock = UdpSocket::bind(local).await.map_err(io)?;
        // A connected socket only accepts datagrams from the upstream and
        // reports ICMP port-unreachable as an error at once.
        sock.connect(addr).await.map_err(io)?;
        let mut out = query.to_vec();
        let id: u16 = rand::random();
        out[..2].copy_from_slice(&id.to_be_bytes());
        sock.send(&out).await.map_err(io)?;
        let mut buf = vec![0u8; 65535];
        loop {
            let n = match timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => return Err(ForwardError::Timeout { addr, timeout: self.timeout }),
                Ok(r) => r.map_err(io)?,
            };
            if answers(&out, &buf[..n]) {
                return Ok(buf[..n].to_vec());
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
            Err(_) => Err(ForwardError::Timeout { addr, timeout: self.timeout }),
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
/// (names compared without regard to case); IDs are not compared.
pub(super) fn same_question(query: &[u8], answer: &[u8]) -> bool {
    let Some(end) = question_end(query) else { return false };
    answer.len() >= end
        && answer[2] & 0x80 != 0
        && answer[4..6] == query[4..6]
        && answer[12..end].eq_ignore_ascii_case(&query[12..end])
}

/// End of the first question of an uncompressed query.
fn question_end(msg: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = *msg.get(i)? as usize;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 1 + 4;
    (end <= msg.len()).then_some(end)
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
        assert_eq!(question_end(&q[..15]), None);
    }
}
