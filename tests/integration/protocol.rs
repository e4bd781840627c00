//! DNS protocol behaviour that stock servers get wrong, checked with dig and
//! with raw packets.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::support::env::Env;
use crate::support::{dig, raw};

/// A zone with one alias whose only server never answers (port 1): after the
/// first round it matches nothing, so it answers SERVFAIL.
const DEAD_ALIAS: &str = r#"
[servers.dead]
target = "pg-dead.test"
hostaddr = "127.0.0.1"
port = 1
sslmode = "disable"

[[aliases]]
name = "prod.eu.db.test"
servers = ["dead"]
"#;

async fn env() -> Env {
    Env::start(false, DEAD_ALIAS).await
}

#[tokio::test]
async fn zone_answers_soa_ns_nxdomain_and_nodata() {
    let env = env().await;
    let d = dig(env.dns, "db.test", "SOA", &[]);
    assert_eq!((d.status.as_str(), d.has_flag("aa")), ("NOERROR", true), "{}", d.raw);
    assert_eq!(d.answers("SOA").len(), 1);
    assert_eq!(dig(env.dns, "db.test", "NS", &[]).answers("NS"), ["ns.db.test."]);

    // NXDOMAIN and NODATA carry the SOA with the negative TTL, and AA.
    for (name, rtype, status) in [
        ("nope.db.test", "A", "NXDOMAIN"),
        ("db.test", "A", "NOERROR"),
        ("eu.db.test", "AAAA", "NOERROR"),
    ] {
        let d = dig(env.dns, name, rtype, &[]);
        assert_eq!(d.status, status, "{name}: {}", d.raw);
        assert!(d.has_flag("aa"), "{name}: {}", d.raw);
        assert!(d.answer.is_empty(), "{name}: {}", d.raw);
        assert_eq!(d.authority.len(), 1, "{name}: {}", d.raw);
        assert_eq!(
            (d.authority[0].rtype.as_str(), d.authority[0].ttl),
            ("SOA", 5),
            "{name}: {}",
            d.raw
        );
    }
}

#[tokio::test]
async fn alias_without_a_matching_server_is_servfail_not_a_guess() {
    let env = env().await;
    let d = dig(env.dns, "prod.eu.db.test", "A", &[]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(d.answer.is_empty());
}

#[tokio::test]
async fn question_is_echoed_exactly_and_flags_are_kept() {
    let env = env().await;
    for name in ["NoPe.Db.TeSt.", "WWW.example.TEST."] {
        let q = raw::query(name, RecordType::A);
        let resp = raw::exchange(env.dns, &q, Duration::from_secs(2)).expect("an answer");
        assert_eq!(resp[..2], q[..2], "id");
        let end = 12 + name.len() + 1 + 4;
        assert_eq!(resp[12..end], q[12..end], "question bytes for {name}");
        assert_eq!(resp[2] & 0x01, 1, "RD copied");
    }
    let d = dig(env.dns, "nope.db.test", "A", &["+cdflag"]);
    assert!(d.has_flag("cd"), "{}", d.raw);
}

#[tokio::test]
async fn hostile_or_odd_packets() {
    let env = env().await;
    let wait = Duration::from_millis(300);
    let q = raw::query("nope.db.test.", RecordType::A);

    // A datagram with QR set is never answered (no reflection loops).
    let mut response_like = q.clone();
    response_like[2] |= 0x80;
    assert_eq!(raw::exchange(env.dns, &response_like, wait), None);
    // Too short for a header: dropped.
    assert_eq!(raw::exchange(env.dns, &[1, 2, 3, 4, 5], wait), None);
    // A header promising a question that is not there: FORMERR, same id.
    let garbage = [0xAB, 0xCD, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x05, b'x'];
    let resp = raw::exchange(env.dns, &garbage, wait).expect("FORMERR");
    assert_eq!(resp[..2], [0xAB, 0xCD]);
    assert_eq!(resp[3] & 0x0F, 1, "FORMERR");
    // Two questions: FORMERR.
    let mut m = Message::from_vec(&q).unwrap();
    m.queries.push(m.queries[0].clone());
    let resp = raw::exchange(env.dns, &m.to_vec().unwrap(), wait).expect("an answer");
    assert_eq!(
        Message::from_vec(&resp).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
    // Opcode STATUS: NOTIMP.
    let mut st = q.clone();
    st[2] = (st[2] & !0x78) | (2 << 3);
    let resp = raw::exchange(env.dns, &st, wait).expect("an answer");
    assert_eq!(resp[3] & 0x0F, 4, "NOTIMP");
    // 2 000 random packets: the server survives and still answers.
    for i in 0..2000u32 {
        let len = (i % 60) as usize + 1;
        let p: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(&p, env.dns).unwrap();
    }
    assert_eq!(dig(env.dns, "nope.db.test", "A", &[]).status, "NXDOMAIN");
}

#[tokio::test]
async fn classes_other_than_in_are_refused() {
    let env = env().await;
    assert_eq!(dig(env.dns, "version.bind", "TXT", &["-c", "CH"]).status, "REFUSED");
    assert_eq!(dig(env.dns, "db.test", "SOA", &["-c", "HS"]).status, "REFUSED");
}

#[tokio::test]
async fn edns_is_echoed_and_versions_checked() {
    let env = env().await;
    let d = dig(env.dns, "nope.db.test", "A", &["+dnssec"]);
    let edns = d.edns.clone().expect("OPT in the answer");
    assert!(edns.contains("flags: do"), "DO echoed: {edns}");
    assert!(edns.contains("udp: 1232"), "{edns}");
    let d = dig(env.dns, "nope.db.test", "A", &["+noedns"]);
    assert!(d.edns.is_none(), "no OPT for a query without one: {}", d.raw);
    let d = dig(env.dns, "nope.db.test", "A", &["+edns=1", "+noednsnegotiation"]);
    assert_eq!(d.status, "BADVERS", "{}", d.raw);
}

#[tokio::test]
async fn tcp_answers_like_udp() {
    let env = env().await;
    let d = dig(env.dns, "nope.db.test", "A", &["+tcp"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    let d = dig(env.dns, "www.example.test", "A", &["+tcp"]);
    assert_eq!(d.answers("A"), ["127.0.0.9"], "{}", d.raw);
}

#[tokio::test]
async fn forwarding_to_itself_is_refused_at_start() {
    let listeners = dns_sidecar::Listeners::bind_dns(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let own = listeners.local_addrs()[0];
    let text = format!("[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{own}\"]\n");
    let config = dns_sidecar::config::Config::from_toml(std::path::Path::new("t.toml"), &text).unwrap();
    match dns_sidecar::start(config, listeners).map(|_| ()) {
        Err(e) => assert!(e.to_string().contains("loop"), "{e}"),
        Ok(_) => panic!("a sidecar forwarding to itself started"),
    }
}
