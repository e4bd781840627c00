//! The cache on a manual clock: keys, TTLs, negative and SERVFAIL times,
//! serve-stale windows, bounds, zones.

use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, CNAME, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{Cache, Found, STALE_TTL};
use crate::config::CacheSettings;
use crate::dns::names::wire;
use crate::dns::question::{question, Question};
use crate::metrics::CacheMetrics;

/// A query: EDNS `None`, `Some(false)` or `Some(true)` (DO), CD, and EDNS
/// options.
struct Q {
    name: &'static str,
    qtype: RecordType,
    edns: Option<bool>,
    cd: bool,
    ad: bool,
    options: Vec<EdnsOption>,
    payload: u16,
    id: u16,
    rd: bool,
}

fn q(name: &'static str) -> Q {
    Q {
        name,
        qtype: RecordType::A,
        edns: None,
        cd: false,
        ad: false,
        options: Vec::new(),
        payload: 1232,
        id: 0x1234,
        rd: true,
    }
}

impl Q {
    fn bytes(&self) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = self.id;
        m.metadata.recursion_desired = self.rd;
        m.metadata.checking_disabled = self.cd;
        m.metadata.authentic_data = self.ad;
        m.queries
            .push(Query::query(Name::from_ascii(self.name).unwrap(), self.qtype));
        if let Some(dnssec_ok) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(self.payload);
            e.set_dnssec_ok(dnssec_ok);
            for o in &self.options {
                e.options_mut().insert(o.clone());
            }
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }
}

fn parse(raw: &[u8]) -> Question {
    question(raw, 4096).expect("an ordinary query")
}

/// The upstream's answer to `query`, with EDNS (and `options`) when the
/// query had it, AD set.
fn answer(
    query: &[u8],
    rcode: ResponseCode,
    answers: Vec<Record>,
    authority: Vec<Record>,
    options: Vec<EdnsOption>,
) -> Vec<u8> {
    let req = Message::from_vec(query).unwrap();
    let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authentic_data = true;
    m.metadata.checking_disabled = req.metadata.checking_disabled;
    m.metadata.response_code = rcode;
    m.queries = req.queries.clone();
    m.answers = answers;
    m.authorities = authority;
    if let Some(e) = &req.edns {
        let mut r = Edns::new();
        r.set_max_payload(4096);
        r.set_dnssec_ok(e.flags().dnssec_ok);
        for o in options {
            r.options_mut().insert(o);
        }
        m.set_edns(r);
    }
    m.to_vec().unwrap()
}

fn a(name: &str, ttl: u32, last: u8) -> Record {
    Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, RData::A(A::new(10, 0, 0, last)))
}

fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    let z = Name::from_ascii(zone).unwrap();
    let soa = SOA::new(
        Name::from_ascii(format!("ns.{zone}")).unwrap(),
        Name::from_ascii(format!("hostmaster.{zone}")).unwrap(),
        1,
        3600,
        600,
        86400,
        minimum,
    );
    Record::from_rdata(z, ttl, RData::SOA(soa))
}

fn settings() -> CacheSettings {
    CacheSettings::default()
}

fn cache_with(s: CacheSettings) -> Cache {
    Cache::manual(&s, CacheMetrics::default())
}

/// Looks `query` up at the cache's time: the result and the decoded answer.
fn lookup(c: &Cache, query: &[u8]) -> (Found, Option<Message>) {
    let mut out = [0u8; 4096];
    let f = c.answer(query, &parse(query), 4096, c.now(), &mut out);
    let m = match f {
        Found::Fresh(n) | Found::Stale(n) => Some(Message::from_vec(&out[..n]).unwrap()),
        _ => None,
    };
    (f, m)
}

fn stale(c: &Cache, query: &[u8]) -> (Found, Option<Message>) {
    let mut out = [0u8; 4096];
    let f = c.stale(query, &parse(query), 4096, c.now(), &mut out);
    let m = match f {
        Found::Fresh(n) | Found::Stale(n) => Some(Message::from_vec(&out[..n]).unwrap()),
        _ => None,
    };
    (f, m)
}

fn insert(c: &Cache, query: &[u8], ans: &[u8]) -> bool {
    c.insert(query, &parse(query), ans, c.now())
}

/// Inserts the upstream's NOERROR answer to `query`: one A record of `name`
/// (10.0.0.`last`) with `ttl`.
fn insert_a(c: &Cache, query: &[u8], name: &str, ttl: u32, last: u8) -> bool {
    insert(
        c,
        query,
        &answer(query, ResponseCode::NoError, vec![a(name, ttl, last)], vec![], vec![]),
    )
}

fn ttls(m: &Message) -> Vec<u32> {
    m.answers.iter().chain(&m.authorities).map(|r| r.ttl).collect()
}

fn hit(f: Found) -> bool {
    matches!(f, Found::Fresh(_))
}

