//! A supervised process (README: Operations): a long-lived task that dies
//! stops the process with exit status 3 and an ERROR line naming it, with
//! `/healthz` failing meanwhile; a state file with absurd values is reported
//! with the field named, ignored and replaced, never a crash.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{PairOptions, PgBinaries, PgPair};

use crate::logs::{free_port, wait_until};
use crate::support::env::{config_text, tempdir, upstream};
use crate::support::raw;

/// `GET /healthz` over a fresh connection: the status code, and the body;
/// `None` when nothing answers (refused, reset, or no answer within 1 s).
fn healthz(admin: SocketAddr) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((code, body))
}

/// A server `a` on a loopback port where nothing listens (its probes fail
/// at once, so the engine wakes every probe interval), one alias, the admin
/// listener on `admin`.
fn config_without_postgres(dir: &Path, dns: SocketAddr, admin: SocketAddr) -> String {
    let pw = dir.join("pw");
    std::fs::write(&pw, "unused").unwrap();
    let closed = free_port();
    config_text(
        None,
        ([127, 0, 0, 1], free_port()).into(),
        &pw,
        &format!(
            "sslmode = \"disable\"\n\n[admin]\nlisten = \"{admin}\"\n\n[servers.a]\ntarget = \"pg-a.test\"\nhostaddr = \
            \"127.0.0.1\"\nport = {closed}\n\n[[aliases]]\nname = \"prod.db.test\"\nservers = [\"a\"]\n"
        ),
    )
    .replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"{dns}\"]"))
}

/// The real binary, killed on drop (a failed assertion leaves no process behind).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path, log: &Path, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"));
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

fn lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The engine panics (a failpoint, compiled only into test builds, stands
/// for the start-up panic of issue 15): the process says which task died at
/// ERROR, `/healthz` is never 200 again, and it exits with status 3 on its
/// own, so that systemd or the kubelet restarts it.
#[test]
fn a_task_that_dies_stops_the_process_with_status_3_and_healthz_failing() {
    let dir = tempdir::Dir::new();
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config_without_postgres(dir.path(), dns, admin)).unwrap();
    let log = dir.path().join("log");
    let trigger = dir.path().join("kill-the-engine");
    let spec = format!("engine:{}", trigger.display());
    let mut proc = spawn(&cfg, &log, &[("DNS_SIDECAR_FAILPOINT", &spec)]);
    let child = &mut proc.0;
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("/healthz answers 200", Duration::from_secs(10), || {
        healthz(admin).is_some_and(|(c, _)| c == 200)
    });
    std::fs::write(&trigger, "").unwrap();
    // Every answer from now on, until the process is gone. The failpoint
    // removes the file just before the panic: a request sent well after that
    // (the report follows the panic within microseconds; 250 ms of margin)
    // must not get 200.
    let start = Instant::now();
    let mut seen: Vec<Option<u16>> = Vec::new();
    let mut died_at: Option<Instant> = None;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still running 20 s after the engine died; /healthz: {seen:?}; log:\n{}",
            dump()
        );
        if died_at.is_none() && !trigger.exists() {
            died_at = Some(Instant::now());
        }
        let after_death = died_at.is_some_and(|t| t.elapsed() > Duration::from_millis(250));
        let h = healthz(admin);
        if after_death {
            assert!(
                !matches!(h, Some((200, _))),
                "/healthz 200 after the engine died: {seen:?}"
            );
        }
        if let Some((503, body)) = &h {
            // The first death (a prober whose engine is gone may be reported
            // before the engine's panic), then the panic.
            assert!(body.contains("task `"), "{body}");
        }
        seen.push(h.map(|(c, _)| c));
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(3), "exit status; log:\n{}", dump());
    let count = |c: Option<u16>| seen.iter().filter(|s| **s == c).count();
    eprintln!(
        "MEASURED /healthz after the trigger, until the exit: {} x 200, {} x 503, {} x no answer",
        count(Some(200)),
        count(Some(503)),
        count(None)
    );
    // Once it stopped being 200 (the death), it never was again.
    let first_failure = seen.iter().position(|c| *c != Some(200)).expect("a failing answer");
    assert!(
        seen[first_failure..].iter().all(|c| *c != Some(200)),
        "/healthz answered 200 after failing: {seen:?}"
    );
    let l = lines(&log);
    let died: Vec<&Value> = l
        .iter()
        .filter(|v| v["level"] == "ERROR" && v["task"] == "engine")
        .collect();
    assert!(
        died.iter()
            .any(|v| v["error"].as_str().is_some_and(|e| e.contains("panicked"))),
        "no ERROR line naming the engine's panic; log:\n{}",
        dump()
    );
}

