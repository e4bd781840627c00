//! An alias as configured: its role, candidates, policy when nothing
//! matches, hook, and the reader aliases' lag limit, spread and preference.

use std::time::Duration;

use serde::Deserialize;

use super::{Prefer, ServerId, Spread};
use crate::name::DnsName;

#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    pub name: DnsName,
    pub(crate) ttl: u32,
    pub(crate) role: Role,
    /// Candidates in preference order for ties.
    pub servers: Vec<ServerId>,
    pub(crate) on_no_match: NoMatchPolicy,
    pub(crate) on_change: Option<Hook>,
    /// Reader aliases: standbys further behind the primary than this do not
    /// match (see [`crate::decision::lag`]).
    pub(crate) max_lag: MaxLag,
    /// Reader aliases: one server, or a set answered in turn or per client.
    pub(crate) spread: Spread,
    /// Reader aliases: the weight of each of `servers` (same order; 1 each by
    /// default). Weight 0: a backup, answered only when no weighted server is
    /// in the set.
    pub(crate) weights: Vec<u32>,
    /// Reader aliases: list order, or the nearest by probe round-trip time.
    pub(crate) prefer: Prefer,
}

/// How far behind the primary a standby may be and still be chosen by a
/// reader alias (`standby`, `prefer-standby`, `read-only`). Unset: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MaxLag {
    /// WAL bytes between the newest primary position known and the
    /// standby's replay position (`max_lag`).
    pub(crate) bytes: Option<u64>,
    /// How long ago the primary was last seen at or before the standby's
    /// replay position (`max_lag_time`): zero while the standby has replayed
    /// everything the primary had at its last probe, however idle the
    /// primary is.
    pub(crate) time: Option<Duration>,
}

impl MaxLag {
    /// Whether any limit is set.
    pub(crate) fn is_set(&self) -> bool {
        self.bytes.is_some() || self.time.is_some()
    }
}

/// A command run when an alias changes target.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hook {
    /// Program and arguments; no shell is involved.
    pub(crate) argv: Vec<String>,
    pub(crate) timeout: Duration,
    /// Variables passed from our environment (exact names, or `PREFIX*`);
    /// everything else is cleared.
    pub(crate) env: Vec<String>,
}

/// Variables a hook gets from our environment when `on_change_env` is unset.
pub(crate) const DEFAULT_HOOK_ENV: [&str; 2] = ["PATH", "HOME"];

/// Which server an alias follows, with libpq's `target_session_attrs` meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Role {
    /// Accepts writes: not in recovery and `transaction_read_only` is off.
    ReadWrite,
    /// Not in recovery (may still be read-only, e.g. storage full).
    Primary,
    /// In recovery (a hot standby).
    Standby,
    /// A standby if any is up, otherwise any server.
    PreferStandby,
    /// `transaction_read_only` is on (a standby or a read-only primary).
    ReadOnly,
    /// Any reachable server.
    Any,
}

impl Role {
    /// Whether a lag limit applies: the roles that choose standbys for
    /// reading.
    pub(crate) fn reads_standbys(self) -> bool {
        matches!(self, Role::Standby | Role::PreferStandby | Role::ReadOnly)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::ReadWrite => "read-write",
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::PreferStandby => "prefer-standby",
            Role::ReadOnly => "read-only",
            Role::Any => "any",
        }
    }
}

/// What an alias answers when no candidate matches its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoMatchPolicy {
    /// Keep answering the last target that matched (SERVFAIL if none ever did).
    KeepLast,
    /// Answer SERVFAIL so clients fail fast instead of reaching a wrong server.
    Servfail,
}

impl NoMatchPolicy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NoMatchPolicy::KeepLast => "keep-last",
            NoMatchPolicy::Servfail => "servfail",
        }
    }
}
