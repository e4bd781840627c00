//! The label sets of the metrics, and the label values known in advance.
//!
//! The value lists are what [`super::Metrics::prepare`] creates at 0 and
//! what the query path indexes by (`QueryKind`, `Limited`, `rcode_index`):
//! a series that exists before its first event is one an alert can use.

use prometheus_client::encoding::EncodeLabelSet;

/// Probe results (`dns_sidecar_probes_total{result}`).
pub(super) const PROBE_RESULTS: [&str; 3] = ["ok", "timeout", "error"];
/// Results of the probes' new connections (`dns_sidecar_probe_connects_total{result}`).
pub(super) const CONNECT_RESULTS: [&str; 5] = ["ok", "refused", "closed", "timeout", "error"];
/// Upstream failure kinds (`dns_sidecar_upstream_errors_total{kind}`).
pub(super) const UPSTREAM_ERROR_KINDS: [&str; 2] = ["timeout", "error"];
/// Reload results (`dns_sidecar_config_reloads_total{result}`).
pub(super) const RELOAD_RESULTS: [&str; 2] = ["ok", "rejected"];
/// Hook results (`dns_sidecar_hook_runs_total{result}`).
pub(super) const HOOK_RESULTS: [&str; 3] = ["ok", "failed", "timeout"];
/// State file write results (`dns_sidecar_state_writes_total{result}`).
pub(super) const STATE_WRITE_RESULTS: [&str; 2] = ["ok", "error"];
/// Values of `dns_sidecar_admin_refused_total{result}`.
pub(super) const ADMIN_REFUSED_RESULTS: [&str; 8] = [
    "request_timeout",
    "max_connections",
    "evicted",
    "client_evicted",
    "per_client",
    "body_busy",
    "body_timeout",
    "silent_evicted",
];
/// Password source kinds of `dns_sidecar_credential_refreshes_total{source}`.
pub(super) const CREDENTIAL_SOURCES: [&str; 4] = ["file", "command", "managed-identity", "workload-identity"];
/// Results of `dns_sidecar_credential_refreshes_total{result}`.
pub(super) const CREDENTIAL_RESULTS: [&str; 2] = ["ok", "error"];

/// What kind of query an answer was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Alias = 0,
    Authoritative = 1,
    Forwarded = 2,
    /// Malformed, refused, or not answerable (FORMERR, NOTIMP, REFUSED...).
    Other = 3,
}

/// `dns_sidecar_queries_total{kind}`, indexed by [`QueryKind`].
pub(super) const KINDS: [&str; 4] = ["alias", "authoritative", "forwarded", "other"];
/// The rcodes we count separately; anything else is "other".
pub(super) const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other",
];

/// Index into `RCODES` for a 12-bit rcode.
pub(crate) fn rcode_index(rcode: u16) -> usize {
    match rcode {
        0..=5 => rcode as usize,
        16 => 6,
        _ => 7,
    }
}

/// Why the DNS side refused work (`dns_sidecar_limited_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limited {
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

/// `dns_sidecar_limited_total{reason}`, indexed by [`Limited`].
pub(super) const LIMITED: [&str; 9] = [
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindRcode {
    pub(crate) kind: String,
    pub(crate) rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServerLabel {
    pub(crate) server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProbeResult {
    pub(crate) server: String,
    /// `ok`, `timeout` or `error`.
    pub(crate) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AliasLabel {
    pub(crate) alias: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AliasServer {
    pub(crate) alias: String,
    pub(crate) server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamLabel {
    pub(crate) upstream: String,
    /// The forward zone whose upstream it is (`.`: `[upstream]`).
    pub(crate) zone: String,
    /// `timeout` or `error`.
    pub(crate) kind: String,
}

/// `dns_sidecar_credential_refreshes_total{source, result}`: `source` is
/// the password source's kind (`file`, `command`, `managed-identity`,
/// `workload-identity`), `result` is `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CredentialResult {
    pub(crate) source: String,
    pub(crate) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub(crate) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamAddr {
    pub(crate) upstream: String,
    /// The forward zone whose upstream it is (`.`: `[upstream]`).
    pub(crate) zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: String,
}
