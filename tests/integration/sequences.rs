//! Sequences of faults on real PostgreSQL servers: what the sidecar does when
//! the second thing goes wrong. The rule under test (README: "Fencing"): a
//! writer alias never goes back to a server whose data diverged at a
//! promote, across restarts, reloads and later instances.

use std::time::{Duration, Instant};

use dns_sidecar::control::Override;
use dns_sidecar::status::Status;
use testbed::Rebuild;

use crate::support::env::{Env, Options, INTERVAL};
use crate::support::{dig, raw};

const PROD: &str = "prod.db.test.";
const A: &str = "pg-a.test.";
const B: &str = "pg-b.test.";

/// Runs a blocking testbed operation (pg_ctl, psql) off the runtime.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn promote_b(env: &Env) {
    let b = env.pair().replica.clone();
    blocking(move || b.promote(true)).await.expect("promote b");
}

async fn kill_a(env: &Env) {
    let a = env.pair().primary.clone();
    blocking(move || a.stop_immediate()).await.expect("stop a");
}

async fn kill_b(env: &Env) {
    let b = env.pair().replica.clone();
    blocking(move || b.stop_immediate()).await.expect("stop b");
}

/// Starts the old primary again as it was: writable, on its old timeline.
async fn restart_a_writable(env: &Env) {
    let a = env.pair().primary.clone();
    blocking(move || {
        a.start()?;
        assert!(!a.is_in_recovery()?, "the old primary came back writable");
        Ok::<_, testbed::TestbedError>(())
    })
    .await
    .expect("start a");
}

/// The fence `alias` has on `server`, if any.
fn fence<'a>(status: &'a Status, alias: &str, server: &str) -> Option<&'a dns_sidecar::status::FenceStatus> {
    status
        .aliases
        .iter()
        .find(|a| a.name == alias)?
        .fences
        .iter()
        .find(|f| f.server == server)
}

