//! Readers obey the cluster's truth (issue 16), on a real primary + replica:
//! a reader alias leaves an old primary the writer alias fenced, and an old
//! primary pointed at the new one without pg_rewind (in recovery, never
//! streaming) is neither unfenced nor answered, even once promoted by
//! mistake onto a newer timeline.

use std::time::Duration;

use dns_sidecar::status::Status;

use crate::support::env::{Env, INTERVAL};
use crate::support::raw;

const PROD: &str = "prod.db.test.";
const READER: &str = "reader.db.test.";
const A: &str = "pg-a.test.";
const B: &str = "pg-b.test.";
const WAIT: Duration = Duration::from_secs(15);

const EXTRA: &str = r#"
[[aliases]]
name = "reader.db.test"
role = "prefer-standby"
servers = ["b", "a"]
max_lag = "1MiB"
"#;

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn fence_kind(status: &Status, alias: &str, server: &str) -> Option<String> {
    let a = status.aliases.iter().find(|a| a.name == alias)?;
    a.fences.iter().find(|f| f.server == server).map(|f| f.kind.clone())
}

fn diverged(status: &Status, server: &str) -> Option<String> {
    status.servers.iter().find(|s| s.server == server)?.diverged.clone()
}

/// Issue 16's repro: the reader moved to the primary while the standby's
/// replay was paused; the standby is promoted while the old primary keeps
/// running. `prod` moves and fences the old one; the reader follows within a
/// few probes and never returns to it, and `/status` shows it diverged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_leaves_the_old_primary_when_the_standby_is_promoted() {
    let env = Env::start(true, EXTRA).await;
    env.wait_for_target(READER, B, WAIT).await;
    let (a, b) = (env.pair().primary.clone(), env.pair().replica.clone());
    let b2 = b.clone();
    blocking(move || b2.pause_replay()).await.expect("pause replay on b");
    let a2 = a.clone();
    blocking(move || {
        a2.sql("CREATE TABLE lag_big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
    })
    .await
    .expect("write on a");
    env.wait_for_target(READER, A, WAIT).await;

    // Promoted while a keeps running (and takes writes b will never have).
    blocking(move || b.promote(true)).await.expect("promote b");
    let a2 = a.clone();
    blocking(move || a2.sql("CREATE TABLE only_on_a AS SELECT 1 AS x"))
        .await
        .expect("write on the old primary");
    env.wait_for_target(PROD, B, WAIT).await;
    let took = env.wait_for_target(READER, B, INTERVAL * 30).await;
    eprintln!("the reader left the old primary {took:?} after prod moved");
    env.assert_never(READER, A, INTERVAL * 20).await;
    let status = env.status();
    assert!(fence_kind(&status, PROD, "a").is_some(), "{:?}", status.aliases);
    let why = diverged(&status, "a").unwrap_or_else(|| panic!("a is diverged: {:?}", status.servers));
    assert!(why.contains("prod.db.test"), "{why}");
}

/// Issue 16's repro: the old primary, diverged, is given `standby.signal`
/// and a `primary_conninfo` to the new primary without pg_rewind. It is in
/// recovery but never streams: its fence stays, readers do not take it, and
/// promoted by mistake (a newer timeline) the writer alias does not follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_primary_made_a_standby_without_rewind_stays_fenced() {
    let env = Env::start(true, EXTRA).await;
    env.wait_for_target(PROD, A, WAIT).await;
    let (a, b) = (env.pair().primary.clone(), env.pair().replica.clone());
    let a2 = a.clone();
    blocking(move || a2.stop_immediate()).await.expect("stop a");
    let b2 = b.clone();
    blocking(move || b2.promote(true)).await.expect("promote b");
    env.wait_for_target(PROD, B, WAIT).await;
    // a comes back writable on timeline 1 and takes writes b lacks: diverged.
    let a2 = a.clone();
    blocking(move || {
        a2.start()?;
        a2.sql("CREATE TABLE diverged AS SELECT g FROM generate_series(1, 1000) g")?;
        a2.stop_immediate()
    })
    .await
    .expect("diverge a");
    assert!(fence_kind(&env.status(), PROD, "a").is_some());

    let (a2, b2) = (a.clone(), b.clone());
    blocking(move || a2.start_as_standby_without_rewind(&b2))
        .await
        .expect("a as a standby of b without pg_rewind");
    // In recovery for many probes while b takes writes: never rebuilt.
    for i in 0..10 {
        let b2 = b.clone();
        blocking(move || b2.sql(&format!("CREATE TABLE on_b_{i} AS SELECT 1 AS x")))
            .await
            .expect("write on b");
        tokio::time::sleep(INTERVAL * 2).await;
        let status = env.status();
        let in_recovery = status
            .servers
            .iter()
            .find(|s| s.server == "a")
            .and_then(|s| s.in_recovery);
        assert!(
            fence_kind(&status, PROD, "a").is_some(),
            "a in recovery ({in_recovery:?}) but never streaming must stay fenced: {:?}",
            status
                .history
                .iter()
                .filter(|h| h.kind == "unfenced")
                .collect::<Vec<_>>()
        );
        assert_ne!(raw::cname_of(env.dns, READER).as_deref(), Some(A));
        assert_ne!(raw::cname_of(env.dns, "ro.db.test.").as_deref(), Some(A));
    }
    assert!(diverged(&env.status(), "a").is_some());
    // Promoted by mistake: a newer timeline than b's, with the wrong data.
    let a2 = a.clone();
    let tl = blocking(move || {
        a2.promote(true)?;
        a2.timeline()
    })
    .await
    .expect("promote a");
    assert!(tl >= 3, "a promoted onto timeline {tl}");
    env.assert_never(PROD, A, INTERVAL * 20).await;
    assert_eq!(raw::cname_of(env.dns, PROD).as_deref(), Some(B));
    assert!(fence_kind(&env.status(), PROD, "a").is_some());
}
