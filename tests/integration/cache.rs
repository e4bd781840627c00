//! The forwarding cache against a real upstream that counts what it
//! receives (support/upstream.rs), queried with `dig` and a raw client:
//! every query the cache answers is one the upstream does not see.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use crate::abuse::metric;
use crate::support::dig;
use crate::support::raw;
use crate::support::sidecar::Sidecar;
use crate::support::upstream::{Mode, Upstream, NEGATIVE_TTL};

const A: RecordType = RecordType::A;

/// A forwarding sidecar (zone `db.test`), upstream timeout 300 ms, no
/// per-client rate limit, plus `extra` TOML.
fn config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{upstream}\"]\ntimeout \
        = \"300ms\"\n[limits]\nforward_rate = 0\n[[zones]]\nname = \"db.test\"\n{extra}"
    )
}

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn repeated_queries_are_answered_from_the_cache_with_their_ttls_counted_down() {
    let up = Upstream::start();
    up.a("www.cache.test.", 60, [10, 1, 1, 1]);
    let s = Sidecar::start(&config(up.addr, "")).unwrap();
    let first = dig(s.dns, "www.cache.test", "A", &[]);
    assert_eq!(
        (first.status.as_str(), first.answers("A")),
        ("NOERROR", vec!["10.1.1.1".to_string()]),
        "{}",
        first.raw
    );
    assert_eq!(first.answer[0].ttl, 60, "the upstream's TTL");
    // Again over UDP, over TCP, and with a DNS cookie (dig's default): one
    // entry answers them all.
    for extra in [&[][..], &["+tcp"], &["+cookie"], &[]] {
        let d = dig(s.dns, "www.cache.test", "A", extra);
        assert_eq!(
            (d.status.as_str(), d.answers("A")),
            ("NOERROR", vec!["10.1.1.1".to_string()]),
            "{extra:?}: {}",
            d.raw
        );
        assert!(d.answer[0].ttl <= 60 && d.answer[0].ttl >= 58, "{extra:?}: {}", d.raw);
    }
    assert_eq!(up.count("www.cache.test.", A), 1, "the upstream was asked once");
    sleep(2100);
    let later = dig(s.dns, "www.cache.test", "A", &[]);
    assert!(
        (50..=58).contains(&later.answer[0].ttl),
        "TTL counted down by the entry's age: {}",
        later.raw
    );
    assert_eq!(up.count("www.cache.test.", A), 1);
    assert_eq!(metric(&s, "cache_misses_total"), 1.0);
    assert_eq!(metric(&s, "cache_hits_total"), 5.0);
    assert_eq!(metric(&s, "cache_entries"), 1.0);
    assert!(metric(&s, "cache_bytes") > 0.0);
    assert_eq!(
        metric(&s, "queries_total{kind=\"forwarded\",rcode=\"NOERROR\"}"),
        6.0,
        "hits are forwarded answers"
    );
}

#[test]
fn ttls_are_capped_by_max_ttl() {
    let up = Upstream::start();
    up.a("day.cache.test.", 86_400, [10, 1, 1, 2]);
    let s = Sidecar::start(&config(up.addr, "[cache]\nmax_ttl = \"10m\"\n")).unwrap();
    assert_eq!(
        dig(s.dns, "day.cache.test", "A", &[]).answer[0].ttl,
        86_400,
        "relayed as the upstream sent it"
    );
    let cached = dig(s.dns, "day.cache.test", "A", &[]);
    assert_eq!(
        cached.answer[0].ttl, 600,
        "from the cache: at most max_ttl: {}",
        cached.raw
    );
    assert_eq!(up.count("day.cache.test.", A), 1);
}

#[test]
fn mixed_case_queries_hit_the_same_entry_and_get_their_own_case_back() {
    let up = Upstream::start();
    let s = Sidecar::start(&config(up.addr, "")).unwrap();
    for asked in ["API.CACHE.TEST.", "aPi.CaChE.tEsT.", "api.cache.test."] {
        let q = raw::query(asked, A);
        let a = raw::exchange(s.dns, &q, Duration::from_secs(2)).expect("an answer");
        let qend = 12 + asked.len() + 1;
        assert_eq!(a[12..qend], q[12..qend], "{asked}: the question as asked (0x20)");
        assert_eq!(a[..2], q[..2]);
        let m = Message::from_vec(&a).unwrap();
        assert_eq!(m.answers.len(), 1, "{asked}");
    }
    assert_eq!(up.count("api.cache.test.", A), 1, "one entry for every spelling");
}