#[test]
fn names_are_keyed_without_case_and_answers_echo_the_question_as_asked() {
    let c = cache_with(settings());
    let first = q("www.Example.com.").bytes();
    assert!(insert_a(&c, &first, "www.example.com.", 60, 1));
    for asked in ["www.example.com.", "WWW.EXAMPLE.COM.", "wWw.eXaMpLe.CoM."] {
        let query = Q { id: 0xBEEF, ..q(asked) }.bytes();
        let (f, m) = lookup(&c, &query);
        assert!(hit(f), "{asked}: {f:?}");
        let m = m.unwrap();
        assert_eq!(m.metadata.id, 0xBEEF);
        // The question exactly as this client asked it (0x20).
        let mut out = [0u8; 512];
        let Found::Fresh(_) = c.answer(&query, &parse(&query), 512, c.now(), &mut out) else {
            panic!()
        };
        assert_eq!(
            out[12..12 + wire(asked).len()],
            query[12..12 + wire(asked).len()],
            "{asked}"
        );
        assert_eq!(m.answers[0].data, RData::A(A::new(10, 0, 0, 1)));
    }
    assert_eq!(lookup(&c, &q("www.example.org.").bytes()).0, Found::Miss);
    assert_eq!(
        lookup(
            &c,
            &Q {
                qtype: RecordType::AAAA,
                ..q("www.example.com.")
            }
            .bytes()
        )
        .0,
        Found::Miss,
        "another type"
    );
}

#[test]
fn ttls_count_down_with_the_age_and_the_entry_expires_with_its_smallest_ttl() {
    let c = cache_with(settings());
    let query = q("a.example.com.").bytes();
    let cname = Record::from_rdata(
        Name::from_ascii("a.example.com.").unwrap(),
        300,
        RData::CNAME(CNAME(Name::from_ascii("b.example.com.").unwrap())),
    );
    assert!(insert(
        &c,
        &query,
        &answer(
            &query,
            ResponseCode::NoError,
            vec![cname, a("b.example.com.", 60, 2)],
            vec![],
            vec![]
        )
    ));
    assert_eq!(ttls(&lookup(&c, &query).1.unwrap()), [300, 60]);
    c.advance(Duration::from_millis(10_500));
    assert_eq!(ttls(&lookup(&c, &query).1.unwrap()), [290, 50], "whole seconds of age");
    c.advance(Duration::from_millis(49_400));
    assert_eq!(ttls(&lookup(&c, &query).1.unwrap()), [241, 1], "59.9 s old");
    c.advance(Duration::from_millis(100));
    assert_eq!(
        lookup(&c, &query).0,
        Found::Miss,
        "expired with its smallest TTL (60 s)"
    );
}

#[test]
fn ttls_are_capped_by_max_ttl() {
    let c = cache_with(CacheSettings {
        max_ttl: 3600,
        ..settings()
    });
    let query = q("long.example.com.").bytes();
    assert!(insert_a(&c, &query, "long.example.com.", 86_400, 3));
    assert_eq!(ttls(&lookup(&c, &query).1.unwrap()), [3600]);
    c.advance(Duration::from_secs(3599));
    assert_eq!(ttls(&lookup(&c, &query).1.unwrap()), [1]);
    c.advance(Duration::from_secs(1));
    assert_eq!(lookup(&c, &query).0, Found::Miss);
    // A TTL of 0 means "do not cache".
    let zero = q("zero.example.com.").bytes();
    assert!(!insert_a(&c, &zero, "zero.example.com.", 0, 3));
}

#[test]
fn negative_answers_live_for_the_soa_minimum_capped() {
    let c = cache_with(CacheSettings {
        max_negative_ttl: 300,
        ..settings()
    });
    // NXDOMAIN: min(SOA TTL 3600, MINIMUM 60) = 60.
    let nx = q("nope.example.com.").bytes();
    assert!(insert(
        &c,
        &nx,
        &answer(
            &nx,
            ResponseCode::NXDomain,
            vec![],
            vec![soa("example.com.", 3600, 60)],
            vec![]
        )
    ));
    let (f, m) = lookup(&c, &nx);
    assert!(hit(f));
    let m = m.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ttls(&m), [60], "the SOA's TTL says how long it may be cached");
    c.advance(Duration::from_secs(59));
    assert_eq!(ttls(&lookup(&c, &nx).1.unwrap()), [1]);
    c.advance(Duration::from_secs(1));
    assert_eq!(lookup(&c, &nx).0, Found::Miss);
    // NODATA with a small SOA TTL: min(30, 600) = 30.
    let nodata = Q {
        qtype: RecordType::AAAA,
        ..q("v4only.example.com.")
    }
    .bytes();
    assert!(insert(
        &c,
        &nodata,
        &answer(
            &nodata,
            ResponseCode::NoError,
            vec![],
            vec![soa("example.com.", 30, 600)],
            vec![]
        )
    ));
    assert_eq!(ttls(&lookup(&c, &nodata).1.unwrap()), [30]);
    // Capped: min(86400, 86400) -> max_negative_ttl.
    let capped = q("gone.example.com.").bytes();
    assert!(insert(
        &c,
        &capped,
        &answer(
            &capped,
            ResponseCode::NXDomain,
            vec![],
            vec![soa("example.com.", 86_400, 86_400)],
            vec![]
        )
    ));
    assert_eq!(ttls(&lookup(&c, &capped).1.unwrap()), [300]);
    c.advance(Duration::from_secs(300));
    assert_eq!(lookup(&c, &capped).0, Found::Miss);
    // Without an SOA (RFC 2308: not cached), and with negative caching off.
    let bare = q("bare.example.com.").bytes();
    assert!(!insert(
        &c,
        &bare,
        &answer(&bare, ResponseCode::NXDomain, vec![], vec![], vec![])
    ));
    let off = cache_with(CacheSettings {
        max_negative_ttl: 0,
        ..settings()
    });
    assert!(!insert(
        &off,
        &nx,
        &answer(
            &nx,
            ResponseCode::NXDomain,
            vec![],
            vec![soa("example.com.", 3600, 60)],
            vec![]
        )
    ));
}

