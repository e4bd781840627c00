//! Issue 15, item 6: the fork of an old primary restored from its own WAL.
//!
//! A is the primary (timeline 1), B its streaming replica. B is promoted
//! (timeline 2) and A stops. A is then restored from its own data directory
//! (`recovery.signal`, no `primary_conninfo`): it replays its own WAL and
//! promotes itself onto timeline 2 as well, B's timeline *number* with A's
//! history. The writer alias must never answer A (README: "Fencing", F4
//! before F5), whether B is still alive when the fork appears or already
//! dead. A watcher asks the sidecar (DNS every 2 ms, `/status` every 20 ms)
//! throughout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dns_sidecar::status::Status;
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

use crate::support::env::{Env, Options, INTERVAL};
use crate::support::{dig, raw};

const PROD: &str = "prod.db.test.";
const A: &str = "pg-a.test.";
const B: &str = "pg-b.test.";

/// A pair, with `probe` lines, and a probe deadline of 2 s: these tests need
/// the sidecar to see the fork, which on a starved machine can take a fresh
/// connection (TLS, SCRAM) longer than the usual 500 ms, and measure no
/// failure detection.
fn options(probe: &str) -> Options {
    Options {
        probe: probe.into(),
        deadline: Some(Duration::from_secs(2)),
        ..Default::default()
    }
}

/// Runs a blocking testbed operation (pg_ctl, psql) off the runtime.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// What the watcher saw while it ran.
#[derive(Debug, Default)]
struct Seen {
    dns_polls: u64,
    /// Queries with no reply within 500 ms (a loaded machine): not answers.
    dns_timeouts: u64,
    status_polls: u64,
    /// DNS answers for `prod` other than B's CNAME (the CNAME target, or the
    /// response code when there is none), with when they came, from the
    /// watcher's start.
    not_b: Vec<(Duration, String)>,
    /// `/status` documents in which `prod` answered server `a`.
    status_a: Vec<(Duration, String)>,
}