#[test]
fn negative_answers_are_cached_for_the_soa_minimum() {
    let up = Upstream::start();
    let s = Sidecar::start(&config(up.addr, "")).unwrap();
    let first = dig(s.dns, "missing.nx.test", "A", &[]);
    assert_eq!(first.status, "NXDOMAIN", "{}", first.raw);
    let again = dig(s.dns, "missing.nx.test", "A", &[]);
    assert_eq!(again.status, "NXDOMAIN");
    assert_eq!(again.authority[0].rtype, "SOA");
    assert!(
        again.authority[0].ttl <= NEGATIVE_TTL,
        "the SOA's TTL is the negative TTL left: {}",
        again.raw
    );
    assert_eq!(up.count("missing.nx.test.", A), 1);
    sleep(NEGATIVE_TTL as u64 * 1000 + 100);
    assert_eq!(dig(s.dns, "missing.nx.test", "A", &[]).status, "NXDOMAIN");
    assert_eq!(
        up.count("missing.nx.test.", A),
        2,
        "expired after the SOA minimum ({NEGATIVE_TTL} s)"
    );
}

#[test]
fn the_upstreams_servfail_is_kept_only_a_few_seconds() {
    let up = Upstream::start();
    up.set_mode(Mode::ServFail);
    let s = Sidecar::start(&config(up.addr, "[cache]\nservfail_ttl = \"1s\"\n")).unwrap();
    for _ in 0..3 {
        assert_eq!(dig(s.dns, "broken.cache.test", "A", &[]).status, "SERVFAIL");
    }
    assert_eq!(up.count("broken.cache.test.", A), 1);
    sleep(1100);
    up.set_mode(Mode::Answer);
    assert_eq!(
        dig(s.dns, "broken.cache.test", "A", &[]).status,
        "NOERROR",
        "after servfail_ttl the upstream is asked again"
    );
    assert_eq!(up.count("broken.cache.test.", A), 2);
}

#[test]
fn dnssec_ok_and_checking_disabled_are_separate_entries() {
    let up = Upstream::start();
    let s = Sidecar::start(&config(up.addr, "")).unwrap();
    let variants: [&[&str]; 4] = [&[], &["+dnssec"], &["+cdflag"], &["+noedns"]];
    for round in 0..2 {
        for (i, v) in variants.iter().enumerate() {
            let d = dig(s.dns, "sec.cache.test", "A", v);
            assert_eq!(d.status, "NOERROR", "{v:?}");
            assert_eq!(
                d.edns.as_deref().is_some_and(|e| e.contains("flags: do")),
                v.contains(&"+dnssec"),
                "{v:?}: {}",
                d.raw
            );
            assert_eq!(d.has_flag("cd"), v.contains(&"+cdflag"), "{v:?}");
            let want = if round == 0 { i + 1 } else { variants.len() };
            assert_eq!(up.count("sec.cache.test.", A), want, "round {round}, {v:?}");
        }
    }
}

#[test]
fn names_in_the_sidecars_zones_are_never_answered_from_the_cache() {
    let up = Upstream::start();
    let text = config(up.addr, "");
    let s = Sidecar::start(&text).unwrap();
    for _ in 0..2 {
        assert_eq!(dig(s.dns, "x.later.test", "A", &[]).status, "NOERROR");
    }
    assert_eq!(up.count("x.later.test.", A), 1, "cached while outside the zones");
    // A reload makes later.test one of the sidecar's zones: its own answer
    // (NXDOMAIN, authoritative), not the cached one.
    s.reload(&format!("{text}[[zones]]\nname = \"later.test\"\n")).unwrap();
    let own = dig(s.dns, "x.later.test", "A", &[]);
    assert_eq!(own.status, "NXDOMAIN", "{}", own.raw);
    assert!(own.has_flag("aa"));
    assert_eq!(up.count("x.later.test.", A), 1);
    // The reload dropped the entry: without the zone it is asked again.
    s.reload(&text).unwrap();
    assert_eq!(dig(s.dns, "x.later.test", "A", &[]).status, "NOERROR");
    assert_eq!(up.count("x.later.test.", A), 2);
    // A reload that changes nothing for it keeps the cache.
    s.reload(&text).unwrap();
    assert_eq!(dig(s.dns, "x.later.test", "A", &[]).status, "NOERROR");
    assert_eq!(up.count("x.later.test.", A), 2, "kept across a reload");
}

