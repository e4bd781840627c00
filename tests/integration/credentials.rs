//! Probe passwords from every source, against a real PostgreSQL pair whose
//! probe role's password is rotated (issue 18):
//! * managed identity and workload identity through local stand-ins of the
//!   instance metadata service and the Entra ID token endpoint (same request
//!   and answer shapes, errors included), each of which ALTERs the probe
//!   role's password to every token it issues, with lifetimes of seconds:
//!   the sidecar keeps probing across rotations, bridges an endpoint outage
//!   shorter than a token's life, reports a refused token clearly, and never
//!   logs a token;
//! * `password_file` and `password_command` rotated without a restart.
//!
//! Every test points the endpoints at loopback stand-ins through the
//! overrides; the real metadata address is never contacted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use testbed::{Cluster, PairOptions, PgBinaries, PgPair};

use crate::logs::{free_port, wait_until};
use crate::support::env::{render, tempdir};
use crate::support::raw;

/// What the stand-in answers next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A new token, which becomes the probe role's password first.
    Issue,
    /// 503 with an OAuth error body (an outage).
    Fail,
    /// A new token the server does not accept (the password is not changed).
    Refused,
}

/// Which endpoint the stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// IMDS: lifetimes as strings, `expires_on` too.
    Imds,
    /// Entra ID v2.0 token endpoint: lifetimes as numbers.
    Entra,
}

/// One request as received.
#[derive(Debug, Clone)]
struct Seen {
    /// Request line and headers.
    head: String,
    body: String,
}

struct State {
    mode: Mode,
    seen: Vec<Seen>,
    issued: Vec<String>,
    failed: usize,
}

