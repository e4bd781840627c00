//! Reading `/metrics` as Prometheus does, and evaluating the alert
//! expressions of deploy/prometheus/dns-sidecar.rules.yml the way Prometheus
//! would over two scrapes (without `for:`, which promtool's unit tests of the
//! file cover).
//!
//! Only the expression shapes the rules use are understood (a sample
//! compared with a number, `increase(...[5m]) OP N`, `rate(...[5m]) OP N`,
//! `sum by (l) (...) OP N`, `sum without (l) (...) OP N`, `min(...) OP N`);
//! an alert of another shape makes [`Alert::parse`] panic, so a new alert in
//! the rules needs this evaluator (and a test that triggers it) extended.

use std::collections::{BTreeMap, HashMap};

/// What Prometheus 2.x/3.x sends when scraping (OpenMetrics preferred).
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// One exposition, parsed.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// `# TYPE` lines: family name -> type.
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// Parses OpenMetrics text; panics on a line it cannot read.
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("TYPE line");
                s.types.insert(name.to_string(), ty.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), Labels::new()),
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("labels in {line:?}"));
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").unwrap_or_else(|| panic!("label {p:?} in {line:?}"));
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
            };
            s.samples.push(Sample { name, labels, value });
        }
        s
    }

    /// Samples of `name` whose labels include every pair of `matchers`.
    pub fn select<'a>(&'a self, name: &'a str, matchers: &'a Labels) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && matchers.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Gt,
    Eq,
}

impl Op {
    fn parse(s: &str) -> Op {
        match s {
            ">" => Op::Gt,
            "==" => Op::Eq,
            o => panic!("operator {o:?} not understood by the test's alert evaluator"),
        }
    }
    fn holds(self, v: f64, n: f64) -> bool {
        match self {
            Op::Gt => v > n,
            Op::Eq => v == n,
        }
    }
}

/// One alert expression of the README.
#[derive(Debug, Clone)]
pub enum Alert {
    /// `metric{matchers} OP n`
    Compare {
        metric: String,
        matchers: Labels,
        op: Op,
        n: f64,
    },
    /// `increase(metric{matchers}[window]) OP n`
    Increase {
        metric: String,
        matchers: Labels,
        op: Op,
        n: f64,
    },
    /// `rate(metric{matchers}[window]) OP n`, per second over the window.
    Rate {
        metric: String,
        matchers: Labels,
        window: f64,
        op: Op,
        n: f64,
    },
    /// `sum by (label) (metric) OP n`
    SumBy {
        label: String,
        metric: String,
        op: Op,
        n: f64,
    },
    /// `sum without (label) (metric) OP n`: summed over `label`, keeping the others.
    SumWithout {
        label: String,
        metric: String,
        op: Op,
        n: f64,
    },
    /// `min(metric) OP n`
    Min { metric: String, op: Op, n: f64 },
}

fn selector(s: &str) -> (String, Labels) {
    match s.split_once('{') {
        None => (s.trim().to_string(), Labels::new()),
        Some((n, rest)) => {
            let body = rest.trim_end_matches('}');
            let labels = body
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("matcher");
                    (k.trim().to_string(), v.trim().trim_matches('"').to_string())
                })
                .collect();
            (n.trim().to_string(), labels)
        }
    }
}

