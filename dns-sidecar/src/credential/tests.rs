use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::EntraIdentity;

#[test]
fn tokens_are_refreshed_at_two_thirds_or_five_minutes_before_expiry_whichever_first() {
    let m = |s: u64| Duration::from_secs(s * 60);
    assert_eq!(refresh_after(m(60)), m(40), "1h: 2/3 comes first");
    assert_eq!(refresh_after(m(24 * 60)), m(16 * 60));
    assert_eq!(refresh_after(m(12)), m(7), "12m: 5 min before comes first");
    assert_eq!(refresh_after(m(8)), m(4), "never before half the life");
    assert_eq!(refresh_after(Duration::from_secs(4)), Duration::from_secs(2));
    assert_eq!(refresh_after(Duration::from_millis(100)), Duration::from_millis(500));
}

#[test]
fn retries_back_off_but_fit_in_the_remaining_life() {
    let s = Duration::from_secs;
    assert_eq!(retry_after(1, None), s(1));
    assert_eq!(retry_after(2, None), s(2));
    assert_eq!(retry_after(5, None), s(16));
    assert_eq!(retry_after(6, None), s(30));
    assert_eq!(retry_after(60, None), s(30));
    assert_eq!(retry_after(6, Some(s(30 * 60))), s(30));
    assert_eq!(retry_after(6, Some(s(3))), s(1), "a third of the remaining life");
    assert_eq!(
        retry_after(6, Some(Duration::from_millis(30))),
        Duration::from_millis(200)
    );
    assert_eq!(retry_after(3, Some(Duration::ZERO)), s(4), "expired: plain backoff");
}

#[test]
fn refusals_are_rate_limited() {
    let t0 = Instant::now();
    let mut l = RateLimit::new(Duration::from_secs(3));
    assert!(l.allow(t0).is_ok());
    assert_eq!(l.allow(t0 + Duration::from_secs(1)), Err(t0 + Duration::from_secs(3)));
    assert!(l.allow(t0 + Duration::from_secs(3)).is_ok());
    l.note(t0 + Duration::from_secs(10));
    assert!(l.allow(t0 + Duration::from_secs(11)).is_err());
}

#[test]
fn an_episode_is_one_warning_and_one_recovery() {
    let mut e = Episode::default();
    assert_eq!(e.succeeded(), None);
    assert!(e.failed());
    assert!(!e.failed());
    assert!(!e.failed());
    assert_eq!(e.succeeded(), Some(3));
    assert_eq!(e.succeeded(), None);
    assert!(e.failed(), "a new episode");
}

/// Log lines written while the guard lives, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Every test of this module that runs a refresher captures, so no
    /// thread without a subscriber makes tracing cache a callsite as
    /// disabled while another test listens.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let w = self.clone();
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || w.clone())
                .finish(),
        );
        tracing::callsite::rebuild_interest_cache();
        guard
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn count(&self, level: &str, words: &str) -> usize {
        self.text()
            .lines()
            .filter(|l| l.contains(level) && l.contains(words))
            .count()
    }
}

/// A stand-in token endpoint on loopback answering from `answers` in turn
/// (the last one repeats); records each request's head.
async fn stand_in(answers: Vec<(u16, String)>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut answers: VecDeque<(u16, String)> = answers.into();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let (status, body) = if answers.len() > 1 {
                answers.pop_front().unwrap()
            } else {
                answers[0].clone()
            };
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    (addr, seen)
}