#[test]
fn servfail_is_kept_a_few_seconds_and_never_replaces_a_servable_answer() {
    let c = cache_with(CacheSettings {
        servfail_ttl: 5,
        ..settings()
    });
    let query = q("broken.example.com.").bytes();
    let fail = answer(&query, ResponseCode::ServFail, vec![], vec![], vec![]);
    assert!(insert(&c, &query, &fail));
    c.advance(Duration::from_millis(4_900));
    let (f, m) = lookup(&c, &query);
    assert!(hit(f));
    assert_eq!(m.unwrap().metadata.response_code, ResponseCode::ServFail);
    c.advance(Duration::from_millis(100));
    assert_eq!(lookup(&c, &query).0, Found::Miss, "5 s at most");
    assert_eq!(stale(&c, &query).0, Found::Miss, "a SERVFAIL is never served stale");
    assert!(
        !insert(
            &cache_with(CacheSettings {
                servfail_ttl: 0,
                ..settings()
            }),
            &query,
            &fail
        ),
        "servfail_ttl 0: not kept"
    );
    // A good answer, then (expired) the upstream fails: the SERVFAIL is not
    // kept over it, so the answer can still be served stale.
    let good = q("flaky.example.com.").bytes();
    assert!(insert_a(&c, &good, "flaky.example.com.", 10, 4));
    c.advance(Duration::from_secs(11));
    assert!(!insert(
        &c,
        &good,
        &answer(&good, ResponseCode::ServFail, vec![], vec![], vec![])
    ));
    assert!(matches!(stale(&c, &good).0, Found::Stale(_)));
}

#[test]
fn dnssec_ok_cd_and_edns_are_keyed_separately() {
    let c = cache_with(settings());
    let variants = [
        q("k.example.com."),
        Q {
            edns: Some(false),
            ..q("k.example.com.")
        },
        Q {
            edns: Some(true),
            ..q("k.example.com.")
        },
        Q {
            cd: true,
            ..q("k.example.com.")
        },
        Q {
            edns: Some(true),
            cd: true,
            ..q("k.example.com.")
        },
    ];
    for (i, v) in variants.iter().enumerate() {
        let query = v.bytes();
        assert_eq!(lookup(&c, &query).0, Found::Miss, "variant {i} before its own answer");
        assert!(insert(
            &c,
            &query,
            &answer(
                &query,
                ResponseCode::NoError,
                vec![a("k.example.com.", 60, i as u8)],
                vec![],
                vec![]
            )
        ));
    }
    assert_eq!(c.len(), variants.len());
    for (i, v) in variants.iter().enumerate() {
        let m = lookup(&c, &v.bytes()).1.unwrap();
        assert_eq!(
            m.answers[0].data,
            RData::A(A::new(10, 0, 0, i as u8)),
            "variant {i} gets its own answer"
        );
        assert_eq!(m.metadata.checking_disabled, v.cd);
        assert_eq!(m.edns.as_ref().map(|e| e.flags().dnssec_ok), v.edns);
    }
    // The EDNS size does not matter, as long as the answer fits.
    assert!(hit(lookup(
        &c,
        &Q {
            edns: Some(false),
            payload: 4096,
            ..q("k.example.com.")
        }
        .bytes()
    )
    .0));
}

#[test]
fn header_bits_follow_the_query() {
    let c = cache_with(settings());
    let query = Q {
        edns: Some(true),
        ..q("ad.example.com.")
    }
    .bytes();
    assert!(insert_a(&c, &query, "ad.example.com.", 60, 5));
    let m = lookup(
        &c,
        &Q {
            id: 7,
            edns: Some(true),
            ..q("ad.example.com.")
        }
        .bytes(),
    )
    .1
    .unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.recursion_desired, m.metadata.authentic_data),
        (7, true, true),
        "DO asked: AD kept"
    );
    let plain = q("ad.example.com.").bytes();
    assert!(insert_a(&c, &plain, "ad.example.com.", 60, 5));
    assert!(
        !lookup(&c, &plain).1.unwrap().metadata.authentic_data,
        "neither AD nor DO asked: no AD (RFC 6840)"
    );
    assert!(
        lookup(
            &c,
            &Q {
                ad: true,
                ..q("ad.example.com.")
            }
            .bytes()
        )
        .1
        .unwrap()
        .metadata
        .authentic_data
    );
}

#[test]
fn cookies_are_not_kept_and_client_specific_options_bypass_the_cache() {
    let c = cache_with(settings());
    let cookie = |b: u8| EdnsOption::Unknown(u16::from(EdnsCode::Cookie), vec![b; 8]);
    let first = Q {
        edns: Some(false),
        options: vec![cookie(1)],
        ..q("c.example.com.")
    }
    .bytes();
    let upstream = answer(
        &first,
        ResponseCode::NoError,
        vec![a("c.example.com.", 60, 6)],
        vec![],
        vec![EdnsOption::Unknown(10, vec![1; 24])],
    );
    assert!(insert(&c, &first, &upstream));
    let second = Q {
        edns: Some(false),
        options: vec![cookie(2)],
        ..q("c.example.com.")
    }
    .bytes();
    let m = lookup(&c, &second).1.expect("a cookie does not change the key");
    assert!(
        m.edns.as_ref().unwrap().options().as_ref().is_empty(),
        "the first client's cookie is not handed out: {:?}",
        m.edns
    );
    assert!(
        hit(lookup(
            &c,
            &Q {
                edns: Some(false),
                ..q("c.example.com.")
            }
            .bytes()
        )
        .0),
        "without a cookie too"
    );
    // Other options may make the answer this client's own (an unknown one
    // here); client subnet and NSID are not even read without decoding.
    let own = Q {
        edns: Some(false),
        options: vec![EdnsOption::Unknown(65001, vec![1, 2])],
        ..q("e.example.com.")
    }
    .bytes();
    assert!(!insert_a(&c, &own, "e.example.com.", 60, 7));
    assert_eq!(lookup(&c, &own).0, Found::Miss);
    for code in [3, 8] {
        let raw = Q {
            edns: Some(false),
            options: vec![EdnsOption::Unknown(code, vec![0, 1, 24, 0, 10, 1, 2])],
            ..q("e.example.com.")
        }
        .bytes();
        assert!(question(&raw, 4096).is_none(), "option {code}: the full path decides");
    }
}

