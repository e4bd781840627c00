//! Prometheus metrics, served by the admin listener at `/metrics`.
//!
//! The registry is owned (no global recorder). Counters touched on the DNS
//! query path are created up front and kept as plain handles (an atomic add
//! each), so the query path never takes the label-map lock of a `Family`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What kind of query an answer was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Alias = 0,
    Authoritative = 1,
    Forwarded = 2,
    /// Malformed, refused, or not answerable (FORMERR, NOTIMP, REFUSED...).
    Other = 3,
}

const KINDS: [&str; 4] = ["alias", "authoritative", "forwarded", "other"];
/// The rcodes we count separately; anything else is "other".
const RCODES: [&str; 8] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other"];

/// Index into [`RCODES`] for a 12-bit rcode.
pub fn rcode_index(rcode: u16) -> usize {
    match rcode {
        0..=5 => rcode as usize,
        16 => 6,
        _ => 7,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindRcode {
    pub kind: String,
    pub rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeResult {
    pub server: String,
    /// `ok`, `timeout` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AliasLabel {
    pub alias: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AliasServer {
    pub alias: String,
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
    /// `timeout` or `error`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 25 us .. ~3.3 s
    Histogram::new(exponential_buckets(0.000025, 2.0, 18))
}

/// All metrics. Cheap to share (`Arc<Metrics>`).
pub struct Metrics {
    registry: Registry,
    /// `[kind][rcode]` handles for the query path.
    queries: Vec<Vec<Counter>>,
    answer_latency: Vec<Histogram>,
    pub probes: Family<ProbeResult, Counter>,
    pub probe_latency: Family<ServerLabel, Histogram, fn() -> Histogram>,
    pub server_up: Family<ServerLabel, Gauge>,
    pub server_writable: Family<ServerLabel, Gauge>,
    pub alias_target: Family<AliasServer, Gauge>,
    pub target_changes: Family<AliasLabel, Counter>,
    pub split_brain: Family<AliasLabel, Counter>,
    pub no_match: Family<AliasLabel, Counter>,
    pub upstream_errors: Family<UpstreamLabel, Counter>,
    pub reloads: Family<ResultLabel, Counter>,
    pub hook_runs: Family<ResultLabel, Counter>,
    pub overrides: Gauge,
    pub ready: Gauge,
    pub fenced: Family<AliasServer, Gauge>,
    pub fences: Family<AliasLabel, Counter>,
    pub fence_holds: Family<AliasLabel, Counter>,
    pub state_writes: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dns_sidecar");
        let q: Family<KindRcode, Counter> = Family::default();
        let lat: Family<KindLabel, Histogram, fn() -> Histogram> = Family::new_with_constructor(latency_histogram);
        let queries = KINDS
            .iter()
            .map(|k| RCODES.iter().map(|r| q.get_or_create_owned(&KindRcode { kind: k.to_string(), rcode: r.to_string() })).collect())
            .collect();
        let answer_latency = KINDS.iter().map(|k| lat.get_or_create_owned(&KindLabel { kind: k.to_string() })).collect();
        registry.register("queries", "DNS queries answered, by kind and rcode", q);
        registry.register("answer_duration_seconds", "Time from receiving a query to sending its answer", lat);
        let m = Metrics {
            queries,
            answer_latency,
            probes: Family::default(),
            probe_latency: Family::new_with_constructor(latency_histogram),
            server_up: Family::default(),
            server_writable: Family::default(),
            alias_target: Family::default(),
            target_changes: Family::default(),
            split_brain: Family::default(),
            no_match: Family::default(),
            upstream_errors: Family::default(),
            reloads: Family::default(),
            hook_runs: Family::default(),
            overrides: Gauge::default(),
            ready: Gauge::default(),
            fenced: Family::default(),
            fences: Family::default(),
            fence_holds: Family::default(),
            state_writes: Family::default(),
            registry: Registry::default(),
        };
        let mut m = m;
        registry.register("probes", "Probes by server and result (ok, timeout, error)", m.probes.clone());
        registry.register("probe_duration_seconds", "Probe latency by server", m.probe_latency.clone());
        registry.register("server_up", "1 if the server counts as up", m.server_up.clone());
        registry.register("server_writable", "1 if the server's last probe saw it writable", m.server_writable.clone());
        registry.register("alias_target", "1 for the server an alias currently points at", m.alias_target.clone());
        registry.register("target_changes", "Alias target changes", m.target_changes.clone());
        registry.register("split_brain", "Times more than one candidate of a read-write/primary alias was writable", m.split_brain.clone());
        registry.register("no_match", "Times no candidate matched an alias's role", m.no_match.clone());
        registry.register("upstream_errors", "Upstream failures by upstream and kind (timeout, error)", m.upstream_errors.clone());
        registry.register("config_reloads", "Config reloads by result (ok, rejected)", m.reloads.clone());
        registry.register("hook_runs", "On-change hook runs by result (ok, failed, timeout)", m.hook_runs.clone());
        registry.register("overrides", "Active manual overrides (pins + drains)", m.overrides.clone());
        registry.register("ready", "1 once listeners are bound and the first probe round is done", m.ready.clone());
        registry.register("fenced", "1 while a writer alias will not move to the server (a fence, or a timeline older than one already seen)", m.fenced.clone());
        registry.register("fences", "Fences set on writer aliases (a server left after a promote, or a split brain lost)", m.fences.clone());
        registry.register("fence_holds", "Episodes in which a fence kept an alias off a server that otherwise matched its role", m.fence_holds.clone());
        registry.register("state_writes", "State file writes by result (ok, error)", m.state_writes.clone());
        m.registry = registry;
        m
    }

    /// Counts one answered query (query path: two atomic adds, no lock).
    #[inline]
    pub fn answered(&self, kind: QueryKind, rcode: u16) {
        self.queries[kind as usize][rcode_index(rcode)].inc();
    }

    /// Counts `n` answers of one kind and rcode index (see [`rcode_index`]).
    #[inline]
    pub fn answered_n(&self, kind: QueryKind, rcode_index: usize, n: u64) {
        self.queries[kind as usize][rcode_index].inc_by(n);
    }

    /// Records how long an answer took.
    #[inline]
    pub fn latency(&self, kind: QueryKind, seconds: f64) {
        self.answer_latency[kind as usize].observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_exposition() {
        let m = Metrics::new();
        m.answered(QueryKind::Alias, 0);
        m.answered(QueryKind::Forwarded, 2);
        m.probes.get_or_create(&ProbeResult { server: "a".into(), result: "ok".into() }).inc();
        let text = m.encode();
        assert!(text.contains(r#"dns_sidecar_queries_total{kind="alias",rcode="NOERROR"} 1"#), "{text}");
        assert!(text.contains(r#"dns_sidecar_queries_total{kind="forwarded",rcode="SERVFAIL"} 1"#), "{text}");
        assert!(text.contains(r#"dns_sidecar_probes_total{server="a",result="ok"} 1"#), "{text}");
        assert_eq!(rcode_index(16), 6);
    }
}
