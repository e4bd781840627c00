//! The probe cadence (pure), and the prober loop against real sockets: a
//! listener that hangs up on every connection (no PostgreSQL needed) and a
//! real primary whose probe session is killed.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::*;
use crate::config::Config;

const MS: Duration = Duration::from_millis(1);

fn timing(interval_ms: u64, incident_ms: u64) -> ProbeTiming {
    ProbeTiming {
        interval: MS * interval_ms as u32,
        incident_interval: MS * incident_ms as u32,
        ..ProbeTiming::default()
    }
}

#[test]
fn cadence_follows_interval_and_never_overlaps() {
    let t0 = Instant::now();
    let mut c = Cadence::new(&timing(100, 10), t0);
    assert_eq!(c.next, t0, "the first probe is due at once");
    c.probed(t0, t0 + MS * 3);
    assert_eq!(c.next, t0 + MS * 100, "counted from the start of the last probe");
    // A probe that overran its period (a deadline) is followed at once, not
    // by a burst of catch-up probes.
    c.probed(t0 + MS * 100, t0 + MS * 1100);
    assert_eq!(c.next, t0 + MS * 1100);
}

#[test]
fn cadence_speeds_up_at_once_and_slows_down_from_the_last_probe() {
    let t0 = Instant::now();
    let mut c = Cadence::new(&timing(100, 10), t0);
    c.probed(t0, t0 + MS);
    // Entering the incident set: a probe is due now, not at t0 + 100ms.
    c.set_fast(true, t0 + MS * 20);
    assert_eq!(c.next, t0 + MS * 20);
    c.probed(t0 + MS * 20, t0 + MS * 21);
    assert_eq!(c.next, t0 + MS * 30);
    // Repeating the same membership changes nothing.
    c.set_fast(true, t0 + MS * 25);
    assert_eq!(c.next, t0 + MS * 30);
    // Leaving it: the normal interval, counted from the last probe's start.
    c.set_fast(false, t0 + MS * 25);
    assert_eq!(c.next, t0 + MS * 120);
    // ...or at once if that is already past.
    c.probed(t0 + MS * 120, t0 + MS * 121);
    c.set_fast(true, t0 + MS * 122);
    c.probed(t0 + MS * 122, t0 + MS * 123);
    c.set_fast(false, t0 + MS * 300);
    assert_eq!(c.next, t0 + MS * 300);
}

/// A TCP listener that accepts and at once closes every connection, counting
/// them: each probe against it fails quickly with one connect.
fn hang_up_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
            n.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, accepted)
}