#[test]
fn uncacheable_answers_are_not_kept() {
    let c = cache_with(settings());
    let query = q("t.example.com.").bytes();
    let mut tc = answer(
        &query,
        ResponseCode::NoError,
        vec![a("t.example.com.", 60, 8)],
        vec![],
        vec![],
    );
    tc[2] |= 0x02;
    assert!(!insert(&c, &query, &tc), "truncated");
    assert!(
        !insert(
            &c,
            &query,
            &answer(&query, ResponseCode::Refused, vec![], vec![], vec![])
        ),
        "REFUSED"
    );
    let other = q("u.example.com.").bytes();
    assert!(
        !insert(
            &c,
            &query,
            &answer(
                &other,
                ResponseCode::NoError,
                vec![a("u.example.com.", 60, 8)],
                vec![],
                vec![]
            )
        ),
        "another question"
    );
    let mut trailing = answer(
        &query,
        ResponseCode::NoError,
        vec![a("t.example.com.", 60, 8)],
        vec![],
        vec![],
    );
    trailing.push(0);
    assert!(!insert(&c, &query, &trailing), "trailing bytes");
    let good = answer(
        &query,
        ResponseCode::NoError,
        vec![a("t.example.com.", 60, 8)],
        vec![],
        vec![],
    );
    assert!(!insert(&c, &query, &good[..good.len() - 2]), "cut short");
    assert!(c.is_empty());
}

#[test]
fn rd0_queries_neither_read_nor_fill_the_cache() {
    let c = cache_with(settings());
    let rd0 = Q {
        rd: false,
        ..q("partial.example.com.")
    }
    .bytes();
    // A resolver's RD=0 answer: from its cache only, often partial (a
    // CNAME without its address). Not kept...
    let cname = Record::from_rdata(
        Name::from_ascii("partial.example.com.").unwrap(),
        60,
        RData::CNAME(CNAME(Name::from_ascii("target.example.net.").unwrap())),
    );
    let partial = answer(&rd0, ResponseCode::NoError, vec![cname.clone()], vec![], vec![]);
    assert!(!insert(&c, &rd0, &partial), "an RD=0 answer is not kept");
    assert!(c.is_empty());
    let rd1 = q("partial.example.com.").bytes();
    assert_eq!(lookup(&c, &rd1).0, Found::Miss, "so the next RD=1 query goes upstream");
    // ... and an RD=1 answer is not given to an RD=0 query, fresh or stale.
    let full = answer(
        &rd1,
        ResponseCode::NoError,
        vec![cname, a("target.example.net.", 60, 9)],
        vec![],
        vec![],
    );
    assert!(insert(&c, &rd1, &full));
    assert!(hit(lookup(&c, &rd1).0));
    assert_eq!(lookup(&c, &rd0).0, Found::Miss);
    assert_eq!(stale(&c, &rd0).0, Found::Miss);
    c.advance(Duration::from_secs(61));
    assert_eq!(stale(&c, &rd0).0, Found::Miss, "not stale either");
    assert!(matches!(stale(&c, &rd1).0, Found::Stale(_)));
}

#[test]
fn answers_larger_than_the_client_takes_are_truncated() {
    let c = cache_with(settings());
    let query = Q {
        qtype: RecordType::TXT,
        edns: Some(false),
        payload: 4096,
        ..q("big.example.com.")
    }
    .bytes();
    let txt: Vec<Record> = (0..6)
        .map(|i| {
            Record::from_rdata(
                Name::from_ascii("big.example.com.").unwrap(),
                60,
                RData::TXT(TXT::new(vec![format!("{i}{}", "x".repeat(150))])),
            )
        })
        .collect();
    let big = answer(&query, ResponseCode::NoError, txt, vec![], vec![]);
    assert!(big.len() > 900);
    assert!(insert(&c, &query, &big));
    let small = Q {
        qtype: RecordType::TXT,
        edns: Some(false),
        payload: 512,
        ..q("big.example.com.")
    }
    .bytes();
    let mut out = [0u8; 4096];
    let qs = parse(&small);
    // Does not fit 512 bytes: the TC answer (header, question, OPT), so
    // the client retries over TCP, rather than a miss (the upstream would
    // be asked for an answer that does not fit either).
    let Found::Fresh(n) = c.answer(&small, &qs, qs.udp_limit, c.now(), &mut out) else {
        panic!("a hit")
    };
    let tc = Message::from_vec(&out[..n]).unwrap();
    assert!(tc.metadata.truncation, "TC");
    assert!(n <= 512 && tc.answers.is_empty() && tc.queries == Message::from_vec(&small).unwrap().queries);
    assert_eq!(tc.metadata.id, 0x1234);
    assert_eq!(
        tc.edns.map(|e| e.max_payload()),
        Some(4096),
        "our OPT (max_udp 4096 here)"
    );
    assert!(
        hit(c.answer(&small, &qs, usize::MAX, c.now(), &mut out)),
        "over TCP it fits"
    );
    // Stale too.
    c.advance(Duration::from_secs(61));
    let Found::Stale(n) = c.stale(&small, &qs, qs.udp_limit, c.now(), &mut out) else {
        panic!("a stale answer")
    };
    assert!(Message::from_vec(&out[..n]).unwrap().metadata.truncation);
    let Found::Stale(n) = c.stale(&small, &qs, usize::MAX, c.now(), &mut out) else {
        panic!("a stale answer")
    };
    assert_eq!(
        Message::from_vec(&out[..n]).unwrap().answers.len(),
        6,
        "over TCP, all of it"
    );
}

