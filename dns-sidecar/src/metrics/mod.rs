//! Prometheus metrics, served by the admin listener at `/metrics`.
//!
//! The registry is owned (no global recorder). Counters touched on the DNS
//! query path are created up front and kept as plain handles (an atomic add
//! each), so the query path never takes the label-map lock of a `Family`.
//!
//! Each metric is declared once, in the table in [`Metrics::new`]: its
//! handle, name, help and constructor on one line, registered in the order
//! written, which is the order of the exposition. The struct's fields say
//! what each handle is for.
//!
//! Every series whose labels are known from the config (each server, alias,
//! upstream, and each result) exists from start-up at 0 ([`Metrics::prepare`],
//! in `series.rs`). The text formats and their negotiation are in
//! `exposition.rs`; the label sets and the label values known in advance in
//! `labels.rs`.

mod exposition;
mod labels;
mod series;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

pub(crate) use exposition::Exposition;
pub(crate) use labels::{
    rcode_index, AliasLabel, AliasServer, CredentialResult, KindLabel, KindRcode, Limited, ProbeResult, QueryKind,
    ReasonLabel, ResultLabel, ServerLabel, UpstreamAddr, UpstreamLabel,
};
use labels::{CREDENTIAL_RESULTS, CREDENTIAL_SOURCES, KINDS, LIMITED, RCODES};

/// A family of latency histograms (25 us .. ~3.3 s).
type LatencyFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 25 us .. ~3.3 s
    Histogram::new(exponential_buckets(0.000025, 2.0, 18))
}

fn latency_family<S: Clone + std::hash::Hash + Eq>() -> LatencyFamily<S> {
    Family::new_with_constructor(latency_histogram)
}

/// Registers `metric` as `name` with `help` and gives the handle back, so
/// that a metric's handle, name and help are one expression.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// The handles of `family` for each label set of `labels`, taken once so
/// that the query path adds to a plain handle, never through the family's
/// label-map lock.
fn handles<S, M, C>(family: &Family<S, M, C>, labels: impl IntoIterator<Item = S>) -> Vec<M>
where
    S: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    labels.into_iter().map(|l| family.get_or_create_owned(&l)).collect()
}

/// Creates every `credential_refreshes` label set at 0, so rules on it never
/// see a missing series (the sources are known without a config).
fn every_credential_series(family: &Family<CredentialResult, Counter>) {
    for source in CREDENTIAL_SOURCES {
        for result in CREDENTIAL_RESULTS {
            let _ = family.get_or_create(&CredentialResult {
                source: source.into(),
                result: result.into(),
            });
        }
    }
}

/// The metric table: one line per metric, `handle = "name", "help", constructor;`,
/// each a `let` of the registered handle. The registry writes metrics in the
/// order they were registered, so the table's order is the exposition's:
/// add a new metric where it should appear (at the end keeps the exposition
/// of the others as it was).
macro_rules! metric_table {
    ($registry:ident; $( $handle:ident = $name:literal, $help:literal, $metric:expr; )*) => {
        $( let $handle = register(&mut $registry, $name, $help, $metric); )*
    };
}

/// All metrics. Cheap to share (`Arc<Metrics>`).
pub struct Metrics {
    registry: Registry,
    /// `[kind][rcode]` handles for the query path.
    queries: Vec<Vec<Counter>>,
    /// `[kind]` handles for the query path.
    answer_latency: Vec<Histogram>,
    /// `[reason]` handles (see [`Limited`]).
    limited: Vec<Counter>,
    pub(crate) probes: Family<ProbeResult, Counter>,
    /// New probe connections by server and [`labels::CONNECT_RESULTS`].
    pub(crate) probe_connects: Family<ProbeResult, Counter>,
    pub(crate) probe_latency: LatencyFamily<ServerLabel>,
    pub(crate) server_up: Family<ServerLabel, Gauge>,
    pub(crate) server_writable: Family<ServerLabel, Gauge>,
    pub(crate) alias_target: Family<AliasServer, Gauge>,
    pub(crate) target_changes: Family<AliasLabel, Counter>,
    pub(crate) split_brain: Family<AliasLabel, Counter>,
    pub(crate) no_match: Family<AliasLabel, Counter>,
    pub(crate) upstream_errors: Family<UpstreamLabel, Counter>,
    pub(crate) reloads: Family<ResultLabel, Counter>,
    pub(crate) hook_runs: Family<ResultLabel, Counter>,
    pub(crate) overrides: Gauge,
    pub(crate) ready: Gauge,
    pub(crate) fenced: Family<AliasServer, Gauge>,
    pub(crate) fences: Family<AliasLabel, Counter>,
    pub(crate) fence_holds: Family<AliasLabel, Counter>,
    pub(crate) state_writes: Family<ResultLabel, Counter>,
    pub(crate) upstream_health: Family<UpstreamAddr, Gauge>,
    pub(crate) memory_used: Gauge,
    pub(crate) in_flight: Gauge,
    pub(crate) tcp_connections: Gauge,
    pub(crate) admin_refused: Family<ResultLabel, Counter>,
    pub(crate) cache: CacheMetrics,
    /// Spreading reader aliases: answers per alias and server, set sizes.
    pub(crate) reader: ReaderMetrics,
    /// Fetches of probe passwords and tokens (see [`crate::credential`]).
    pub(crate) credential_refreshes: Family<CredentialResult, Counter>,
}