fn config(server_table: &str, probe: &str) -> Config {
    let text = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[[zones]]\nname = \"db.test\"\n\
        [probe]\nuser = \"probe\"\n{probe}\n[servers.a]\n{server_table}\n\
        [[aliases]]\nname = \"prod.db.test\"\nservers = [\"a\"]\n"
    );
    Config::from_toml(Path::new("probe-test.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

/// Reports received within `window`.
async fn collect(rx: &mut mpsc::Receiver<ProbeReport>, window: Duration) -> Vec<ProbeReport> {
    let end = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout_at(end, rx.recv()).await {
        got.push(r);
    }
    got
}

#[tokio::test]
async fn incident_set_switches_the_cadence() {
    let (port, accepted) = hang_up_listener();
    let cfg = config(
        &format!("target = \"pg-a.test\"\nhostaddr = \"127.0.0.1\"\nport = {port}\nsslmode = \"disable\""),
        "interval = \"1s\"\nincident_interval = \"10ms\"\ndeadline = \"500ms\"",
    );
    let prober = Prober::new(&cfg.servers[0], cfg.probe).unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let (stop, stop_rx) = watch::channel(false);
    let incident = watch::Sender::new(Arc::new(BTreeSet::<String>::new()));
    let task = tokio::spawn(prober.run(tx, stop_rx, incident.subscribe()));

    // Normal cadence: the first probe at once, then nothing for a second.
    let normal = collect(&mut rx, MS * 400).await;
    assert_eq!(normal.len(), 1, "{normal:?}");
    assert!(normal[0].outcome.is_err());

    // Another server's incident changes nothing here.
    incident.send_replace(Arc::new(BTreeSet::from(["b".to_string()])));
    assert!(collect(&mut rx, MS * 200).await.is_empty());

    // In the set: a probe at once (the normal one is ~400ms away; the one
    // failed connect so far does not hold it back). Every probe of this
    // server must connect and every connect fails, so after that the
    // probes are spaced by the connect backoff, not every 10ms: 10, 20,
    // 40, 80, 160, 320 ms (jittered down by at most a quarter) after the
    // first, so 4 to 7 in the next 500ms. (The 10ms cadence on a kept
    // connection is `the_incident_cadence_reuses_the_kept_connection`.)
    let entered = Instant::now();
    incident.send_replace(Arc::new(BTreeSet::from(["a".to_string(), "b".to_string()])));
    let first = tokio::time::timeout(MS * 300, rx.recv())
        .await
        .expect("a probe at once")
        .unwrap();
    assert!(first.at >= entered);
    let fast = collect(&mut rx, MS * 500).await;
    eprintln!(
        "MEASURED incident cadence against a server that hangs up: {} probes in 500 ms at incident_interval 10ms (first after {:?})",
        fast.len(),
        first.at - entered
    );
    assert!(
        fast.len() >= 3,
        "only {} probes in 500ms at a 10ms cadence with connect backoff",
        fast.len()
    );
    assert!(
        fast.len() <= 8,
        "{} probes in 500ms: new connections to a failing server not backed off",
        fast.len()
    );

    // Out of the set: back to one probe per second, counted from the last.
    incident.send_replace(Arc::default());
    let slow = collect(&mut rx, MS * 600).await;
    assert!(
        slow.len() <= 1,
        "{} probes in 600ms after leaving the incident set",
        slow.len()
    );

    let _ = stop.send(true);
    task.await.unwrap();
    // One connection per probe: never more than one attempt per probe (no
    // kept connection to retry on here).
    let probes = 1 + 1 + fast.len() + slow.len();
    assert_eq!(accepted.load(Ordering::SeqCst), probes);
}

/// The first report of a prober for a server on `port` (plain TCP, no TLS).
async fn first_report(port: u16, deadline: &str) -> ProbeReport {
    let cfg = config(
        &format!("target = \"pg-a.test\"\nhostaddr = \"127.0.0.1\"\nport = {port}\nsslmode = \"disable\""),
        &format!("interval = \"10s\"\ndeadline = \"{deadline}\""),
    );
    let prober = Prober::new(&cfg.servers[0], cfg.probe).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(prober.run(tx, stop_rx, watch::Sender::new(Arc::default()).subscribe()));
    let report = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a report")
        .unwrap();
    let _ = stop.send(true);
    task.await.unwrap();
    report
}

/// The engine labels the probe metric by the failure's typed cause, so the
/// prober must name it: a server that accepts connections and never answers
/// (frozen) is a timeout, a port nobody listens on is refused, a server that
/// hangs up is a closed connection. The kinds are the decision's, unchanged.
#[tokio::test]
async fn failures_carry_a_typed_cause() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let refused_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (hang_up_port, _) = hang_up_listener();

    let cases = [
        (silent_port, FailureCause::Timeout, FailureKind::Ambiguous),
        (refused_port, FailureCause::Refused, FailureKind::Definite),
        (hang_up_port, FailureCause::Closed, FailureKind::Definite),
    ];
    for (port, cause, kind) in cases {
        let report = first_report(port, "200ms").await;
        let f = report.outcome.expect_err("a failure");
        assert_eq!((f.cause, f.kind), (cause, kind), "{f:?}");
        assert_eq!(&*report.server, "a");
    }
}

/// Closing the sender of the incident set must not make the loop spin.
#[tokio::test]
async fn a_dropped_incident_sender_keeps_the_cadence() {
    let (port, _) = hang_up_listener();
    let cfg = config(
        &format!("target = \"pg-a.test\"\nhostaddr = \"127.0.0.1\"\nport = {port}\nsslmode = \"disable\""),
        "interval = \"200ms\"",
    );
    let prober = Prober::new(&cfg.servers[0], cfg.probe).unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let (stop, stop_rx) = watch::channel(false);
    let incident = watch::Sender::new(Arc::new(BTreeSet::<String>::new()));
    let task = tokio::spawn(prober.run(tx, stop_rx, incident.subscribe()));
    drop(incident);
    let got = collect(&mut rx, MS * 700).await;
    assert!(
        (3..=5).contains(&got.len()),
        "{} probes in 700ms at a 200ms interval",
        got.len()
    );
    let _ = stop.send(true);
    task.await.unwrap();
}

/// A real primary (TLS verify-full, SCRAM) and a config whose server `a` is
/// it, probed with `application_name = app` and the `probe` timing lines;
/// the directory holds the password file (the caller removes it).
async fn real_primary(app: &str, probe: &str) -> (testbed::PgPair, std::path::PathBuf, Config) {
    use testbed::{PairOptions, PgBinaries, PgPair};
    let pair =
        tokio::task::spawn_blocking(|| PgPair::start(&PgBinaries::locate().unwrap(), PairOptions::default()).unwrap())
            .await
            .unwrap();
    let p = &pair.primary;
    let dir = std::env::temp_dir().join(format!(
        "dns-sidecar-probe-test-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::File::create(&pw)
        .unwrap()
        .write_all(pair.password.as_bytes())
        .unwrap();
    let cfg = config(
        &format!(
            "target = \"{}\"\nhostaddr = \"{}\"\nport = {}\napplication_name = \"{app}\"",
            p.name, p.ip, p.port
        ),
        &format!(
            "{probe}\nsslmode = \"verify-full\"\nsslrootcert = \"{}\"\npassword_file = \"{}\"",
            pair.ca_cert.display(),
            pw.display()
        ),
    );
    (pair, dir, cfg)
}

/// The fast cadence of an incident runs on the kept connection: a server
/// that is still connected (a replica about to be promoted) is probed every
/// `incident_interval` without a new connection per probe; and a session
/// ended once during the incident is replaced at once (the connect backoff
/// holds back only connects that keep failing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_cadence_reuses_the_kept_connection() {
    let (pair, dir, cfg) = real_primary("probe-incident-test", "interval = \"1s\"\nincident_interval = \"10ms\"").await;
    let prober = Prober::new(&cfg.servers[0], cfg.probe).unwrap();
    let (tx, mut rx) = mpsc::channel(4096);
    let (stop, stop_rx) = watch::channel(false);
    let incident = watch::Sender::new(Arc::new(BTreeSet::<String>::new()));
    let task = tokio::spawn(prober.run(tx, stop_rx, incident.subscribe()));
    let first = rx.recv().await.unwrap();
    assert!(first.outcome.is_ok(), "{first:?}");
    assert_eq!(first.connect, Some(Ok(())));

    incident.send_replace(Arc::new(BTreeSet::from(["a".to_string()])));
    let fast = collect(&mut rx, MS * 500).await;
    eprintln!(
        "MEASURED incident cadence on a kept connection: {} probes in 500 ms",
        fast.len()
    );
    assert!(
        fast.len() >= 15,
        "only {} probes in 500ms at a 10ms cadence",
        fast.len()
    );
    assert!(
        fast.len() <= 51,
        "{} probes in 500ms: faster than the cadence",
        fast.len()
    );
    for r in &fast {
        assert!(r.outcome.is_ok(), "{r:?}");
        assert_eq!(r.connect, None, "a new connection during the incident: {r:?}");
    }

    // The session ended by someone else: replaced within the next probe,
    // which succeeds; the cadence goes on.
    let p = pair.primary.clone();
    let killed = tokio::task::spawn_blocking(move || {
        (0..50)
            .map(|_| {
                std::thread::sleep(MS * 7);
                p.terminate_idle_backends("probe-incident-test").unwrap()
            })
            .find(|&n| n > 0)
    })
    .await
    .unwrap();
    assert!(killed.is_some(), "the probe session was never idle to be killed");
    let after = collect(&mut rx, MS * 300).await;
    let _ = std::fs::remove_dir_all(&dir);
    let failures: Vec<_> = after.iter().filter_map(|o| o.outcome.as_ref().err()).collect();
    assert!(failures.is_empty(), "{failures:?}");
    let connects: Vec<_> = after.iter().filter_map(|o| o.connect).collect();
    assert_eq!(connects, [Ok(())], "one new connection after the kill");
    assert!(after.len() >= 8, "only {} probes in 300ms after the kill", after.len());
    let _ = stop.send(true);
    task.await.unwrap();
}

/// A real primary that kills the probe's session over and over: the
/// server is healthy, so every observation must be a success (the prober
/// retries on a new connection within the deadline). A server that really
/// goes away is still reported, as a definite failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_probe_session_is_not_a_failure() {
    let (pair, dir, cfg) = real_primary("probe-retry-test", "interval = \"20ms\"").await;
    let p = pair.primary.clone();
    let prober = Prober::new(&cfg.servers[0], cfg.probe).unwrap();
    let (tx, mut rx) = mpsc::channel(4096);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(prober.run(tx, stop_rx, watch::Sender::new(Arc::default()).subscribe()));
    let first = rx.recv().await.unwrap();
    assert!(first.outcome.is_ok(), "{first:?}");

    // Kill the session at various points of the 20ms cycle until 15 kills
    // have landed (a kill between two sessions finds none; under load that
    // happens more often), within a bounded number of attempts. Only
    // established sessions idle between probes are ended: killing the
    // retry's brand-new connection too would be a second fault within one
    // probe, which a loaded machine (slow connection set-up) otherwise makes
    // likely. (A probe query takes ~0.03 ms of the 20 ms cycle, so a kill
    // almost always lands between queries anyway.)
    let killer = p.clone();
    let killed = tokio::task::spawn_blocking(move || {
        let mut killed = 0;
        for i in 0..120 {
            killed += killer.terminate_idle_backends("probe-retry-test").unwrap();
            if killed >= 15 {
                break;
            }
            std::thread::sleep(MS * (37 + 3 * (i % 15)));
        }
        killed
    })
    .await
    .unwrap();
    let obs = collect(&mut rx, MS * 100).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        killed >= 10,
        "only {killed} probe sessions were terminated; the test proves nothing"
    );
    assert!(obs.len() >= 20, "{} observations", obs.len());
    let failures: Vec<_> = obs.iter().filter_map(|o| o.outcome.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "a healthy server was reported failing: {failures:?}"
    );
    let fresh = obs
        .iter()
        .filter(|o| o.outcome.as_ref().is_ok_and(|s| s.fresh_connection))
        .count();
    assert!(
        fresh >= killed as usize / 2,
        "{fresh} fresh connections for {killed} killed sessions"
    );

    // A crash is still a definite failure: the retry is refused (or told the
    // server is shutting down). A retry that races the shutdown and sees its
    // new session closed is ambiguous; the next probe is refused.
    tokio::task::spawn_blocking(move || p.stop_immediate())
        .await
        .unwrap()
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let o = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an observation")
            .unwrap();
        if let Err(f) = o.outcome {
            if f.kind == FailureKind::Definite {
                break;
            }
            seen.push(f);
            assert!(
                seen.len() <= 1,
                "more than one ambiguous failure after a crash: {seen:?}"
            );
        }
    }
    let _ = stop.send(true);
    task.await.unwrap();
}

