//! The fast path gives the full path's bytes, or declines.

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::fast::FastTable;
use super::handler::Handler;
use super::message::Transport;
use super::plan::{Pick, Plan, Request};

fn setup() -> (Handler, FastTable) {
    let (_, handler, table) = super::fixture::fixture();
    (handler, table)
}

struct Q {
    name: &'static str,
    qtype: RecordType,
    class: DNSClass,
    edns: Option<(u16, bool, u8)>,
    rd: bool,
    cd: bool,
    id: u16,
}

fn q(name: &'static str, qtype: RecordType) -> Q {
    Q {
        name,
        qtype,
        class: DNSClass::IN,
        edns: None,
        rd: true,
        cd: false,
        id: 0x4242,
    }
}

impl Q {
    fn bytes(&self) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = self.id;
        m.metadata.recursion_desired = self.rd;
        m.metadata.checking_disabled = self.cd;
        let mut query = Query::query(Name::from_ascii(self.name).unwrap(), self.qtype);
        query.set_query_class(self.class);
        m.queries.push(query);
        if let Some((payload, dnssec_ok, version)) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            e.set_dnssec_ok(dnssec_ok);
            e.set_version(version);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }
}

fn full(h: &Handler, raw: &[u8]) -> Vec<u8> {
    match h.plan(raw, Transport::Udp, Pick::ANY) {
        Plan::Reply(r) => r.bytes,
        _ => panic!("the full path needs the network for this query"),
    }
}

#[test]
fn fast_answers_equal_full_answers_byte_for_byte() {
    let (h, t) = setup();
    let mut cases = Vec::new();
    for name in [
        "prod.db.test.",
        "ro.eu.db.test.",
        "nope.db.test.",
        "x.db.test.",
        "a-much-longer-label-for-nxdomain.db.test.",
    ] {
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME, RecordType::ANY] {
            for edns in [
                None,
                Some((1232, false, 0)),
                Some((4096, true, 0)),
                Some((512, false, 0)),
            ] {
                for (rd, cd) in [(true, false), (false, true)] {
                    cases.push(Q {
                        edns,
                        rd,
                        cd,
                        id: 0xBEEF,
                        ..q(name, qtype)
                    });
                }
            }
        }
    }
    cases.push(Q {
        qtype: RecordType::MX,
        ..q("nope.db.test.", RecordType::MX)
    });
    let mut out = vec![0u8; 4096];
    for c in &cases {
        let raw = c.bytes();
        let (n, _) = t
            .answer(&raw, &mut out)
            .unwrap_or_else(|| panic!("fast path declined {} {:?} {:?}", c.name, c.qtype, c.edns));
        assert_eq!(
            out[..n],
            full(&h, &raw)[..],
            "{} {:?} edns {:?} rd {} cd {}",
            c.name,
            c.qtype,
            c.edns,
            c.rd,
            c.cd
        );
    }
    // The alias answer really is CNAME + address.
    let raw = q("prod.db.test.", RecordType::A).bytes();
    let (n, _) = t.answer(&raw, &mut out).unwrap();
    let m = Message::from_vec(&out[..n]).unwrap();
    assert_eq!(m.answers.len(), 2);
    assert!(m.metadata.authoritative);
    // RD=0: the CNAME only (the address is an answer given with recursion).
    let raw = Q {
        rd: false,
        ..q("prod.db.test.", RecordType::A)
    }
    .bytes();
    let (n, _) = t.answer(&raw, &mut out).unwrap();
    let m = Message::from_vec(&out[..n]).unwrap();
    assert_eq!(m.answers.len(), 1);
    assert!(!m.metadata.recursion_desired);
}

#[test]
fn unusual_queries_take_the_full_path() {
    let (_, t) = setup();
    let mut out = vec![0u8; 4096];
    let declined = [
        q("Prod.DB.test.", RecordType::A),   // upper case changes compression
        q("prod.db.test.", RecordType::TXT), // needs the upstream
        Q {
            class: DNSClass::CH,
            ..q("prod.db.test.", RecordType::A)
        },
        Q {
            edns: Some((1232, false, 1)),
            ..q("prod.db.test.", RecordType::A)
        }, // BADVERS
        q("eu.db.test.", RecordType::A),      // empty non-terminal: NODATA
        q("db.test.", RecordType::SOA),       // apex
        q("ns.db.test.", RecordType::A),      // the SOA's own name
        q("a.b.db.test.", RecordType::A),     // deeper than one label
        q("www.example.com.", RecordType::A), // forwarded
    ];
    for c in &declined {
        assert!(
            t.answer(&c.bytes(), &mut out).is_none(),
            "{} {:?} {:?}",
            c.name,
            c.qtype,
            c.class
        );
    }
    let good = q("prod.db.test.", RecordType::A).bytes();
    let mut trailing = good.clone();
    trailing.push(0);
    let mut tc = good.clone();
    tc[2] |= 0x02;
    let mut response = good.clone();
    response[2] |= 0x80;
    for (what, raw) in [
        ("trailing byte", trailing),
        ("TC set", tc),
        ("QR set", response),
        ("short", good[..15].to_vec()),
    ] {
        assert!(t.answer(&raw, &mut out).is_none(), "{what}");
    }
    assert!(t.answer(&good, &mut out[..20]).is_none(), "does not fit the buffer");
}

