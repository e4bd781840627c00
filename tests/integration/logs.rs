//! The log as an operator reads it during an incident, from the real
//! binary (`--log-format json`, so lines are parsed, not grepped): a server
//! that never comes up is named with its reason once, not once per probe;
//! a later failure is one WARN per episode and its recovery one INFO; a
//! no-match line says what DNS actually answers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{PairOptions, PgBinaries, PgPair};

use crate::support::env::{config_text, tempdir, upstream};
use crate::support::raw;

/// A port free on 127.0.0.1 for UDP and TCP, outside the ephemeral range
/// (see [`testbed::free_port`]); a small race with other processes remains.
pub fn free_port() -> u16 {
    testbed::free_port(&[std::net::Ipv4Addr::LOCALHOST.into()], true).expect("a free port")
}

pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real binary with JSON logs in a file, killed on drop.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Proc {
    fn start(config: &Path, log: &Path) -> Proc {
        let child = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Lines whose message starts with `message` and whose fields include `fields`.
    fn find(&self, message: &str, fields: &[(&str, &str)]) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| {
                l["message"].as_str().is_some_and(|m| m.starts_with(message))
                    && fields.iter().all(|(k, v)| l[*k].as_str() == Some(*v))
            })
            .collect()
    }

    fn hup(&self) {
        crate::support::signal(&self.child, libc::SIGHUP);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(admin: SocketAddr, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .args(args)
        .arg("--admin")
        .arg(admin.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn failures_are_logged_once_per_episode_with_the_reason_and_decisions_name_the_answer() {
    let pair = PgPair::start(&PgBinaries::locate().unwrap(), PairOptions::default()).unwrap();
    let up = upstream();
    let dir = tempdir::Dir::new();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, &pair.password).unwrap();
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let good = config_text(Some(&pair), up.addr, &pw, &format!("[admin]\nlisten = \"{admin}\"\n"))
        .replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"{dns}\"]"));
    // b's certificate names pg-b.test; probing it as another name fails
    // verify-full on every probe, as a wrong sslrootcert or host would.
    let bad = good.replacen("[servers.b]\n", "[servers.b]\nhost = \"wrong-name.test\"\n", 1);
    assert_ne!(bad, good);
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, &bad).unwrap();
    let p = Proc::start(&cfg, &dir.path().join("log"));

    wait_until("the first round", Duration::from_secs(10), || {
        !p.find("first probe round", &[]).is_empty()
    });
    wait_until("b is reported down", Duration::from_secs(5), || {
        !p.find("server down", &[("server", "b")]).is_empty()
    });
    // Twenty more failed probes of b: still that one line.
    std::thread::sleep(Duration::from_millis(2000));
    let downs = p.find("server down", &[("server", "b")]);
    assert_eq!(downs.len(), 1, "one line per episode, not per probe: {downs:#?}");
    assert_eq!(downs[0]["level"], "WARN");
    let reason = downs[0]["error"].as_str().unwrap();
    assert!(
        reason.contains("wrong-name.test")
            || reason.to_lowercase().contains("certificate")
            || reason.to_lowercase().contains("hostname"),
        "{reason}"
    );
    assert!(p.find("server up", &[("server", "b")]).is_empty());
    assert_eq!(p.find("server up", &[("server", "a")]).len(), 1);

    // Fixed by a reload: b comes up, at INFO, saying how long it was down.
    std::fs::write(&cfg, &good).unwrap();
    p.hup();
    wait_until("b is up", Duration::from_secs(5), || {
        !p.find("server up", &[("server", "b")]).is_empty()
    });
    let ups = p.find("server up", &[("server", "b")]);
    assert_eq!(ups[0]["level"], "INFO");
    assert!(ups[0]["down_for"].as_str().is_some_and(|d| d.ends_with('s')), "{ups:?}");

    // A later failure: the primary stops. One WARN, and the no-match lines
    // say what each alias answers now (keep-last: the old target; servfail).
    pair.primary.stop_immediate().unwrap();
    wait_until("a is reported down", Duration::from_secs(5), || {
        !p.find("server down", &[("server", "a")]).is_empty()
    });
    wait_until("no-match lines", Duration::from_secs(5), || {
        p.find("no candidate server matches", &[]).len() >= 2
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(p.find("server down", &[("server", "a")]).len(), 1);
    let keep = p.find("no candidate server matches", &[("alias", "prod.db.test.")]);
    assert_eq!(
        (
            keep[0]["answer"].as_str(),
            keep[0]["server"].as_str(),
            keep[0]["target"].as_str()
        ),
        (Some("cname"), Some("a"), Some("pg-a.test.")),
        "{keep:?}"
    );
    let strict = p.find("no candidate server matches", &[("alias", "strict.db.test.")]);
    assert_eq!(strict[0]["answer"], "servfail", "{strict:?}");
    assert!(
        strict[0]["reason"]
            .as_str()
            .unwrap()
            .contains("on_no_match = \"servfail\""),
        "{strict:?}"
    );
    assert_eq!(raw::cname_of(dns, "prod.db.test.").as_deref(), Some("pg-a.test."));

    // Back: recovery at INFO.
    pair.primary.start().unwrap();
    wait_until("a is up again", Duration::from_secs(10), || {
        p.find("server up", &[("server", "a")]).len() == 2
    });
    wait_until("prod answers a", Duration::from_secs(5), || {
        raw::cname_of(dns, "prod.db.test.").as_deref() == Some("pg-a.test.")
    });

    // Draining the target: the log says SERVFAIL, and why; not "kept a".
    cli(admin, &["drain", "a"]);
    wait_until("the drain's no-match line", Duration::from_secs(5), || {
        p.find(
            "no candidate server matches",
            &[("alias", "prod.db.test."), ("answer", "servfail")],
        )
        .len()
            == 1
    });
    let line = &p.find(
        "no candidate server matches",
        &[("alias", "prod.db.test."), ("answer", "servfail")],
    )[0];
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .starts_with("a was drained by an operator"),
        "{line}"
    );
    assert_eq!(raw::cname_of(dns, "prod.db.test."), None);
    // Undrained: the answer comes back without a target change; it is logged.
    cli(admin, &["undrain", "a"]);
    wait_until("the answer is back", Duration::from_secs(5), || {
        !p.find("alias answers again", &[("alias", "prod.db.test."), ("server", "a")])
            .is_empty()
    });
}
