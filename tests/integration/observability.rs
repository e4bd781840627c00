//! What operators rely on during an incident: every metric docs/operations.md
//! lists exists from start-up (at 0, with its known label sets), `/metrics`
//! says what format it is, and every alert of
//! deploy/prometheus/dns-sidecar.rules.yml (which docs/operations.md shows)
//! fires when its event happens on real servers, and not before.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use dns_sidecar::client::Client;
use dns_sidecar::control::Override;

use crate::support::env::Env;
use crate::support::metrics::{rules_alerts, Alert, Labels, Scrape, PROMETHEUS_ACCEPT};
use crate::support::sidecar::Sidecar;
use crate::support::{dig, raw};

/// docs/operations.md, which holds the metrics table (it was the README's).
fn metrics_page() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md")).unwrap()
}

/// `/metrics` over HTTP as Prometheus asks for it; checks the format.
fn scrape(sidecar: &Sidecar) -> Scrape {
    let admin = sidecar.admin.expect("admin listener");
    let r = Client::new(&admin.to_string(), None)
        .request("GET", "/metrics", &[("Accept", PROMETHEUS_ACCEPT)], None)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(r.body.ends_with("# EOF\n"), "an OpenMetrics body ends with # EOF");
    Scrape::parse(&r.body)
}

/// Blocks until `cond` holds (the sidecar runs on its own thread).
fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One row of the metrics table (docs/operations.md).
struct Row {
    name: String,
    ty: String,
    labels: Vec<(String, Vec<String>)>,
}

