//! The product's promise, end to end: real primary + replica, real DNS
//! client, real application connection.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::support::env::{Env, DEADLINE, INTERVAL};
use dns_sidecar::control::Override;

use crate::support::{dig, raw};

const A_IP: &str = "127.0.0.2";
const B_IP: &str = "127.0.0.3";

/// The bound for following a promote is two probe intervals plus
/// 100 ms; CI machines have 2 busy cores, so we assert twice that and report
/// the measured time.
fn follow_bound() -> Duration {
    (INTERVAL * 2 + Duration::from_millis(100)) * 2
}

fn report(what: &str, d: Follow) {
    eprintln!(
        "MEASURED {what}: {:.1} ms from the promote request, {:+.1} ms from the replica accepting writes (bound \
            asserted: {:?})",
        d.from_request.as_secs_f64() * 1000.0,
        d.from_writable_ms,
        follow_bound()
    );
}

/// How long an alias took to follow a promote.
#[derive(Debug, Clone, Copy)]
struct Follow {
    /// From the promote request.
    from_request: Duration,
    /// From the moment the promoted server was seen accepting writes (the
    /// testbed polls `pg_is_in_recovery()` every 5 ms), in ms; negative when
    /// the sidecar noticed first.
    from_writable_ms: f64,
}

/// Promotes the replica and returns how long the alias took to follow.
async fn promote_and_follow(env: &Env, alias: &str, target: &str) -> Follow {
    let start = Instant::now();
    let replica = env.pair().replica.clone();
    let promote = tokio::task::spawn_blocking(move || {
        replica.promote(true).expect("promote");
        Instant::now()
    });
    env.wait_for_target(alias, target, Duration::from_secs(10)).await;
    let followed = Instant::now();
    let writable = promote.await.unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let from_writable_ms = if followed >= writable {
        ms(followed - writable)
    } else {
        -ms(writable - followed)
    };
    Follow {
        from_request: followed - start,
        from_writable_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_answers_the_primary_and_follows_a_promote_while_it_runs() {
    let env = Env::start(true, "").await;
    env.wait_for_target("prod.db.test.", "pg-a.test.", Duration::from_secs(5))
        .await;

    // One answer carries the CNAME (alias TTL, authoritative) and the address.
    let d = dig(env.dns, "prod.db.test", "A", &[]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert_eq!(d.answers("CNAME"), ["pg-a.test."]);
    assert_eq!(d.answers("A"), [A_IP]);
    assert_eq!(d.answer[0].ttl, 5);
    assert_eq!(d.answer[0].name, "prod.db.test.");
    // A standby alias points at the replica.
    let ro = dig(env.dns, "ro.db.test", "A", &[]);
    assert_eq!(ro.answers("CNAME"), ["pg-b.test."], "{}", ro.raw);

    // An application connecting through the alias reaches the writable server.
    assert_eq!(
        env.app_connect("prod.db.test").await.unwrap(),
        A_IP.parse::<IpAddr>().unwrap()
    );

    // DR drill: promote the replica while the old primary still runs. Both are
    // writable; the newer timeline wins.
    let follow = promote_and_follow(&env, "prod.db.test.", "pg-b.test.").await;
    report("promote (old primary running) -> alias follows", follow);
    assert!(follow.from_request < follow_bound(), "followed after {follow:?}");
    env.assert_stays("prod.db.test.", "pg-b.test.", Duration::from_millis(500))
        .await;
    let d = dig(env.dns, "prod.db.test", "A", &[]);
    assert_eq!(d.answers("A"), [B_IP]);
    assert_eq!(
        env.app_connect("prod.db.test").await.unwrap(),
        B_IP.parse::<IpAddr>().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_follows_a_promote_after_the_primary_stopped() {
    let env = Env::start(true, "").await;
    env.wait_for_target("prod.db.test.", "pg-a.test.", Duration::from_secs(5))
        .await;
    let primary = env.pair().primary.clone();
    tokio::task::spawn_blocking(move || primary.stop_immediate())
        .await
        .unwrap()
        .expect("stop");
    // Nothing is writable: the last target is kept (default policy) and the
    // strict alias fails fast instead.
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(raw::cname_of(env.dns, "prod.db.test.").as_deref(), Some("pg-a.test."));
    assert_eq!(dig(env.dns, "strict.db.test", "A", &[]).status, "SERVFAIL");

    let follow = promote_and_follow(&env, "prod.db.test.", "pg-b.test.").await;
    report("stop primary, promote -> alias follows", follow);
    assert!(follow.from_request < follow_bound(), "followed after {follow:?}");
    assert_eq!(
        env.app_connect("prod.db.test").await.unwrap(),
        B_IP.parse::<IpAddr>().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_stalls_nothing() {
    let env = Env::start(true, "").await;
    env.wait_for_target("prod.db.test.", "pg-a.test.", Duration::from_secs(5))
        .await;
    let baseline = dig(env.dns, "prod.db.test", "A", &[]).answer_time();

    env.pair().primary.freeze().expect("SIGSTOP");
    // Several probe deadlines pass; the DNS side keeps answering at its usual speed.
    let start = Instant::now();
    while start.elapsed() < DEADLINE * 3 {
        let d = dig(env.dns, "prod.db.test", "A", &[]);
        assert_eq!(d.answers("CNAME"), ["pg-a.test."], "{}", d.raw);
        assert!(
            d.answer_time() < baseline + Duration::from_millis(250),
            "answer took {:?} (baseline {baseline:?})",
            d.answer_time()
        );
        assert_eq!(dig(env.dns, "www.example.test", "A", &[]).answers("A"), ["127.0.0.9"]);
    }
    // The replica's prober is not held up by the frozen primary: a promote is
    // seen and followed within the same bound as without the freeze.
    let follow = promote_and_follow(&env, "prod.db.test.", "pg-b.test.").await;
    report("primary frozen, promote -> alias follows", follow);
    assert!(follow.from_request < follow_bound(), "followed after {follow:?}");
    env.pair().primary.thaw().expect("SIGCONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_primary_is_not_read_write() {
    let env = Env::start(true, "").await;
    env.wait_for_target("strict.db.test.", "pg-a.test.", Duration::from_secs(5))
        .await;
    let primary = env.pair().primary.clone();
    // What Azure does when storage is full: pg_is_in_recovery() stays false.
    tokio::task::spawn_blocking(move || primary.set_default_read_only(true))
        .await
        .unwrap()
        .unwrap();
    let start = Instant::now();
    loop {
        if dig(env.dns, "strict.db.test", "A", &[]).status == "SERVFAIL" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "strict alias still answers a read-only primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // keep-last (the default) keeps the old target while nothing is writable.
    assert_eq!(raw::cname_of(env.dns, "prod.db.test.").as_deref(), Some("pg-a.test."));
    // A writable server appears: both aliases go there.
    let follow = promote_and_follow(&env, "strict.db.test.", "pg-b.test.").await;
    report("primary read-only, promote -> alias follows", follow);
    env.wait_for_target("prod.db.test.", "pg-b.test.", Duration::from_secs(1))
        .await;
    assert!(follow.from_request < follow_bound(), "followed after {follow:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wal_functions_two_writable_servers_keep_the_current_target() {
    // A hardened server that revokes the WAL functions from PUBLIC: the probe
    // falls back to a query without timelines (and says so in the log).
    let env = Env::start_with(true, "", |pair| {
        pair.primary
            .sql("REVOKE EXECUTE ON FUNCTION pg_walfile_name(pg_lsn) FROM PUBLIC")
            .unwrap();
        // Wait until the replica has replayed the REVOKE.
        let lsn = pair.primary.sql("SELECT pg_current_wal_lsn()").unwrap();
        let start = Instant::now();
        while pair
            .replica
            .sql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"))
            .unwrap()
            != "t"
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "replica did not replay the REVOKE"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await;
    env.wait_for_target("prod.db.test.", "pg-a.test.", Duration::from_secs(5))
        .await;
    let replica = env.pair().replica.clone();
    tokio::task::spawn_blocking(move || replica.promote(true))
        .await
        .unwrap()
        .unwrap();
    // Both writable, no timelines: no basis to move, so the alias stays put,
    // and b, writable beside a while the alias served a, lost the split brain.
    env.assert_stays("prod.db.test.", "pg-a.test.", INTERVAL * 5).await;
    // The old primary goes away: b lacks a's writes since the promote, so the
    // alias does not move there (keep-last keeps a; the strict alias fails).
    let primary = env.pair().primary.clone();
    tokio::task::spawn_blocking(move || primary.stop_immediate())
        .await
        .unwrap()
        .unwrap();
    env.assert_stays("prod.db.test.", "pg-a.test.", INTERVAL * 5).await;
    assert_eq!(dig(env.dns, "strict.db.test", "A", &[]).status, "SERVFAIL");
    let status = env.status();
    let prod = status.aliases.iter().find(|a| a.name == "prod.db.test.").unwrap();
    assert!(
        prod.fences
            .iter()
            .any(|f| f.server == "b" && f.kind == "lost-split-brain" && f.holding),
        "{:?}",
        prod.fences
    );
    // An operator who knows better lifts the fence: b is answered.
    let summary = env.apply(Override::Unfence {
        alias: "prod.db.test".into(),
        server: Some("b".into()),
    });
    assert!(summary.contains("fence on b lifted"), "{summary}");
    env.wait_for_target("prod.db.test.", "pg-b.test.", follow_bound()).await;
}