#[test]
fn forwarded_names_are_recognised_and_refused_like_the_full_path() {
    use hickory_proto::op::ResponseCode;
    let (handler, table) = setup();
    for (name, forward) in [
        ("www.example.com.", true),
        ("test.", true),
        ("db.test.", false),
        ("nope.db.test.", false),
        ("prod.db.test.", false),
        ("xdb.test.", true),
        ("WWW.Example.COM.", true),
        ("Nope.DB.Test.", false),
        ("DB.TEST.", false),
    ] {
        for edns in [None, Some((1232, false, 0)), Some((4096, true, 0))] {
            let bytes = Q {
                edns,
                ..q(name, RecordType::A)
            }
            .bytes();
            let f = table.forwardable(&bytes);
            assert_eq!(f.is_some(), forward, "{name}");
            let Some(f) = f else { continue };
            let Plan::Forward(Request(req)) = handler.plan(&bytes, Transport::Udp, Pick::ANY) else {
                panic!("{name}: the full path does not forward")
            };
            let mut out = [0u8; 4096];
            for (rcode, code) in [(2, ResponseCode::ServFail), (5, ResponseCode::Refused)] {
                let n = table.refuse(&bytes, &f, rcode, &mut out).unwrap();
                assert_eq!(
                    out[..n],
                    handler
                        .forwarding()
                        .encoder()
                        .refuse(&req, code, Transport::Udp)
                        .unwrap()
                        .bytes[..],
                    "{name} {edns:?} {code:?}"
                );
            }
        }
    }
}

/// A spreading alias: for the same (query, client, counter) both paths give
/// the same bytes, and over a cycle each member gets its weight's share.
#[test]
fn spread_answers_are_the_full_paths_for_each_asker() {
    use crate::routes::Asker;
    let (h, t) = setup();
    let mut seen = std::collections::HashMap::new();
    let clients: [Option<std::net::IpAddr>; 4] = [
        None,
        Some("127.0.0.1".parse().unwrap()),
        Some("10.1.2.3".parse().unwrap()),
        Some("2001:db8::1".parse().unwrap()),
    ];
    for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME, RecordType::ANY] {
        for edns in [None, Some((1232, false, 0)), Some((4096, true, 0))] {
            for rd in [true, false] {
                let mut c = q(super::fixture::SPREAD, qtype);
                c.edns = edns;
                c.rd = rd;
                let raw = c.bytes();
                for client in clients {
                    for seq in 0..9u64 {
                        let asker = Asker { seq, client };
                        let full = match h.plan(&raw, Transport::Udp, Pick::Asked(asker)) {
                            Plan::Reply(r) => r.bytes,
                            _ => panic!("the full path needs the network"),
                        };
                        let mut out = vec![0u8; 4096];
                        let (n, _) = t.answer_for(&raw, &mut out, asker).expect("the fast path answers");
                        assert_eq!(out[..n], full[..], "{qtype:?} {edns:?} rd={rd} {asker:?}");
                        let m = Message::from_vec(&full).unwrap();
                        assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
                        assert_eq!(m.answers[0].ttl, 5, "the alias's TTL");
                        if qtype == RecordType::A && rd && client.is_some() {
                            let hickory_proto::rr::RData::CNAME(c) = &m.answers[0].data else {
                                panic!("a CNAME: {m:?}")
                            };
                            let target = c.0.to_string();
                            *seen.entry(target).or_insert(0) += 1;
                            assert_eq!(m.answers.len(), 2, "CNAME + the chased address: {m:?}");
                        }
                    }
                }
            }
        }
    }
    // 3 clients x 2 EDNS variants... x 9 queries: weights 2:1 over whole cycles.
    assert_eq!(seen.get("pg-a.test."), Some(&(2 * seen["pg-b.test."])), "{seen:?}");
}