#[test]
fn stale_answers_when_the_upstream_fails_and_not_when_serve_stale_is_off() {
    let up = Upstream::start();
    for name in ["s1.cache.test.", "s2.cache.test.", "s3.cache.test."] {
        up.a(name, 1, [10, 2, 2, 2]);
    }
    let s = Sidecar::start(&config(up.addr, "")).unwrap();
    // The same, with serve-stale off, on an upstream of its own.
    let up_off = Upstream::start();
    up_off.a("s1.cache.test.", 1, [10, 2, 2, 2]);
    let off = Sidecar::start(&config(up_off.addr, "[cache]\nserve_stale = false\n")).unwrap();
    for name in ["s1.cache.test", "s2.cache.test", "s3.cache.test"] {
        assert_eq!(dig(s.dns, name, "A", &[]).status, "NOERROR");
    }
    assert_eq!(dig(off.dns, "s1.cache.test", "A", &[]).status, "NOERROR");
    sleep(1100);

    // The upstream stops answering: after the upstream timeout, the expired
    // answer with TTL 30 (RFC 8767).
    up.set_mode(Mode::Silent);
    let d = dig(s.dns, "s1.cache.test", "A", &[]);
    assert_eq!(
        (d.status.as_str(), d.answers("A")),
        ("NOERROR", vec!["10.2.2.2".to_string()]),
        "{}",
        d.raw
    );
    assert_eq!(d.answer[0].ttl, 30);
    assert_eq!(up.count("s1.cache.test.", A), 2, "the upstream was asked first");
    // For the next 30 s it is answered at once, without asking again.
    for _ in 0..3 {
        let d = dig(s.dns, "s1.cache.test", "A", &[]);
        assert_eq!((d.status.as_str(), d.answer[0].ttl), ("NOERROR", 30));
        assert!(
            d.answer_time() < Duration::from_millis(250),
            "answered without waiting for the upstream: {:?}",
            d.answer_time()
        );
    }
    assert_eq!(up.count("s1.cache.test.", A), 2);
    assert_eq!(metric(&s, "cache_stale_answers_total"), 4.0);

    // The upstream answers SERVFAIL: stale too.
    up.set_mode(Mode::ServFail);
    let d = dig(s.dns, "s2.cache.test", "A", &[]);
    assert_eq!(
        (d.status.as_str(), d.answer.first().map(|r| r.ttl)),
        ("NOERROR", Some(30)),
        "{}",
        d.raw
    );

    // serve_stale = false: SERVFAIL.
    up_off.set_mode(Mode::Silent);
    assert_eq!(dig(off.dns, "s1.cache.test", "A", &[]).status, "SERVFAIL");
    up_off.set_mode(Mode::ServFail);
    assert_eq!(dig(off.dns, "s1.cache.test", "A", &[]).status, "SERVFAIL");
    assert_eq!(metric(&off, "cache_stale_answers_total"), 0.0);
}

#[test]
fn stale_answers_at_once_while_the_upstream_is_out_of_use() {
    let up = Upstream::start();
    for name in ["b1.cache.test.", "b2.cache.test."] {
        up.a(name, 1, [10, 3, 3, 3]);
    }
    let s = Sidecar::start(&config(up.addr, "").replace("timeout = \"300ms\"", "timeout = \"300ms\"\nmax_fails = 1"))
        .unwrap();
    for name in ["b1.cache.test", "b2.cache.test"] {
        assert_eq!(dig(s.dns, name, "A", &[]).status, "NOERROR");
    }
    sleep(1100);
    up.set_mode(Mode::Silent);
    // One timeout takes the upstream out of use (max_fails = 1)...
    assert_eq!(dig(s.dns, "b1.cache.test", "A", &[]).answer[0].ttl, 30);
    let up_metric = format!("upstream_up{{upstream=\"{}\",zone=\".\"}}", up.addr);
    let start = Instant::now();
    while metric(&s, &up_metric) != 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the upstream was not taken out of use"
        );
        sleep(20);
    }
    // ... then stale answers come at once, and the upstream is not asked.
    let d = dig(s.dns, "b2.cache.test", "A", &[]);
    assert_eq!((d.status.as_str(), d.answer[0].ttl), ("NOERROR", 30), "{}", d.raw);
    assert!(d.answer_time() < Duration::from_millis(250), "{:?}", d.answer_time());
    assert_eq!(up.count("b2.cache.test.", A), 1);
    // A name never cached: SERVFAIL at once, as before.
    assert_eq!(dig(s.dns, "never.cache.test", "A", &[]).status, "SERVFAIL");
}

