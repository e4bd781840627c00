//! `[[forward]]` zones with real parts: two (or three) real upstreams on
//! loopback (support/upstream.rs, which count what they are asked) and real
//! `dig` over UDP and TCP. A zone's names reach its own upstream and no
//! other; a dead zone upstream fails that zone only, shown by its `zone`
//! label; a `cache = false` zone's upstream sees every query; a reload keeps
//! the health of a zone whose servers did not change, and a changed zone
//! starts fresh; a sidecar without servers or aliases (fleet mode) is ready
//! at once and forwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::abuse::metric;
use crate::support::dig::dig;
use crate::support::raw;
use crate::support::sidecar::Sidecar;
use crate::support::upstream::{Mode, Upstream};

const A: RecordType = RecordType::A;

/// `[upstream]` `default`, `[[forward]] corp.test.` -> `corp` (with `corp`
/// extra keys), an own zone `db.corp.test` inside it, and `extra` after.
fn config(default: SocketAddr, corp: SocketAddr, corp_keys: &str, extra: &str) -> String {
    format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{default}\"]\ntimeout = \"300ms\"\nhealth_check \
        = \"200ms\"\nmax_fails = 1\n[limits]\nforward_rate = 0\n[[zones]]\nname = \"db.corp.test\"\n[[forward]]\nzone = \
        \"Corp.Test\"\nservers = [\"{corp}\"]\ntimeout = \"300ms\"\nhealth_check = \"200ms\"\nmax_fails = 1\n{corp_keys}\n\
        {extra}\n"
    )
}

/// Waits until `f` holds (at most `within`, polling every 20 ms).
fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn up_metric(up: &Upstream, zone: &str) -> String {
    format!("upstream_up{{upstream=\"{}\",zone=\"{zone}\"}}", up.addr)
}