#[test]
fn the_cache_is_bounded_by_entries_and_by_bytes() {
    let metrics = CacheMetrics::default();
    let c = Cache::manual(
        &CacheSettings {
            max_entries: 64,
            ..settings()
        },
        metrics.clone(),
    );
    let names: Vec<&'static str> = (0..2000)
        .map(|i| &*Box::leak(format!("n{i}.flood.example.").into_boxed_str()))
        .collect();
    for n in &names {
        // Twice: a full cache takes a new name on its second miss.
        let query = q(n).bytes();
        for _ in 0..2 {
            insert(
                &c,
                &query,
                &answer(&query, ResponseCode::NoError, vec![a(n, 300, 1)], vec![], vec![]),
            );
        }
        assert!(c.len() <= 64);
    }
    assert!(c.len() >= 48, "the shards fill up: {}", c.len());
    assert_eq!(metrics.entries.get(), c.len() as i64);
    assert_eq!(metrics.bytes.get(), c.bytes() as i64);
    assert!(metrics.evictions.get() >= 2000 - 64);

    let bytes = 64 << 10;
    let c = Cache::manual(
        &CacheSettings {
            max_bytes: bytes,
            ..settings()
        },
        CacheMetrics::default(),
    );
    for n in &names[..500] {
        let query = Q {
            qtype: RecordType::TXT,
            edns: Some(false),
            ..q(n)
        }
        .bytes();
        let txt = Record::from_rdata(
            Name::from_ascii(*n).unwrap(),
            300,
            RData::TXT(TXT::new(vec!["y".repeat(200); 4])),
        );
        for _ in 0..2 {
            insert(
                &c,
                &query,
                &answer(&query, ResponseCode::NoError, vec![txt.clone()], vec![], vec![]),
            );
        }
        assert!(c.bytes() <= bytes, "{}", c.bytes());
    }
    assert!(
        c.len() < 100 && c.bytes() > bytes / 2,
        "{} entries, {} bytes",
        c.len(),
        c.bytes()
    );
}

#[test]
fn a_flood_of_nonexistent_names_does_not_push_out_the_answers_in_use() {
    let c = cache_with(CacheSettings {
        max_entries: 1600,
        ..settings()
    });
    let used: Vec<String> = (0..40).map(|i| format!("api{i}.example.com.")).collect();
    let queries: Vec<Vec<u8>> = used
        .iter()
        .map(|n| q(Box::leak(n.clone().into_boxed_str())).bytes())
        .collect();
    for (n, query) in used.iter().zip(&queries) {
        assert!(insert(
            &c,
            query,
            &answer(query, ResponseCode::NoError, vec![a(n, 300, 9)], vec![], vec![])
        ));
    }
    for i in 0..20_000 {
        let n: &'static str = Box::leak(format!("x{i}.junk.example.com.").into_boxed_str());
        let query = q(n).bytes();
        insert(
            &c,
            &query,
            &answer(
                &query,
                ResponseCode::NXDomain,
                vec![],
                vec![soa("example.com.", 300, 300)],
                vec![],
            ),
        );
    }
    assert!(c.len() <= 1600);
    for (n, query) in used.iter().zip(&queries) {
        assert!(hit(lookup(&c, query).0), "{n} was pushed out by negative answers");
    }
}

