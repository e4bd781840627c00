//! Prometheus metrics, served by the admin listener at `/metrics`.
//!
//! The registry is owned (no global recorder). Counters touched on the DNS
//! query path are created up front and kept as plain handles (an atomic add
//! each), so the query path never takes the label-map lock of a `Family`.
//!
//! Every series whose labels are known from the config (each server, alias,
//! upstream, and each result) exists from start-up at 0 ([`Metrics::prepare`]):
//! Prometheus's `increase()` needs a sample before the first event, or the
//! first split brain after a start would never raise an alert.
//!
//! The exposition is negotiated, and its content type always says which
//! one the body is ([`Exposition`]): OpenMetrics 1.0 text (what
//! prometheus-client writes: `# TYPE x counter` above `x_total` samples,
//! `# EOF` at the end) for clients whose `Accept` names
//! `application/openmetrics-text` (Prometheus does, first), and the classic
//! Prometheus text format 0.0.4 for everyone else (curl, `promtool check
//! metrics`, older scrapers), converted from the same encoding.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::config::Config;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Metrics::encode_classic`]'s output.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two text formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    Classic,
}

impl Exposition {
    /// OpenMetrics when the `Accept` header names it (with a non-zero
    /// quality), else the classic format.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        let wants = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut params = part.split(';').map(str::trim);
                params
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case("application/openmetrics-text"))
                    && !params.any(|p| p.replace(' ', "") == "q=0")
            })
        });
        if wants {
            Exposition::OpenMetrics
        } else {
            Exposition::Classic
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => CONTENT_TYPE,
            Exposition::Classic => CLASSIC_CONTENT_TYPE,
        }
    }
}

/// Probe results (`dns_sidecar_probes_total{result}`).
pub const PROBE_RESULTS: [&str; 3] = ["ok", "timeout", "error"];
/// Results of the probes' new connections (`dns_sidecar_probe_connects_total{result}`).
pub const CONNECT_RESULTS: [&str; 5] = ["ok", "refused", "closed", "timeout", "error"];
/// Upstream failure kinds (`dns_sidecar_upstream_errors_total{kind}`).
pub const UPSTREAM_ERROR_KINDS: [&str; 2] = ["timeout", "error"];
/// Reload results (`dns_sidecar_config_reloads_total{result}`).
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "rejected"];
/// Hook results (`dns_sidecar_hook_runs_total{result}`).
pub const HOOK_RESULTS: [&str; 3] = ["ok", "failed", "timeout"];
/// State file write results (`dns_sidecar_state_writes_total{result}`).
pub const STATE_WRITE_RESULTS: [&str; 2] = ["ok", "error"];
/// Values of `dns_sidecar_admin_refused_total{result}`.
pub const ADMIN_REFUSED_RESULTS: [&str; 8] = [
    "request_timeout",
    "max_connections",
    "evicted",
    "client_evicted",
    "per_client",
    "body_busy",
    "body_timeout",
    "silent_evicted",
];

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
const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other",
];

/// Index into `RCODES` for a 12-bit rcode.
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
    /// The forward zone whose upstream it is (`.`: `[upstream]`).
    pub zone: String,
    /// `timeout` or `error`.
    pub kind: String,
}

/// `dns_sidecar_credential_refreshes_total{source, result}`: `source` is
/// the password source's kind (`file`, `command`, `managed-identity`,
/// `workload-identity`), `result` is `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialResult {
    pub source: String,
    pub result: String,
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
    /// Every upstream is out of use after failed health checks, and none is
    /// due a trial (answered SERVFAIL, or stale).
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

