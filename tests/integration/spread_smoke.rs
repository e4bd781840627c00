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

[[aliases]]
name = "sticky.db.test"
role = "standby"
servers = ["a", "b", "c"]
spread = "client"
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

    // `client`: every query here comes from 127.0.0.1, so one replica.
    let sticky = tokio::task::spawn_blocking(move || {
        (0..8)
            .map(|i| {
                let tcp: &[&str] = if i % 2 == 0 { &[] } else { &["+tcp"] };
                dig(dns, "sticky.db.test.", "CNAME", tcp).answers("CNAME")
            })
            .collect::<std::collections::BTreeSet<_>>()
    })
    .await
    .unwrap();
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    assert!(!sticky.iter().next().unwrap().contains(&"pg-a.test.".to_string()));

    // Visible: the set with its shares, the primary excluded with why, and
    // the answers counted per server (UDP ones at the end of their batch).
    let status = env.status();
    let a = status.aliases.iter().find(|a| a.name == SPREAD).expect("the alias");
    let set: Vec<&str> = a.set.iter().map(|m| m.server.as_str()).collect();
    assert_eq!(set, ["b", "c"], "{a:?}");
    assert_eq!(a.spread.as_deref(), Some("rotate"));
    let answered: u64 = a.set.iter().filter_map(|m| m.answers).sum();
    assert!(answered >= 20, "{a:?}");
    assert!(a.set.iter().all(|m| m.share.is_some_and(|s| s > 0.3)), "{a:?}");
    assert_eq!(a.excluded.len(), 1, "{a:?}");
    assert!(
        a.excluded[0].server == "a" && a.excluded[0].reason.starts_with("not standby"),
        "{a:?}"
    );
    let b = env.metric(r#"dns_sidecar_reader_answers_total{alias="spread.db.test.",server="b"}"#);
    assert!(b >= 5.0, "{b}");
    assert_eq!(
        env.metric(r#"dns_sidecar_reader_set_size{alias="spread.db.test."}"#),
        2.0
    );
}
