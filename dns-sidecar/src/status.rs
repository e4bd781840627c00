//! The `/status` document: what every alias answers and why, what every
//! server last looked like, and the recent decisions. Built by the engine
//! after each decision round and published through `ArcSwap`, so the admin
//! listener only reads it.
//!
//! Field names agree with the log lines: `server` is always a server's id
//! (the key of its `[servers.<id>]` table), `target` always a DNS name (what
//! an alias's CNAME points at), `alias` an alias's name.

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch (fractional), for JSON.
pub type UnixTime = f64;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Listeners bound and the first probe round done.
    pub ready: bool,
    pub generated_at: UnixTime,
    pub aliases: Vec<AliasStatus>,
    pub servers: Vec<ServerStatus>,
    /// Newest last; at most `HISTORY_LEN` (100) entries.
    pub history: Vec<HistoryEntry>,
}

/// How many decision events `/status` keeps.
pub(crate) const HISTORY_LEN: usize = 100;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AliasStatus {
    pub name: String,
    pub role: String,
    pub ttl: u32,
    /// What DNS answers: `cname`, `servfail` or `pending` (before the
    /// first probe round).
    pub answer: String,
    /// Id of the server DNS answers (only with `answer` = `cname`).
    pub server: Option<String>,
    /// The CNAME target DNS answers (only with `answer` = `cname`).
    pub target: Option<String>,
    /// While the alias answers SERVFAIL: the id of the server it answered
    /// last (drained, fenced, or no longer matching with `servfail`).
    #[serde(default)]
    pub last_server: Option<String>,
    pub since: Option<UnixTime>,
    pub reason: String,
    /// Manual pin, if any.
    pub pinned: Option<String>,
    pub candidates: Vec<String>,
    /// Writer aliases: the newest timeline seen on a candidate; candidates on
    /// an older one are never chosen.
    #[serde(default)]
    pub timeline_floor: Option<u32>,
    /// Writer aliases: servers the alias will not move to, and why.
    #[serde(default)]
    pub fences: Vec<FenceStatus>,
    /// Reader aliases: the lag limit in WAL bytes (`max_lag`), if any.
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
    /// Reader aliases: the lag limit in seconds (`max_lag_time`), if any.
    #[serde(default)]
    pub max_lag_seconds: Option<f64>,
    /// Reader aliases: standbys kept off because they are too far behind.
    #[serde(default)]
    pub lagging: Vec<LagStatus>,
    /// Reader aliases: `first`, `rotate` or `client` (`spread`).
    #[serde(default)]
    pub spread: Option<String>,
    /// Reader aliases: `order` or `nearest` (`prefer`).
    #[serde(default)]
    pub prefer: Option<String>,
    /// Reader aliases: the servers DNS answers now (a spreading alias's set,
    /// in order; one server otherwise), with their share of the answers.
    #[serde(default)]
    pub set: Vec<SetMember>,
    /// Reader aliases: each candidate DNS does not answer now, and why.
    #[serde(default)]
    pub excluded: Vec<Excluded>,
}

/// A server a reader alias answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SetMember {
    pub server: String,
    pub target: String,
    /// Its weight (`weights`; 1 by default).
    pub weight: u32,
    /// Spreading aliases: the answers it got since the start (what
    /// `dns_sidecar_reader_answers_total` counts).
    pub answers: Option<u64>,
    /// Spreading aliases: `answers` as a fraction of the set's answers.
    pub share: Option<f64>,
    /// The median round trip of its recent probe queries, in ms.
    pub rtt_ms: Option<f64>,
}

/// A candidate a reader alias does not answer now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Excluded {
    pub server: String,
    /// e.g. `down (connection refused)`, `lagging: 20.0 MiB behind a
    /// (max_lag 16.0 MiB)`, `not a standby (writable, timeline 2)`.
    pub reason: String,
}

/// A standby a reader alias keeps off for its lag.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LagStatus {
    pub server: String,
    /// As last measured, e.g. `20.0 MiB behind east (max_lag 16.0 MiB)`.
    pub reason: String,
    /// Since when it is kept off.
    pub since: Option<UnixTime>,
    /// Good probes in a row within the limit so far; it qualifies again at `rise`.
    pub good_probes: u32,
}