/// A token endpoint on loopback, one connection at a time.
struct StandIn {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl StandIn {
    /// `pair`: the primary and its standby, whose probe role gets each token.
    fn start(kind: Kind, pair: (Cluster, Cluster), lifetime_s: u64) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Issue,
            seen: Vec::new(),
            issued: Vec::new(),
            failed: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => serve(s, kind, &pair, lifetime_s, &st),
                    Err(_) => sleep(Duration::from_millis(5)),
                }
            }
        });
        StandIn { addr, state, stop }
    }

    fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    fn issued(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

fn serve(mut s: TcpStream, kind: Kind, pair: &(Cluster, Cluster), lifetime_s: u64, state: &Mutex<State>) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    let mode = {
        let mut st = state.lock().unwrap();
        st.seen.push(Seen { head, body });
        st.mode
    };
    let (status, answer) = match mode {
        Mode::Fail => {
            state.lock().unwrap().failed += 1;
            (
                503,
                r#"{"error":"temporarily_unavailable","error_description":"stand-in outage"}"#.to_string(),
            )
        }
        Mode::Issue | Mode::Refused => {
            let n = state.lock().unwrap().issued.len();
            let token = format!("tok{n}x{:016x}", rand_u64());
            if mode == Mode::Issue {
                rotate(pair, &token);
            }
            state.lock().unwrap().issued.push(token.clone());
            let body = match kind {
                Kind::Imds => format!(
                    r#"{{"access_token":"{token}","client_id":"x","expires_in":"{lifetime_s}","expires_on":"{}","ext_expires_in":"{lifetime_s}","not_before":"0","resource":"https://ossrdbms-aad.database.windows.net","token_type":"Bearer"}}"#,
                    unix_now() + lifetime_s
                ),
                Kind::Entra => format!(
                    r#"{{"token_type":"Bearer","expires_in":{lifetime_s},"ext_expires_in":{lifetime_s},"access_token":"{token}"}}"#
                ),
            };
            (200, body)
        }
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = s.write_all(reply.as_bytes());
}

/// Makes `password` the probe role's, on the primary and (replayed) on its
/// standby, before the token is handed out: Entra ID would accept a token
/// everywhere at once.
fn rotate((primary, standby): &(Cluster, Cluster), password: &str) {
    let lsn = primary
        .sql(&format!(
            "ALTER ROLE probe PASSWORD '{password}'; SELECT pg_current_wal_insert_lsn()"
        ))
        .expect("rotating the probe password");
    let start = Instant::now();
    while standby
        .sql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"))
        .expect("standby replay position")
        != "t"
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the standby did not replay the rotation"
        );
        sleep(Duration::from_millis(5));
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn start_pair() -> PgPair {
    let bins = PgBinaries::locate().expect("PostgreSQL server binaries");
    PgPair::start(&bins, PairOptions::default()).expect("starting PostgreSQL servers")
}

/// The real binary (killed on drop), its DNS and admin addresses and its log.
struct Proc {
    child: Child,
    dns: SocketAddr,
    admin: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Runs the sidecar for `pair` with `source` (TOML lines) as [probe]'s
    /// password source, a fresh connection (so a new login) every 300 ms,
    /// and `env` added to its environment.
    fn start(dir: &Path, pair: &PgPair, source: &str, env: &[(&str, String)]) -> Proc {
        let pw = dir.join("unused.pw");
        std::fs::write(&pw, "unused").unwrap();
        let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let upstream: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let text = render(
            Some(pair),
            upstream,
            &pw,
            "fresh_connection_interval = \"300ms\"\n",
            &[],
            &format!("\n[admin]\nlisten = \"{admin}\"\n"),
        );
        let file_line = format!("password_file = \"{}\"\n", pw.display());
        assert!(text.contains(&file_line));
        let text = text
            .replace(&file_line, &format!("{source}\n"))
            .replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"{dns}\"]"));
        let config = dir.join("sidecar.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.join("sidecar.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"));
        cmd.args(["--log", "dns_sidecar=debug", "--log-format", "json", "run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for v in [
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            "AZURE_AUTHORITY_HOST",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "IDENTITY_ENDPOINT",
            "MSI_ENDPOINT",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: cmd.spawn().unwrap(),
            dns,
            admin,
            log,
        }
    }

    fn status(&self) -> Option<dns_sidecar::status::Status> {
        dns_sidecar::client::Client::new(&self.admin.to_string(), None)
            .with_timeout(Duration::from_secs(2))
            .status()
            .ok()
            .map(|(s, _)| s)
    }

    fn metric(&self, sample: &str) -> f64 {
        let text = dns_sidecar::client::Client::new(&self.admin.to_string(), None)
            .get("/metrics")
            .map(|r| r.body)
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for both servers up and the writer alias on the primary.
    fn wait_ready(&self) {
        let start = Instant::now();
        while !(self.all_up() && raw::cname_of(self.dns, "prod.db.test.").as_deref() == Some("pg-a.test.")) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "not ready within 30 s: {:?}\n{}",
                self.status().map(|s| s.servers),
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn all_up(&self) -> bool {
        self.status()
            .is_some_and(|s| s.servers.len() == 2 && s.servers.iter().all(|s| s.up))
    }

    /// For `period`: both servers stay up and the writer alias stays on the primary.
    fn assert_steady(&self, what: &str, period: Duration) {
        let start = Instant::now();
        while start.elapsed() < period {
            let s = self.status().expect("GET /status");
            for srv in &s.servers {
                assert!(
                    srv.up,
                    "{what}: server {} went down: {:?}\n{}",
                    srv.server,
                    srv.last_error,
                    self.log()
                );
            }
            assert_eq!(
                raw::cname_of(self.dns, "prod.db.test.").as_deref(),
                Some("pg-a.test."),
                "{what}: the writer alias moved"
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// No issued token appears anywhere in the log.
    fn assert_no_token_logged(&self, tokens: &[String]) {
        let log = self.log();
        assert!(!log.is_empty());
        for t in tokens {
            assert!(!log.contains(t.as_str()), "token {t} was logged");
        }
    }

    fn count(&self, level: &str, message: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("\"level\":\"{level}\"")) && l.contains(message))
            .count()
    }
}

/// Managed identity: several rotations of 4 s tokens with no server down,
/// an outage of the metadata service shorter than a token's life bridged
/// (one WARN, one INFO), then a refused token reported clearly.
#[test]
fn managed_identity_tokens_rotate_survive_an_outage_and_a_refusal_is_clear() {
    let pair = start_pair();
    let imds = StandIn::start(Kind::Imds, (pair.primary.clone(), pair.replica.clone()), 4);
    let dir = tempdir::Dir::new();
    let p = Proc::start(
        dir.path(),
        &pair,
        "entra_identity = \"managed-identity\"\nentra_client_id = \"mi-client-1\"",
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", format!("http://{}", imds.addr))],
    );
    p.wait_ready();
    // The first probes wait for the first token: no server is reported
    // down at start-up.
    assert_eq!(p.count("WARN", "server down"), 0, "{}", p.log());
    let before = imds.issued().len();
    // Tokens of 4 s are refreshed every ~2 s: at least four rotations, each
    // followed by new logins (a fresh connection every 300 ms).
    p.assert_steady("rotations", Duration::from_secs(9));
    let rotations = imds.issued().len() - before;
    eprintln!("managed identity: {rotations} rotations in 9 s, no server down");
    assert!(rotations >= 3, "only {rotations} rotations in 9 s");
    assert!(p.metric("dns_sidecar_credential_refreshes_total{source=\"managed-identity\",result=\"ok\"}") >= 4.0);
    // An outage (503) shorter than the token's life.
    imds.set(Mode::Fail);
    sleep(Duration::from_millis(1500));
    imds.set(Mode::Issue);
    p.assert_steady("after the outage", Duration::from_secs(4));
    let failed = imds.state.lock().unwrap().failed;
    eprintln!("managed identity: {failed} failed fetches during a 1.5 s outage, no server down");
    assert!(failed >= 1, "the outage was not seen");
    assert_eq!(p.count("WARN", "credential refresh failed"), 1, "{}", p.log());
    assert!(p.log().contains("stand-in outage"));
    assert_eq!(p.count("INFO", "credential refresh recovered"), 1, "{}", p.log());
    // A token the server does not accept.
    imds.set(Mode::Refused);
    let mut last = None;
    wait_until("a clear auth failure in /status", Duration::from_secs(15), || {
        last = p
            .status()
            .and_then(|s| s.servers.iter().find_map(|s| s.last_error.clone()));
        last.as_deref().is_some_and(|e| {
            e.contains("password authentication failed for user \"probe\"")
                && e.contains("(password source: managed identity)")
        })
    });
    // And the log says it too (the WARN of a server going down carries the
    // same message, unless its flap limit holds the line back).
    let start = Instant::now();
    loop {
        let log = p.log();
        let down: Vec<&str> = log.lines().filter(|l| l.contains("server down")).collect();
        if log.lines().any(|l| {
            l.contains("password authentication failed for user") && l.contains("(password source: managed identity)")
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no log line naming the source: {down:#?}"
        );
        sleep(Duration::from_millis(100));
    }
    // The requests: the documented shape.
    let seen = imds.seen();
    for r in &seen {
        assert!(
            r.head.starts_with(
                "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=\
                https%3A%2F%2Fossrdbms-aad.database.windows.net&client_id=mi-client-1 HTTP/1.1\r\n"
            ),
            "{}",
            r.head
        );
        assert!(
            r.head.to_ascii_lowercase().contains("\r\nmetadata: true\r\n"),
            "{}",
            r.head
        );
    }
    p.assert_no_token_logged(&imds.issued());
    let status = serde_json::to_string(&p.status().unwrap()).unwrap();
    for t in imds.issued() {
        assert!(!status.contains(&t), "a token in /status");
    }
}

/// Workload identity: the federated token file is read at every exchange
/// (the kubelet rotates it), the form has the client-credentials fields,
/// and access tokens rotate with no server down.
#[test]
fn workload_identity_exchanges_the_federated_token_and_rotates() {
    let pair = start_pair();
    let entra = StandIn::start(Kind::Entra, (pair.primary.clone(), pair.replica.clone()), 4);
    let dir = tempdir::Dir::new();
    let fed = dir.path().join("azure-identity-token");
    std::fs::write(&fed, "federated-1\n").unwrap();
    let p = Proc::start(
        dir.path(),
        &pair,
        "entra_identity = \"workload-identity\"",
        &[
            ("AZURE_AUTHORITY_HOST", format!("http://{}/", entra.addr)),
            ("AZURE_TENANT_ID", "tenant-1".into()),
            ("AZURE_CLIENT_ID", "wi-client-1".into()),
            ("AZURE_FEDERATED_TOKEN_FILE", fed.display().to_string()),
        ],
    );
    p.wait_ready();
    p.assert_steady("rotations", Duration::from_secs(4));
    std::fs::write(&fed, "federated-2\n").unwrap();
    let before = entra.seen().len();
    p.assert_steady("rotations with a new federated token", Duration::from_secs(5));
    let seen = entra.seen();
    assert!(seen.len() >= before + 2, "{} exchanges", seen.len());
    for (i, r) in seen.iter().enumerate() {
        assert!(
            r.head.starts_with("POST /tenant-1/oauth2/v2.0/token HTTP/1.1\r\n"),
            "{}",
            r.head
        );
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("\r\ncontent-type: application/x-www-form-urlencoded\r\n"),
            "{}",
            r.head
        );
        let mut fields: Vec<&str> = r.body.split('&').collect();
        fields.sort();
        let assertion = if i < before { "federated-1" } else { "federated-2" };
        if i + 1 == before || i == before {
            continue; // the file changed around here
        }
        assert_eq!(
            fields,
            [
                format!("client_assertion={assertion}").as_str(),
                "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer",
                "client_id=wi-client-1",
                "grant_type=client_credentials",
                "scope=https%3A%2F%2Fossrdbms-aad.database.windows.net%2F.default",
            ],
            "request {i}"
        );
    }
    p.assert_no_token_logged(&entra.issued());
}

/// `password_file` (the issue's scenario): the role's password is changed
/// and the file rewritten; the probes recover within seconds, no restart.
#[test]
fn a_rotated_password_file_is_picked_up_without_a_restart() {
    let pair = start_pair();
    let dir = tempdir::Dir::new();
    let file = dir.path().join("probe.pw");
    std::fs::write(&file, format!("{}\n", pair.password)).unwrap();
    let p = Proc::start(
        dir.path(),
        &pair,
        &format!("password_file = \"{}\"", file.display()),
        &[],
    );
    p.wait_ready();
    for round in 1..=2 {
        let new = format!("rotated-{round}-{:x}", rand_u64());
        pair.primary.sql(&format!("ALTER ROLE probe PASSWORD '{new}'")).unwrap();
        // A Kubernetes Secret volume: a new file, swapped in by rename.
        let tmp = dir.path().join("probe.pw.tmp");
        std::fs::write(&tmp, format!("{new}\n")).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let t0 = Instant::now();
        let connects = p.metric("dns_sidecar_probe_connects_total{server=\"a\",result=\"ok\"}");
        wait_until("new logins with the new password", Duration::from_secs(10), || {
            p.metric("dns_sidecar_probe_connects_total{server=\"a\",result=\"ok\"}") >= connects + 3.0 && p.all_up()
        });
        eprintln!("round {round}: new logins {:?} after the rotation", t0.elapsed());
        p.assert_no_token_logged(&[new]);
    }
    p.assert_steady("after the rotations", Duration::from_secs(2));
}

/// `password_command`: rerun when the server refuses the password, so an
/// externally rotated secret is picked up without a restart.
#[test]
fn a_password_command_is_rerun_when_the_password_is_refused() {
    let pair = start_pair();
    let dir = tempdir::Dir::new();
    let vault = dir.path().join("vault");
    std::fs::write(&vault, &pair.password).unwrap();
    let runs = dir.path().join("runs");
    let script = dir.path().join("get-password");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> '{}'\necho 'fetching from the vault' >&2\ncat '{}'\n",
            runs.display(),
            vault.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = Proc::start(
        dir.path(),
        &pair,
        &format!(
            "password_command = [\"{}\"]\npassword_refresh = \"1h\"",
            script.display()
        ),
        &[],
    );
    p.wait_ready();
    let count = || std::fs::read_to_string(&runs).map_or(0, |t| t.lines().count());
    assert_eq!(count(), 1, "one source, one run for both servers");
    let new = format!("rotated-{:x}", rand_u64());
    std::fs::write(&vault, &new).unwrap();
    pair.primary.sql(&format!("ALTER ROLE probe PASSWORD '{new}'")).unwrap();
    let t0 = Instant::now();
    wait_until("the command rerun and the servers up", Duration::from_secs(20), || {
        count() >= 2 && p.all_up()
    });
    eprintln!("recovered {:?} after the rotation", t0.elapsed());
    let connects = p.metric("dns_sidecar_probe_connects_total{server=\"b\",result=\"ok\"}");
    wait_until("new logins", Duration::from_secs(10), || {
        p.metric("dns_sidecar_probe_connects_total{server=\"b\",result=\"ok\"}") >= connects + 3.0
    });
    assert!(count() <= 4, "{} runs: refusals are rate-limited", count());
    p.assert_no_token_logged(&[new]);
}
