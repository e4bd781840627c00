//! A frozen primary's failover is not a split brain (issue 16, item 6): the
//! frozen server is only remembered as writable through damping, so when its
//! replica is promoted the alias moves without an ERROR, without
//! `split_brain_total`, and fences the old primary as `superseded`.

use std::time::Duration;

use crate::support::env::Env;

const PROD: &str = "prod.db.test.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_and_its_promoted_replica_are_not_a_split_brain() {
    let env = Env::start(true, "").await;
    env.wait_for_target(PROD, "pg-a.test.", Duration::from_secs(15)).await;
    let sample = "dns_sidecar_split_brain_total{alias=\"prod.db.test.\"}";
    assert_eq!(env.metric(sample), 0.0);
    let (a, b) = (env.pair().primary.clone(), env.pair().replica.clone());
    let a2 = a.clone();
    tokio::task::spawn_blocking(move || a2.freeze())
        .await
        .unwrap()
        .expect("freeze a");
    // A failover tool promotes once it has seen the primary fail; so does
    // this test (a probe of a timed out, damping still remembers it up).
    let start = std::time::Instant::now();
    loop {
        let s = env.status();
        let a = s.servers.iter().find(|s| s.server == "a").unwrap();
        if a.consecutive_failures >= 1 {
            assert!(a.up, "one timeout is damped (fall = 3): {a:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "a's probe never failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::spawn_blocking(move || b.promote(true))
        .await
        .unwrap()
        .expect("promote b");
    env.wait_for_target(PROD, "pg-b.test.", Duration::from_secs(15)).await;
    let status = env.status();
    let prod = status.aliases.iter().find(|x| x.name == PROD).unwrap();
    let f = prod.fences.iter().find(|f| f.server == "a");
    assert_eq!(f.map(|f| f.kind.as_str()), Some("superseded"), "{:?}", prod.fences);
    let split: Vec<_> = status.history.iter().filter(|h| h.kind == "split_brain").collect();
    assert!(split.is_empty(), "{split:?}");
    assert_eq!(env.metric(sample), 0.0, "no split brain counted");
    tokio::task::spawn_blocking(move || a.thaw())
        .await
        .unwrap()
        .expect("thaw a");
}
