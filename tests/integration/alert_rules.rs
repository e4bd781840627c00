//! The alert rules users load into Prometheus
//! (deploy/prometheus/dns-sidecar.rules.yml), checked by Prometheus itself:
//!
//! * `promtool check rules` accepts the file and `promtool test rules` passes
//!   its unit tests (dns-sidecar.rules.test.yml). Without promtool the test
//!   is skipped on a workstation and FAILS under CI (`CI` set), where
//!   `.ci/run` installs the `prometheus` package for it;
//! * those unit tests cover every alert: silent at an earlier evaluation,
//!   firing at a later one, and name no alert the file does not have (for
//!   promtool an unknown alert name with no expected alerts just passes);
//! * every metric and label the rules read exists on a live sidecar from
//!   start-up, and the unit tests' input series have the names and label
//!   names the live sidecar exports (plus `instance` and `job`, which
//!   Prometheus adds), so the tests feed the rules what they will really see.
//!
//! That each alert's event really moves its metrics on real servers is
//! observability.rs (`every_rules_file_alert_fires_on_its_event`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use dns_sidecar::client::Client;
use serde_json::Value;

use crate::support::env::tempdir;
use crate::support::metrics::{expr_metrics, rules_alerts, rules_path, Scrape, PROMETHEUS_ACCEPT};
use crate::support::sidecar::Sidecar;

fn tests_path() -> PathBuf {
    rules_path().with_file_name("dns-sidecar.rules.test.yml")
}

fn yaml(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: YAML: {e}", p.display()))
}

/// Labels Prometheus adds to every scraped series (not the sidecar's).
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Labels whose values are names from the config.
const CONFIG_LABELS: [&str; 4] = ["alias", "server", "upstream", "zone"];

fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "promtool is not installed, and CI must check the alert rules with it: apt-get install prometheus \
                (.ci/run does, when it is missing)"
        );
        eprintln!("promtool not installed; alert rules not checked by Prometheus (apt-get install prometheus)");
    }
    found
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = promtool() else { return };
    for args in [
        ["check", "rules", rules_path().to_str().unwrap()],
        ["test", "rules", tests_path().to_str().unwrap()],
    ] {
        let out = Command::new(&promtool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `30s`, `5m`, `4h` (promtool's eval_time) in seconds.
fn duration(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {s:?}"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => panic!("duration {s:?}"),
    }
}

#[test]
fn unit_tests_cover_every_alert_silent_then_firing() {
    let doc = yaml(&tests_path());
    let listed: Vec<String> = doc["rule_files"]
        .as_array()
        .expect("rule_files")
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        [rules_path().file_name().unwrap().to_str().unwrap()],
        "the unit tests load the shipped rules file"
    );
    let names: BTreeSet<String> = rules_alerts().into_iter().map(|r| r.name).collect();
    assert!(names.len() >= 7, "{names:?}");
    // alert -> evaluation times with no alert expected / with alerts expected.
    let mut silent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut firing: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for group in doc["tests"].as_array().expect("tests") {
        for t in group["alert_rule_test"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let name = t["alertname"].as_str().unwrap().to_string();
            assert!(
                names.contains(&name),
                "{}: a test of {name}, which the rules file does not have",
                tests_path().display()
            );
            let at = duration(t["eval_time"].as_str().unwrap());
            let expected = t["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected == 0 {
                silent.entry(name).or_default().push(at);
            } else {
                firing.entry(name).or_default().push(at);
            }
        }
    }
    for name in &names {
        let first_fire = firing
            .get(name)
            .and_then(|t| t.iter().min())
            .unwrap_or_else(|| panic!("{name}: no unit test expects it to fire"));
        assert!(
            silent.get(name).is_some_and(|t| t.iter().any(|s| s < first_fire)),
            "{name}: no unit test shows it silent before it fires"
        );
    }
}

/// A series selector of promtool's input: `name{k="v", ...}`.
fn series(sel: &str) -> (String, BTreeMap<String, String>) {
    let (name, rest) = sel.split_once('{').unwrap_or((sel, "}"));
    let body = rest
        .trim()
        .strip_suffix('}')
        .unwrap_or_else(|| panic!("series {sel:?}"));
    let labels = body
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("label {p:?} in {sel:?}"));
            (k.trim().to_string(), v.trim().trim_matches('"').to_string())
        })
        .collect();
    (name.trim().to_string(), labels)
}

