//! Names outside the zones go to the upstream, and come back faithfully.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::support::dig;
use crate::support::env::Env;
use crate::support::sidecar::Sidecar;

#[tokio::test]
async fn upstream_answers_and_nxdomain_are_relayed_faithfully() {
    let env = Env::start(false, "").await;
    let d = dig(env.dns, "www.example.test", "A", &[]);
    assert_eq!(
        (d.status.as_str(), d.answers("A")),
        ("NOERROR", vec!["127.0.0.9".to_string()]),
        "{}",
        d.raw
    );
    assert_eq!(d.answer[0].ttl, 30, "TTL as the upstream sent it");
    assert_eq!(dig(env.dns, "missing.example.test", "A", &[]).status, "NXDOMAIN");
    // Through the sidecar or straight from the upstream: the same answer.
    for (name, rtype, extra) in [
        ("www.example.test", "A", &[][..]),
        ("missing.example.test", "AAAA", &[]),
        ("big.example.test", "TXT", &["+tcp"]),
    ] {
        let via = dig(env.dns, name, rtype, extra);
        let direct = dig(env.upstream.addr, name, rtype, extra);
        assert_eq!(via.status, direct.status, "{name}");
        assert_eq!(via.flags, direct.flags, "{name}");
        assert_eq!(via.answer, direct.answer, "{name}");
        assert_eq!(via.authority, direct.authority, "{name}");
        assert_eq!(via.edns, direct.edns, "{name}");
    }
}

#[tokio::test]
async fn truncated_answers_make_the_client_retry_over_tcp() {
    let env = Env::start(false, "").await;
    let d = dig(env.dns, "big.example.test", "TXT", &["+ignore", "+bufsize=1232"]);
    assert!(d.has_flag("tc"), "UDP answer truncated: {}", d.raw);
    let d = dig(env.dns, "big.example.test", "TXT", &[]);
    assert_eq!(d.answers("TXT").len(), 40, "dig retried over TCP: {}", d.raw);
}

#[tokio::test]
async fn a_dead_upstream_gives_servfail_in_bounded_time() {
    // One upstream that never answers (a bound socket), one that refuses (closed port).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for (what, upstream) in [("silent", silent.local_addr().unwrap()), ("closed", closed)] {
        let text =
            format!("[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{upstream}\"]\ntimeout = \"300ms\"\n");
        let sidecar = Sidecar::start(&text).unwrap();
        let start = Instant::now();
        let d = dig(sidecar.dns, "www.example.test", "A", &[]);
        let took = start.elapsed();
        assert_eq!(d.status, "SERVFAIL", "{what}: {}", d.raw);
        assert!(took < Duration::from_millis(1000), "{what}: SERVFAIL after {took:?}");
    }
}
