//! Damping is time, not probe count (issue 16): during an incident the
//! target is probed every `incident_interval` (10 ms), and when `fall`
//! counted probes, three quick ambiguous failures (a refused password is
//! ambiguous: it proves nothing about the server) took it down within a few
//! tens of ms instead of the ~`(fall - 1) x interval` the docs promise.
//! Played with a real pair: the probe role's password is changed on the
//! primary and its session ended, so every probe of `a` fails at once with
//! an authentication error, at the incident cadence.

use std::time::{Duration, Instant};

use crate::support::env::{Env, Options};

/// `interval` of this test: long, so the damping window (fall 3: at least
/// two intervals less half of one from the first failure) is far from how
/// long three failures take at the incident cadence, even on a loaded
/// machine (fresh connections with TLS and SCRAM).
const INTERVAL: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_failures_at_the_incident_cadence_are_damped_for_fall_intervals() {
    let env = Env::start_opts(Options {
        probe: format!(
            "interval = \"{}ms\"\nincident_interval = \"10ms\"\nfall = 3\nrise = 2\ndeadline = \"2s\"",
            INTERVAL.as_millis()
        ),
        ..Default::default()
    })
    .await;
    env.wait_for_target("strict.db.test.", "pg-a.test.", Duration::from_secs(10))
        .await;
    let primary = env.pair().primary.clone();
    let user = env.pair().probe_user.clone();
    let start = Instant::now();
    tokio::task::spawn_blocking(move || {
        primary
            .sql(&format!("ALTER ROLE {user} PASSWORD 'not-the-probe-password'"))
            .unwrap();
        primary.terminate_idle_backends("dns-sidecar").unwrap();
    })
    .await
    .unwrap();
    let up = |env: &Env| env.metric("dns_sidecar_server_up{server=\"a\"}") == 1.0;
    let failed = |env: &Env| env.probes("a", "error");
    let before = failed(&env);
    // The first failure comes at a's next probe (up to an interval later);
    // the judgement is timed from it.
    let mut first_failure = None;
    while up(&env) {
        assert!(start.elapsed() < INTERVAL * 8, "a never went down");
        if first_failure.is_none() && failed(&env) > before {
            first_failure = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let down = Instant::now();
    let first_failure = first_failure.expect("a went down without a failed probe seen");
    let damped = down - first_failure;
    let failures = failed(&env) - before;
    eprintln!(
        "MEASURED ambiguous failures -> down: {:.0} ms after the first failure (fall 3, interval {INTERVAL:?}), {failures} \
         failed probes",
        damped.as_secs_f64() * 1000.0
    );
    // The run of failures must last (fall - 1) x interval less half an
    // interval (1.5 s) from its first probe; 100 ms for seeing the first
    // failure's count late (polled every 5 ms, counted after the probe).
    assert!(
        damped >= INTERVAL * 3 / 2 - Duration::from_millis(100),
        "a went down {damped:?} after its first failure: damping counted probes, not time"
    );
    // Meanwhile the incident cadence (with the connect backoff) kept probing.
    assert!(failures >= 3, "only {failures} failed probes before a went down");
}