impl Alert {
    pub fn parse(expr: &str) -> Alert {
        let (lhs, op, rhs) = [" == ", " > "]
            .iter()
            .find_map(|o| expr.rsplit_once(o).map(|(l, r)| (l.trim(), o.trim(), r.trim())))
            .unwrap_or_else(|| panic!("alert {expr:?}: no comparison"));
        let (op, n) = (
            Op::parse(op),
            rhs.parse::<f64>()
                .unwrap_or_else(|_| panic!("alert {expr:?}: right side")),
        );
        if let Some(inner) = lhs.strip_prefix("increase(").and_then(|r| r.strip_suffix(')')) {
            let (sel, _window) = inner.split_once('[').unwrap_or_else(|| panic!("alert {expr:?}: range"));
            let (metric, matchers) = selector(sel);
            return Alert::Increase {
                metric,
                matchers,
                op,
                n,
            };
        }
        if let Some(inner) = lhs.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            let (sel, window) = inner.split_once('[').unwrap_or_else(|| panic!("alert {expr:?}: range"));
            let window = window.trim_end_matches(']');
            let secs = match window.strip_suffix('m') {
                Some(m) => m.parse::<f64>().unwrap() * 60.0,
                None => window
                    .trim_end_matches('s')
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("alert {expr:?}: window")),
            };
            let (metric, matchers) = selector(sel);
            return Alert::Rate {
                metric,
                matchers,
                window: secs,
                op,
                n,
            };
        }
        if let Some(inner) = lhs.strip_prefix("min(").and_then(|r| r.strip_suffix(')')) {
            assert!(
                !inner.contains('{') && !inner.contains('('),
                "alert {expr:?}: min of a plain metric only"
            );
            return Alert::Min {
                metric: inner.trim().to_string(),
                op,
                n,
            };
        }
        if let Some(rest) = lhs.strip_prefix("sum without (") {
            let (label, rest) = rest.split_once(')').expect("sum without label");
            let metric = rest.trim().trim_start_matches('(').trim_end_matches(')').trim();
            assert!(
                !metric.contains('{') && !metric.contains('('),
                "alert {expr:?}: sum of a plain metric only"
            );
            return Alert::SumWithout {
                label: label.trim().to_string(),
                metric: metric.to_string(),
                op,
                n,
            };
        }
        if let Some(rest) = lhs.strip_prefix("sum by (") {
            let (label, rest) = rest.split_once(')').expect("sum by label");
            let metric = rest
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim()
                .to_string();
            return Alert::SumBy {
                label: label.trim().to_string(),
                metric,
                op,
                n,
            };
        }
        assert!(
            !lhs.contains('('),
            "alert {expr:?}: function not understood by the test's evaluator"
        );
        let (metric, matchers) = selector(lhs);
        Alert::Compare {
            metric,
            matchers,
            op,
            n,
        }
    }

    /// The label sets for which the alert fires at `now`, with `before` the
    /// scrape at the start of the range (for `increase`). As in Prometheus,
    /// a series absent from `before` has no increase: a counter that only
    /// appears at its first event never fires.
    pub fn firing(&self, before: &Scrape, now: &Scrape) -> Vec<Labels> {
        match self {
            Alert::Compare {
                metric,
                matchers,
                op,
                n,
            } => now
                .select(metric, matchers)
                .filter(|s| op.holds(s.value, *n))
                .map(|s| s.labels.clone())
                .collect(),
            Alert::Increase {
                metric,
                matchers,
                op,
                n,
            } => now
                .select(metric, matchers)
                .filter_map(|s| {
                    let prev = before.select(metric, matchers).find(|p| p.labels == s.labels)?;
                    op.holds(s.value - prev.value, *n).then(|| s.labels.clone())
                })
                .collect(),
            // As for `increase`: a series absent at the start has no rate.
            Alert::Rate {
                metric,
                matchers,
                window,
                op,
                n,
            } => now
                .select(metric, matchers)
                .filter_map(|s| {
                    let prev = before.select(metric, matchers).find(|p| p.labels == s.labels)?;
                    op.holds((s.value - prev.value) / window, *n).then(|| s.labels.clone())
                })
                .collect(),
            Alert::Min { metric, op, n } => {
                let none = Labels::new();
                let min = now.select(metric, &none).map(|s| s.value).fold(f64::INFINITY, f64::min);
                if min.is_finite() && op.holds(min, *n) {
                    vec![Labels::new()]
                } else {
                    Vec::new()
                }
            }
            Alert::SumWithout { label, metric, op, n } => {
                let mut sums: BTreeMap<Labels, f64> = BTreeMap::new();
                let none = Labels::new();
                for s in now.select(metric, &none) {
                    let mut rest = s.labels.clone();
                    rest.remove(label);
                    *sums.entry(rest).or_default() += s.value;
                }
                sums.into_iter()
                    .filter(|(_, v)| op.holds(*v, *n))
                    .map(|(k, _)| k)
                    .collect()
            }
            Alert::SumBy { label, metric, op, n } => {
                let mut sums: BTreeMap<String, f64> = BTreeMap::new();
                let none = Labels::new();
                for s in now.select(metric, &none) {
                    *sums
                        .entry(s.labels.get(label).cloned().unwrap_or_default())
                        .or_default() += s.value;
                }
                sums.into_iter()
                    .filter(|(_, v)| op.holds(*v, *n))
                    .map(|(k, _)| Labels::from([(label.clone(), k)]))
                    .collect()
            }
        }
    }
}

/// The shipped alert rules file.
pub fn rules_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/dns-sidecar.rules.yml")
}

/// One alerting rule of the rules file.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub expr: String,
}

