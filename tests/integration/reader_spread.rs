//! Reader aliases spread over every matching standby (issue 19), on a real
//! primary and two streaming replicas (TLS, SCRAM) with real DNS answers:
//!
//! * `spread = "rotate"` shares 1000 answers evenly (and 2:1 with weights),
//!   and `dns_sidecar_reader_answers_total` counts what the clients saw;
//! * `spread = "client"` keeps each of 31 client addresses on one replica,
//!   uses both, and gives each client its own replica back after that
//!   replica left and returned;
//! * `prefer = "nearest"` answers the replica without the artificial delay
//!   (a TCP proxy adding latency in front of the other, [`Proxy`]), falls
//!   back to the far one when the near one is killed, and follows when the
//!   two swap latencies;
//! * a killed replica leaves every set within `fall` failed probes and comes
//!   back after `rise` good ones; a replica whose replay is paused past
//!   `max_lag` leaves and comes back after resume;
//! * `/status` shows each set with weights and shares, why each excluded
//!   server is out, and the set changes in its history.
//!
//! Two environments, run in parallel: one with both replicas behind proxies
//! (c adding latency; spread, weights, client, nearest, kill and restart) and
//! one without (lag). Counting uses one UDP socket per client address
//! ([`Client`]): 1000 queries take a fraction of a second.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use dns_sidecar::status::AliasStatus;

use crate::support::env::{Env, Options, INTERVAL};
use crate::support::proxy::Proxy;
use crate::support::raw::{Client, Tally};

const B: &str = "pg-b.test.";
const C: &str = "pg-c.test.";
const ROTATE: &str = "rotate.db.test.";
const WEIGHTED: &str = "weighted.db.test.";
const CLIENT: &str = "client.db.test.";
const NEAR: &str = "near.db.test.";
const WAIT: Duration = Duration::from_secs(20);
/// Latency the proxy adds in front of replica `c`, in each direction.
const FAR: Duration = Duration::from_millis(20);
/// Probe `fall` and `rise` (the defaults, spelled out).
const FALL: u64 = 3;
const RISE: u64 = 2;

/// Servers: `a` primary, `b` and `c` streaming replicas. `near` lists the
/// far replica first, so "order" would answer it: only "nearest" answers `b`.
const EXTRA: &str = r#"
[[aliases]]
name = "rotate.db.test"
role = "standby"
servers = ["b", "c"]
spread = "rotate"
max_lag = "256KiB"

[[aliases]]
name = "weighted.db.test"
role = "standby"
servers = ["b", "c"]
spread = "rotate"
weights = { b = 2, c = 1 }

[[aliases]]
name = "client.db.test"
role = "standby"
servers = ["b", "c"]
spread = "client"

[[aliases]]
name = "near.db.test"
role = "standby"
servers = ["c", "b"]
prefer = "nearest"
"#;

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// `n` answers of `alias` to one client on 127.0.0.1.
async fn tally(env: &Env, alias: &'static str, n: usize) -> Tally {
    let dns = env.dns;
    blocking(move || Client::bind(Ipv4Addr::LOCALHOST, dns).tally(alias, n)).await
}

