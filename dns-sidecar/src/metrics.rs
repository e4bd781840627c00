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

/// Why the DNS side refused work (`dns_sidecar_limited_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The client is not in `[dns] allow` (answered REFUSED / connection closed).
    Acl = 0,
    /// The client exceeded `forward_rate` (answered REFUSED).
    Rate = 1,
    /// `forward_in_flight` reached (answered SERVFAIL).
    InFlight = 2,
    /// The memory budget is used up (SERVFAIL / connection closed).
    Memory = 3,
    /// Every upstream is out of use after timeouts (answered SERVFAIL).
    UpstreamDown = 4,
    /// `tcp_connections` reached and no idle connection to evict.
    TcpConnections = 5,
    /// `tcp_connections_per_client` reached.
    TcpPerClient = 6,
    /// An idle TCP connection closed to make room for a new one.
    TcpEvicted = 7,
    /// A TCP client did not take its answer within `tcp_write_timeout`.
    TcpWriteTimeout = 8,
}

const LIMITED: [&str; 9] = ["acl", "rate", "in_flight", "memory", "upstream_down", "tcp_connections", "tcp_per_client", "tcp_evicted", "tcp_write_timeout"];

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
    limited: Vec<Counter>,
    pub upstream_health: Family<UpstreamAddr, Gauge>,
    pub memory_used: Gauge,
    pub in_flight: Gauge,
    pub tcp_connections: Gauge,
    pub admin_refused: Family<ResultLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamAddr {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
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
        let lim: Family<ReasonLabel, Counter> = Family::default();
        let limited = LIMITED.iter().map(|r| lim.get_or_create_owned(&ReasonLabel { reason: r.to_string() })).collect();
        registry.register("limited", "Queries or connections refused by a limit, by reason", lim);
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
            registry: Registry::default(),
            limited,
            upstream_health: Family::default(),
            memory_used: Gauge::default(),
            in_flight: Gauge::default(),
            tcp_connections: Gauge::default(),
            admin_refused: Family::default(),
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
        registry.register("upstream_up", "1 while an upstream is in use, 0 while taken out of use after timeouts", m.upstream_health.clone());
        registry.register("memory_budget_used_bytes", "Bytes of the [limits] memory budget in use", m.memory_used.clone());
        registry.register("forward_in_flight", "Queries waiting on upstreams", m.in_flight.clone());
        registry.register("tcp_connections", "Open DNS TCP connections", m.tcp_connections.clone());
        registry.register("admin_refused", "Admin connections or requests refused, by reason", m.admin_refused.clone());
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

    /// Counts one refusal by a limit.
    #[inline]
    pub fn limited(&self, why: Limited) {
        self.limited[why as usize].inc();
    }

    /// Sets whether an upstream is in use.
    pub fn upstream_up(&self, addr: std::net::SocketAddr, up: bool) {
        self.upstream_health.get_or_create(&UpstreamAddr { upstream: addr.to_string() }).set(up as i64);
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
