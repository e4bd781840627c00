//! Exact answers (issue 15): every UDP answer fits the client's limit (TC
//! otherwise), RD=0 answers never poison the cache, alias queries of any
//! type go through the cache, and an upstream answer to another type or
//! class than asked is not taken. Against the sidecar with the counting
//! upstream of support/upstream.rs, with raw packets and `dig`.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::abuse::metric;
use crate::support::dig;
use crate::support::raw;
use crate::support::sidecar::Sidecar;
use crate::support::upstream::{Mode, Special, Upstream};

const A: RecordType = RecordType::A;

/// A forwarding sidecar (zone `db.test`) with `max_udp_payload = 1232`,
/// upstream timeout 300 ms, no per-client rate limit, plus `extra` TOML.
fn config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nmax_udp_payload = 1232\n[upstream]\nservers = [\"{upstream}\"]\ntimeout \
        = \"300ms\"\n[limits]\nforward_rate = 0\n[[zones]]\nname = \"db.test\"\n{extra}"
    )
}

/// A query for `name`/`rtype` with RD as given and EDNS of `payload` bytes
/// (none when `None`).
fn query(name: &str, rtype: RecordType, rd: bool, payload: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.recursion_desired = rd;
    m.queries.push(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(p) = payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// A new ID per query, so an answer is never taken for another's.
fn rand_id() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0x5a5a);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Sends `q`, returns the raw answer (checked: same ID, QR) and its decoding.
fn ask(server: SocketAddr, q: &[u8]) -> (Vec<u8>, Message) {
    let a = raw::exchange(server, q, Duration::from_secs(3)).expect("an answer");
    assert_eq!(a[..2], q[..2], "the query's ID");
    let m = Message::from_vec(&a).expect("a well-formed answer");
    assert!(m.metadata.message_type == hickory_proto::op::MessageType::Response);
    (a, m)
}

/// Waits up to 2 s for `cond`.
fn eventually(cond: impl Fn() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(2), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn udp_answers_over_the_clients_limit_are_truncated_relayed_cached_and_stale() {
    let up = Upstream::start();
    up.special("big.exact.test.", Special::Many { ttl: 1, records: 150 });
    up.special("mid.exact.test.", Special::Many { ttl: 300, records: 40 });
    let s = Sidecar::start(&config(up.addr, "")).unwrap();
    let edns4096 = query("big.exact.test.", A, true, Some(4096));

    // Relayed: the upstream's ~3 KB answer does not fit 1232 bytes.
    let (bytes, m) = ask(s.dns, &edns4096);
    assert!(m.metadata.truncation, "relayed: TC ({} bytes)", bytes.len());
    assert!(bytes.len() <= 1232, "{} bytes", bytes.len());
    assert!(m.answers.is_empty());
    assert_eq!(
        m.queries,
        Message::from_vec(&edns4096).unwrap().queries,
        "the question as asked"
    );
    assert_eq!(
        m.edns.map(|e| e.max_payload()),
        Some(1232),
        "our size in the OPT record"
    );
    assert_eq!(up.count("big.exact.test.", A), 1);

    // Cached: TC again, from the cache (the upstream is not asked).
    let (bytes, m) = ask(s.dns, &edns4096);
    assert!(
        m.metadata.truncation && bytes.len() <= 1232,
        "cached: TC ({} bytes)",
        bytes.len()
    );
    assert_eq!(up.count("big.exact.test.", A), 1, "answered from the cache");
    // (A UDP worker counts its batch after sending it.)
    eventually(|| metric(&s, "cache_hits_total") >= 1.0, "a cache hit counted");

    // Over TCP: all of it (dig retries there after a TC too).
    let tcp = dig(s.dns, "big.exact.test", "A", &["+tcp", "+bufsize=4096"]);
    assert_eq!(
        (tcp.status.as_str(), tcp.answers("A").len()),
        ("NOERROR", 150),
        "{}",
        tcp.raw
    );
    assert!(!tcp.has_flag("tc"));
    let size: usize = tcp
        .raw
        .lines()
        .find_map(|l| l.split("MSG SIZE  rcvd: ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .expect("dig prints the size");
    assert!(
        (2500..4096).contains(&size),
        "an answer of {size} bytes, as in the issue (3 064)"
    );
    let retried = dig(s.dns, "big.exact.test", "A", &["+bufsize=4096"]);
    assert_eq!(
        retried.answers("A").len(),
        150,
        "dig's TCP retry after TC: {}",
        retried.raw
    );

    // No EDNS: 512 bytes at most.
    let plain = query("mid.exact.test.", A, true, None);
    for round in ["relayed", "cached"] {
        let (bytes, m) = ask(s.dns, &plain);
        assert!(
            m.metadata.truncation && bytes.len() <= 512,
            "{round}: no EDNS, {} bytes",
            bytes.len()
        );
        assert!(m.edns.is_none(), "no OPT for a client without EDNS");
    }
    // ... while the same ~700 bytes fit an EDNS client.
    for round in ["relayed", "cached"] {
        let (bytes, m) = ask(s.dns, &query("mid.exact.test.", A, true, Some(4096)));
        assert!(!m.metadata.truncation, "{round}: {} bytes fit 1232", bytes.len());
        assert_eq!(m.answers.len(), 40, "{round}");
    }
    assert_eq!(up.count("mid.exact.test.", A), 2, "one per EDNS variant, then cached");

    // Stale: the big answer expires (TTL 1), the upstream stops answering;
    // after the upstream timeout the stale answer is too big too: TC.
    std::thread::sleep(Duration::from_millis(1100));
    up.set_mode(Mode::Silent);
    let stale_before = metric(&s, "cache_stale_answers_total");
    let (bytes, m) = ask(s.dns, &edns4096);
    assert!(
        m.metadata.truncation && bytes.len() <= 1232,
        "stale: TC ({} bytes, rcode {:?})",
        bytes.len(),
        m.metadata.response_code
    );
    eventually(
        || metric(&s, "cache_stale_answers_total") == stale_before + 1.0,
        "a stale answer",
    );
    // ... and at once for the next 30 s.
    let (_, m) = ask(s.dns, &edns4096);
    assert!(m.metadata.truncation);
    eventually(
        || metric(&s, "cache_stale_answers_total") == stale_before + 2.0,
        "a stale answer from the worker",
    );
    // Over TCP the stale answer in full.
    let tcp = dig(s.dns, "big.exact.test", "A", &["+tcp"]);
    assert_eq!(tcp.answers("A").len(), 150, "{}", tcp.raw);
    assert!(tcp.answer.iter().all(|r| r.ttl == 30), "stale TTLs");
}

#[test]
fn an_rd0_partial_answer_does_not_poison_the_rd1_answer() {
    let up = Upstream::start();
    let name = "www.partial.test.";
    up.special(
        name,
        Special::Partial {
            target: "host.partial.test.".into(),
            ip: [10, 7, 7, 7],
        },
    );
    let s = Sidecar::start(&config(up.addr, "")).unwrap();
    // RD=0: the upstream's partial answer (a CNAME without its address),
    // relayed to this client only.
    for payload in [None, Some(1232)] {
        let (_, m) = ask(s.dns, &query(name, A, false, payload));
        assert_eq!(m.answers.len(), 1, "{payload:?}: the CNAME only: {m:?}");
        assert!(!m.metadata.recursion_desired);
    }
    assert_eq!(up.count_rd0(name), 2);
    // RD=1 next: the full answer from the upstream, not the partial one.
    for payload in [None, Some(1232)] {
        let (_, m) = ask(s.dns, &query(name, A, true, payload));
        assert_eq!(m.answers.len(), 2, "{payload:?}: CNAME + address: {m:?}");
    }
    assert_eq!(up.count(name, A), 4, "the RD=0 answers were not kept");
    // RD=1 again: from the cache.
    let d = dig(s.dns, name, "A", &[]);
    assert_eq!(d.answers("A"), ["10.7.7.7"], "{}", d.raw);
    assert_eq!(up.count(name, A), 4);
    // RD=0 again, over UDP and TCP: the upstream's own RD=0 answer, never
    // the one kept for RD=1.
    let (_, m) = ask(s.dns, &query(name, A, false, Some(1232)));
    assert_eq!(m.answers.len(), 1, "{m:?}");
    let d = dig(s.dns, name, "A", &["+norec", "+tcp"]);
    assert_eq!((d.answer.len(), d.has_flag("rd")), (1, false), "{}", d.raw);
    assert_eq!(up.count_rd0(name), 4, "each RD=0 query went upstream");
}

/// A sidecar whose alias `prod.db.test` is pinned to a server (whose probes
/// fail: port 1) with target `pg.nodata.test`, which the upstream answers
/// NODATA with an SOA for every type but A.
fn pinned_alias(up: &Upstream) -> Sidecar {
    up.special("pg.nodata.test.", Special::NoData);
    let extra = "[probe]\nuser = \"probe\"\nsslmode = \"disable\"\n[servers.a]\ntarget = \"pg.nodata.test\"\nhostaddr \
        = \"127.0.0.1\"\nport = 1\n[[aliases]]\nname = \"prod.db.test\"\nservers = [\"a\"]\n";
    let s = Sidecar::start(&config(up.addr, extra)).unwrap();
    let admin = s.admin.expect("admin listener");
    let c = dns_sidecar::client::Client::new(&admin.to_string(), None);
    let start = Instant::now();
    loop {
        let r = c
            .request(
                "POST",
                "/pin",
                &[("Content-Type", "application/json")],
                Some(br#"{"alias":"prod.db.test","server":"a"}"#),
            )
            .unwrap();
        if r.status == 200 && raw::cname_of(s.dns, "prod.db.test.").as_deref() == Some("pg.nodata.test.") {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the pin never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn alias_queries_of_other_types_go_through_the_cache() {
    let up = Upstream::start();
    let s = pinned_alias(&up);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 1500];
    for i in 0..500 {
        let q = query("prod.db.test.", RecordType::TXT, true, Some(1232));
        sock.send_to(&q, s.dns).unwrap();
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            (m.metadata.response_code, m.answers.len()),
            (ResponseCode::NoError, 1),
            "query {i}: the CNAME, no TXT: {m:?}"
        );
    }
    let upstream = up.count("pg.nodata.test.", RecordType::TXT);
    assert!(
        (1..=3).contains(&upstream),
        "500 alias TXT queries sent {upstream} upstream (NODATA with an SOA is kept)"
    );
    // Over TCP too, from the same entry.
    let d = dig(s.dns, "prod.db.test", "TXT", &["+tcp"]);
    assert_eq!((d.status.as_str(), d.answer.len()), ("NOERROR", 1), "{}", d.raw);
    assert_eq!(up.count("pg.nodata.test.", RecordType::TXT), upstream);
    // RD=0: the CNAME only, nothing asked upstream for it.
    let before = up.total();
    for rtype in ["A", "TXT", "MX"] {
        let d = dig(s.dns, "prod.db.test", rtype, &["+norec"]);
        assert_eq!(
            (d.status.as_str(), d.answer.len(), d.answer[0].rtype.as_str()),
            ("NOERROR", 1, "CNAME"),
            "{rtype}: {}",
            d.raw
        );
    }
    let d = dig(s.dns, "prod.db.test", "A", &[]);
    assert_eq!(d.answer.len(), 2, "RD=1: CNAME + address: {}", d.raw);
    assert!(up.total() - before <= 2, "only the background refresher asks meanwhile");
}

#[test]
fn an_upstream_answer_of_another_type_or_class_is_not_taken() {
    let up = Upstream::start();
    up.special("type.mismatch.test.", Special::OtherType);
    up.special("class.mismatch.test.", Special::OtherClass);
    // Names of their own for TCP: a name whose UDP lookup timed out is
    // answered from its SERVFAIL memory for `servfail_ttl`, without asking.
    up.special("type.tcp.mismatch.test.", Special::OtherType);
    up.special("class.tcp.mismatch.test.", Special::OtherClass);
    up.special("ok.mismatch.test.", Special::NoData);
    let s = Sidecar::start(&config(up.addr, "")).unwrap();
    // HTTPS (65, 0x41) answered as type 97 (0x61): the same bytes without
    // regard to ASCII case, another question all the same.
    let https = RecordType::HTTPS;
    for (name, rtype) in [("type.mismatch.test.", https), ("class.mismatch.test.", A)] {
        let (_, m) = ask(s.dns, &query(name, rtype, true, Some(1232)));
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "UDP {name}: {m:?}");
    }
    for (name, rtype) in [("type.tcp.mismatch.test.", https), ("class.tcp.mismatch.test.", A)] {
        let d = dig(s.dns, name, &rtype.to_string(), &["+tcp"]);
        assert_eq!(d.status, "SERVFAIL", "TCP {name}: {}", d.raw);
    }
    for name in ["type.mismatch.test.", "type.tcp.mismatch.test."] {
        assert!(up.count(name, https) >= 1, "{name} asked, and the answer dropped");
    }
    // Nothing of the mismatched answers is kept: the only entries are the
    // timeouts' SERVFAIL memory (one per name, `servfail_ttl`), and asking
    // again still gets SERVFAIL, never the other question's data.
    assert!(metric(&s, "cache_entries") <= 4.0, "only the names' SERVFAIL memory");
    for (name, rtype) in [("type.mismatch.test.", https), ("class.mismatch.test.", A)] {
        let (_, m) = ask(s.dns, &query(name, rtype, true, Some(1232)));
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "again {name}: {m:?}");
    }
    // The same upstream's matching answers are taken.
    let (_, m) = ask(s.dns, &query("ok.mismatch.test.", https, true, Some(1232)));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}