const LIMITED: [&str; 9] = [
    "acl",
    "rate",
    "in_flight",
    "memory",
    "upstream_down",
    "tcp_connections",
    "tcp_per_client",
    "tcp_evicted",
    "tcp_write_timeout",
];

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
    /// New probe connections by server and [`CONNECT_RESULTS`].
    pub probe_connects: Family<ProbeResult, Counter>,
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
    limited: Vec<Counter>,
    pub upstream_health: Family<UpstreamAddr, Gauge>,
    pub memory_used: Gauge,
    pub in_flight: Gauge,
    pub tcp_connections: Gauge,
    pub admin_refused: Family<ResultLabel, Counter>,
    pub cache: CacheMetrics,
    /// Fetches of probe passwords and tokens (see [`crate::credential`]).
    pub credential_refreshes: Family<CredentialResult, Counter>,
    /// Spreading reader aliases: answers per alias and server, set sizes.
    pub reader: ReaderMetrics,
}

/// Spreading reader aliases (`spread = "rotate" | "client"`). The query path
/// adds to handles taken once per fast table, never through the family.
#[derive(Clone, Debug, Default)]
pub struct ReaderMetrics {
    pub answers: Family<AliasServer, Counter>,
    pub set_size: Family<AliasLabel, Gauge>,
}