#[test]
fn serve_stale_windows() {
    let c = cache_with(CacheSettings {
        max_stale: Duration::from_secs(3600),
        ..settings()
    });
    let query = q("s.example.com.").bytes();
    assert!(insert_a(&c, &query, "s.example.com.", 10, 10));
    // Fresh: the upstream's failure changes nothing.
    c.advance(Duration::from_secs(4));
    let (f, m) = stale(&c, &query);
    assert!(matches!(f, Found::Fresh(_)));
    assert_eq!(ttls(&m.unwrap()), [6]);
    // Expired: the upstream is asked first (a miss).
    c.advance(Duration::from_secs(7));
    assert_eq!(lookup(&c, &query).0, Found::Miss);
    // It failed: stale, TTL 30.
    let (f, m) = stale(&c, &query);
    assert!(matches!(f, Found::Stale(_)), "{f:?}");
    assert_eq!(ttls(&m.unwrap()), [STALE_TTL]);
    // For the next 30 s it answers stale at once, without asking upstream.
    c.advance(Duration::from_secs(29));
    let (f, m) = lookup(&c, &query);
    assert!(matches!(f, Found::Stale(_)), "{f:?}");
    assert_eq!(ttls(&m.unwrap()), [STALE_TTL]);
    c.advance(Duration::from_secs(1));
    assert_eq!(
        lookup(&c, &query).0,
        Found::Miss,
        "30 s later the upstream is asked again"
    );
    // Up to max_stale after expiry, then never.
    c.advance(Duration::from_secs(3609 - 41));
    assert!(matches!(stale(&c, &query).0, Found::Stale(_)), "max_stale after expiry");
    c.advance(Duration::from_secs(2));
    assert_eq!(stale(&c, &query).0, Found::Miss, "older than max_stale");
    // A fresh answer replaces the stale one.
    assert!(insert_a(&c, &query, "s.example.com.", 10, 11));
    assert_eq!(ttls(&lookup(&c, &query).1.unwrap()), [10]);

    // Negative answers are served stale too; nothing is with serve_stale off.
    let nx = q("gone.example.com.").bytes();
    assert!(insert(
        &c,
        &nx,
        &answer(
            &nx,
            ResponseCode::NXDomain,
            vec![],
            vec![soa("example.com.", 5, 5)],
            vec![]
        )
    ));
    c.advance(Duration::from_secs(6));
    let (f, m) = stale(&c, &nx);
    assert!(matches!(f, Found::Stale(_)));
    assert_eq!(m.unwrap().metadata.response_code, ResponseCode::NXDomain);
    let off = cache_with(CacheSettings {
        serve_stale: false,
        ..settings()
    });
    assert!(insert_a(&off, &query, "s.example.com.", 10, 10));
    off.advance(Duration::from_secs(11));
    assert_eq!(stale(&off, &query).0, Found::Miss);
}

#[test]
fn names_in_the_sidecars_zones_are_never_kept() {
    let c = cache_with(settings());
    c.configure(&settings(), vec![wire("db.test.")]);
    for (name, kept) in [
        ("x.db.test.", false),
        ("db.test.", false),
        ("a.b.db.test.", false),
        ("xdb.test.", true),
        ("db.test.example.", true),
    ] {
        let query = q(name).bytes();
        assert_eq!(
            insert(
                &c,
                &query,
                &answer(&query, ResponseCode::NoError, vec![a(name, 60, 1)], vec![], vec![])
            ),
            kept,
            "{name}"
        );
    }
    // A reload that adds a zone drops what lies in it, and keeps the rest.
    let www = q("www.example.com.").bytes();
    let api = q("api.example.org.").bytes();
    for (query, n) in [(&www, "www.example.com."), (&api, "api.example.org.")] {
        assert!(insert(
            &c,
            query,
            &answer(query, ResponseCode::NoError, vec![a(n, 60, 1)], vec![], vec![])
        ));
    }
    c.configure(&settings(), vec![wire("db.test."), wire("example.com.")]);
    assert_eq!(lookup(&c, &www).0, Found::Miss);
    assert!(hit(lookup(&c, &api).0));
    assert!(!insert_a(&c, &www, "www.example.com.", 60, 1));
    // Other settings: the cache starts empty; off: nothing at all.
    c.configure(
        &CacheSettings {
            max_ttl: 60,
            ..settings()
        },
        vec![],
    );
    assert!(c.is_empty());
    assert!(insert_a(&c, &api, "api.example.org.", 60, 1));
    c.configure(
        &CacheSettings {
            enabled: false,
            max_ttl: 60,
            ..settings()
        },
        vec![],
    );
    assert!(c.is_empty());
    assert_eq!(lookup(&c, &api).0, Found::Off);
    assert!(!insert_a(&c, &api, "api.example.org.", 60, 1));
}

#[test]
fn an_answer_in_use_survives_a_stream_of_new_names() {
    let c = cache_with(CacheSettings {
        max_entries: 128,
        ..settings()
    });
    let hot = q("hot.example.com.").bytes();
    assert!(insert_a(&c, &hot, "hot.example.com.", 300, 1));
    for i in 0..5000 {
        let n: &'static str = Box::leak(format!("once{i}.example.com.").into_boxed_str());
        let query = q(n).bytes();
        let ans = answer(&query, ResponseCode::NoError, vec![a(n, 300, 2)], vec![], vec![]);
        // The second miss of a new name is kept, pushing another out.
        insert(&c, &query, &ans);
        assert!(insert(&c, &query, &ans));
        assert!(
            hit(lookup(&c, &hot).0),
            "the entry in use was evicted after {i} new names"
        );
    }
}

#[test]
fn flush_drops_a_name_and_the_names_below_it_or_everything() {
    let c = cache_with(settings());
    let names = [
        "example.com.",
        "www.example.com.",
        "a.b.example.com.",
        "notexample.com.",
        "example.org.",
    ];
    let queries: Vec<Vec<u8>> = names.iter().map(|n| q(n).bytes()).collect();
    for (n, query) in names.iter().zip(&queries) {
        assert!(insert(
            &c,
            query,
            &answer(query, ResponseCode::NoError, vec![a(n, 300, 1)], vec![], vec![])
        ));
    }
    assert_eq!(c.flush(Some(&wire("example.com."))), 3);
    let kept: Vec<&str> = names
        .iter()
        .zip(&queries)
        .filter(|(_, query)| hit(lookup(&c, query).0))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(kept, ["notexample.com.", "example.org."]);
    assert_eq!(c.flush(None), 2);
    assert!(c.is_empty());
}