/// The metrics table of docs/operations.md: name, type, and each label with
/// the values the page lists for it (in the labels or meaning column, or for
/// `rcode` in the paragraph under the table).
fn readme_metrics(readme: &str) -> Vec<Row> {
    let rcodes: Vec<String> = readme
        .split("`rcode` is one of ")
        .nth(1)
        .expect("docs/operations.md lists the rcodes")
        .split('.')
        .next()
        .unwrap()
        .replace('\n', " ")
        .replace(" or ", ", ")
        .split(", ")
        .map(|s| s.trim().to_string())
        .collect();
    // "(ok, timeout, error)": a list of single-word values; other
    // parenthesised text is prose.
    let values = |text: &str| -> Vec<String> {
        let list: Vec<String> = text
            .split_once('(')
            .and_then(|(_, r)| r.split_once(')'))
            .map(|(v, _)| v.split(", ").map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        if list.iter().all(|v| !v.is_empty() && !v.contains(' ')) {
            list
        } else {
            Vec::new()
        }
    };
    readme
        .lines()
        .filter(|l| l.starts_with("| `dns_sidecar_"))
        .map(|l| {
            let cols: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let name = cols[0].trim_matches('`').to_string();
            let labels = cols[2]
                .split("`, `")
                .flat_map(|part| part.split(", `"))
                .filter(|p| p.contains(|c: char| c.is_alphabetic()))
                .map(|part| {
                    let label = part.trim_matches('`').split('`').next().unwrap().trim().to_string();
                    let mut vals = values(part);
                    if vals.is_empty() && label == "rcode" {
                        vals = rcodes.clone();
                    }
                    if vals.is_empty() && ["result", "kind"].contains(&label.as_str()) {
                        vals = values(cols[3]);
                    }
                    (label, vals)
                })
                .collect();
            Row {
                name,
                ty: cols[1].to_string(),
                labels,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_metric_exists_from_start_up_with_its_label_sets() {
    let env = Env::start(true, "").await;
    let s = scrape(env.sidecar());
    let config = env.sidecar().shared.config.load_full();
    let rows = readme_metrics(&metrics_page());
    assert!(
        rows.len() >= 19,
        "the metrics table of docs/operations.md was not found"
    );
    for row in &rows {
        let family = row.name.trim_end_matches("_total");
        assert_eq!(
            s.types.get(family).map(String::as_str),
            Some(row.ty.as_str()),
            "{}: # TYPE",
            row.name
        );
        let sample = if row.ty == "histogram" {
            format!("{}_count", row.name)
        } else {
            row.name.clone()
        };
        let none = Labels::new();
        let samples: Vec<_> = s.select(&sample, &none).collect();
        assert!(!samples.is_empty(), "{} has no sample at start-up", row.name);
        for (label, values) in &row.labels {
            let known: Vec<String> = match label.as_str() {
                "server" => config.servers.iter().map(|x| x.id.clone()).collect(),
                "alias" => config.aliases.iter().map(|a| a.name.to_string()).collect(),
                "upstream" => config
                    .upstream
                    .iter()
                    .flat_map(|u| u.servers.iter().map(|a| a.to_string()))
                    .collect(),
                "zone" => config.upstreams().map(|(z, _)| z.to_string()).collect(),
                _ => values.clone(),
            };
            assert!(!known.is_empty(), "{}: no known values for label {label}", row.name);
            for v in &known {
                assert!(
                    samples.iter().any(|x| x.labels.get(label) == Some(v)),
                    "{}: no series with {label}=\"{v}\" at start-up",
                    row.name
                );
            }
        }
        // Counters start at 0 (nothing happened yet but queries and probes).
        if row.ty == "counter"
            && ![
                "dns_sidecar_probes_total",
                "dns_sidecar_queries_total",
                "dns_sidecar_target_changes_total",
                "dns_sidecar_state_writes_total",
                // The password file is read at start-up.
                "dns_sidecar_credential_refreshes_total",
            ]
            .contains(&row.name.as_str())
        {
            assert!(samples.iter().all(|x| x.value == 0.0), "{}: {samples:?}", row.name);
        }
    }
}

/// Every alert of the rules file (deploy/prometheus/dns-sidecar.rules.yml,
/// shown in docs/operations.md), against one real primary + replica through a
/// sequence of incidents (plus one sidecar whose only server never answers,
/// for readiness). Each expression must be silent before its event and true
/// after it (`for:` durations are promtool's to test: alert_rules.rs); the
/// file may not hold an alert this test does not trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rules_file_alert_fires_on_its_event() {
    let suggested: Vec<String> = rules_alerts().into_iter().map(|r| r.expr).collect();
    assert!(suggested.len() >= 7, "{suggested:?}");
    let alert = |needle: &str| -> (String, Alert) {
        let expr = suggested
            .iter()
            .find(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("the rules file has no alert on {needle}: {suggested:?}"));
        (expr.clone(), Alert::parse(expr))
    };
    let mut exercised = HashSet::new();
    let mut check = |needle: &str, before: &Scrape, after: &Scrape, silent: &Scrape, want: &[(&str, &str)]| {
        let (expr, a) = alert(needle);
        assert!(
            a.firing(before, silent).is_empty(),
            "{expr} fires before its event: {:?}",
            a.firing(before, silent)
        );
        let fired = a.firing(before, after);
        for (k, v) in want {
            assert!(
                fired.iter().any(|l| l.get(*k).map(String::as_str) == Some(*v)),
                "{expr} did not fire for {k}={v}: {fired:?}"
            );
        }
        assert!(!fired.is_empty(), "{expr} did not fire");
        exercised.insert(expr);
    };

    // Readiness: the only server accepts connections and never answers, so
    // the first round waits for the probe deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let text = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[[zones]]\nname = \"db.test\"\n[probe]\ndeadline = \"3s\"\nuser \
            = \"probe\"\nsslmode = \"disable\"\n[servers.a]\ntarget = \"pg-a.test\"\nhostaddr = \"127.0.0.1\"\nport = \
                {port}\n[[aliases]]\nname = \"prod.db.test\"\nservers = [\"a\"]\n"
    );
    let lonely = Sidecar::start(&text).unwrap();
    let starting = scrape(&lonely);
    wait_until("ready", Duration::from_secs(10), || lonely.shared.status.load().ready);
    let ready = scrape(&lonely);
    check("dns_sidecar_ready", &ready, &starting, &ready, &[]);
    drop(lonely);

    // Forwarding to an upstream that never answers (a black hole), with a
    // client over its forwarded-query rate: failed health checks take the
    // upstream out of use, and the rate limit refuses the excess (once the
    // upstream is out of use, the answers come at once and outrun the rate).
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\ntimeout = \"200ms\"\nmax_fails = \
            2\n[limits]\nforward_rate = 3\nforward_burst = 3\n[[zones]]\nname = \"db.test\"\n",
        hole.local_addr().unwrap()
    );
    let forwarder = Sidecar::start(&text).unwrap();
    let before = scrape(&forwarder);
    for i in 0..20 {
        let _ = dig(
            forwarder.dns,
            &format!("n{i}.example.test"),
            "A",
            &["+tries=1", "+timeout=1"],
        );
    }
    wait_until("the breaker opens", Duration::from_secs(5), || {
        scrape(&forwarder)
            .select("dns_sidecar_upstream_up", &Labels::new())
            .any(|s| s.value == 0.0)
    });
    // Six digs (a process each, with 200 ms upstream waits) may come slower
    // than the 3 per second the rate refills on a loaded machine: a burst
    // from one socket is over the rate however slow the machine is.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..20 {
        let q = raw::query(&format!("burst{i}.example.test."), hickory_proto::rr::RecordType::A);
        client.send_to(&q, forwarder.dns).unwrap();
    }
    let rate = Labels::from([("reason".to_string(), "rate".to_string())]);
    wait_until("the rate limit refuses", Duration::from_secs(5), || {
        scrape(&forwarder)
            .select("dns_sidecar_limited_total", &rate)
            .any(|s| s.value > 0.0)
    });
    let after = scrape(&forwarder);
    check("dns_sidecar_upstream_up", &before, &after, &before, &[]);
    check(
        "dns_sidecar_limited_total",
        &before,
        &after,
        &before,
        &[("reason", "rate")],
    );
    drop(forwarder);

    // An answer in the cache expires, then the upstream stops answering:
    // the expired answer is served stale.
    let up = crate::support::upstream::Upstream::start();
    up.a("kept.example.test.", 1, [10, 7, 7, 7]);
    let text = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\ntimeout \
        = \"200ms\"\n[[zones]]\nname = \"db.test\"\n",
        up.addr
    );
    let cached = Sidecar::start(&text).unwrap();
    assert_eq!(dig(cached.dns, "kept.example.test", "A", &[]).status, "NOERROR");
    std::thread::sleep(Duration::from_millis(1100));
    let before = scrape(&cached);
    up.set_mode(crate::support::upstream::Mode::Silent);
    assert_eq!(
        dig(cached.dns, "kept.example.test", "A", &[]).answers("A"),
        ["10.7.7.7"],
        "served stale"
    );
    let after = scrape(&cached);
    check("dns_sidecar_cache_stale_answers_total", &before, &after, &before, &[]);
    drop(cached);

    let env = Env::start(true, "").await;
    env.wait_for_target("prod.db.test.", "pg-a.test.", Duration::from_secs(5))
        .await;
    let sc = || scrape(env.sidecar());
    let quiet = sc();
    for (expr, a) in suggested.iter().map(|e| (e, Alert::parse(e))) {
        assert!(
            a.firing(&quiet, &quiet).is_empty(),
            "{expr} fires on a healthy sidecar: {:?}",
            a.firing(&quiet, &quiet)
        );
    }

    // A pin is an override.
    let before = sc();
    env.apply(Override::Pin {
        alias: "prod.db.test".into(),
        server: "b".into(),
    });
    let after = sc();
    check("dns_sidecar_overrides", &before, &after, &before, &[]);
    env.apply(Override::Unpin {
        alias: "prod.db.test".into(),
    });

    // Draining the primary: the writer aliases have no target (SERVFAIL),
    // and no candidate matches.
    let before = sc();
    env.apply(Override::Drain { server: "a".into() });
    wait_until("SERVFAIL", Duration::from_secs(2), || {
        raw::cname_of(env.dns, "prod.db.test.").is_none()
    });
    let after = sc();
    check(
        "sum without (server) (dns_sidecar_alias_target)",
        &before,
        &after,
        &before,
        &[("alias", "prod.db.test."), ("alias", "strict.db.test.")],
    );
    check(
        "dns_sidecar_no_match_total",
        &before,
        &after,
        &before,
        &[("alias", "prod.db.test.")],
    );
    env.apply(Override::Undrain { server: "a".into() });
    env.wait_for_target("prod.db.test.", "pg-a.test.", Duration::from_secs(2))
        .await;
    assert!(
        alert("sum without (server)").1.firing(&before, &sc()).is_empty(),
        "undrained: every alias has a target again"
    );

    // The state file's directory disappears: the next write fails.
    let dir = env.state_file().parent().unwrap().to_path_buf();
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).unwrap();
    let before = sc();
    env.apply(Override::Pin {
        alias: "ro.db.test".into(),
        server: "a".into(),
    });
    let after = sc();
    std::fs::rename(&moved, &dir).unwrap();
    check(
        "dns_sidecar_state_writes_total",
        &before,
        &after,
        &before,
        &[("result", "error")],
    );
    env.apply(Override::Unpin {
        alias: "ro.db.test".into(),
    });

    // The replica is promoted while the primary runs: a split brain (the
    // first one since the start counts).
    let before = sc();
    let b = env.pair().replica.clone();
    tokio::task::spawn_blocking(move || b.promote(true))
        .await
        .unwrap()
        .unwrap();
    env.wait_for_target("prod.db.test.", "pg-b.test.", Duration::from_secs(5))
        .await;
    let after = sc();
    check(
        "dns_sidecar_split_brain_total",
        &before,
        &after,
        &before,
        &[("alias", "prod.db.test.")],
    );

    // The new primary dies: only the diverged old primary is writable, and
    // the fence holds the alias off it.
    let before = sc();
    let b = env.pair().replica.clone();
    tokio::task::spawn_blocking(move || b.stop_immediate())
        .await
        .unwrap()
        .unwrap();
    wait_until("the fence holds", Duration::from_secs(5), || {
        env.metric("dns_sidecar_fence_holds_total{alias=\"prod.db.test.\"}") >= 1.0
    });
    let after = sc();
    check(
        "dns_sidecar_fence_holds_total",
        &before,
        &after,
        &before,
        &[("alias", "prod.db.test.")],
    );

    let missing: Vec<&String> = suggested.iter().filter(|e| !exercised.contains(*e)).collect();
    assert!(
        missing.is_empty(),
        "alerts of the rules file no test triggers: {missing:?}"
    );
}