/// The forwarding cache's series (handles shared with [`crate::dns::cache::Cache`]).
#[derive(Clone, Debug, Default)]
pub struct CacheMetrics {
    /// Forwarded queries answered from a fresh entry.
    pub hits: Counter,
    /// Forwarded queries the cache could not answer (sent upstream).
    pub misses: Counter,
    /// Answers from expired entries because the upstream failed (RFC 8767).
    pub stale: Counter,
    /// Entries removed to make room while they could still be served.
    pub evictions: Counter,
    pub entries: Gauge,
    pub bytes: Gauge,
    /// Refreshes of popular entries sent upstream before they expired.
    pub prefetches: Counter,
    /// Refreshes that came due but were not sent (queue full, a limit,
    /// every upstream out of use).
    pub prefetch_dropped: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamAddr {
    pub upstream: String,
    /// The forward zone whose upstream it is (`.`: `[upstream]`).
    pub zone: String,
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
            .map(|k| {
                RCODES
                    .iter()
                    .map(|r| {
                        q.get_or_create_owned(&KindRcode {
                            kind: k.to_string(),
                            rcode: r.to_string(),
                        })
                    })
                    .collect()
            })
            .collect();
        let answer_latency = KINDS
            .iter()
            .map(|k| lat.get_or_create_owned(&KindLabel { kind: k.to_string() }))
            .collect();
        registry.register("queries", "DNS queries answered, by kind and rcode", q);
        registry.register(
            "answer_duration_seconds",
            "Time from receiving a query to sending its answer",
            lat,
        );
        let lim: Family<ReasonLabel, Counter> = Family::default();
        let limited = LIMITED
            .iter()
            .map(|r| lim.get_or_create_owned(&ReasonLabel { reason: r.to_string() }))
            .collect();
        registry.register("limited", "Queries or connections refused by a limit, by reason", lim);
        let m = Metrics {
            queries,
            answer_latency,
            probes: Family::default(),
            probe_connects: Family::default(),
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
            limited,
            upstream_health: Family::default(),
            memory_used: Gauge::default(),
            in_flight: Gauge::default(),
            tcp_connections: Gauge::default(),
            admin_refused: Family::default(),
            cache: CacheMetrics::default(),
            reader: ReaderMetrics::default(),
            credential_refreshes: Family::default(),
        };
        let mut m = m;
        registry.register(
            "probes",
            "Probes by server and result (ok, timeout, error)",
            m.probes.clone(),
        );
        registry.register(
            "probe_connects",
            "New connections opened by the probes, by server and result (ok, refused, closed, timeout, error)",
            m.probe_connects.clone(),
        );
        registry.register(
            "probe_duration_seconds",
            "Probe latency by server",
            m.probe_latency.clone(),
        );
        registry.register("server_up", "1 if the server counts as up", m.server_up.clone());
        registry.register(
            "server_writable",
            "1 if the server's last probe saw it writable",
            m.server_writable.clone(),
        );
        registry.register(
            "alias_target",
            "1 for the server whose CNAME DNS answers for the alias; all 0 while it answers SERVFAIL",
            m.alias_target.clone(),
        );
        registry.register("target_changes", "Alias target changes", m.target_changes.clone());
        registry.register(
            "split_brain",
            "Times more than one candidate of a read-write/primary alias was writable",
            m.split_brain.clone(),
        );
        registry.register(
            "no_match",
            "Times no candidate matched an alias's role",
            m.no_match.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures by upstream, forward zone and kind (timeout, error)",
            m.upstream_errors.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads by result (ok, rejected)",
            m.reloads.clone(),
        );
        registry.register(
            "hook_runs",
            "On-change hook runs by result (ok, failed, timeout)",
            m.hook_runs.clone(),
        );
        registry.register(
            "overrides",
            "Active manual overrides (pins + drains)",
            m.overrides.clone(),
        );
        registry.register(
            "ready",
            "1 once listeners are bound and the first probe round is done",
            m.ready.clone(),
        );
        registry.register(
            "fenced",
            "1 while a writer alias will not move to the server (a fence, or a timeline older than one already seen)",
            m.fenced.clone(),
        );
        registry.register(
            "fences",
            "Fences set on writer aliases (a server left after a promote, or a split brain lost)",
            m.fences.clone(),
        );
        registry.register(
            "fence_holds",
            "Episodes in which a fence kept an alias off a server that otherwise matched its role",
            m.fence_holds.clone(),
        );
        registry.register(
            "state_writes",
            "State file writes by result (ok, error)",
            m.state_writes.clone(),
        );
        registry.register(
            "upstream_up",
            "1 while an upstream is in use, 0 while taken out of use after failed health checks",
            m.upstream_health.clone(),
        );
        registry.register(
            "memory_budget_used_bytes",
            "Bytes of the [limits] memory budget in use",
            m.memory_used.clone(),
        );
        registry.register("forward_in_flight", "Queries waiting on upstreams", m.in_flight.clone());
        registry.register("tcp_connections", "Open DNS TCP connections", m.tcp_connections.clone());
        registry.register(
            "admin_refused",
            "Admin connections or requests refused, by reason",
            m.admin_refused.clone(),
        );
        registry.register(
            "cache_hits",
            "Forwarded queries answered from the cache",
            m.cache.hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Forwarded queries the cache could not answer (sent upstream)",
            m.cache.misses.clone(),
        );
        registry.register(
            "cache_stale_answers",
            "Answers from expired cache entries because the upstream failed (serve-stale)",
            m.cache.stale.clone(),
        );
        registry.register(
            "cache_evictions",
            "Cache entries removed to make room while they could still be served",
            m.cache.evictions.clone(),
        );
        registry.register("cache_entries", "Answers in the cache", m.cache.entries.clone());
        registry.register(
            "cache_bytes",
            "Bytes the cached answers take (what [cache] max_bytes bounds)",
            m.cache.bytes.clone(),
        );
        registry.register(
            "reader_answers",
            "Answers of spreading reader aliases, by alias and the server answered",
            m.reader.answers.clone(),
        );
        registry.register(
            "reader_set_size",
            "Servers DNS answers for the alias: a spreading reader alias's set; 1 or 0 for any other",
            m.reader.set_size.clone(),
        );
        // Every label set from start-up, so rules on it never see a missing series.
        for source in ["file", "command", "managed-identity", "workload-identity"] {
            for result in ["ok", "error"] {
                let _ = m.credential_refreshes.get_or_create(&CredentialResult {
                    source: source.into(),
                    result: result.into(),
                });
            }
        }
        registry.register(
            "credential_refreshes",
            "Fetches of probe passwords and tokens by source kind (file, command, managed-identity, workload-identity) and result (ok, error)",
            m.credential_refreshes.clone(),
        );
        registry.register(
            "cache_prefetches",
            "Refreshes of popular cache entries sent upstream shortly before they expired ([cache] prefetch)",
            m.cache.prefetches.clone(),
        );
        registry.register(
            "cache_prefetches_dropped",
            "Refreshes of popular cache entries not sent: the queue was full, a limit refused it, or every upstream is out of use",
            m.cache.prefetch_dropped.clone(),
        );
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

    /// Sets whether an upstream of forward zone `zone` is in use.
    pub fn upstream_up(&self, zone: &str, addr: std::net::SocketAddr, up: bool) {
        self.upstream_health
            .get_or_create(&UpstreamAddr {
                upstream: addr.to_string(),
                zone: zone.to_string(),
            })
            .set(up as i64);
    }

    /// Records how long an answer took.
    #[inline]
    pub fn latency(&self, kind: QueryKind, seconds: f64) {
        self.answer_latency[kind as usize].observe(seconds);
    }

    /// Creates, at 0, every series whose labels `config` determines, so that
    /// alerts see them before their first event. Idempotent (existing series
    /// keep their values); call at start and after each reload.
    pub fn prepare(&self, config: &Config) {
        let result = |r: &str| ResultLabel { result: r.into() };
        for r in RELOAD_RESULTS {
            let _ = self.reloads.get_or_create(&result(r));
        }
        for r in HOOK_RESULTS {
            let _ = self.hook_runs.get_or_create(&result(r));
        }
        for r in STATE_WRITE_RESULTS {
            let _ = self.state_writes.get_or_create(&result(r));
        }
        for s in &config.servers {
            let l = ServerLabel { server: s.id.clone() };
            for r in PROBE_RESULTS {
                let _ = self.probes.get_or_create(&ProbeResult {
                    server: s.id.clone(),
                    result: r.into(),
                });
            }
            for r in CONNECT_RESULTS {
                let _ = self.probe_connects.get_or_create(&ProbeResult {
                    server: s.id.clone(),
                    result: r.into(),
                });
            }
            let _ = self.probe_latency.get_or_create(&l);
            let _ = self.server_up.get_or_create(&l);
            let _ = self.server_writable.get_or_create(&l);
        }
        for a in &config.aliases {
            let l = AliasLabel {
                alias: a.name.to_string(),
            };
            for f in [
                &self.target_changes,
                &self.split_brain,
                &self.no_match,
                &self.fences,
                &self.fence_holds,
            ] {
                let _ = f.get_or_create(&l);
            }
            for &s in &a.servers {
                let l = AliasServer {
                    alias: a.name.to_string(),
                    server: config.servers[s].id.clone(),
                };
                let _ = self.alias_target.get_or_create(&l);
                let _ = self.fenced.get_or_create(&l);
                let _ = self.reader.answers.get_or_create(&l);
            }
            let _ = self.reader.set_size.get_or_create(&l);
        }
        for r in ADMIN_REFUSED_RESULTS {
            let _ = self.admin_refused.get_or_create(&result(r));
        }
        for (zone, u) in config
            .upstreams()
            .flat_map(|(z, u)| u.servers.iter().map(move |s| (z, s)))
        {
            // Upstreams start in use; the DNS side sets 0 when one is taken
            // out. A reload keeps what an existing series says.
            let addr = UpstreamAddr {
                upstream: u.to_string(),
                zone: zone.to_string(),
            };
            if self.upstream_health.get(&addr).is_none() {
                self.upstream_health.get_or_create(&addr).set(1);
            }
            for k in UPSTREAM_ERROR_KINDS {
                // The label is the address as the DNS side writes it.
                let _ = self.upstream_errors.get_or_create(&UpstreamLabel {
                    upstream: u.to_string(),
                    zone: zone.to_string(),
                    kind: k.into(),
                });
            }
        }
    }

    /// Removes the series of servers, aliases and upstreams that `old` had
    /// and `new` does not (after a reload), so no alert fires on a name that
    /// is gone, and a gauge never keeps a value nobody updates.
    pub fn forget(&self, old: &Config, new: &Config) {
        for s in old.servers.iter().filter(|s| !new.servers.iter().any(|n| n.id == s.id)) {
            let l = ServerLabel { server: s.id.clone() };
            for r in PROBE_RESULTS {
                self.probes.remove(&ProbeResult {
                    server: s.id.clone(),
                    result: r.into(),
                });
            }
            for r in CONNECT_RESULTS {
                self.probe_connects.remove(&ProbeResult {
                    server: s.id.clone(),
                    result: r.into(),
                });
            }
            self.probe_latency.remove(&l);
            self.server_up.remove(&l);
            self.server_writable.remove(&l);
        }
        for a in &old.aliases {
            let kept = new.aliases.iter().find(|n| n.name == a.name);
            if kept.is_none() {
                let l = AliasLabel {
                    alias: a.name.to_string(),
                };
                for f in [
                    &self.target_changes,
                    &self.split_brain,
                    &self.no_match,
                    &self.fences,
                    &self.fence_holds,
                ] {
                    f.remove(&l);
                }
            }
            for &s in &a.servers {
                let id = &old.servers[s].id;
                let still = kept.is_some_and(|n| n.servers.iter().any(|&x| new.servers[x].id == *id));
                if !still {
                    let l = AliasServer {
                        alias: a.name.to_string(),
                        server: id.clone(),
                    };
                    self.alias_target.remove(&l);
                    self.fenced.remove(&l);
                }
            }
        }
        let upstreams = |c: &Config| {
            c.upstreams()
                .flat_map(|(z, u)| u.servers.iter().map(move |s| (z.to_string(), s.to_string())))
                .collect::<Vec<_>>()
        };
        let keep = upstreams(new);
        for (zone, u) in upstreams(old).into_iter().filter(|u| !keep.contains(u)) {
            for k in UPSTREAM_ERROR_KINDS {
                self.upstream_errors.remove(&UpstreamLabel {
                    upstream: u.clone(),
                    zone: zone.clone(),
                    kind: k.into(),
                });
            }
            self.upstream_health.remove(&UpstreamAddr { upstream: u, zone });
        }
    }

    /// The exposition in `format`.
    pub fn render(&self, format: Exposition) -> String {
        match format {
            Exposition::OpenMetrics => self.encode(),
            Exposition::Classic => self.encode_classic(),
        }
    }

    /// The classic Prometheus text format (0.0.4): the OpenMetrics text
    /// with counters' `# HELP`/`# TYPE` named like their `_total` samples,
    /// and without `# UNIT` and `# EOF` lines. Gauges and histograms are
    /// written alike in both formats.
    pub fn encode_classic(&self) -> String {
        let om = self.encode();
        let counters: std::collections::HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|r| r.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(om.len());
        for line in om.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }

    /// The OpenMetrics text exposition (see [`CONTENT_TYPE`]).
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

    #[test]
    fn classic_format_names_counters_like_their_samples() {
        let m = Metrics::new();
        m.answered(QueryKind::Alias, 0);
        m.ready.set(1);
        let text = m.encode_classic();
        assert!(
            text.contains(
                "# HELP dns_sidecar_queries_total DNS queries answered, by kind and rcode.\n# TYPE \
            dns_sidecar_queries_total counter\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE dns_sidecar_ready gauge\ndns_sidecar_ready 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE dns_sidecar_answer_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# TYPE dns_sidecar_queries counter"),
            "{text}"
        );
        // Every sample line is the same as in OpenMetrics.
        let samples = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(samples(&text), samples(&m.encode()));
    }

    #[test]
    fn negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Exposition::negotiate(Some(prometheus)), Exposition::OpenMetrics);
        assert_eq!(
            Exposition::negotiate(Some(
                "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Exposition::OpenMetrics
        );
        assert_eq!(
            Exposition::negotiate(Some("text/plain;version=0.0.4")),
            Exposition::Classic
        );
        assert_eq!(Exposition::negotiate(Some("*/*")), Exposition::Classic);
        assert_eq!(
            Exposition::negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            Exposition::Classic
        );
        assert_eq!(Exposition::negotiate(None), Exposition::Classic);
    }
}
