//! Issue 19 smoke test (the spread branch's own; the full suite is in the
//! readers' spread tests): a rotating standby alias over a primary and two
//! streaming replicas answers both replicas, never the primary, over UDP
//! (the fast path) and TCP (the full path).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::dig::dig;
use crate::support::env::{Env, Options};

const SPREAD: &str = "spread.db.test.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotating_standby_alias_answers_every_replica_in_turn() {
    let env = Env::start_opts(Options {
        trio: true,
        extra: r#"
[[aliases]]
name = "spread.db.test"
role = "standby"
servers = ["a", "b", "c"]
spread = "rotate"
"#
        .into(),
        ..Default::default()
    })
    .await;
    env.wait_for_target(SPREAD, "pg-b.test.", Duration::from_secs(15)).await;
    let dns = env.sidecar().dns;
    let counts = tokio::task::spawn_blocking(move || {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for i in 0..20 {
            let tcp: &[&str] = if i % 2 == 0 { &[] } else { &["+tcp"] };
            let d = dig(dns, SPREAD, "A", tcp);
            assert_eq!(d.status, "NOERROR", "{}", d.raw);
            let cname = d.answers("CNAME");
            assert_eq!(cname.len(), 1, "one CNAME per answer: {}", d.raw);
            *counts.entry(cname[0].clone()).or_default() += 1;
        }
        counts
    })
    .await
    .unwrap();
    eprintln!("answers: {counts:?}");
    assert!(
        !counts.contains_key("pg-a.test."),
        "the primary is no standby: {counts:?}"
    );
    assert!(counts.get("pg-b.test.").copied().unwrap_or(0) >= 5, "{counts:?}");
    assert!(counts.get("pg-c.test.").copied().unwrap_or(0) >= 5, "{counts:?}");
}