/// Every alerting rule of deploy/prometheus/dns-sidecar.rules.yml, in order.
pub fn rules_alerts() -> Vec<Rule> {
    let path = rules_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_json::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: YAML: {e}", path.display()));
    let groups = doc["groups"].as_array().expect("rules file: groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules file: group rules").iter())
        .filter_map(|r| {
            Some(Rule {
                name: r.get("alert")?.as_str()?.to_string(),
                expr: r["expr"].as_str().expect("rules file: expr").trim().to_string(),
            })
        })
        .collect()
}

/// The metric names an expression reads, each with the label names it
/// matches on or groups by and the label values it matches (`None`: any).
pub fn expr_metrics(expr: &str) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    let mut grouping: Vec<String> = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        let word = &expr[start..i];
        if word == "by" || word == "without" {
            let rest = expr[i..].trim_start();
            let (inside, _) = rest
                .strip_prefix('(')
                .and_then(|r| r.split_once(')'))
                .unwrap_or_else(|| panic!("{expr:?}: {word} without a label list"));
            grouping.extend(
                inside
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
        } else if word.starts_with("dns_sidecar_") {
            let labels = out.entry(word.to_string()).or_default();
            if let Some(body) = expr[i..].strip_prefix('{') {
                let body = &body[..body.find('}').unwrap_or_else(|| panic!("{expr:?}: unclosed {{"))];
                for m in body.split(',').filter(|m| !m.trim().is_empty()) {
                    let (k, v) = m.split_once('=').unwrap_or_else(|| panic!("{expr:?}: matcher {m:?}"));
                    assert!(
                        !k.ends_with('!') && !v.starts_with('~'),
                        "{expr:?}: only equality matchers are understood"
                    );
                    labels.insert(k.trim().to_string(), Some(v.trim().trim_matches('"').to_string()));
                }
            }
        }
    }
    // Grouping labels belong to every metric of the expression.
    for labels in out.values_mut() {
        for l in &grouping {
            labels.entry(l.clone()).or_insert(None);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluator_follows_prometheus_semantics() {
        let before = Scrape::parse("# TYPE x counter\nx_total{a=\"1\"} 0\n# EOF\n");
        let now = Scrape::parse(
            "# TYPE x counter\nx_total{a=\"1\"} 1\nx_total{a=\"2\"} 1\ng{a=\"1\",s=\"p\"} \
            0\ng{a=\"1\",s=\"q\"} 0\ng{a=\"2\",s=\"p\"} 1\n# EOF\n",
        );
        let inc = Alert::parse("increase(x_total[5m]) > 0");
        assert_eq!(
            inc.firing(&before, &now),
            vec![Labels::from([("a".to_string(), "1".to_string())])],
            "a series born at 1 has no increase"
        );
        let sum = Alert::parse("sum by (a) (g) == 0");
        assert_eq!(
            sum.firing(&before, &now),
            vec![Labels::from([("a".to_string(), "1".to_string())])]
        );
        assert_eq!(
            Alert::parse("sum without (s) (g) == 0").firing(&before, &now),
            vec![Labels::from([("a".to_string(), "1".to_string())])]
        );
        assert!(Alert::parse("x_total{a=\"2\"} > 0").firing(&before, &now).len() == 1);
        assert_eq!(
            Alert::parse("rate(x_total[5m]) > 0").firing(&before, &now).len(),
            1,
            "only the series present at the start"
        );
        assert!(
            Alert::parse("rate(x_total[5m]) > 0.01")
                .firing(&before, &now)
                .is_empty(),
            "1 per 300 s"
        );
        assert_eq!(Alert::parse("min(g) == 0").firing(&before, &now).len(), 1);
        assert!(Alert::parse("min(g) == 1").firing(&before, &now).is_empty());
        assert!(
            Alert::parse("min(nothing) == 0").firing(&before, &now).is_empty(),
            "no series, no minimum"
        );
    }

    #[test]
    fn expr_metrics_reads_names_matchers_and_grouping() {
        let m = expr_metrics("increase(dns_sidecar_x_total{result=\"error\"}[5m]) > 0");
        assert_eq!(
            m["dns_sidecar_x_total"],
            BTreeMap::from([("result".to_string(), Some("error".to_string()))])
        );
        let m = expr_metrics("sum without (server) (dns_sidecar_alias_target) == 0");
        assert_eq!(
            m["dns_sidecar_alias_target"],
            BTreeMap::from([("server".to_string(), None)])
        );
        assert_eq!(expr_metrics("dns_sidecar_ready == 0").len(), 1);
    }
}
