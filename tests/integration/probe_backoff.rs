//! Probes that do not storm a failing server (issue 15): during an incident
//! the sidecar probes every `incident_interval` (10 ms), and before the
//! connect backoff a server that hung up on every connection got a new
//! connection every ~11 ms (892 in 10 s) from one sidecar. Played with real
//! servers: the primary behind a proxy that resets every connection, the
//! replica stopped (connection refused); then both come back.
//!
//! The window is 10 s; `DNS_SIDECAR_OUTAGE_SECS=60` measures the 60 s outage
//! the README reports (see docs/operations.md: Reload, pressure and probe connections).

use std::time::{Duration, Instant};

use crate::support::env::{Env, Options};
use crate::support::proxy::Mode;
use crate::support::wait_until;

fn connects(env: &Env, id: &str, result: &str) -> u64 {
    env.metric(&format!(
        "dns_sidecar_probe_connects_total{{server=\"{id}\",result=\"{result}\"}}"
    )) as u64
}

fn incident(env: &Env) -> Vec<String> {
    env.sidecar().shared.incident.borrow().iter().cloned().collect()
}

/// The most connection attempts the backoff allows in `window` once the
/// outage has begun: ~8 in the first 1.3 s (10, 20, 40 ... 640 ms apart),
/// then one every 1.5-2 s (the 2 s cap, jittered down by at most a quarter);
/// plus 2 for the attempts at the window's edges. A loaded machine only
/// makes fewer.
fn most_attempts(window: Duration) -> u64 {
    8 + (window.as_secs_f64() / 1.5).ceil() as u64 + 2
}

/// The fewest: at least one every ~2 s (cap, plus a probe's own time), so
/// the server's recovery is still seen.
fn fewest_attempts(window: Duration) -> u64 {
    (window.as_secs_f64() / 2.5).floor() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_back_off_from_a_failing_server_during_an_incident() {
    let window = Duration::from_secs(
        std::env::var("DNS_SIDECAR_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let env = Env::start_opts(Options {
        proxied: vec!["a"],
        probe: "incident_interval = \"10ms\"".into(),
        ..Default::default()
    })
    .await;
    env.wait_for_target("strict.db.test.", "pg-a.test.", Duration::from_secs(5))
        .await;
    wait_until("b up", Duration::from_secs(5), || {
        env.metric("dns_sidecar_server_up{server=\"b\"}") == 1.0
    })
    .await;

    // The outage: a's connections are accepted and reset (RST), b refuses
    // (stopped). No candidate of the writer aliases matches: both are
    // probed at 10 ms, and strict (`on_no_match = "servfail"`) answers
    // SERVFAIL.
    let replica = env.pair().replica.clone();
    tokio::task::spawn_blocking(move || replica.stop_immediate())
        .await
        .unwrap()
        .unwrap();
    env.proxy("a").set_mode(Mode::Reset);
    wait_until("the incident set", Duration::from_secs(2), || {
        incident(&env) == ["a", "b"]
    })
    .await;
    let a0 = (env.proxy("a").attempts() as u64, connects(&env, "a", "closed"));
    let b0 = connects(&env, "b", "refused");
    tokio::time::sleep(window).await;
    let a_attempts = env.proxy("a").attempts() as u64 - a0.0;
    let a_closed = connects(&env, "a", "closed") - a0.1;
    let b_refused = connects(&env, "b", "refused") - b0;
    assert_eq!(incident(&env), ["a", "b"], "the incident lasted the whole window");
    assert_eq!(crate::support::raw::cname_of(env.dns, "strict.db.test."), None);
    eprintln!(
        "MEASURED probe connection attempts during a {window:?} outage (incident_interval 10ms): \
        a (accepts and resets) {a_attempts} ({:.2}/s, metric closed {a_closed}), b (refuses) {b_refused} ({:.2}/s)",
        a_attempts as f64 / window.as_secs_f64(),
        b_refused as f64 / window.as_secs_f64()
    );
    let (most, fewest) = (most_attempts(window), fewest_attempts(window));
    for (id, n) in [("a", a_attempts), ("b", b_refused)] {
        assert!(
            n <= most,
            "{n} connection attempts at {id} in {window:?}: not backed off (at most {most})"
        );
        assert!(
            n >= fewest,
            "only {n} connection attempts at {id} in {window:?} (at least {fewest})"
        );
    }
    // The metric counts what reached the server (an attempt at the edge of
    // the window may be counted on one side only).
    assert!(
        a_closed.abs_diff(a_attempts) <= 1,
        "metric {a_closed}, proxy {a_attempts}"
    );

    // Both come back: seen within about the cap (2 s) plus `rise` probes.
    env.proxy("a").set_mode(Mode::Pass);
    let back = Instant::now();
    let replica = env.pair().replica.clone();
    let restart = tokio::task::spawn_blocking(move || replica.start());
    let a_back = env
        .wait_for_target("strict.db.test.", "pg-a.test.", Duration::from_secs(5))
        .await;
    restart.await.unwrap().unwrap();
    let b_ready = back.elapsed();
    let b_back = wait_until("b up again", Duration::from_secs(5), || {
        env.metric("dns_sidecar_server_up{server=\"b\"}") == 1.0
    })
    .await;
    eprintln!(
        "MEASURED recovery after the outage: strict back on a {a_back:?} after the proxy passed again; \
        b up {b_back:?} after PostgreSQL was ready again ({b_ready:?} to restart it)"
    );
    assert!(
        a_back <= Duration::from_millis(3500),
        "strict took {a_back:?} to come back (connect backoff capped at 2 s)"
    );

    // Connected again: the probes use their kept connections, no new ones.
    let before = (connects(&env, "a", "ok"), connects(&env, "b", "ok"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = (connects(&env, "a", "ok"), connects(&env, "b", "ok"));
    assert_eq!(before, after, "new connections to servers that are up");

    // The successful connects started the backoff over: a new outage of a
    // is retried at the fast pace first (10, 20, 40, 80 ms apart), not
    // every 2 s.
    let before = env.proxy("a").attempts();
    env.proxy("a").set_mode(Mode::Reset);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = env.proxy("a").attempts() - before;
    env.proxy("a").set_mode(Mode::Pass);
    assert!(again >= 3, "{again} attempts in the first 400 ms of a new outage");
}