#[test]
fn connect_backoff_doubles_from_the_incident_interval_up_to_the_cap() {
    let base = MS * 10;
    let waits: Vec<_> = (1..=10).map(|n| ConnectBackoff::delay(base, n)).collect();
    assert_eq!(
        waits,
        [10, 20, 40, 80, 160, 320, 640, 1280, 2000, 2000].map(|ms| MS * ms)
    );
    assert_eq!(ConnectBackoff::delay(base, u32::MAX), backoff::CAP, "no overflow");
    assert_eq!(ConnectBackoff::delay(MS * 5000, 1), backoff::CAP, "never above the cap");

    let t0 = Instant::now();
    let mut b = ConnectBackoff::default();
    assert_eq!(b.not_before(), None, "the first connect is never held back");
    // The first failure waits at most the incident interval (no cadence is
    // faster), counted from the start of the failed attempt.
    b.failed(t0, base, 1.0);
    assert_eq!(b.not_before(), Some(t0 + base));
    b.failed(t0 + MS * 500, base, 1.0);
    assert_eq!(b.not_before(), Some(t0 + MS * 520));
    // Jitter only shortens a wait, by at most a quarter.
    b.failed(t0 + MS * 600, base, *backoff::JITTER.start());
    assert_eq!(b.not_before(), Some(t0 + MS * 630));
    for _ in 0..20 {
        let j = backoff::draw_jitter();
        assert!(backoff::JITTER.contains(&j), "{j}");
    }
    // A success starts over.
    b.succeeded();
    assert_eq!((b.failures(), b.not_before()), (0, None));
    b.failed(t0 + MS * 700, base, 1.0);
    assert_eq!(b.not_before(), Some(t0 + MS * 710));
}

