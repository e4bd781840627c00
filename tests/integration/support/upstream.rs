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
//!
//! Names given a [`Special`] answer otherwise: many A records (large
//! answers), a resolver's partial RD=0 answer, NODATA with an SOA for every
//! type but A, or a question of another type or class than asked.

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

/// The SOA MINIMUM of the NODATA answers of [`Special::NoData`].
pub const NODATA_TTL: u32 = 60;

/// A name's unusual answer (see [`Upstream::special`]).
#[derive(Debug, Clone)]
pub enum Special {
    /// A: this many A records (10.8.x.y), with this TTL. 150 make about
    /// 3 KB, as in issue 15.
    Many { ttl: u32, records: u16 },
    /// A CNAME to `target` (TTL 60); with RD=1 also `target`'s A `ip`. With
    /// RD=0 the CNAME only, as resolvers answer RD=0 from their cache.
    Partial { target: String, ip: [u8; 4] },
    /// A: 10.6.6.6 (TTL 300); other types: NODATA with an SOA (TTL 300,
    /// MINIMUM [`NODATA_TTL`]).
    NoData,
    /// The question echoed with its type's 0x20 bit flipped (type 65 comes
    /// back as 97: the same bytes without regard to ASCII case).
    OtherType,
    /// The question echoed with class CH.
    OtherClass,
}

pub struct Upstream {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<(String, RecordType), usize>>>,
    records: Arc<Mutex<Records>>,
    special: Arc<Mutex<HashMap<String, Special>>>,
    /// Queries received with RD clear, by name.
    rd0: Arc<Mutex<HashMap<String, usize>>>,
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
            special: Arc::default(),
            rd0: Arc::default(),
            mode: Arc::default(),
            stop: Arc::default(),
        };
        let (counts, records, mode, stop) = (u.counts.clone(), u.records.clone(), u.mode.clone(), u.stop.clone());
        let (special, rd0) = (u.special.clone(), u.rd0.clone());
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
                if !q.metadata.recursion_desired {
                    *rd0.lock().unwrap().entry(name.clone()).or_default() += 1;
                }
                let mode = mode.load(Ordering::Relaxed);
                if mode == Mode::Silent as u8 || name.ends_with(&format!(".{DEAD_DOMAIN}")) {
                    continue;
                }
                let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.metadata.checking_disabled = q.metadata.checking_disabled;
                r.queries = q.queries.clone();
                let special = special.lock().unwrap().get(&name).cloned();
                if mode == Mode::ServFail as u8 {
                    r.metadata.response_code = ResponseCode::ServFail;
                } else if let Some(special) = special {
                    answer_special(&mut r, &q, special);
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

    /// `name` answers as `special` says.
    pub fn special(&self, name: &str, special: Special) -> &Self {
        self.special.lock().unwrap().insert(name.to_ascii_lowercase(), special);
        self
    }

    /// Queries received for `name` (any case, any type) with RD clear.
    pub fn count_rd0(&self, name: &str) -> usize {
        self.rd0
            .lock()
            .unwrap()
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
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

/// Fills `r`, the answer to `q`, as `special` says.
fn answer_special(r: &mut Message, q: &Message, special: Special) {
    use hickory_proto::rr::rdata::CNAME;
    use hickory_proto::rr::DNSClass;
    let question = &q.queries[0];
    let name = question.name.clone();
    match special {
        Special::Many { ttl, records } if question.query_type == RecordType::A => {
            for i in 0..records {
                let [hi, lo] = i.to_be_bytes();
                r.answers
                    .push(Record::from_rdata(name.clone(), ttl, RData::A(A::new(10, 8, hi, lo))));
            }
        }
        Special::Partial { target, ip } => {
            let target = Name::from_ascii(&target).unwrap();
            r.answers
                .push(Record::from_rdata(name, 60, RData::CNAME(CNAME(target.clone()))));
            if q.metadata.recursion_desired && question.query_type == RecordType::A {
                r.answers.push(Record::from_rdata(
                    target,
                    60,
                    RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
                ));
            }
        }
        Special::NoData if question.query_type == RecordType::A => {
            r.answers
                .push(Record::from_rdata(name, 300, RData::A(A::new(10, 6, 6, 6))));
        }
        Special::NoData => {
            let soa = SOA::new(name.clone(), name.clone(), 1, 3600, 600, 86400, NODATA_TTL);
            r.authorities.push(Record::from_rdata(name, 300, RData::SOA(soa)));
        }
        Special::OtherType => {
            let t = u16::from(question.query_type) ^ 0x20;
            r.queries[0].set_query_type(RecordType::from(t));
        }
        Special::OtherClass => {
            r.queries[0].set_query_class(DNSClass::CH);
        }
        _ => {}
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
