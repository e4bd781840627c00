//! A small authoritative upstream on loopback that counts the queries it
//! receives, by name and type, and can be told to fail: to stop answering
//! (a black hole), or to answer SERVFAIL. What the cache tests measure the
//! sidecar against: every query the cache saves is one this server does not
//! see.
//!
//! Answers: names listed with [`Upstream::a`] get an A record with their
//! TTL; names below `nx.test.` get NXDOMAIN with an SOA (TTL 300, MINIMUM
//! [`NEGATIVE_TTL`]); every other name gets `10.9.x.y` with a TTL of 300
//! (a flood of unique names is answered). Names below [`DEAD_DOMAIN`] are
//! never answered (a domain whose nameservers are dead: the upstream itself
//! is healthy); names below [`SLOW_DOMAIN`] are answered after
//! [`SLOW_DELAY`] (so that queries for them overlap). The question is echoed as asked and EDNS with the DO bit
//! copied.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The SOA MINIMUM of `nx.test.`: how long NXDOMAIN answers may be cached.
pub const NEGATIVE_TTL: u32 = 2;

/// Names below this domain are never answered (counted all the same).
pub const DEAD_DOMAIN: &str = "dead.test.";

/// Names below this domain are answered after [`SLOW_DELAY`].
pub const SLOW_DOMAIN: &str = "slow.test.";
pub const SLOW_DELAY: Duration = Duration::from_millis(150);

/// What the upstream does with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Answer = 0,
    /// Reads and never answers.
    Silent = 1,
    ServFail = 2,
}

/// Name -> (TTL, address).
type Records = HashMap<String, (u32, [u8; 4])>;

pub struct Upstream {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<(String, RecordType), usize>>>,
    records: Arc<Mutex<Records>>,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let u = Upstream {
            addr,
            counts: Arc::default(),
            records: Arc::default(),
            mode: Arc::default(),
            stop: Arc::default(),
        };
        let (counts, records, mode, stop) = (u.counts.clone(), u.records.clone(), u.mode.clone(), u.stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let Some(question) = q.queries.first() else { continue };
                let name = question.name.to_lowercase().to_ascii();
                *counts
                    .lock()
                    .unwrap()
                    .entry((name.clone(), question.query_type))
                    .or_default() += 1;
                let mode = mode.load(Ordering::Relaxed);
                if mode == Mode::Silent as u8 || name.ends_with(&format!(".{DEAD_DOMAIN}")) {
                    continue;
                }
                let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.metadata.checking_disabled = q.metadata.checking_disabled;
                r.queries = q.queries.clone();
                if mode == Mode::ServFail as u8 {
                    r.metadata.response_code = ResponseCode::ServFail;
                } else if name.ends_with(".nx.test.") {
                    r.metadata.response_code = ResponseCode::NXDomain;
                    let apex = Name::from_ascii("nx.test.").unwrap();
                    let soa = SOA::new(
                        Name::from_ascii("ns.nx.test.").unwrap(),
                        Name::from_ascii("hostmaster.nx.test.").unwrap(),
                        1,
                        3600,
                        600,
                        86400,
                        NEGATIVE_TTL,
                    );
                    r.authorities.push(Record::from_rdata(apex, 300, RData::SOA(soa)));
                } else if question.query_type == RecordType::A {
                    let (ttl, ip) = records.lock().unwrap().get(&name).copied().unwrap_or_else(|| {
                        let h = name
                            .bytes()
                            .fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(b as u16));
                        (300, [10, 9, (h >> 8) as u8, h as u8])
                    });
                    r.answers.push(Record::from_rdata(
                        question.name.clone(),
                        ttl,
                        RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
                    ));
                }
                if let Some(e) = &q.edns {
                    let mut out = Edns::new();
                    out.set_max_payload(1232);
                    out.set_dnssec_ok(e.flags().dnssec_ok);
                    r.set_edns(out);
                }
                if let Ok(bytes) = r.to_vec() {
                    if name.ends_with(&format!(".{SLOW_DOMAIN}")) {
                        let Ok(s) = sock.try_clone() else { continue };
                        std::thread::spawn(move || {
                            std::thread::sleep(SLOW_DELAY);
                            let _ = s.send_to(&bytes, from);
                        });
                        continue;
                    }
                    let _ = sock.send_to(&bytes, from);
                }
            }
        });
        u
    }

    /// `name` answers A `ip` with `ttl`.
    pub fn a(&self, name: &str, ttl: u32, ip: [u8; 4]) -> &Self {
        self.records
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), (ttl, ip));
        self
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Queries received for `name` (any case) of `rtype`.
    pub fn count(&self, name: &str, rtype: RecordType) -> usize {
        self.counts
            .lock()
            .unwrap()
            .get(&(name.to_ascii_lowercase(), rtype))
            .copied()
            .unwrap_or(0)
    }

    /// Queries received in all.
    pub fn total(&self) -> usize {
        self.counts.lock().unwrap().values().sum()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