/// One server a writer alias will not move to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FenceStatus {
    pub server: String,
    /// `superseded`, `lost-split-brain`, `inherited` (a fence whose other
    /// server is no longer configured) or `older-timeline` (below the floor).
    pub kind: String,
    /// One line for humans.
    pub reason: String,
    /// The server's timeline when fenced (or now, for `older-timeline`).
    pub timeline: Option<u32>,
    /// When the fence was set (absent for `older-timeline`).
    pub since: Option<UnixTime>,
    /// Whether this fence is what keeps the alias from answering right now
    /// (the server matches the role and no other candidate is allowed).
    pub holding: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerStatus {
    /// The server's id.
    pub server: String,
    /// Its DNS name (what an alias answering it points at).
    pub target: String,
    pub host: String,
    pub port: u16,
    pub up: bool,
    pub drained: bool,
    pub writable: Option<bool>,
    pub in_recovery: Option<bool>,
    pub read_only: Option<bool>,
    pub timeline: Option<u32>,
    /// Standbys: WAL received but not yet replayed (the standby's own view).
    pub replay_lag_bytes: Option<u64>,
    /// The WAL position of the last good probe (`0/3000060`): where a
    /// primary writes, or what a standby has replayed.
    #[serde(default)]
    pub wal_lsn: Option<String>,
    /// Standbys: the primary their lag is measured against (the newest
    /// primary position known among the servers sharing an alias with them).
    #[serde(default)]
    pub lag_primary: Option<String>,
    /// Standbys: WAL bytes behind `lag_primary` (what `max_lag` limits).
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    /// Standbys: seconds behind `lag_primary` (what `max_lag_time` limits;
    /// only when some alias has one). A lower bound when the standby is
    /// behind every primary position kept.
    #[serde(default)]
    pub lag_seconds: Option<f64>,
    /// Why the server has diverged from its cluster, if it has: fenced by a
    /// writer alias (superseded, lost a split brain, forked, below the
    /// timeline floor) or a standby receiving on another timeline than the
    /// current primary's. No alias answers it for reads, and its lag is not
    /// measured (`lag_bytes` and `lag_seconds` absent).
    #[serde(default)]
    pub diverged: Option<String>,
    pub last_error: Option<String>,
    pub last_success: Option<UnixTime>,
    pub last_probe_ms: Option<f64>,
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    pub at: UnixTime,
    /// One of `HistoryKind`'s wire strings. A string, not the enum, on
    /// the wire: `dns-sidecar status` may read a newer sidecar's `/status`
    /// and must still show a kind it does not know.
    pub kind: String,
    pub alias: Option<String>,
    pub server: Option<String>,
    pub message: String,
}

/// What a history entry records. [`HistoryKind::as_str`] is the one place
/// that spells each kind's wire string (`kind` in `/status`, which the
/// client's renderer, dashboards and tests read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HistoryKind {
    /// An alias's target changed by a decision.
    TargetChanged,
    /// An alias's answer changed without a decision event saying so (a
    /// drain of the target kept by keep-last, an undrain).
    AnswerChanged,
    NoMatch,
    SplitBrain,
    ServerUp,
    ServerDown,
    /// Short down episodes not logged one by one.
    ServerFlapped,
    FirstRound,
    Override,
    Reload,
    Fenced,
    FenceHeld,
    Unfenced,
    /// The state file was restored, ignored, or could not be written.
    StateFile,
    LagExceeded,
    LagRecovered,
    SetChanged,
}

impl HistoryKind {
    /// The kind's wire string.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            HistoryKind::TargetChanged => "target_changed",
            HistoryKind::AnswerChanged => "answer_changed",
            HistoryKind::NoMatch => "no_match",
            HistoryKind::SplitBrain => "split_brain",
            HistoryKind::ServerUp => "server_up",
            HistoryKind::ServerDown => "server_down",
            HistoryKind::ServerFlapped => "server_flapped",
            HistoryKind::FirstRound => "first_round",
            HistoryKind::Override => "override",
            HistoryKind::Reload => "reload",
            HistoryKind::Fenced => "fenced",
            HistoryKind::FenceHeld => "fence_held",
            HistoryKind::Unfenced => "unfenced",
            HistoryKind::StateFile => "state_file",
            HistoryKind::LagExceeded => "lag_exceeded",
            HistoryKind::LagRecovered => "lag_recovered",
            HistoryKind::SetChanged => "set_changed",
        }
    }
}