/// Spreading reader aliases (`spread = "rotate" | "client"`). The query path
/// adds to handles taken once per fast table, never through the family.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReaderMetrics {
    pub(crate) answers: Family<AliasServer, Counter>,
    pub(crate) set_size: Family<AliasLabel, Gauge>,
}

/// The forwarding cache's series (handles shared with [`crate::dns::cache::Cache`]).
#[derive(Clone, Debug, Default)]
pub struct CacheMetrics {
    /// Forwarded queries answered from a fresh entry.
    pub(crate) hits: Counter,
    /// Forwarded queries the cache could not answer (sent upstream).
    pub(crate) misses: Counter,
    /// Answers from expired entries because the upstream failed (RFC 8767).
    pub(crate) stale: Counter,
    /// Entries removed to make room while they could still be served.
    pub(crate) evictions: Counter,
    pub(crate) entries: Gauge,
    pub(crate) bytes: Gauge,
    /// Refreshes of popular entries sent upstream before they expired.
    pub(crate) prefetches: Counter,
    /// Refreshes that came due but were not sent (queue full, a limit,
    /// every upstream out of use).
    pub(crate) prefetch_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered. Help texts and names are what dashboards
    /// and alert rules read: change them only on purpose.
    ///
    /// Longer than 80 lines on purpose: the table is the one place each
    /// metric is declared and its order is the exposition's, so it stays in
    /// one piece, next to the assembly that hands its handles out.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dns_sidecar");
        metric_table! { registry;
            queries = "queries", "DNS queries answered, by kind and rcode", Family::<KindRcode, Counter>::default();
            answer_latency = "answer_duration_seconds", "Time from receiving a query to sending its answer", latency_family::<KindLabel>();
            limited = "limited", "Queries or connections refused by a limit, by reason", Family::<ReasonLabel, Counter>::default();
            probes = "probes", "Probes by server and result (ok, timeout, error)", Family::default();
            probe_connects = "probe_connects", "New connections opened by the probes, by server and result (ok, refused, closed, timeout, error)", Family::default();
            probe_latency = "probe_duration_seconds", "Probe latency by server", latency_family();
            server_up = "server_up", "1 if the server counts as up", Family::default();
            server_writable = "server_writable", "1 if the server's last probe saw it writable", Family::default();
            alias_target = "alias_target", "1 for the server whose CNAME DNS answers for the alias; all 0 while it answers SERVFAIL", Family::default();
            target_changes = "target_changes", "Alias target changes", Family::default();
            split_brain = "split_brain", "Times more than one candidate of a read-write/primary alias was writable", Family::default();
            no_match = "no_match", "Times no candidate matched an alias's role", Family::default();
            upstream_errors = "upstream_errors", "Upstream failures by upstream, forward zone and kind (timeout, error)", Family::default();
            reloads = "config_reloads", "Config reloads by result (ok, rejected)", Family::default();
            hook_runs = "hook_runs", "On-change hook runs by result (ok, failed, timeout)", Family::default();
            overrides = "overrides", "Active manual overrides (pins + drains)", Gauge::default();
            ready = "ready", "1 once listeners are bound and the first probe round is done", Gauge::default();
            fenced = "fenced", "1 while a writer alias will not move to the server (a fence, or a timeline older than one already seen)", Family::default();
            fences = "fences", "Fences set on writer aliases (a server left after a promote, or a split brain lost)", Family::default();
            fence_holds = "fence_holds", "Episodes in which a fence kept an alias off a server that otherwise matched its role", Family::default();
            state_writes = "state_writes", "State file writes by result (ok, error)", Family::default();
            upstream_health = "upstream_up", "1 while an upstream is in use, 0 while taken out of use after failed health checks", Family::default();
            memory_used = "memory_budget_used_bytes", "Bytes of the [limits] memory budget in use", Gauge::default();
            in_flight = "forward_in_flight", "Queries waiting on upstreams", Gauge::default();
            tcp_connections = "tcp_connections", "Open DNS TCP connections", Gauge::default();
            admin_refused = "admin_refused", "Admin connections or requests refused, by reason", Family::default();
            cache_hits = "cache_hits", "Forwarded queries answered from the cache", Counter::default();
            cache_misses = "cache_misses", "Forwarded queries the cache could not answer (sent upstream)", Counter::default();
            cache_stale = "cache_stale_answers", "Answers from expired cache entries because the upstream failed (serve-stale)", Counter::default();
            cache_evictions = "cache_evictions", "Cache entries removed to make room while they could still be served", Counter::default();
            cache_entries = "cache_entries", "Answers in the cache", Gauge::default();
            cache_bytes = "cache_bytes", "Bytes the cached answers take (what [cache] max_bytes bounds)", Gauge::default();
            reader_answers = "reader_answers", "Answers of spreading reader aliases, by alias and the server answered", Family::default();
            reader_set_size = "reader_set_size", "Servers DNS answers for the alias: a spreading reader alias's set; 1 or 0 for any other", Family::default();
            credential_refreshes = "credential_refreshes", "Fetches of probe passwords and tokens by source kind (file, command, managed-identity, workload-identity) and result (ok, error)", Family::default();
            cache_prefetches = "cache_prefetches", "Refreshes of popular cache entries sent upstream shortly before they expired ([cache] prefetch)", Counter::default();
            cache_prefetch_dropped = "cache_prefetches_dropped", "Refreshes of popular cache entries not sent: the queue was full, a limit refused it, or every upstream is out of use", Counter::default();
        }
        every_credential_series(&credential_refreshes);
        let kind_rcode = |k: &str, r: &str| KindRcode {
            kind: k.into(),
            rcode: r.into(),
        };
        Metrics {
            queries: KINDS
                .iter()
                .map(|k| handles(&queries, RCODES.map(|r| kind_rcode(k, r))))
                .collect(),
            answer_latency: handles(&answer_latency, KINDS.map(|k| KindLabel { kind: k.into() })),
            limited: handles(&limited, LIMITED.map(|r| ReasonLabel { reason: r.into() })),
            probes,
            probe_connects,
            probe_latency,
            server_up,
            server_writable,
            alias_target,
            target_changes,
            split_brain,
            no_match,
            upstream_errors,
            reloads,
            hook_runs,
            overrides,
            ready,
            fenced,
            fences,
            fence_holds,
            state_writes,
            upstream_health,
            memory_used,
            in_flight,
            tcp_connections,
            admin_refused,
            cache: CacheMetrics {
                hits: cache_hits,
                misses: cache_misses,
                stale: cache_stale,
                evictions: cache_evictions,
                entries: cache_entries,
                bytes: cache_bytes,
                prefetches: cache_prefetches,
                prefetch_dropped: cache_prefetch_dropped,
            },
            reader: ReaderMetrics {
                answers: reader_answers,
                set_size: reader_set_size,
            },
            credential_refreshes,
            registry,
        }
    }

    /// Counts one answered query (query path: two atomic adds, no lock).
    #[inline]
    pub(crate) fn answered(&self, kind: QueryKind, rcode: u16) {
        self.queries[kind as usize][rcode_index(rcode)].inc();
    }

    /// Counts `n` answers of one kind and rcode index (see [`rcode_index`]).
    #[inline]
    pub(crate) fn answered_n(&self, kind: QueryKind, rcode_index: usize, n: u64) {
        self.queries[kind as usize][rcode_index].inc_by(n);
    }

    /// Counts one refusal by a limit.
    #[inline]
    pub(crate) fn limited(&self, why: Limited) {
        self.limited[why as usize].inc();
    }

    /// Sets whether an upstream of forward zone `zone` is in use.
    pub(crate) fn upstream_up(&self, zone: &str, addr: std::net::SocketAddr, up: bool) {
        self.upstream_health
            .get_or_create(&UpstreamAddr {
                upstream: addr.to_string(),
                zone: zone.to_string(),
            })
            .set(up as i64);
    }

    /// Records how long an answer took.
    #[inline]
    pub(crate) fn latency(&self, kind: QueryKind, seconds: f64) {
        self.answer_latency[kind as usize].observe(seconds);
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
        m.probes
            .get_or_create(&ProbeResult {
                server: "a".into(),
                result: "ok".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains(r#"dns_sidecar_queries_total{kind="alias",rcode="NOERROR"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dns_sidecar_queries_total{kind="forwarded",rcode="SERVFAIL"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dns_sidecar_probes_total{server="a",result="ok"} 1"#),
            "{text}"
        );
        assert_eq!(rcode_index(16), 6);
    }
}