#[test]
fn names_of_a_zone_go_to_its_upstream_and_others_to_the_default_over_udp_and_tcp() {
    let (default, corp) = (Upstream::start(), Upstream::start());
    corp.a("app.corp.test.", 300, [10, 1, 0, 1]);
    default.a("app.xcorp.test.", 300, [10, 2, 0, 1]);
    let s = Sidecar::start(&config(default.addr, corp.addr, "", "")).unwrap();
    for (tcp, tag) in [(false, "udp"), (true, "tcp")] {
        let extra: &[&str] = if tcp { &["+tcp"] } else { &[] };
        let name = format!("{tag}.App.CORP.test.");
        let d = dig(s.dns, &name, "A", extra);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(corp.count(&name, A), 1, "{tag}: the zone's name reached its upstream");
        assert_eq!(default.count(&name, A), 0, "{tag}: and not the default");
        // Not on a label boundary: `xcorp.test.` is not in `corp.test.`.
        let other = format!("{tag}.xcorp.test.");
        let d = dig(s.dns, &other, "A", extra);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!((default.count(&other, A), corp.count(&other, A)), (1, 0), "{tag}");
        // An own zone inside the forward zone is answered here.
        let d = dig(s.dns, &format!("{tag}.db.corp.test."), "A", extra);
        assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
        assert!(d.has_flag("aa"), "{}", d.raw);
        assert_eq!(corp.count(&format!("{tag}.db.corp.test."), A), 0);
    }
    let d = dig(s.dns, "app.corp.test.", "A", &[]);
    assert_eq!(d.answers("A"), ["10.1.0.1"], "the zone upstream's own answer");
    // The apex of the forward zone is in it.
    let d = dig(s.dns, "corp.test.", "A", &[]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!((corp.count("corp.test.", A), default.count("corp.test.", A)), (1, 0));
}

#[test]
fn a_dead_zone_upstream_fails_only_its_zone_and_its_zone_label_shows_it() {
    let (default, corp) = (Upstream::start(), Upstream::start());
    let s = Sidecar::start(&config(default.addr, corp.addr, "", "")).unwrap();
    assert_eq!(metric(&s, &up_metric(&corp, "corp.test.")), 1.0);
    corp.set_mode(Mode::Silent);
    // A timeout has the zone's upstream health-checked; max_fails = 1.
    let a = raw::exchange(s.dns, &raw::query("d0.corp.test.", A), Duration::from_secs(3)).expect("answered");
    assert_eq!(a[3] & 0x0F, 2, "SERVFAIL from the dead zone");
    eventually("the zone's upstream is out of use", Duration::from_secs(5), || {
        metric(&s, &up_metric(&corp, "corp.test.")) == 0.0
    });
    // Other names keep being answered, at once, over UDP and TCP.
    for i in 0..10 {
        let tcp: &[&str] = if i % 2 == 0 { &[] } else { &["+tcp"] };
        let d = dig(s.dns, &format!("n{i}.live.test."), "A", tcp);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(d.answer_time() < Duration::from_millis(1000), "{:?}", d.answer_time());
    }
    assert_eq!(metric(&s, &up_metric(&default, ".")), 1.0, "the default stays in use");
    let errors = format!(
        "upstream_errors_total{{upstream=\"{}\",zone=\"corp.test.\",kind=\"timeout\"}}",
        corp.addr
    );
    assert!(metric(&s, &errors) >= 1.0, "the zone's timeouts are counted by zone");
    let default_errors = format!(
        "upstream_errors_total{{upstream=\"{}\",zone=\".\",kind=\"timeout\"}}",
        default.addr
    );
    assert_eq!(metric(&s, &default_errors), 0.0);
    // The zone's names fail fast (its upstream is out of use), while the
    // upstream is health-checked back.
    let d = dig(s.dns, "d1.corp.test.", "A", &[]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    corp.set_mode(Mode::Answer);
    eventually("the zone's upstream is back", Duration::from_secs(5), || {
        metric(&s, &up_metric(&corp, "corp.test.")) == 1.0
    });
    assert_eq!(dig(s.dns, "d2.corp.test.", "A", &[]).status, "NOERROR");
}

#[test]
fn an_uncached_zone_is_asked_every_time_a_cached_one_once() {
    let (default, corp, cached) = (Upstream::start(), Upstream::start(), Upstream::start());
    let extra = format!("[[forward]]\nzone = \"cached.test\"\nservers = [\"{}\"]\n", cached.addr);
    let s = Sidecar::start(&config(default.addr, corp.addr, "cache = false", &extra)).unwrap();
    for (tcp, tag) in [(false, "udp"), (true, "tcp")] {
        let flags: &[&str] = if tcp { &["+tcp"] } else { &[] };
        let (nocache, yes, dflt) = (
            format!("{tag}.corp.test."),
            format!("{tag}.cached.test."),
            format!("{tag}.other.test."),
        );
        for _ in 0..3 {
            for n in [&nocache, &yes, &dflt] {
                assert_eq!(dig(s.dns, n, "A", flags).status, "NOERROR", "{n}");
            }
        }
        assert_eq!(
            corp.count(&nocache, A),
            3,
            "{tag}: `cache = false`: every query reaches the upstream"
        );
        assert_eq!(
            cached.count(&yes, A),
            1,
            "{tag}: a cached zone's upstream is asked once"
        );
        assert_eq!(default.count(&dflt, A), 1, "{tag}: so is the default");
    }
    // The raw path too (the UDP workers' fast path): identical queries.
    for _ in 0..3 {
        let a = raw::exchange(s.dns, &raw::query("raw.corp.test.", A), Duration::from_secs(2)).expect("answer");
        assert_eq!(a[3] & 0x0F, 0);
    }
    assert_eq!(corp.count("raw.corp.test.", A), 3);
}

#[test]
fn reload_keeps_the_health_of_an_unchanged_zone_and_a_changed_zone_starts_fresh() {
    let (default, corp, corp2) = (Upstream::start(), Upstream::start(), Upstream::start());
    let text = config(default.addr, corp.addr, "", "");
    let s = Sidecar::start(&text).unwrap();
    corp.set_mode(Mode::Silent);
    let _ = raw::exchange(s.dns, &raw::query("r0.corp.test.", A), Duration::from_secs(3));
    eventually("the zone's upstream is out of use", Duration::from_secs(5), || {
        metric(&s, &up_metric(&corp, "corp.test.")) == 0.0
    });
    // Another zone changes (a new one); `corp.test.`'s servers do not.
    let other = Upstream::start();
    let grown = config(
        default.addr,
        corp.addr,
        "",
        &format!("[[forward]]\nzone = \"other.test\"\nservers = [\"{}\"]\n", other.addr),
    );
    s.reload(&grown).unwrap();
    // Still out of use: its names fail fast, without waiting on the dead
    // upstream (a fresh state would wait the 300 ms timeout on each)...
    // (A wave at once: one query may be the upstream's trial, the rest are
    // refused at once.)
    let limited_before = metric(&s, "limited_total{reason=\"upstream_down\"}");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for i in 0..6 {
        sock.send_to(&raw::query(&format!("r{}.corp.test.", i + 1), A), s.dns)
            .unwrap();
    }
    let mut buf = [0u8; 1500];
    for _ in 0..6 {
        let (n, _) = sock.recv_from(&mut buf).expect("every query answered");
        assert_eq!(buf[3] & 0x0F, 2, "SERVFAIL");
        assert!(n >= 12);
    }
    assert!(
        metric(&s, "limited_total{reason=\"upstream_down\"}") > limited_before,
        "the zone's upstream was still out of use after the reload"
    );
    assert_eq!(metric(&s, &up_metric(&corp, "corp.test.")), 0.0);
    // ... while the new zone works.
    assert_eq!(dig(s.dns, "x.other.test.", "A", &[]).status, "NOERROR");
    assert_eq!(other.count("x.other.test.", A), 1);
    // The zone's servers change: it starts fresh, on its new upstream.
    s.reload(&config(default.addr, corp2.addr, "", "")).unwrap();
    let d = dig(s.dns, "y.corp.test.", "A", &[]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(corp2.count("y.corp.test.", A), 1);
    assert_eq!(metric(&s, &up_metric(&corp2, "corp.test.")), 1.0);
    assert_eq!(
        metric(&s, &up_metric(&corp, "corp.test.")),
        0.0,
        "the old series is gone (absent: 0)"
    );
    assert!(
        !s.shared.metrics.encode().contains(&up_metric(&corp, "corp.test.")),
        "a removed upstream's series is removed"
    );
}

#[test]
fn fleet_mode_without_servers_or_aliases_is_ready_at_once_and_forwards() {
    let (default, tier) = (Upstream::start(), Upstream::start());
    tier.a("prod.db.internal.", 5, [10, 0, 0, 5]);
    // A long probe deadline: a sidecar that waited for a probe round would
    // not be ready for 10 s.
    let text = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[probe]\ndeadline = \"10s\"\ninterval = \"10s\"\n[upstream]\nservers = \
        [\"{}\"]\n[[forward]]\nzone = \"db.internal\"\nservers = [\"{}\"]\ncache = false\n",
        default.addr, tier.addr
    );
    let started = Instant::now();
    let s = Sidecar::start(&text).unwrap();
    eventually("ready", Duration::from_secs(5), || s.shared.status.load().ready);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ready without waiting for a probe round: {:?}",
        started.elapsed()
    );
    assert_eq!(metric(&s, "ready"), 1.0);
    for _ in 0..2 {
        let d = dig(s.dns, "prod.db.internal.", "A", &[]);
        assert_eq!(d.answers("A"), ["10.0.0.5"], "{}", d.raw);
    }
    assert_eq!(tier.count("prod.db.internal.", A), 2, "the alias zone, uncached");
    assert_eq!(dig(s.dns, "www.example.test.", "A", &["+tcp"]).status, "NOERROR");
    assert_eq!(default.count("www.example.test.", A), 1);
    assert!(s.shared.status.load().servers.is_empty());
}