/// Waits until `n` answers of `alias` name both replicas (each in the set).
async fn wait_for_both(env: &Env, alias: &'static str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let t = tally(env, alias, 20).await;
        if t.get(B) > 0 && t.get(C) > 0 && t.total() == t.get(B) + t.get(C) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{alias} did not spread over both replicas within {within:?}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts `count` of `total` is within 10% (of the expected count) of
/// `share`.
fn assert_share(what: &str, t: &Tally, target: &str, share: f64) {
    let want = share * t.total() as f64;
    let got = t.get(target) as f64;
    assert!(
        (got - want).abs() <= 0.1 * want,
        "{what}: {target} got {got} of {} answers, want {want} +/- 10%: {t:?}",
        t.total()
    );
}

/// Probes of server `id` that failed (timeouts and errors) so far.
fn failed_probes(env: &Env, id: &str) -> u64 {
    env.probes(id, "timeout") + env.probes(id, "error")
}

/// `dns_sidecar_reader_answers_total` of `alias` (with or without its dot
/// in the label) and server `id`: 0 when absent.
fn reader_answers(env: &Env, alias: &str, id: &str) -> u64 {
    let text = env.sidecar().shared.metrics.encode();
    let alias = alias.trim_end_matches('.');
    text.lines()
        .filter(|l| l.starts_with("dns_sidecar_reader_answers_total{"))
        .filter(|l| {
            (l.contains(&format!("alias=\"{alias}\"")) || l.contains(&format!("alias=\"{alias}.\"")))
                && l.contains(&format!("server=\"{id}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// Waits until the answers metric of `alias` grew by what `t` counted, per
/// server, since `before` ((b, c)).
async fn assert_counted(env: &Env, alias: &str, before: (u64, u64), t: &Tally) {
    let want = (t.get(B) as u64, t.get(C) as u64);
    let delta = || {
        (
            reader_answers(env, alias, "b") - before.0,
            reader_answers(env, alias, "c") - before.1,
        )
    };
    let start = Instant::now();
    while delta() != want {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{alias}: dns_sidecar_reader_answers_total grew by {:?} (b, c), the clients counted {want:?}",
            delta()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` answers of the client-spread alias to each of 31 client addresses
/// (127.0.0.10 to 127.0.0.40).
async fn clients(dns: std::net::SocketAddr, n: usize) -> Vec<(Ipv4Addr, Tally)> {
    blocking(move || {
        (10..=40u8)
            .map(|x| {
                let src = Ipv4Addr::new(127, 0, 0, x);
                (src, Client::bind(src, dns).tally(CLIENT, n))
            })
            .collect()
    })
    .await
}

/// The `set_changed` messages of `alias` in `/status` history ("[b, c] -> [c]").
fn set_changes(env: &Env, alias: &str) -> Vec<String> {
    (env.status().history.into_iter())
        .filter(|h| h.kind == "set_changed" && h.alias.as_deref() == Some(alias))
        .map(|h| h.message)
        .collect()
}

/// `/status` of `alias`.
fn alias_status(env: &Env, alias: &str) -> AliasStatus {
    let s = env.status();
    s.aliases
        .into_iter()
        .find(|a| a.name == alias)
        .unwrap_or_else(|| panic!("no alias {alias} in /status"))
}

/// The servers `alias`'s set answers now, per `/status`, sorted.
fn set_of(a: &AliasStatus) -> Vec<&str> {
    let mut ids: Vec<&str> = a.set.iter().map(|m| m.server.as_str()).collect();
    ids.sort_unstable();
    ids
}

/// Why `/status` says `server` is out of `alias`'s set (panics if it is not out).
fn why_out<'a>(a: &'a AliasStatus, server: &str) -> &'a str {
    a.excluded
        .iter()
        .find(|e| e.server == server)
        .map(|e| e.reason.as_str())
        .unwrap_or_else(|| panic!("{}: {server} is not listed as excluded: {a:#?}", a.name))
}

/// Asserts `/status` gives `server` of `alias` a share of `share` +/- 10%
/// and weight `weight`.
fn assert_status_share(a: &AliasStatus, server: &str, weight: u32, share: f64) {
    let m = (a.set.iter().find(|m| m.server == server))
        .unwrap_or_else(|| panic!("{}: {server} not in the set: {a:#?}", a.name));
    assert_eq!(m.weight, weight, "{}: {m:?}", a.name);
    let got = m
        .share
        .unwrap_or_else(|| panic!("{}: no share for {server}: {m:?}", a.name));
    assert!(
        (got - share).abs() <= 0.1 * share,
        "{}: /status share of {server} {got}, want {share} +/- 10%: {a:#?}",
        a.name
    );
    assert!(m.answers.unwrap_or(0) > 0, "{m:?}");
}

/// The latency proxy itself: a round trip through it takes at least twice its
/// latency, and chunks sent back to back travel together (the delay is not a
/// throughput limit that would serialize a TLS handshake's flights).
#[test]
fn the_latency_proxy_delays_each_direction_without_serializing() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let latency = Duration::from_millis(100);
    let proxy = Proxy::with_latency(echo, latency);
    let mut s = TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    let t0 = Instant::now();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    let rtt = t0.elapsed();
    assert!(
        rtt >= latency * 2,
        "round trip {rtt:?} through a proxy adding {latency:?} each way"
    );

    // Five chunks 10 ms apart: pipelined they are all back after about
    // 2 x 100 + 40 ms; one at a time, after 5 x 200 ms (less when the
    // chunks held back coalesce: about 850 ms).
    let t0 = Instant::now();
    for i in 0..5u8 {
        s.write_all(&[i; 8]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut got = [0u8; 40];
    s.read_exact(&mut got).unwrap();
    let all = t0.elapsed();
    assert_eq!(got.iter().filter(|&&b| b == 4).count(), 8);
    assert!(all >= latency * 2, "{all:?}");
    assert!(all < latency * 6, "five chunks took {all:?}: serialized by the proxy?");

    // Latency off: a round trip is quick again.
    proxy.set_latency(Duration::ZERO);
    let t0 = Instant::now();
    s.write_all(b"pong").unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    assert!(t0.elapsed() < latency * 2, "{:?} with the latency off", t0.elapsed());
}

/// Rotate, weights, client, nearest, then the near replica killed and
/// restarted: it leaves every set within `fall` failed probes, nearest falls
/// back to the far replica, and it comes back after `rise` good probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_spread_stick_and_prefer_the_nearest_replica() {
    let env = Env::start_opts(Options {
        trio: true,
        // b's proxy adds nothing until the end, when the two swap places.
        proxied: vec!["b", "c"],
        latency: vec![("c", FAR)],
        // A fresh connection to c (TLS + SCRAM, several round trips) takes
        // 100+ ms through the proxy; more on a loaded machine.
        deadline: Some(Duration::from_secs(2)),
        probe: format!("fall = {FALL}\nrise = {RISE}\n"),
        extra: EXTRA.into(),
    })
    .await;
    // (One client address always gets one replica under "client": not here.)
    for alias in [ROTATE, WEIGHTED] {
        wait_for_both(&env, alias, WAIT).await;
    }

    // (a) rotate: 1000 answers, even within 10%; weights 2:1 within 10%;
    // the metric of answers per server counts what the clients saw.
    let before = (reader_answers(&env, ROTATE, "b"), reader_answers(&env, ROTATE, "c"));
    let t = tally(&env, ROTATE, 1000).await;
    eprintln!("rotate: {t:?}");
    assert_eq!(t.get(B) + t.get(C), 1000, "every answer names a replica: {t:?}");
    assert_share("rotate", &t, B, 0.5);
    assert_share("rotate", &t, C, 0.5);
    assert_counted(&env, ROTATE, before, &t).await;
    let t = tally(&env, WEIGHTED, 1000).await;
    eprintln!("weighted 2:1: {t:?}");
    assert_eq!(t.get(B) + t.get(C), 1000, "{t:?}");
    assert_share("weights b=2 c=1", &t, B, 2.0 / 3.0);
    assert_share("weights b=2 c=1", &t, C, 1.0 / 3.0);

    // (f) /status: the set, weights and shares.
    let a = alias_status(&env, ROTATE);
    assert_eq!(a.spread.as_deref(), Some("rotate"), "{a:#?}");
    assert_eq!(set_of(&a), ["b", "c"], "{a:#?}");
    assert_status_share(&a, "b", 1, 0.5);
    assert_status_share(&a, "c", 1, 0.5);
    let a = alias_status(&env, WEIGHTED);
    assert_eq!(set_of(&a), ["b", "c"], "{a:#?}");
    assert_status_share(&a, "b", 2, 2.0 / 3.0);
    assert_status_share(&a, "c", 1, 1.0 / 3.0);
    let a = alias_status(&env, CLIENT);
    assert_eq!(a.spread.as_deref(), Some("client"), "{a:#?}");
    assert_eq!(set_of(&a), ["b", "c"], "{a:#?}");

    // (b) client: 31 client addresses, each always given the same replica
    // over 20 queries; both replicas are used.
    let dns = env.dns;
    let per_client = clients(dns, 20).await;
    let mut on = (0, 0);
    for (src, t) in &per_client {
        match t.only() {
            Some(B) => on.0 += 1,
            Some(C) => on.1 += 1,
            _ => panic!("client {src} was not kept on one replica: {t:?}"),
        }
    }
    eprintln!("client: {} clients on b, {} on c", on.0, on.1);
    assert!(
        on.0 > 0 && on.1 > 0,
        "client spread used one replica only: {per_client:?}"
    );
    // The same clients again, later: still each on its replica.
    let again = clients(dns, 5).await;
    for ((src, first), (_, later)) in per_client.iter().zip(&again) {
        assert_eq!(
            first.only(),
            later.only(),
            "client {src} moved: {first:?} then {later:?}"
        );
    }

    // (e) nearest: c is listed first but sits behind 2 x 20 ms of latency;
    // the alias answers b, and keeps answering it.
    env.wait_for_target(NEAR, B, WAIT).await;
    let t = tally(&env, NEAR, 200).await;
    assert_eq!(t.only(), Some(B), "nearest answered the far replica: {t:?}");
    env.assert_stays(NEAR, B, INTERVAL * 10).await;
    let a = alias_status(&env, NEAR);
    eprintln!("nearest: {:?}; {:?}", a.set, a.excluded);
    assert_eq!(a.prefer.as_deref(), Some("nearest"), "{a:#?}");
    assert_eq!(set_of(&a), ["b"], "{a:#?}");
    assert!(a.set[0].rtt_ms.is_some(), "{a:#?}");
    let why = why_out(&a, "c");
    assert!(why.contains("farther"), "c is out of {NEAR} for: {why}");

    // (d) b is killed: it leaves every set within `fall` failed probes (a
    // refused connection counts at once; one or two more may run before the
    // answer is seen here), and nearest falls back to c.
    let failed0 = failed_probes(&env, "b");
    let b = env.pair().replica.clone();
    let b2 = b.clone();
    blocking(move || b2.stop_immediate()).await.expect("kill b");
    let killed = Instant::now();
    let took = env.wait_for_target(NEAR, C, WAIT).await;
    let failed = failed_probes(&env, "b") - failed0;
    eprintln!("nearest fell back to c {took:?} after b was killed, after {failed} failed probe(s) of b");
    assert!(
        failed <= FALL + 2,
        "b left only after {failed} failed probes (fall = {FALL})"
    );
    let t = tally(&env, ROTATE, 200).await;
    assert_eq!(t.only(), Some(C), "rotate still answers the killed replica: {t:?}");
    let t = tally(&env, WEIGHTED, 200).await;
    assert_eq!(t.only(), Some(C), "{t:?}");
    let t = tally(&env, CLIENT, 50).await;
    assert_eq!(t.only(), Some(C), "{t:?}");
    let left = killed.elapsed();
    assert!(
        left < INTERVAL * (FALL as u32) + Duration::from_secs(5),
        "b left the sets only {left:?} after the kill"
    );
    // (f) /status: b is out of every set, down.
    for alias in [ROTATE, WEIGHTED, CLIENT, NEAR] {
        let a = alias_status(&env, alias);
        assert_eq!(set_of(&a), ["c"], "{a:#?}");
        let why = why_out(&a, "b");
        assert!(why.starts_with("down"), "{alias}: b is out for: {why}");
    }
    let changes = env
        .status()
        .history
        .into_iter()
        .filter(|h| h.kind == "set_changed")
        .count();
    assert!(changes > 0, "no set_changed in the history");

    // b restarts: back in every set after `rise` good probes, and nearest
    // returns to it.
    let ok0 = env.probes("b", "ok");
    let b2 = b.clone();
    blocking(move || b2.start()).await.expect("restart b");
    wait_for_both(&env, ROTATE, WAIT).await;
    let ok = env.probes("b", "ok") - ok0;
    eprintln!("b back in the rotation after {ok} good probe(s)");
    assert!(ok >= RISE, "b came back after {ok} good probes, before rise = {RISE}");
    env.wait_for_target(NEAR, B, WAIT).await;
    let changes = set_changes(&env, ROTATE);
    assert!(changes.iter().any(|m| m == "[c] -> [b, c]"), "{changes:?}");
    let t = tally(&env, ROTATE, 1000).await;
    assert_share("rotate after b's return", &t, B, 0.5);
    assert_share("rotate after b's return", &t, C, 0.5);
    // Every client is back on the replica it had before b left (a server
    // leaving and returning moves only its own clients, and back).
    let back = clients(dns, 5).await;
    for ((src, first), (_, later)) in per_client.iter().zip(&back) {
        assert_eq!(
            first.only(),
            later.only(),
            "client {src}: {first:?} before, {later:?} after b's return"
        );
    }

    // The replicas swap places (b far, c near): nearest follows once the
    // medians of recent probes move, and stays.
    env.proxy("b").set_latency(FAR * 2);
    env.proxy("c").set_latency(Duration::ZERO);
    let took = env.wait_for_target(NEAR, C, WAIT).await;
    eprintln!("nearest moved to c {took:?} after the swap");
    env.assert_stays(NEAR, C, INTERVAL * 10).await;
    let a = alias_status(&env, NEAR);
    let why = why_out(&a, "b");
    assert!(why.contains("farther"), "b is out of {NEAR} for: {why}");
}

/// (c) A replica whose replay is paused while the primary writes past
/// `max_lag` leaves the rotation; it comes back once replay resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_leaves_the_rotation_and_returns_after_resume() {
    let env = Env::start_opts(Options {
        trio: true,
        probe: format!("fall = {FALL}\nrise = {RISE}\n"),
        extra: EXTRA.into(),
        ..Default::default()
    })
    .await;
    wait_for_both(&env, ROTATE, WAIT).await;
    let primary = env.pair().primary.clone();
    let c = env.pair().extra[0].clone();
    let c2 = c.clone();
    blocking(move || c2.pause_replay()).await.expect("pause replay on c");

    // Write until c is more than 256 KiB behind and the set is b alone. Not
    // "only b answered": one burst of WAL can put both replicas past the
    // limit for a probe or two (the primary is probed after the write, the
    // standbys before), an empty set in which `keep-last` answers b alone.
    let mut chunks = 0;
    loop {
        let changes = set_changes(&env, ROTATE);
        if changes.last().is_some_and(|m| m.ends_with("-> [b]")) {
            break;
        }
        assert!(chunks < 300, "c never left the rotation: {changes:?}");
        let p = primary.clone();
        blocking(move || {
            p.sql(
                "CREATE TABLE IF NOT EXISTS lag_big (x text); INSERT INTO lag_big SELECT repeat('x', 200) FROM \
                 generate_series(1, 500)",
            )
        })
        .await
        .expect("write on the primary");
        chunks += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = tally(&env, ROTATE, 300).await;
    assert_eq!(t.only(), Some(B), "the lagging replica is still answered: {t:?}");
    let s = env.status();
    let cs = s.servers.iter().find(|s| s.server == "c").unwrap();
    assert!(cs.lag_bytes.unwrap() > 256 * 1024, "{cs:?}");
    // (f) /status: c is out of the set, and why.
    let a = alias_status(&env, ROTATE);
    assert_eq!(set_of(&a), ["b"], "{a:#?}");
    let why = why_out(&a, "c");
    assert!(
        why.starts_with("lagging") && why.contains("max_lag 256.0 KiB"),
        "c is out for: {why}"
    );

    // Replay resumes: c comes back, and the rotation is even again.
    let c2 = c.clone();
    blocking(move || c2.resume_replay()).await.expect("resume replay on c");
    wait_for_both(&env, ROTATE, WAIT).await;
    let t = tally(&env, ROTATE, 1000).await;
    assert_share("rotate after resume", &t, B, 0.5);
    assert_share("rotate after resume", &t, C, 0.5);
    let a = alias_status(&env, ROTATE);
    assert_eq!(set_of(&a), ["b", "c"], "{a:#?}");
    assert!(a.excluded.is_empty(), "{a:#?}");
    let changes = set_changes(&env, ROTATE);
    eprintln!("set changes: {changes:?}");
    // (b may have been past the limit for a probe or two after the last
    // write, so the set may have gone through [] and [c] on its way back.)
    assert!(changes.last().is_some_and(|m| m.ends_with("-> [b, c]")), "{changes:?}");
}