fn token(t: &str, expires_in: u64) -> (u16, String) {
    (
        200,
        format!(r#"{{"access_token":"{t}","expires_in":"{expires_in}","expires_on":"0","token_type":"Bearer"}}"#),
    )
}

fn refresher(fetcher: Fetcher, source: &PasswordSource) -> (Refresher, Credential, Family<CredentialResult, Counter>) {
    let family: Family<CredentialResult, Counter> = Family::default();
    let cred = Credential::new(source);
    let counter = |r: &str| {
        family
            .get_or_create(&CredentialResult {
                source: source.kind().into(),
                result: r.into(),
            })
            .clone()
    };
    let r = Refresher {
        cred: cred.clone(),
        fetcher,
        kind: source.kind(),
        episode: Episode::default(),
        limit: RateLimit::new(REFUSAL_GAP),
        ok: counter("ok"),
        failed: counter("error"),
    };
    (r, cred, family)
}

async fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Managed identity through a stand-in: tokens are refreshed ahead of
/// expiry; an outage shorter than the token's life is bridged (the probe
/// always has a valid token), is one WARN and one INFO, and no token ever
/// appears in the log.
#[tokio::test(flavor = "current_thread")]
async fn a_refresh_outage_is_one_warning_keeps_the_token_and_never_logs_it() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let err = (
        500,
        r#"{"error":"unknown","error_description":"IMDS is busy"}"#.to_string(),
    );
    let (addr, seen) = stand_in(vec![
        token("SECRET-TOKEN-one", 3),
        err.clone(),
        err.clone(),
        err,
        token("SECRET-TOKEN-two", 3),
    ])
    .await;
    let source = PasswordSource::Entra {
        identity: EntraIdentity::ManagedIdentity,
        client_id: Some("cid-7".into()),
    };
    let imds = endpoint::Imds {
        url: endpoint::Url::parse(&format!("http://{addr}{}", endpoint::IMDS_PATH), false).unwrap(),
        client_id: Some("cid-7".into()),
    };
    let (r, cred, family) = refresher(Fetcher::Imds(imds), &source);
    assert!(cred.current().unwrap_err().contains("first fetch"));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(r.run(stop_rx, Instant::now()));
    wait_for("the first token", Duration::from_secs(5), || cred.current().is_ok()).await;
    assert_eq!(cred.current().unwrap().expose(), "SECRET-TOKEN-one");
    // Refreshed at 1.5 s, failing three times, within the first token's 3 s.
    let started = Instant::now();
    loop {
        match cred.current() {
            Ok(s) if s.expose() == "SECRET-TOKEN-two" => break,
            Ok(_) => {}
            Err(e) => panic!("the probe had no token during a short outage: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no second token");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    task.await.unwrap();
    let count = |r: &str| {
        family
            .get_or_create(&CredentialResult {
                source: "managed-identity".into(),
                result: r.into(),
            })
            .get()
    };
    assert_eq!((count("ok"), count("error")), (2, 3));
    assert_eq!(logs.count("WARN", "credential refresh failed"), 1, "{}", logs.text());
    assert!(logs.text().contains("IMDS is busy"), "{}", logs.text());
    assert_eq!(logs.count("INFO", "credential refresh recovered"), 1, "{}", logs.text());
    assert!(
        !logs.text().contains("SECRET-TOKEN"),
        "a token was logged:\n{}",
        logs.text()
    );
    assert!(!format!("{cred:?}").contains("SECRET-TOKEN"));
    // The request shape: GET, Metadata header, resource and client id.
    let first = seen.lock().unwrap()[0].clone();
    assert!(
        first.starts_with("GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fossrdbms-aad.database.windows.net&client_id=cid-7 HTTP/1.1"),
        "{first}"
    );
    assert!(first.to_ascii_lowercase().contains("\r\nmetadata: true\r\n"), "{first}");
}

/// A token that expires while the endpoint keeps failing is not used any
/// more, and the reason names the source and the failure.
#[tokio::test(flavor = "current_thread")]
async fn an_expired_token_is_not_offered() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let (addr, _) = stand_in(vec![
        token("tok", 1),
        (
            400,
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into(),
        ),
    ])
    .await;
    let source = PasswordSource::Entra {
        identity: EntraIdentity::ManagedIdentity,
        client_id: None,
    };
    let imds = endpoint::Imds {
        url: endpoint::Url::parse(&format!("http://{addr}{}", endpoint::IMDS_PATH), false).unwrap(),
        client_id: None,
    };
    let (r, cred, _) = refresher(Fetcher::Imds(imds), &source);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(r.run(stop_rx, Instant::now()));
    wait_for("the token", Duration::from_secs(5), || cred.current().is_ok()).await;
    wait_for("the expiry", Duration::from_secs(5), || cred.current().is_err()).await;
    let why = cred.current().unwrap_err();
    assert!(
        why.contains("managed identity") && why.contains("expired") && why.contains("Identity not found"),
        "{why}"
    );
    let _ = stop.send(true);
    task.await.unwrap();
}

/// `password_command` runs again on refusal, at most once per
/// [`REFUSAL_GAP`] however many probes are refused.
#[tokio::test(flavor = "current_thread")]
async fn refusals_rerun_the_command_at_most_once_per_gap() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let dir = std::env::temp_dir().join(format!("dns-sidecar-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runs = dir.join("runs");
    let _ = std::fs::remove_file(&runs);
    let argv = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        format!(
            "echo run >> '{}'; echo pw-$(wc -l < '{}')",
            runs.display(),
            runs.display()
        ),
    ];
    let source = PasswordSource::Command {
        argv: argv.clone(),
        refresh: Duration::from_secs(3600),
    };
    let (r, cred, _) = refresher(
        Fetcher::Command {
            argv,
            refresh: Duration::from_secs(3600),
        },
        &source,
    );
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(r.run(stop_rx, Instant::now()));
    let count = || std::fs::read_to_string(&runs).map_or(0, |t| t.lines().count());
    wait_for("the first run", Duration::from_secs(5), || cred.current().is_ok()).await;
    assert_eq!(cred.current().unwrap().expose(), "pw-1");
    let t0 = Instant::now();
    // A storm of refusals (every probe of every server).
    while t0.elapsed() < Duration::from_millis(1500) {
        cred.refused();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count(), 1, "re-run before the gap");
    wait_for("the re-run after the gap", Duration::from_secs(5), || count() == 2).await;
    assert!(
        t0.elapsed() >= REFUSAL_GAP - Duration::from_millis(1600),
        "{:?}",
        t0.elapsed()
    );
    wait_for("the new password", Duration::from_secs(2), || {
        cred.current().is_ok_and(|s| s.expose() == "pw-2")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(), 2, "one refusal episode, one re-run");
    let _ = stop.send(true);
    task.await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn workload_form_has_the_client_credentials_fields() {
    let w = endpoint::Workload {
        url: endpoint::Url::parse("http://127.0.0.1:1/tenant-1/oauth2/v2.0/token", false).unwrap(),
        client_id: "cid".into(),
        token_file: "/x".into(),
    };
    assert_eq!(
        workload::form(&w, "a.b+c"),
        "grant_type=client_credentials&client_id=cid&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b%2Bc&scope=https%3A%2F%2Fossrdbms-aad.database.windows.net%2F.default"
    );
}

/// A password file rewritten in place is picked up by the poll, without a
/// refusal; an unchanged file is not read again.
#[tokio::test(flavor = "current_thread")]
async fn a_changed_password_file_is_read_again_without_a_refusal() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let dir = std::env::temp_dir().join(format!("dns-sidecar-pwpoll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pw");
    std::fs::write(&path, "first\n").unwrap();
    let source = PasswordSource::File(path.clone());
    let (r, cred, family) = refresher(Fetcher::File(file::Watched::new(path.clone())), &source);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(r.run(stop_rx, Instant::now()));
    wait_for("the first read", Duration::from_secs(3), || cred.current().is_ok()).await;
    assert_eq!(cred.current().unwrap().expose(), "first");
    tokio::time::sleep(FILE_POLL * 2 + Duration::from_millis(200)).await;
    let reads = || {
        family
            .get_or_create(&CredentialResult {
                source: "file".into(),
                result: "ok".into(),
            })
            .get()
    };
    assert_eq!(reads(), 1, "an unchanged file is not read again");
    std::fs::write(&path, "second-longer\n").unwrap();
    wait_for("the new password", FILE_POLL * 3, || {
        cred.current().is_ok_and(|s| s.expose() == "second-longer")
    })
    .await;
    assert_eq!(reads(), 2);
    let _ = stop.send(true);
    task.await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
