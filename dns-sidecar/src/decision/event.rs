//! What a decision reports: one [`Event`] per thing worth a log line, a
//! metric or a history entry (the engine's reporting turns each into those).

use std::time::Duration;

use crate::config::{AliasId, NoMatchPolicy, ServerId};

/// Something worth a log line (and, later, a metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first round closed; `missing` lists servers that had not reported.
    FirstRound { missing: Vec<ServerId> },
    TargetChanged {
        alias: AliasId,
        old: Option<ServerId>,
        new: ServerId,
        reason: String,
    },
    /// No candidate matches (or may be chosen). `last` is the decision's own
    /// last choice; whether DNS still answers it (`keep-last`) or SERVFAIL
    /// is [`super::State::answer`]'s to say, after the decision.
    NoMatch {
        alias: AliasId,
        last: Option<ServerId>,
        policy: NoMatchPolicy,
    },
    SplitBrain {
        alias: AliasId,
        writable: Vec<ServerId>,
        chosen: ServerId,
        by_timeline: bool,
    },
    /// The server may be chosen: its first good probe, or `rise` good probes
    /// after a down episode that lasted `down_for`.
    ServerUp {
        server: ServerId,
        state: String,
        down_for: Option<Duration>,
    },
    /// A down episode began (once per episode, however many probes fail):
    /// a server that was up failed definitely or `fall` times in a row, or
    /// a server that was never up failed its probe (`was_up` false).
    ServerDown {
        server: ServerId,
        error: String,
        was_up: bool,
    },
    /// A manual override was applied; `summary` says what it did.
    Override { summary: String },
    /// A writer alias fenced `server` (it will not move there).
    Fenced {
        alias: AliasId,
        server: ServerId,
        reason: String,
    },
    /// A fence or the timeline floor kept the alias off `server`, which
    /// otherwise matched its role. Once per episode.
    FenceHeld {
        alias: AliasId,
        server: ServerId,
        reason: String,
    },
    /// A fence was lifted (server seen following the alias's server, or by
    /// an operator).
    Unfenced {
        alias: AliasId,
        server: ServerId,
        reason: String,
    },
    /// A reader alias keeps `server` off: it is further behind the primary
    /// than the alias's lag limit (or its lag cannot be measured). Once per
    /// episode.
    LagExceeded {
        alias: AliasId,
        server: ServerId,
        reason: String,
    },
    /// `server` is within the alias's lag limit again (after `rise` good probes).
    LagRecovered {
        alias: AliasId,
        server: ServerId,
        reason: String,
    },
    /// A spreading reader alias answers a different set of servers.
    SetChanged {
        alias: AliasId,
        old: Vec<ServerId>,
        new: Vec<ServerId>,
    },
}