/// Polls the sidecar on its own thread until stopped: the DNS answer for
/// `prod` every 2 ms, `/status` every 20 ms.
struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(env: &Env) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let dns = env.dns;
        let admin = env.sidecar().admin.expect("an admin listener").to_string();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (flag, out) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let client = dns_sidecar::client::Client::new(&admin, None);
            let start = Instant::now();
            let mut last_status = Instant::now() - Duration::from_secs(1);
            while !flag.load(Ordering::Relaxed) {
                let got = answer(dns);
                let mut seen = out.lock().unwrap_or_else(|e| e.into_inner());
                seen.dns_polls += 1;
                match got {
                    None => seen.dns_timeouts += 1,
                    Some(got) if got == B => {}
                    Some(got) => seen.not_b.push((start.elapsed(), got)),
                }
                drop(seen);
                if last_status.elapsed() >= Duration::from_millis(20) {
                    last_status = Instant::now();
                    if let Ok((status, _)) = client.status() {
                        let mut seen = out.lock().unwrap_or_else(|e| e.into_inner());
                        seen.status_polls += 1;
                        let prod = status.aliases.iter().find(|a| a.name == PROD);
                        if let Some(p) = prod.filter(|p| p.server.as_deref() == Some("a")) {
                            seen.status_a.push((start.elapsed(), format!("{p:?}")));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Watcher {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Asserts that `prod` never answered a so far (see [`check`]).
    fn assert_never_a(&self, b_alive_until: Duration) {
        check(&self.seen.lock().unwrap(), b_alive_until);
    }

    /// Stops the watcher; the final check, and proof that it kept polling.
    fn finish(mut self, b_alive_until: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the watcher panicked");
        }
        let seen = self.seen.lock().unwrap();
        check(&seen, b_alive_until);
        assert!(
            seen.dns_polls > 100 && seen.status_polls > 10,
            "the watcher ran: {seen:?}"
        );
        eprintln!(
            "fork watcher: {} DNS polls ({} without a reply within 500 ms), {} /status polls, answers other than b: \
            {:?}",
            seen.dns_polls, seen.dns_timeouts, seen.status_polls, seen.not_b
        );
    }
}

impl Drop for Watcher {
    /// Stops polling when a test fails before [`Watcher::finish`].
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What `dns` answers for `prod`: the CNAME target, else the response code;
/// `None` when no reply came within 500 ms.
fn answer(dns: std::net::SocketAddr) -> Option<String> {
    let query = raw::query(PROD, RecordType::CNAME);
    let reply = raw::exchange(dns, &query, Duration::from_millis(500))?;
    let m = Message::from_vec(&reply).expect("a well-formed reply");
    let cname = m.answers.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.to_lowercase().to_ascii()),
        _ => None,
    });
    Some(cname.unwrap_or_else(|| format!("{:?}", m.metadata.response_code)))
}

/// `prod` never answered a (DNS and `/status`), and answered b every time
/// while b was alive (`b_alive_until`, from the watcher's start).
fn check(seen: &Seen, b_alive_until: Duration) {
    assert!(
        seen.not_b.iter().all(|(_, got)| got != A),
        "prod answered the fork: {:?}",
        seen.not_b
    );
    assert!(
        seen.status_a.is_empty(),
        "/status said prod answers a: {:?}",
        seen.status_a
    );
    let early: Vec<_> = seen.not_b.iter().filter(|(t, _)| *t < b_alive_until).collect();
    assert!(
        early.is_empty(),
        "prod stopped answering b while b was alive: {early:?}"
    );
}

/// Waits until the sidecar sees the fork as it is: a up, writable, on
/// timeline 2.
async fn wait_fork_seen(env: &Env) {
    let start = Instant::now();
    loop {
        let status = env.status();
        let a = status.servers.iter().find(|s| s.server == "a").expect("server a");
        if a.up && a.writable == Some(true) && a.timeline == Some(2) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sidecar did not see the fork: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `prod`'s fence on a is the same-timeline one (README F4); returns its
/// `holding` flag.
fn same_timeline_fence(env: &Env) -> bool {
    let status = env.status();
    let f = fence(&status, "a").unwrap_or_else(|| panic!("a is fenced: {:?}", status.aliases));
    assert_eq!(f.kind, "same-timeline", "{f:?}");
    assert_eq!(f.timeline, Some(2), "{f:?}");
    f.holding
}

fn fence<'a>(status: &'a Status, server: &str) -> Option<&'a dns_sidecar::status::FenceStatus> {
    let prod = status.aliases.iter().find(|a| a.name == PROD)?;
    prod.fences.iter().find(|f| f.server == server)
}

/// Restores the stopped A from its own WAL; it promotes itself onto timeline
/// 2, the timeline B holds.
async fn fork_a(env: &Env) {
    let a = env.pair().primary.clone();
    let tl = blocking(move || a.start_restored_from_own_wal())
        .await
        .expect("restore a from its own WAL");
    assert_eq!(tl, 2, "the fork lands on B's timeline number");
}

/// What the sidecar recorded about a (fences set and lifted, a seen in
/// recovery or not), for whoever reads a failure or a run's output.
fn report(env: &Env, test: &str) {
    let history: Vec<String> = (env.status().history.iter())
        .filter(|h| h.server.as_deref() == Some("a"))
        .map(|h| format!("{}: {}", h.kind, h.message))
        .collect();
    eprintln!("{test}: a's history: {history:#?}");
}

/// B alive when the fork appears (a DR drill: B promoted while A runs, then
/// A stopped and restored by mistake); B dies afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_beside_the_live_new_primary_is_never_answered() {
    let env = Env::start_opts(options("")).await;
    env.wait_for_target(PROD, A, Duration::from_secs(10)).await;
    let b = env.pair().replica.clone();
    blocking(move || b.promote(true)).await.expect("promote b");
    env.wait_for_target(PROD, B, Duration::from_secs(10)).await;
    let watcher = Watcher::start(&env);
    let started = Instant::now();
    let a = env.pair().primary.clone();
    blocking(move || a.stop_immediate()).await.expect("stop a");
    tokio::time::sleep(INTERVAL * 3).await;
    fork_a(&env).await;
    wait_fork_seen(&env).await;
    tokio::time::sleep(INTERVAL * 10).await;
    watcher.assert_never_a(Duration::MAX);
    // Checked once the answers have been: what /status said meanwhile.
    let alive_fence = fence(&env.status(), "a").map(|f| (f.kind.clone(), f.timeline, f.holding));
    assert_eq!(
        env.app_connect("prod.db.test").await.unwrap(),
        "127.0.0.3".parse::<std::net::IpAddr>().unwrap(),
        "applications write to b"
    );
    // Then b dies: keep-last keeps it, strict fails, neither answers a.
    let b_alive_until = started.elapsed();
    let b = env.pair().replica.clone();
    blocking(move || b.stop_immediate()).await.expect("stop b");
    tokio::time::sleep(INTERVAL * 10).await;
    report(&env, "b alive");
    watcher.finish(b_alive_until);
    assert_eq!(dig(env.dns, "strict.db.test", "A", &[]).status, "SERVFAIL");
    assert_eq!(
        alive_fence,
        Some(("same-timeline".to_string(), Some(2), false)),
        "while b was alive and answered, the fence held nothing back"
    );
    assert!(same_timeline_fence(&env), "the fence is what keeps prod off a now");
}

/// B already dead when the fork appears (A killed, B promoted, B killed, A
/// restored), with `rise = 1`: the fork is up at its first good probe, the
/// case in which the "promoted again" lift used to let the alias move to it
/// when no probe caught its short recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_after_the_new_primary_died_is_never_answered() {
    let env = Env::start_opts(options("rise = 1")).await;
    env.wait_for_target(PROD, A, Duration::from_secs(10)).await;
    let a = env.pair().primary.clone();
    blocking(move || a.stop_immediate()).await.expect("stop a");
    let b = env.pair().replica.clone();
    blocking(move || b.promote(true)).await.expect("promote b");
    env.wait_for_target(PROD, B, Duration::from_secs(10)).await;
    let watcher = Watcher::start(&env);
    let b = env.pair().replica.clone();
    blocking(move || b.stop_immediate()).await.expect("stop b");
    tokio::time::sleep(INTERVAL * 3).await;
    fork_a(&env).await;
    wait_fork_seen(&env).await;
    tokio::time::sleep(INTERVAL * 10).await;
    watcher.assert_never_a(Duration::MAX);
    assert_eq!(dig(env.dns, "strict.db.test", "A", &[]).status, "SERVFAIL");
    assert!(
        env.app_connect("prod.db.test").await.is_err(),
        "no application reaches a"
    );
    report(&env, "b dead");
    // keep-last keeps answering the dead b the whole time.
    watcher.finish(Duration::MAX);
    assert!(same_timeline_fence(&env), "the fence is what keeps prod off a");
}