/// After the new primary died: keep-last keeps answering it, the strict alias
/// fails, and neither ever answers the diverged old primary.
async fn holds_off_a(env: &Env) {
    env.assert_never(PROD, A, INTERVAL * 10).await;
    assert_eq!(
        raw::cname_of(env.dns, PROD).as_deref(),
        Some(B),
        "keep-last keeps the dead new primary"
    );
    assert_eq!(dig(env.dns, "strict.db.test", "A", &[]).status, "SERVFAIL");
    let status = env.status();
    let f = fence(&status, PROD, "a").unwrap_or_else(|| panic!("a is fenced: {:?}", status.aliases));
    assert!(f.holding, "the fence is what holds the alias: {f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_then_the_new_primary_dies() {
    let env = Env::start(true, "").await;
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    // A DR drill: the replica is promoted while the primary keeps running.
    promote_b(&env).await;
    env.wait_for_target(PROD, B, Duration::from_secs(5)).await;
    assert!(fence(&env.status(), PROD, "a").is_some(), "a lost the split brain");
    // Then the new primary dies; a is still writable, on timeline 1.
    kill_b(&env).await;
    holds_off_a(&env).await;
    // An application fails rather than writing to the wrong database.
    assert!(env.app_connect("prod.db.test").await.is_err());
    let history = env.status().history;
    assert!(
        history
            .iter()
            .any(|h| h.kind == "fence_held" && h.server.as_deref() == Some("a")),
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_primary_restarted_writable_after_a_kill_and_a_promote() {
    let env = Env::start(true, "").await;
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    kill_a(&env).await;
    promote_b(&env).await;
    env.wait_for_target(PROD, B, Duration::from_secs(5)).await;
    restart_a_writable(&env).await;
    env.assert_stays(PROD, B, INTERVAL * 10).await;
    kill_b(&env).await;
    holds_off_a(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_restarted_mid_failover_remembers() {
    let mut env = Env::start(true, "").await;
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    kill_a(&env).await;
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(
        raw::cname_of(env.dns, PROD).as_deref(),
        Some(A),
        "keep-last while nothing is writable"
    );
    // The sidecar restarts while the replica is promoted.
    env.stop_sidecar();
    promote_b(&env).await;
    env.start_sidecar();
    env.wait_for_target(PROD, B, Duration::from_secs(5)).await;
    restart_a_writable(&env).await;
    env.assert_stays(PROD, B, INTERVAL * 5).await;
    // And again after the new primary died: the state file says a was left
    // for b on an older timeline, though a is the only writable server now.
    env.stop_sidecar();
    kill_b(&env).await;
    env.start_sidecar();
    let start = Instant::now();
    while !env.status().ready {
        assert!(start.elapsed() < Duration::from_secs(5), "not ready");
        assert_ne!(raw::cname_of(env.dns, PROD).as_deref(), Some(A));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holds_off_a(&env).await;
    let file = std::fs::read_to_string(env.state_file()).expect("the state file");
    assert!(file.contains("\"format\": \"dns-sidecar-state\""), "{file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_failover_keeps_the_fences() {
    let env = Env::start(true, "").await;
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    kill_a(&env).await;
    tokio::time::sleep(INTERVAL * 2).await;
    // Reload mid-failover (a new alias; prod's candidates reordered).
    let reordered = env.config_text.replace(
        "name = \"prod.db.test\"\nservers = [\"a\", \"b\"]",
        "name = \"prod.db.test\"\nservers = [\"b\", \"a\"]",
    );
    assert_ne!(reordered, env.config_text);
    let text = format!("{reordered}\n[[aliases]]\nname = \"new.db.test\"\nservers = [\"a\", \"b\"]\n");
    tokio::task::block_in_place(|| env.sidecar().reload(&text)).expect("reload");
    promote_b(&env).await;
    env.wait_for_target(PROD, B, Duration::from_secs(5)).await;
    env.wait_for_target("new.db.test.", B, Duration::from_secs(5)).await;
    restart_a_writable(&env).await;
    // Reload back: fences and floors follow the alias names.
    tokio::task::block_in_place(|| env.sidecar().reload(&env.config_text)).expect("reload");
    env.assert_stays(PROD, B, INTERVAL * 5).await;
    kill_b(&env).await;
    holds_off_a(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_started_at_different_times_during_a_split_brain_agree() {
    let env = Env::start(true, "").await;
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    promote_b(&env).await;
    env.wait_for_target(PROD, B, Duration::from_secs(5)).await;
    // A second instance (its own state file) starts during the split brain.
    let second = env.another_sidecar("second");
    let start = Instant::now();
    loop {
        let got = raw::cname_of(second.dns, PROD);
        if got.as_deref() == Some(B) {
            break;
        }
        assert_ne!(
            got.as_deref(),
            Some(A),
            "the second instance answered the older timeline"
        );
        assert!(start.elapsed() < Duration::from_secs(5), "second instance: {got:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill_b(&env).await;
    let start = Instant::now();
    while start.elapsed() < INTERVAL * 10 {
        for dns in [env.dns, second.dns] {
            assert_eq!(
                raw::cname_of(dns, PROD).as_deref(),
                Some(B),
                "both keep the dead new primary, never a"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What a brand-new instance cannot know (README: "The state file"): one
    // started after b died never saw timeline 2, and answers a.
    let third = env.another_sidecar("third");
    let start = Instant::now();
    while raw::cname_of(third.dns, PROD).as_deref() != Some(A) {
        assert!(start.elapsed() < Duration::from_secs(5), "third instance");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_a_servers_settings_keeps_its_health() {
    let env = Env::start(true, "").await;
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    env.wait_for_target("ro.db.test.", B, Duration::from_secs(5)).await;
    // Both servers' settings change: their probers restart with new connections.
    let text = env.config_text.replace(
        "hostaddr = \"127.0.0.2\"",
        "hostaddr = \"127.0.0.2\"\napplication_name = \"reloaded\"",
    );
    let text = text.replace(
        "hostaddr = \"127.0.0.3\"",
        "hostaddr = \"127.0.0.3\"\napplication_name = \"reloaded\"",
    );
    assert_ne!(text, env.config_text);
    let dns = env.dns;
    let watch = tokio::spawn(async move {
        let start = Instant::now();
        let mut answers = Vec::new();
        while start.elapsed() < Duration::from_secs(1) {
            answers.push((raw::cname_of(dns, PROD), raw::cname_of(dns, "ro.db.test.")));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        answers
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = env.status();
    tokio::task::block_in_place(|| env.sidecar().reload(&text)).expect("reload");
    for (prod, ro) in watch.await.unwrap() {
        assert_eq!(prod.as_deref(), Some(A), "prod blipped during the reload");
        assert_eq!(ro.as_deref(), Some(B), "ro blipped during the reload");
    }
    let status = env.status();
    assert!(status.servers.iter().all(|s| s.up), "{:?}", status.servers);
    let changes = |s: &Status| {
        s.history
            .iter()
            .filter(|h| h.kind == "target_changed" || h.kind == "server_down")
            .count()
    };
    assert_eq!(changes(&status), changes(&before), "{:?}", status.history);
    // The new probers are the ones reporting now.
    let a = env.pair().primary.clone();
    let names = blocking(move || {
        a.sql("SELECT string_agg(application_name, ',') FROM pg_stat_activity WHERE usename = 'probe'")
    })
    .await
    .unwrap();
    assert!(names.contains("reloaded"), "{names}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_foreign_state_file_is_reported_not_fatal() {
    let mut env = Env::start(true, "").await;
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    let path = env.state_file();
    // Not ours (a mistyped path pointing at some other file): reported,
    // ignored, and never overwritten.
    env.stop_sidecar();
    let foreign = "root:x:0:0:root:/root:/bin/bash\n";
    std::fs::write(&path, foreign).unwrap();
    env.start_sidecar();
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    promote_b(&env).await;
    env.wait_for_target(PROD, B, Duration::from_secs(5)).await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        foreign,
        "a stranger's file is never overwritten"
    );
    let history = env.status().history;
    assert!(
        history
            .iter()
            .any(|h| h.kind == "state_file" && h.message.contains("not a dns-sidecar state file")),
        "{history:?}"
    );
    // Ours but unusable (another version, or damaged): replaced.
    env.stop_sidecar();
    std::fs::write(&path, "{\"format\": \"dns-sidecar-state\", \"version\": 99}").unwrap();
    env.start_sidecar();
    env.wait_for_target(PROD, B, Duration::from_secs(5)).await;
    let start = Instant::now();
    while !std::fs::read_to_string(&path).unwrap().contains("\"version\": 1") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the unusable file was not replaced"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The normal way back: the old primary, back writable on its old timeline,
/// is rebuilt as a standby of the new one (seen in recovery: fence lifted),
/// and is followed once it is promoted in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_old_primary_is_followed_after_its_own_promote() {
    let env = Env::start(true, "").await;
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    kill_a(&env).await;
    promote_b(&env).await;
    env.wait_for_target(PROD, B, Duration::from_secs(5)).await;
    restart_a_writable(&env).await;
    env.assert_stays(PROD, B, INTERVAL * 3).await;
    assert!(fence(&env.status(), PROD, "a").is_some());
    let (a, b) = (env.pair().primary.clone(), env.pair().replica.clone());
    blocking(move || a.rebuild_as_standby_of(&b, Rebuild::Rewind))
        .await
        .expect("pg_rewind a from b");
    let start = Instant::now();
    while fence(&env.status(), PROD, "a").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a seen in recovery: the fence is lifted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_b(&env).await;
    let a = env.pair().primary.clone();
    blocking(move || a.promote(true)).await.expect("promote a");
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    assert_eq!(
        env.app_connect("prod.db.test").await.unwrap(),
        "127.0.0.2".parse::<std::net::IpAddr>().unwrap()
    );
}

/// Three servers: A primary, B and C its standbys. A dies, B is promoted
/// (timeline 2) while C keeps waiting for A. B dies, and C is promoted: also
/// timeline 2, but a fork without B's writes. The alias does not follow it
/// until an operator says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_promoted_later_onto_the_same_timeline_is_not_followed() {
    let env = Env::start_opts(Options {
        trio: true,
        ..Default::default()
    })
    .await;
    env.wait_for_target(PROD, A, Duration::from_secs(5)).await;
    kill_a(&env).await;
    promote_b(&env).await;
    env.wait_for_target(PROD, B, Duration::from_secs(5)).await;
    kill_b(&env).await;
    let c = env.pair().extra[0].clone();
    let tl = blocking(move || {
        c.promote(true)?;
        c.timeline()
    })
    .await
    .expect("promote c");
    assert_eq!(tl, 2, "the fork lands on the same timeline as b");
    env.assert_never(PROD, "pg-c.test.", INTERVAL * 10).await;
    assert_eq!(raw::cname_of(env.dns, PROD).as_deref(), Some(B));
    let status = env.status();
    let f = fence(&status, PROD, "c").unwrap_or_else(|| panic!("c is fenced: {:?}", status.aliases));
    assert_eq!((f.kind.as_str(), f.holding), ("same-timeline", true), "{f:?}");
    // The operator knows b is gone for good and c is to carry on.
    let summary = env.apply(Override::Unfence {
        alias: "prod.db.test".into(),
        server: Some("c".into()),
    });
    assert!(summary.contains("fence on c lifted"), "{summary}");
    env.wait_for_target(PROD, "pg-c.test.", Duration::from_secs(2)).await;
}
