//! Reloads keep identity: a server renamed in the config (same host and
//! port) is the same server, so its answer, fences and probe connection stay;
//! a CA file replaced in place is re-read by a reload whose config text did
//! not change; a reload that drops a fence says so and rewrites the state
//! file at once. Real PostgreSQL pairs, the real binary and SIGHUP where the
//! signal itself matters.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dns_sidecar::status::Status;
use testbed::{PairOptions, PgBinaries, PgPair};

use crate::support::env::{config_text, tempdir, upstream, Env, Options};
use crate::support::{raw, signal};

fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of the sidecar's probe sessions on `c`.
fn probe_backends(c: &testbed::Cluster) -> String {
    c.sql("SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE application_name = 'dns-sidecar'")
        .unwrap()
}

/// The real binary on a config file, killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
    config: PathBuf,
    admin: SocketAddr,
}

impl Daemon {
    fn start(config: &Path, admin: SocketAddr) -> Daemon {
        let log = config.with_file_name("log");
        let child = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            log,
            config: config.to_path_buf(),
            admin,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes `text` as the config and sends SIGHUP; returns once the reload
    /// is logged as done.
    fn reload(&self, text: &str) {
        let before = self.log().matches("configuration reloaded").count();
        std::fs::write(&self.config, text).unwrap();
        signal(&self.child, libc::SIGHUP);
        wait_until("the reload is done", Duration::from_secs(10), || {
            self.log().matches("configuration reloaded").count() > before
        });
    }

    fn status(&self) -> Status {
        dns_sidecar::client::Client::new(&self.admin.to_string(), None)
            .status()
            .expect("GET /status")
            .0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(server, kind)` of every fence `/status` shows on `alias`.
fn fences(status: &Status, alias: &str) -> Vec<(String, String)> {
    status
        .aliases
        .iter()
        .find(|a| a.name.trim_end_matches('.') == alias)
        .unwrap_or_else(|| panic!("no alias {alias} in /status"))
        .fences
        .iter()
        .map(|f| (f.server.clone(), f.kind.clone()))
        .collect()
}

/// The fenced server ids of `alias` in the state file on disk.
fn fenced_on_disk(path: &Path, alias: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return vec!["<unreadable>".into()];
    };
    let mut out = Vec::new();
    let aliases = v.pointer("/aliases").or_else(|| v.pointer("/state/aliases"));
    if let Some(a) = aliases.and_then(|a| a.get(format!("{alias}.")).or_else(|| a.get(alias))) {
        for f in a["fences"].as_array().into_iter().flatten() {
            out.push(f["server"].as_str().unwrap_or_default().to_string());
        }
    }
    out
}

/// An alias and what it answered instead (None: no CNAME, e.g. SERVFAIL).
type Wrong = (String, Option<String>);

/// Queries `aliases` every 2 ms on a thread until dropped; keeps every answer
/// that is not `want` (None: no CNAME, e.g. SERVFAIL).
struct Watch {
    stop: Arc<AtomicBool>,
    wrong: Arc<Mutex<Vec<Wrong>>>,
    queries: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(dns: SocketAddr, aliases: &'static [&'static str], want: &'static str) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let wrong = Arc::new(Mutex::new(Vec::new()));
        let queries = Arc::new(Mutex::new(0));
        let thread = {
            let (stop, wrong, queries) = (stop.clone(), wrong.clone(), queries.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for alias in aliases {
                        let got = raw::cname_of(dns, alias);
                        if got.as_deref() != Some(want) {
                            wrong.lock().unwrap().push((alias.to_string(), got));
                        }
                        *queries.lock().unwrap() += 1;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Watch {
            stop,
            wrong,
            queries,
            thread: Some(thread),
        }
    }

    /// Stops; returns (queries sent, wrong answers).
    fn finish(mut self) -> (u64, Vec<Wrong>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let n = *self.queries.lock().unwrap();
        let w = self.wrong.lock().unwrap().clone();
        (n, w)
    }
}

/// Renames `[servers.a]`/`[servers.b]` to `a`/`b` and every alias's list.
fn rename(base: &str, a: &str, b: &str) -> String {
    base.replace("[servers.a]", &format!("[servers.{a}]"))
        .replace("[servers.b]", &format!("[servers.{b}]"))
        .replace("servers = [\"a\", \"b\"]", &format!("servers = [\"{a}\", \"{b}\"]"))
}

/// A split brain fences `a` (b promoted while a runs). Then, with the alias
/// queried every 2 ms: both servers are renamed (SIGHUP), and renamed back:
/// never a SERVFAIL nor another target, the fence follows the renamed server
/// in `/status` and in the state file, and the probe connections are the
/// same sessions. Then a reload takes the fenced server out of the alias: the
/// log names the dropped fence and the state file loses it within seconds.
#[test]
fn renames_keep_answers_fences_and_connections_and_a_dropped_fence_is_logged_and_persisted() {
    let pair = PgPair::start(&PgBinaries::locate().unwrap(), PairOptions::default()).unwrap();
    let up = upstream();
    let dir = tempdir::Dir::new();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, &pair.password).unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let base = config_text(Some(&pair), up.addr, &pw, &format!("[admin]\nlisten = \"{admin}\"\n"))
        .replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"{dns}\"]"))
        .replace("[probe]\n", "[probe]\nfresh_connection_interval = \"1h\"\n");
    let state = pw.with_file_name("sidecar-state.json");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, &base).unwrap();
    let d = Daemon::start(&cfg, admin);
    wait_until("prod answers pg-a", Duration::from_secs(30), || {
        raw::cname_of(dns, "prod.db.test.").as_deref() == Some("pg-a.test.")
    });
    pair.replica.promote(true).unwrap();
    wait_until("prod answers the promoted pg-b", Duration::from_secs(30), || {
        raw::cname_of(dns, "prod.db.test.").as_deref() == Some("pg-b.test.")
    });
    wait_until("a is fenced", Duration::from_secs(10), || {
        fences(&d.status(), "prod.db.test") == [("a".to_string(), "lost-split-brain".to_string())]
    });
    let sessions = (probe_backends(&pair.primary), probe_backends(&pair.replica));
    assert!(!sessions.0.is_empty() && !sessions.1.is_empty(), "{sessions:?}");

    for (a, b) in [("old-a", "new-b"), ("a", "b")] {
        let watch = Watch::start(dns, &["prod.db.test.", "strict.db.test."], "pg-b.test.");
        std::thread::sleep(Duration::from_millis(200));
        d.reload(&rename(&base, a, b));
        std::thread::sleep(Duration::from_millis(500));
        let (queries, wrong) = watch.finish();
        assert!(queries > 100, "only {queries} queries");
        assert!(
            wrong.is_empty(),
            "renaming to {a}/{b}: {} of {queries} answers were not pg-b: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
        let st = d.status();
        assert_eq!(
            fences(&st, "prod.db.test"),
            [(a.to_string(), "lost-split-brain".to_string())],
            "the fence follows the rename"
        );
        let prod = st.aliases.iter().find(|x| x.name.starts_with("prod.")).unwrap();
        assert_eq!(prod.server.as_deref(), Some(b), "{prod:?}");
        wait_until("the state file names the renamed fence", Duration::from_secs(5), || {
            fenced_on_disk(&state, "prod.db.test") == [a]
        });
        assert_eq!(
            (probe_backends(&pair.primary), probe_backends(&pair.replica)),
            sessions,
            "renamed servers keep their probe sessions"
        );
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        wait_until(
            "the kept probers report under the new ids",
            Duration::from_secs(10),
            || {
                let st = d.status();
                [a, b].iter().all(|id| {
                    st.servers
                        .iter()
                        .any(|s| s.server == *id && s.last_success.is_some_and(|t| t > after))
                })
            },
        );
    }
    assert!(d.log().contains("server renamed"), "{}", d.log());

    // Take the fenced server out of prod (it stays configured for the others).
    let dropped = base.replacen("servers = [\"a\", \"b\"]", "servers = [\"b\"]", 1);
    assert_ne!(dropped, base);
    d.reload(&dropped);
    let line = d
        .log()
        .lines()
        .find(|l| l.contains("reload dropped a fence"))
        .unwrap_or_else(|| panic!("no dropped-fence line in:\n{}", d.log()))
        .to_string();
    for part in [
        "prod.db.test",
        "server=\"a\"",
        "lost-split-brain",
        "no longer one of the alias's servers",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
    wait_until("the state file no longer has the fence", Duration::from_secs(5), || {
        fenced_on_disk(&state, "prod.db.test").is_empty()
    });
    assert_eq!(raw::cname_of(dns, "prod.db.test.").as_deref(), Some("pg-b.test."));
}

/// The CA is rotated: the servers present certificates from a new CA. With
/// the old CA file, new probe connections fail verification; once the same
/// file (same path, same config text) holds the new CA, a reload restarts the
/// probers with it and they verify again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_replaced_in_place_is_reread_by_a_reload() {
    let env = Env::start_opts(Options {
        probe: "fresh_connection_interval = \"200ms\"".into(),
        ..Default::default()
    })
    .await;
    env.wait_for_target("prod.db.test.", "pg-a.test.", Duration::from_secs(30))
        .await;
    let ca_file = env.pair().ca_cert.clone();
    let old_ca = std::fs::read(&ca_file).unwrap();
    // Blocking (openssl, psql): off the runtime's workers.
    let pair_dir_ca = tokio::task::block_in_place(|| env.pair().rotate_ca("rotated").unwrap());
    let new_ca = std::fs::read(&pair_dir_ca).unwrap();
    assert_ne!(old_ca, new_ca);
    // The old contents fail: fresh connections (every 200 ms) are refused by
    // verification, so the probes fail and the servers go down.
    let failing = |env: &Env| env.metric("dns_sidecar_probe_connects_total{server=\"a\",result=\"error\"}");
    let before = failing(&env);
    let start = Instant::now();
    while failing(&env) < before + 3.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "old CA: connects kept succeeding"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = env.status().servers.into_iter().find(|s| s.server == "a").unwrap();
    assert!(
        a.last_error.as_deref().is_some_and(|e| e.contains("certificate")),
        "a verification failure: {a:?}"
    );
    // Same path, same config text, new contents; reload.
    std::fs::write(&ca_file, &new_ca).unwrap();
    let ok_before = env.metric("dns_sidecar_probe_connects_total{server=\"a\",result=\"ok\"}");
    env.sidecar().reload(&env.config_text).unwrap();
    // A report of the old prober may still be on its way (at most one).
    let errors_after_reload = failing(&env) + 1.0;
    let start = Instant::now();
    while env.metric("dns_sidecar_probe_connects_total{server=\"a\",result=\"ok\"}") < ok_before + 3.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new CA: connects do not succeed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failing(&env) <= errors_after_reload,
        "connects kept failing after the reload: {errors_after_reload} -> {}",
        failing(&env)
    );
    // (Probe timeouts of a loaded machine are not `error`s; a verification
    // failure would be.)
    let a = env.status().servers.into_iter().find(|s| s.server == "a").unwrap();
    assert!(
        !a.last_error.as_deref().is_some_and(|e| e.contains("certificate")),
        "{a:?}"
    );
}
