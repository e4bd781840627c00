//! A raw UDP DNS client for readiness checks, answer checks and watching
//! the alias during a failover (no `dig` process start-up per query).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// What came back, reduced to what the harness checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: String,
    /// CNAME targets in the answer section (lower case, with the dot).
    pub cnames: Vec<String>,
    /// A records in the answer section.
    pub addrs: Vec<String>,
}

impl Answer {
    pub fn summary(&self) -> String {
        let mut s = self.rcode.clone();
        for c in &self.cnames {
            s.push_str(&format!(" CNAME {c}"));
        }
        for a in &self.addrs {
            s.push_str(&format!(" A {a}"));
        }
        s
    }
}

static NEXT_ID: AtomicU16 = AtomicU16::new(0x5a5a);

/// One query over UDP with RD set; `None` on timeout or garbage.
pub fn ask(server: SocketAddr, name: &str, rtype: RecordType, wait: Duration) -> Option<Answer> {
    assert!(server.ip().is_loopback(), "the load test only talks to loopback");
    let mut m = Message::query();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.queries.push(Query::query(Name::from_ascii(name).ok()?, rtype));
    let packet = m.to_vec().ok()?;
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    sock.send_to(&packet, server).ok()?;
    let mut buf = vec![0u8; 65535];
    let deadline = std::time::Instant::now() + wait;
    loop {
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        if from != server || n < 2 || buf[..2] != id.to_be_bytes() {
            if std::time::Instant::now() >= deadline {
                return None;
            }
            continue;
        }
        let r = Message::from_vec(&buf[..n]).ok()?;
        let rcode = match r.metadata.response_code {
            ResponseCode::NoError => "NOERROR".to_string(),
            ResponseCode::NXDomain => "NXDOMAIN".to_string(),
            ResponseCode::ServFail => "SERVFAIL".to_string(),
            ResponseCode::Refused => "REFUSED".to_string(),
            other => format!("{other:?}").to_uppercase(),
        };
        let mut a = Answer {
            rcode,
            cnames: Vec::new(),
            addrs: Vec::new(),
        };
        for rec in &r.answers {
            match &rec.data {
                RData::CNAME(c) => a.cnames.push(c.0.to_lowercase().to_ascii()),
                RData::A(ip) => a.addrs.push(ip.0.to_string()),
                _ => {}
            }
        }
        return Some(a);
    }
}

/// The alias's CNAME target as `server` answers it right now.
pub fn cname_of(server: SocketAddr, name: &str) -> Option<String> {
    ask(server, name, RecordType::CNAME, Duration::from_millis(300))?
        .cnames
        .into_iter()
        .next()
}