/// Issue 15's reproduction: a state file whose `since` is absurdly large
/// (valid JSON). The sidecar starts, names the file and the field in an
/// ERROR line, follows the primary once probes come in, and replaces the
/// file with a sane one.
#[test]
fn an_absurd_since_in_the_state_file_is_reported_ignored_and_replaced() {
    let pair = PgPair::start(&PgBinaries::locate().unwrap(), PairOptions::default()).unwrap();
    let up = upstream();
    let dir = tempdir::Dir::new();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, &pair.password).unwrap();
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let text = config_text(Some(&pair), up.addr, &pw, "[admin]\nenabled = false\n")
        .replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"{dns}\"]"));
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let state = dir.path().join("sidecar-state.json");
    std::fs::write(
        &state,
        "{\"format\": \"dns-sidecar-state\", \"version\": 1, \"written_at\": 1700000000, \"state\": {\"aliases\": \
        {\"prod.db.test.\": {\"target\": \"b\", \"since\": 1e19, \"timeline_floor\": 1, \"pinned\": null}}}}",
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut proc = spawn(&cfg, &log, &[]);
    let child = &mut proc.0;
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the alias answers the primary", Duration::from_secs(15), || {
        raw::cname_of(dns, "prod.db.test.").as_deref() == Some("pg-a.test.")
    });
    let l = lines(&log);
    let reported = l.iter().any(|v| {
        v["level"] == "ERROR"
            && v["error"].as_str().is_some_and(|e| {
                e.contains(&state.display().to_string())
                    && e.contains("aliases.\"prod.db.test.\".since = 10000000000000000000 is out of range")
            })
    });
    assert!(reported, "no located error; log:\n{}", dump());
    wait_until("the state file is replaced", Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&state).unwrap_or_default();
        t.contains("\"target\": \"a\"") && !t.contains("1e19")
    });
    assert!(child.try_wait().unwrap().is_none(), "still running; log:\n{}", dump());
    crate::support::signal(child, libc::SIGTERM);
    assert!(child.wait().unwrap().success(), "log:\n{}", dump());
}

/// The library's side (tests and embedders): [`dns_sidecar::Running::died`]
/// resolves with the name of a task that panicked, and `/healthz` answers
/// 503 naming it until the sidecar is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_reports_a_panicking_task_and_healthz_fails_until_stopped() {
    let dir = tempdir::Dir::new();
    let text = config_without_postgres(dir.path(), ([127, 0, 0, 1], 0).into(), ([127, 0, 0, 1], 0).into());
    let config = dns_sidecar::config::Config::from_toml(&dir.path().join("t.toml"), &text).unwrap();
    let listeners = dns_sidecar::Listeners::bind(&config).unwrap();
    let mut running = dns_sidecar::start(config, listeners).unwrap();
    let admin = running.admin_addr.unwrap();
    let get = move || tokio::task::spawn_blocking(move || healthz(admin));
    assert_eq!(get().await.unwrap().map(|(c, _)| c), Some(200));
    let quiet = tokio::time::timeout(Duration::from_millis(300), running.died()).await;
    assert!(quiet.is_err(), "no death while everything runs: {quiet:?}");
    tokio::spawn(running.supervisor().watch("test task", async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        panic!("injected");
    }));
    let d = tokio::time::timeout(Duration::from_secs(5), running.died())
        .await
        .expect("the death is reported");
    assert_eq!(d.task, "test task");
    assert_eq!(d.to_string(), "task `test task` panicked: injected");
    let (code, body) = get().await.unwrap().expect("the admin listener still answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("test task"), "{body}");
    running.stop().await;
    assert!(get().await.unwrap().is_none(), "stopped");
}