#[test]
fn a_full_cache_keeps_a_new_name_on_its_second_miss() {
    let metrics = CacheMetrics::default();
    let c = Cache::manual(
        &CacheSettings {
            max_entries: 160,
            ..settings()
        },
        metrics.clone(),
    );
    let fill = |i: usize| {
        let n: &'static str = Box::leak(format!("f{i}.example.com.").into_boxed_str());
        let query = q(n).bytes();
        (
            query.clone(),
            answer(&query, ResponseCode::NoError, vec![a(n, 300, 3)], vec![], vec![]),
        )
    };
    // While there is room, an answer is kept at once (16 names cannot fill
    // a shard of 10).
    for i in 0..16 {
        let (query, ans) = fill(i);
        assert!(insert(&c, &query, &ans), "kept at once while there is room");
    }
    // Filled up (names asked twice).
    let mut i = 16;
    while c.len() < 160 {
        let (query, ans) = fill(i);
        insert(&c, &query, &ans);
        insert(&c, &query, &ans);
        i += 1;
    }
    // Full: of a stream of names asked once, only the doorkeeper's false
    // "seen before" (a bit shared with another name: a few %) are kept.
    let before = metrics.evictions.get();
    let kept = (0..5000).filter(|j| {
        let (query, ans) = fill(100_000 + j);
        insert(&c, &query, &ans)
    });
    let kept = kept.count() as u64;
    assert!(kept < 250, "{kept} of 5000 names asked once were kept");
    assert_eq!(metrics.evictions.get(), before + kept);
    // A name asked again is kept (and another pushed out).
    let (query, ans) = fill(100_000 + 4999);
    insert(&c, &query, &ans);
    assert!(hit(lookup(&c, &query).0));
    // A refresh of a name already kept needs no second miss.
    c.advance(Duration::from_secs(301));
    assert!(insert(&c, &query, &ans), "an expired entry is replaced at once");
}

/// How long a miss's cache work takes (lookup, then insert with an
/// eviction) on a full cache: `cargo test --release -p dns-sidecar --lib
/// cache_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn cache_cost() {
    let c = cache_with(settings());
    let n = 400_000;
    let queries: Vec<Vec<u8>> = (0..n)
        .map(|i| q(Box::leak(format!("m{i}.miss.test.").into_boxed_str())).bytes())
        .collect();
    let answers: Vec<Vec<u8>> = queries
        .iter()
        .map(|query| {
            answer(
                query,
                ResponseCode::NoError,
                vec![a("x.miss.test.", 300, 1)],
                vec![],
                vec![],
            )
        })
        .collect();
    let mut out = [0u8; 4096];
    let start = std::time::Instant::now();
    for (query, ans) in queries.iter().zip(&answers) {
        let qn = parse(query);
        assert_eq!(c.answer(query, &qn, 4096, 0, &mut out), Found::Miss);
        c.insert(query, &qn, ans, 0);
    }
    let per = start.elapsed() / n as u32;
    let start = std::time::Instant::now();
    let mut hits = 0;
    for query in queries.iter().rev().take(5000).cycle().take(n) {
        let qn = parse(query);
        hits += usize::from(matches!(c.answer(query, &qn, 4096, 0, &mut out), Found::Fresh(_)));
    }
    eprintln!(
        "miss + insert: {per:?} each; hit: {:?} each ({hits} hits); {} entries, {} bytes",
        start.elapsed() / n as u32,
        c.len(),
        c.bytes()
    );
}

/// How many refreshes were offered since the last call.
fn offered(r: &mut crate::dns::prefetch::Refreshes) -> Vec<Box<[u8]>> {
    std::iter::from_fn(|| r.try_next()).collect()
}

#[test]
fn a_popular_entry_hit_near_its_expiry_is_offered_for_refresh_exactly_once() {
    let c = cache_with(settings());
    let mut refreshes = c.prefetch_queue().take().expect("the receiving end");
    assert!(c.prefetch_queue().take().is_none(), "taken once");
    let query = Q {
        id: 0x4242,
        ..q("Hot.Example.com.")
    }
    .bytes();
    assert!(insert_a(&c, &query, "hot.example.com.", 60, 1));
    // Popular (default prefetch_hits = 3), but far from its expiry.
    for _ in 0..10 {
        assert!(hit(lookup(&c, &query).0));
    }
    c.advance(Duration::from_millis(53_900));
    assert!(hit(lookup(&c, &query).0));
    assert!(
        offered(&mut refreshes).is_empty(),
        "6.1 s left of 60: not in the last tenth yet"
    );
    c.advance(Duration::from_millis(200));
    let (f, m) = lookup(&c, &query);
    assert!(hit(f), "the hit that makes it due is answered from the cache at once");
    assert_eq!(ttls(&m.unwrap()), [6]);
    let got = offered(&mut refreshes);
    assert_eq!(got.len(), 1, "one refresh");
    assert_eq!(&*got[0], &query[..], "the query that hit it, as the client sent it");
    for _ in 0..20 {
        assert!(hit(lookup(&c, &query).0));
        c.advance(Duration::from_millis(100));
    }
    assert!(offered(&mut refreshes).is_empty(), "at most once per entry");
    assert_eq!(c.metrics().prefetch_dropped.get(), 0);
}

