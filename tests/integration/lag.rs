//! Reader aliases with a lag limit, on a real primary + replica: replay is
//! paused on the replica (`pg_wal_replay_pause()`) and the primary writes
//! until the limit is exceeded; the aliases leave the replica (a
//! `prefer-standby` alias for the primary, a `standby` alias with
//! `on_no_match = "servfail"` for SERVFAIL); replay resumes and they come back
//! after `rise` good probes. A time limit is not tripped by an idle primary.

use std::time::Duration;

use crate::support::env::Env;
use crate::support::{dig, raw};

const EXTRA: &str = r#"
[[aliases]]
name = "reader.db.test"
role = "prefer-standby"
servers = ["b", "a"]
max_lag = "256KiB"

[[aliases]]
name = "fresh.db.test"
role = "standby"
on_no_match = "servfail"
servers = ["b", "a"]
max_lag = "256KiB"

[[aliases]]
name = "recent.db.test"
role = "prefer-standby"
servers = ["b", "a"]
max_lag_time = "2s"
"#;

const WAIT: Duration = Duration::from_secs(15);

fn history(env: &Env, kind: &str, alias: &str) -> Vec<String> {
    env.status()
        .history
        .into_iter()
        .filter(|h| h.kind == kind && h.alias.as_deref() == Some(alias))
        .map(|h| h.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_over_the_lag_limit_is_left_and_taken_back_after_rise() {
    let env = Env::start(true, EXTRA).await;
    for alias in ["reader.db.test.", "fresh.db.test.", "recent.db.test."] {
        env.wait_for_target(alias, "pg-b.test.", WAIT).await;
    }
    let primary = env.pair().primary.clone();
    let replica = env.pair().replica.clone();
    let sql = move |q: &'static str| {
        let p = primary.clone();
        async move { tokio::task::spawn_blocking(move || p.sql(q).unwrap()).await.unwrap() }
    };

    // An idle primary does not make a caught-up standby lag, however long
    // nothing is written (longer than max_lag_time here).
    env.assert_stays("recent.db.test.", "pg-b.test.", Duration::from_secs(3))
        .await;
    let b = env.status().servers.into_iter().find(|s| s.server == "b").unwrap();
    assert_eq!(
        (b.lag_primary.as_deref(), b.lag_bytes, b.lag_seconds),
        (Some("a"), Some(0), Some(0.0)),
        "{b:?}"
    );
    assert!(b.wal_lsn.is_some(), "{b:?}");

    // Replay stops. One small write (far below 256 KiB): the standby lacks
    // it, and the time it has lacked it grows with the clock, so the time
    // alias leaves after max_lag_time while the byte aliases stay.
    let r = replica.clone();
    tokio::task::spawn_blocking(move || r.pause_replay().unwrap())
        .await
        .unwrap();
    sql("CREATE TABLE lag_small AS SELECT 1 AS x").await;
    env.wait_for_target("recent.db.test.", "pg-a.test.", WAIT).await;
    assert_eq!(
        raw::cname_of(env.dns, "reader.db.test.").as_deref(),
        Some("pg-b.test."),
        "a few bytes behind: within max_lag"
    );
    let why = history(&env, "lag_exceeded", "recent.db.test.");
    assert!(
        why.iter().any(|m| m.contains("behind a (max_lag_time 2.0s)")),
        "{why:?}"
    );

    // Write until the byte limit is exceeded.
    let mut chunks = 0;
    while raw::cname_of(env.dns, "reader.db.test.").as_deref() == Some("pg-b.test.") {
        assert!(chunks < 200, "the alias never left the standby");
        sql(
            "CREATE TABLE IF NOT EXISTS lag_big (x text); INSERT INTO lag_big SELECT repeat('x', 200) FROM \
            generate_series(1, 500)",
        )
        .await;
        chunks += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.wait_for_target("reader.db.test.", "pg-a.test.", WAIT).await;
    let d = dig(env.dns, "fresh.db.test", "A", &[]);
    assert_eq!(
        d.status, "SERVFAIL",
        "standby + servfail: no standby within the limit\n{}",
        d.raw
    );
    // A reader alias without a standby is not an incident: no 10 ms probing
    // for as long as replay stays paused.
    assert!(
        env.sidecar().shared.incident.borrow().is_empty(),
        "{:?}",
        env.sidecar().shared.incident.borrow()
    );
    let s = env.status();
    let b = s.servers.iter().find(|s| s.server == "b").unwrap();
    assert!(b.lag_bytes.unwrap() > 256 * 1024, "{b:?}");
    let reader = s.aliases.iter().find(|a| a.name == "reader.db.test.").unwrap();
    assert_eq!(reader.max_lag_bytes, Some(256 * 1024));
    assert_eq!(reader.lagging.len(), 1, "{reader:?}");
    assert_eq!(reader.lagging[0].server, "b");
    assert!(
        reader.lagging[0].reason.contains("behind a (max_lag 256.0 KiB)"),
        "{reader:?}"
    );
    assert!(
        reader.reason.contains("b is too far behind the primary"),
        "{}",
        reader.reason
    );

    // Replay resumes: back to the standby, after `rise` good probes of it.
    tokio::task::spawn_blocking(move || replica.resume_replay().unwrap())
        .await
        .unwrap();
    for alias in ["reader.db.test.", "fresh.db.test.", "recent.db.test."] {
        env.wait_for_target(alias, "pg-b.test.", WAIT).await;
        let back = history(&env, "lag_recovered", alias);
        assert!(
            back.iter().any(|m| m.contains("after 2 good probe(s) in a row")),
            "{alias}: {back:?}"
        );
    }
    let b = env.status().servers.into_iter().find(|s| s.server == "b").unwrap();
    assert!(b.lag_bytes.unwrap() <= 256 * 1024, "{b:?}");
}