#[test]
fn rules_read_only_what_a_live_sidecar_exports_at_start_up() {
    // Every config-determined series exists from start-up: a server, an
    // alias, an upstream and a state file are enough; nothing needs to answer.
    let dir = tempdir::Dir::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\n[[zones]]\nname = \"db.test\"\n[state]\npath \
            = {:?}\n[probe]\nuser = \"probe\"\nsslmode = \"disable\"\n[servers.a]\ntarget = \"pg-a.test\"\nhostaddr = \
            \"127.0.0.1\"\nport = {port}\n[[aliases]]\nname = \"prod.db.test\"\nservers = [\"a\"]\n",
        hole.local_addr().unwrap(),
        dir.path().join("state.json").display().to_string()
    );
    let sidecar = Sidecar::start(&text).unwrap();
    let r = Client::new(&sidecar.admin.expect("admin listener").to_string(), None)
        .request("GET", "/metrics", &[("Accept", PROMETHEUS_ACCEPT)], None)
        .unwrap();
    assert_eq!(r.status, 200);
    let live = Scrape::parse(&r.body);
    drop(sidecar);
    // name -> the label-name sets of its series.
    let mut shapes: BTreeMap<&str, BTreeSet<BTreeSet<&str>>> = BTreeMap::new();
    for s in &live.samples {
        shapes
            .entry(s.name.as_str())
            .or_default()
            .insert(s.labels.keys().map(String::as_str).collect());
    }

    let rules = rules_alerts();
    for rule in &rules {
        let used = expr_metrics(&rule.expr);
        assert!(
            !used.is_empty(),
            "{}: reads no dns_sidecar_ metric: {}",
            rule.name,
            rule.expr
        );
        for (metric, labels) in used {
            assert!(
                shapes.contains_key(metric.as_str()),
                "{}: {metric} is not exported at start-up (live: {:?})",
                rule.name,
                shapes.keys().collect::<Vec<_>>()
            );
            for (label, value) in labels {
                let present = live.samples.iter().any(|s| {
                    s.name == metric
                        && value
                            .as_ref()
                            .map_or(s.labels.contains_key(&label), |v| s.labels.get(&label) == Some(v))
                });
                assert!(
                    present,
                    "{}: no {metric} series with {label}{} at start-up",
                    rule.name,
                    value.map(|v| format!("={v:?}")).unwrap_or_default()
                );
            }
        }
    }

    // The unit tests' input: the live names and label names, plus the target's.
    let doc = yaml(&tests_path());
    let mut n = 0;
    for group in doc["tests"].as_array().expect("tests") {
        for input in group["input_series"].as_array().expect("input_series") {
            let sel = input["series"].as_str().unwrap();
            let (name, labels) = series(sel);
            for l in TARGET_LABELS {
                assert!(
                    labels.contains_key(l),
                    "{sel}: Prometheus adds {l}; the input should have it"
                );
            }
            let own: BTreeSet<&str> = labels
                .keys()
                .map(String::as_str)
                .filter(|l| !TARGET_LABELS.contains(l))
                .collect();
            let live_shapes = shapes
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{sel}: {name} is not a metric the sidecar exports"));
            assert!(
                live_shapes.contains(&own),
                "{sel}: labels {own:?}; the sidecar's {name} has {live_shapes:?}"
            );
            // Values the sidecar defines (result, reason, ...) must be real
            // ones; alias, server and upstream come from the config.
            for (k, v) in labels.iter().filter(|(k, _)| own.contains(k.as_str())) {
                if CONFIG_LABELS.contains(&k.as_str()) {
                    continue;
                }
                assert!(
                    live.samples
                        .iter()
                        .any(|s| s.name == name && s.labels.get(k) == Some(v)),
                    "{sel}: the sidecar never exports {name} with {k}={v:?}"
                );
            }
            n += 1;
        }
    }
    assert!(n >= rules.len(), "only {n} input series");
}