#[test]
fn an_unpopular_entry_a_stale_one_and_a_servfail_are_never_refreshed() {
    let c = cache_with(CacheSettings {
        prefetch_hits: 5,
        ..settings()
    });
    let mut refreshes = c.prefetch_queue().take().unwrap();
    let cold = q("cold.example.com.").bytes();
    assert!(insert_a(&c, &cold, "cold.example.com.", 10, 1));
    c.advance(Duration::from_millis(9_100));
    for _ in 0..4 {
        assert!(hit(lookup(&c, &cold).0));
    }
    assert!(offered(&mut refreshes).is_empty(), "4 hits < prefetch_hits = 5");
    assert!(hit(lookup(&c, &cold).0));
    assert_eq!(offered(&mut refreshes).len(), 1, "the fifth, in the window");
    // Expired, then answered stale (the upstream failed): no refresh from there.
    c.advance(Duration::from_secs(5));
    assert_eq!(lookup(&c, &cold).0, Found::Miss);
    assert!(matches!(stale(&c, &cold).0, Found::Stale(_)));
    for _ in 0..10 {
        assert!(matches!(lookup(&c, &cold).0, Found::Stale(_)));
    }
    assert!(offered(&mut refreshes).is_empty(), "stale answers never refresh");
    // The upstream's SERVFAIL, however popular.
    let failing = q("fail.example.com.").bytes();
    assert!(insert(
        &c,
        &failing,
        &answer(&failing, ResponseCode::ServFail, vec![], vec![], vec![])
    ));
    c.advance(Duration::from_millis(4_500));
    for _ in 0..10 {
        assert!(hit(lookup(&c, &failing).0));
    }
    assert!(offered(&mut refreshes).is_empty(), "SERVFAIL entries are not refreshed");
    // RD=0 queries never reach an entry (nor make one due).
    let rd0 = Q {
        rd: false,
        ..q("hot2.example.com.")
    }
    .bytes();
    let rd1 = q("hot2.example.com.").bytes();
    assert!(insert_a(&c, &rd1, "hot2.example.com.", 10, 2));
    c.advance(Duration::from_millis(9_500));
    for _ in 0..10 {
        assert_eq!(lookup(&c, &rd0).0, Found::Miss);
    }
    assert!(offered(&mut refreshes).is_empty(), "RD=0 is not a hit");
    // prefetch = false: nothing, however hot.
    let off = cache_with(CacheSettings {
        prefetch: false,
        ..settings()
    });
    let mut none = off.prefetch_queue().take().unwrap();
    assert!(insert_a(&off, &rd1, "hot2.example.com.", 10, 2));
    off.advance(Duration::from_millis(9_500));
    for _ in 0..10 {
        assert!(hit(lookup(&off, &rd1).0));
    }
    assert!(offered(&mut none).is_empty());
}

#[test]
fn a_refreshed_entry_stays_fresh_past_the_old_expiry_and_must_be_popular_again() {
    let c = cache_with(settings());
    let mut refreshes = c.prefetch_queue().take().unwrap();
    let query = q("www.example.com.").bytes();
    assert!(insert_a(&c, &query, "www.example.com.", 2, 1));
    // A 2-second entry: its window is the last second.
    assert_eq!(super::prefetch_window(2), 1000);
    assert_eq!(super::prefetch_window(1), 500);
    assert_eq!(super::prefetch_window(300), 30_000);
    c.advance(Duration::from_millis(1_200));
    for _ in 0..3 {
        assert!(hit(lookup(&c, &query).0));
    }
    let due = offered(&mut refreshes);
    assert_eq!(due.len(), 1);
    // What the prefetcher does: the upstream's new answer, kept.
    c.advance(Duration::from_millis(50));
    assert!(insert_a(&c, &due[0], "www.example.com.", 2, 7));
    c.advance(Duration::from_millis(1_000));
    let (f, m) = lookup(&c, &query);
    assert!(
        hit(f),
        "2.25 s after the first answer, past its expiry: fresh from the refresh"
    );
    assert_eq!(m.unwrap().answers[0].data, RData::A(A::new(10, 0, 0, 7)));
    // Its popularity starts again: one hit so far, due at the third.
    assert!(offered(&mut refreshes).is_empty());
    assert!(hit(lookup(&c, &query).0));
    assert!(offered(&mut refreshes).is_empty());
    assert!(hit(lookup(&c, &query).0));
    assert_eq!(offered(&mut refreshes).len(), 1, "due again, once");
    // Not refreshed again: it expires as it would have.
    c.advance(Duration::from_millis(1_000));
    assert_eq!(lookup(&c, &query).0, Found::Miss);
}

#[test]
fn the_refresh_queue_is_bounded_and_counts_what_it_drops() {
    let c = cache_with(CacheSettings {
        prefetch_hits: 1,
        ..settings()
    });
    let extra = 5;
    let queries: Vec<Vec<u8>> = (0..crate::dns::prefetch::QUEUE + extra)
        .map(|i| {
            let name: &'static str = Box::leak(format!("n{i}.example.com.").into_boxed_str());
            q(name).bytes()
        })
        .collect();
    for (i, query) in queries.iter().enumerate() {
        assert!(insert_a(&c, query, &format!("n{i}.example.com."), 10, 1));
    }
    c.advance(Duration::from_millis(9_500));
    for query in &queries {
        assert!(hit(lookup(&c, query).0), "answered whether or not its refresh fits");
    }
    assert_eq!(c.metrics().prefetch_dropped.get(), extra as u64);
    let mut refreshes = c.prefetch_queue().take().unwrap();
    assert_eq!(offered(&mut refreshes).len(), crate::dns::prefetch::QUEUE);
}