/// A prober of a server on `port` that is in the incident set from the
/// start; returns its reports over `window` (plain TCP, no TLS).
async fn reports_during_an_incident(port: u16, window: Duration) -> Vec<ProbeReport> {
    let cfg = config(
        &format!("target = \"pg-a.test\"\nhostaddr = \"127.0.0.1\"\nport = {port}\nsslmode = \"disable\""),
        "interval = \"100ms\"\nincident_interval = \"10ms\"\ndeadline = \"500ms\"",
    );
    let prober = Prober::new(&cfg.servers[0], cfg.probe).unwrap();
    let (tx, mut rx) = mpsc::channel(100_000);
    let (stop, stop_rx) = watch::channel(false);
    let incident = watch::Sender::new(Arc::new(BTreeSet::from(["a".to_string()])));
    let task = tokio::spawn(prober.run(tx, stop_rx, incident.subscribe()));
    let got = collect(&mut rx, window).await;
    let _ = stop.send(true);
    task.await.unwrap();
    got
}

/// The storm of issue 15: during an incident a server that hangs up on
/// every connection (or refuses them) got a new connection every ~11 ms
/// (892 in 10 s). With the connect backoff: 10, 20, 40, ... ms apart up to
/// ~2 s, so ~8 attempts in the first 1.3 s and then one every 1.5-2 s; and
/// the attempts never stop (the server's recovery is still seen).
#[tokio::test]
async fn a_failing_server_is_not_stormed_during_an_incident() {
    let (hang_up_port, accepted) = hang_up_listener();
    let refused_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let window = Duration::from_secs(6);
    for (port, cause) in [
        (hang_up_port, FailureCause::Closed),
        (refused_port, FailureCause::Refused),
    ] {
        let t0 = Instant::now();
        let got = reports_during_an_incident(port, window).await;
        // Every probe connected (no kept connection to use) and failed.
        for r in &got {
            assert_eq!(r.connect, Some(Err(cause)), "{r:?}");
        }
        let late = got.iter().filter(|r| r.at >= t0 + Duration::from_secs(3)).count();
        eprintln!(
            "MEASURED connection attempts during an incident, server {cause:?}: {} in {window:?}, {late} in the last 3 s",
            got.len()
        );
        // Without jitter 10 attempts by 5.3 s; each jittered wait is at
        // least 3/4 of its nominal value: at most 12 in 6 s. (A loaded
        // machine only makes fewer.)
        assert!(
            got.len() <= 12,
            "{} connection attempts in {window:?} at a failing server: not backed off",
            got.len()
        );
        // Still trying: ~1 attempt per 1.5-2 s once the backoff is capped.
        assert!((1..=2).contains(&late), "{late} attempts in the last 3 s");
        assert!(got.len() >= 6, "only {} attempts in {window:?}", got.len());
        if port == hang_up_port {
            assert_eq!(accepted.load(Ordering::SeqCst), got.len(), "one connection per probe");
        }
    }
}
