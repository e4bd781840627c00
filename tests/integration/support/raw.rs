//! A raw UDP DNS client: for packets `dig` will not send, and for polling
//! the alias every few milliseconds without process start-up noise.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// Sends `packet`, returns the first datagram back, or `None` on timeout.
pub fn exchange(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Builds a query for `name`/`rtype` with RD set.
pub fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.queries.push(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

/// The CNAME target in the answer for `name`, if any (lower case, with dot).
pub fn cname_of(server: SocketAddr, name: &str) -> Option<String> {
    let resp = exchange(server, &query(name, RecordType::CNAME), Duration::from_millis(500))?;
    let m = Message::from_vec(&resp).ok()?;
    m.answers.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.to_lowercase().to_ascii()),
        _ => None,
    })
}

/// A DNS client on one UDP socket bound to a chosen loopback source address:
/// thousands of queries without a process or a socket each, and as many
/// distinct clients as there are source addresses (Linux answers on all of
/// 127.0.0.0/8), for per-client behaviour.
pub struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    id: u16,
}

impl Client {
    /// A client on `source` (any port) asking `server`.
    pub fn bind(source: std::net::Ipv4Addr, server: SocketAddr) -> Client {
        let sock = UdpSocket::bind((source, 0)).unwrap_or_else(|e| panic!("bind {source}:0: {e}"));
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Client {
            sock,
            server,
            id: rand::random(),
        }
    }

    /// Asks `name` A and returns the CNAME target the answer names (lower
    /// case, with dot), `Some("SERVFAIL")`-like rcode text when the answer has
    /// no CNAME, or `None` when no answer came. Checks that a chased address,
    /// when present, is the one the test upstream gives the target.
    pub fn target(&mut self, name: &str) -> Option<String> {
        self.id = self.id.wrapping_add(1);
        let mut m = Message::query();
        m.metadata.id = self.id;
        m.metadata.recursion_desired = true;
        m.queries
            .push(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        self.sock.send_to(&m.to_vec().unwrap(), self.server).unwrap();
        let mut buf = vec![0u8; 65535];
        loop {
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => return None,
            };
            let Ok(resp) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            // A late answer to an earlier query that timed out: skip it.
            if resp.metadata.id != self.id {
                continue;
            }
            let cname = resp.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) => Some(c.0.to_lowercase().to_ascii()),
                _ => None,
            });
            let Some(cname) = cname else {
                return Some(format!("{:?}", resp.metadata.response_code));
            };
            let addr = resp.answers.iter().find_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            });
            if let (Some(addr), Some(want)) = (addr, test_address(&cname)) {
                assert_eq!(addr, want, "{name}: CNAME {cname} with the address of another server");
            }
            return Some(cname);
        }
    }

    /// Asks `name` `n` times, one query at a time; counts the answers per
    /// target (see [`Client::target`]; `"(no answer)"` for timeouts).
    pub fn tally(&mut self, name: &str, n: usize) -> Tally {
        let mut t = Tally::default();
        for _ in 0..n {
            let got = self.target(name).unwrap_or_else(|| "(no answer)".to_string());
            *t.0.entry(got).or_default() += 1;
        }
        t
    }
}

/// Answers per target (or rcode), as [`Client::tally`] counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally(pub std::collections::BTreeMap<String, usize>);

impl Tally {
    pub fn get(&self, target: &str) -> usize {
        self.0.get(target).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// The only target answered, if exactly one was.
    pub fn only(&self) -> Option<&str> {
        match self.0.len() {
            1 => self.0.keys().next().map(String::as_str),
            _ => None,
        }
    }
}

/// The address the test upstream gives a server's certificate name
/// (`support::env::upstream`).
fn test_address(target: &str) -> Option<std::net::Ipv4Addr> {
    match target {
        "pg-a.test." => Some(std::net::Ipv4Addr::new(127, 0, 0, 2)),
        "pg-b.test." => Some(std::net::Ipv4Addr::new(127, 0, 0, 3)),
        "pg-c.test." => Some(std::net::Ipv4Addr::new(127, 0, 0, 4)),
        _ => None,
    }
}