#[test]
fn the_cache_stays_bounded_under_a_flood_of_unique_names_and_keeps_the_name_in_use() {
    let up = Upstream::start();
    let s = Sidecar::start(&config(up.addr, "[cache]\nmax_entries = 200\n")).unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    let mut ask = |name: &str| {
        sock.send_to(&raw::query(name, A), s.dns).unwrap();
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        buf[3] & 0x0F == 0 && n > 12
    };
    for i in 0..3000 {
        assert!(ask(&format!("n{i}.flood.cache.test.")), "n{i}");
        if i % 20 == 0 {
            assert!(ask("hot.cache.test."));
        }
    }
    let entries = metric(&s, "cache_entries");
    assert!((100.0..=200.0).contains(&entries), "{entries} entries");
    // Once full, a name asked once is not kept (the doorkeeper), so the
    // flood pushed out few answers, if any.
    assert!(
        metric(&s, "cache_evictions_total") < 300.0,
        "{} evictions",
        metric(&s, "cache_evictions_total")
    );
    assert!(metric(&s, "cache_bytes") <= (4 << 20) as f64);
    assert_eq!(
        up.count("hot.cache.test.", A),
        1,
        "the name in use stayed cached through the flood"
    );
}

#[test]
fn with_the_cache_off_every_query_goes_upstream() {
    let up = Upstream::start();
    let s = Sidecar::start(&config(up.addr, "[cache]\nenabled = false\n")).unwrap();
    for _ in 0..3 {
        assert_eq!(dig(s.dns, "www.cache.test", "A", &[]).status, "NOERROR");
    }
    assert_eq!(up.count("www.cache.test.", A), 3);
    assert_eq!(metric(&s, "cache_misses_total") + metric(&s, "cache_hits_total"), 0.0);
}

/// The CLI, as an operator runs it.
fn cli(admin: SocketAddr, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .args(args)
        .args(["--admin", &admin.to_string()])
        .output()
        .unwrap()
}

#[test]
fn flush_cache_drops_a_name_and_below_or_everything() {
    let up = Upstream::start();
    let s = Sidecar::start(&config(up.addr, "")).unwrap();
    let admin = s.admin.expect("admin listener");
    let names = ["www.cache.test", "api.cache.test", "other.example.test"];
    for _ in 0..2 {
        for n in names {
            assert_eq!(dig(s.dns, n, "A", &[]).status, "NOERROR");
        }
    }
    let counts = || names.map(|n| up.count(&format!("{n}."), A));
    assert_eq!(counts(), [1, 1, 1]);
    let o = cli(admin, &["flush-cache", "Cache.Test"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "flushed 2 cached answer(s) for cache.test. and the names below it\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for n in names {
        dig(s.dns, n, "A", &[]);
    }
    assert_eq!(counts(), [2, 2, 1], "the other name is still cached");
    let o = cli(admin, &["flush-cache"]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("flushed 3 cached answer(s)"),
        "{o:?}"
    );
    dig(s.dns, "other.example.test", "A", &[]);
    assert_eq!(counts(), [2, 2, 2]);
    assert_eq!(metric(&s, "cache_entries"), 1.0);
    // As guarded as the overrides: not from a web page, JSON only, a good body.
    let c = dns_sidecar::client::Client::new(&admin.to_string(), None);
    let post = |headers: &[(&str, &str)], body: &str| {
        c.request("POST", "/cache/flush", headers, Some(body.as_bytes()))
            .unwrap()
            .status
    };
    assert_eq!(
        post(
            &[("Content-Type", "application/json"), ("Origin", "http://evil.example")],
            "{}"
        ),
        403
    );
    assert_eq!(post(&[("Content-Type", "text/plain")], "{}"), 415);
    assert_eq!(post(&[("Content-Type", "application/json")], r#"{"nme":"x"}"#), 400);
    assert_eq!(post(&[("Content-Type", "application/json")], r#"{"name":"a b"}"#), 400);
    assert_eq!(metric(&s, "cache_entries"), 1.0, "nothing flushed by refused requests");
}
