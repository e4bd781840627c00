//! The part of the decision state that safety depends on, in a form that
//! outlives the process: fences, timeline floors, each alias's target, and
//! the operator's pins and drains. Everything is keyed by name (alias names,
//! server ids), not by position, so a restart with an edited config still
//! applies what it can. Server health is not kept: it is re-learned from
//! probes, and nothing is answered before the first round.
//!
//! Pure conversion only; reading and writing the file is [`crate::statefile`].

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::fence::{Fence, FenceReason};
use super::{AliasState, State};
use crate::config::{Config, ServerId};
use crate::name::DnsName;

/// What the state file holds (besides its format header).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Remembered {
    /// By canonical alias name (`prod.db.internal.`).
    pub(crate) aliases: BTreeMap<String, RememberedAlias>,
    /// Drained server ids.
    #[serde(default)]
    pub(crate) drained: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RememberedAlias {
    /// Server id the alias answered.
    pub(crate) target: Option<String>,
    /// Server id the decision last chose itself (differs from `target` while pinned).
    #[serde(default)]
    pub(crate) decided: Option<String>,
    /// The timeline `decided` was last seen on.
    #[serde(default)]
    pub(crate) decided_timeline: Option<u32>,
    /// Unix time (seconds) since when.
    pub(crate) since: Option<f64>,
    pub(crate) timeline_floor: Option<u32>,
    #[serde(default)]
    pub(crate) fences: Vec<RememberedFence>,
    pub(crate) pinned: Option<String>,
    /// The last target whose on-change hook succeeded: what the external
    /// record holds, as far as the sidecar knows. Absent in files written
    /// before it existed (and when no hook ever succeeded): then a hook runs
    /// at the first answer. Kept by the engine, not the decision (see
    /// [`crate::hook::reconcile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hooked: Option<HookedTarget>,
    /// Set while the external record is not known: a hook run that has not
    /// succeeded (started, failed, timed out, killed) may have set this
    /// target. A hook then runs at start whatever DNS answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hook_unsure: Option<HookedTarget>,
}

/// A target as an on-change hook set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookedTarget {
    /// Server id.
    pub(crate) server: String,
    /// The server's `target` DNS name (canonical, with the final dot).
    pub(crate) target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RememberedFence {
    pub(crate) server: String,
    /// `superseded`, `lost-split-brain`, `same-timeline` or `inherited`.
    pub(crate) reason: String,
    /// The server it was superseded by / lost to.
    pub(crate) other: Option<String>,
    pub(crate) timeline: Option<u32>,
    /// Unix time (seconds).
    pub(crate) since: f64,
}

/// The part of one alias's state the state file keeps, as the decision
/// holds it (by position). [`AliasState::kept`] is the one place that says
/// which fields these are: [`capture`] writes exactly this, and
/// [`State::kept_differs`] compares exactly this, so a new persisted field
/// cannot be written without being compared (or the reverse).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Kept<'a> {
    pub(crate) target: Option<ServerId>,
    pub(crate) decided: Option<ServerId>,
    pub(crate) decided_timeline: Option<u32>,
    pub(crate) since: Option<Instant>,
    pub(crate) timeline_floor: Option<u32>,
    pub(crate) fences: &'a [Fence],
}

impl AliasState {
    /// What the state file keeps of this alias. Every field is named (no
    /// `..`): a field added to [`AliasState`] does not compile here until it
    /// is said to be kept or not.
    pub(crate) fn kept(&self) -> Kept<'_> {
        let AliasState {
            target,
            decided,
            decided_timeline,
            since,
            timeline_floor,
            fences,
            // Re-learned at the first decision after a restart.
            matched: _,
            reason: _,
            split_brain: _,
            held: _,
            lagging: _,
            set: _,
        } = self;
        Kept {
            target: *target,
            decided: *decided,
            decided_timeline: *decided_timeline,
            since: *since,
            timeline_floor: *timeline_floor,
            fences,
        }
    }
}

impl State {
    /// Whether `self` and `other` differ in what the state file keeps (the
    /// engine writes the file only then).
    pub(crate) fn kept_differs(&self, other: &State) -> bool {
        self.pins != other.pins
            || self.drained != other.drained
            || !self
                .aliases
                .iter()
                .map(AliasState::kept)
                .eq(other.aliases.iter().map(AliasState::kept))
    }
}

/// Captures what must survive a restart. `unix` maps the decision's clock to
/// wall-clock seconds.
pub(crate) fn capture(state: &State, config: &Config, unix: impl Fn(Instant) -> f64) -> Remembered {
    let id = |s: ServerId| config.servers[s].id.clone();
    let aliases = config
        .aliases
        .iter()
        .zip(&state.aliases)
        .zip(&state.pins)
        .map(|((c, a), pin)| {
            let kept = a.kept();
            let fences = kept
                .fences
                .iter()
                .map(|f| RememberedFence {
                    server: id(f.server),
                    reason: f.reason.kind().to_string(),
                    other: f.reason.other().map(id),
                    timeline: f.timeline,
                    since: unix(f.since),
                })
                .collect();
            let r = RememberedAlias {
                target: kept.target.map(id),
                decided: kept.decided.map(id),
                decided_timeline: kept.decided_timeline,
                since: kept.since.map(&unix),
                timeline_floor: kept.timeline_floor,
                fences,
                pinned: pin.map(id),
                hooked: None,
                hook_unsure: None,
            };
            (c.name.as_str().to_string(), r)
        })
        .collect();
    let drained = state
        .drained
        .iter_enumerated()
        .filter(|(_, d)| **d)
        .map(|(s, _)| id(s))
        .collect();
    Remembered { aliases, drained }
}

/// A fresh state for `config` (first round not done, no server health) with
/// what `remembered` says restored. Names the config no longer has are
/// skipped and listed in the returned notes. `instant` maps wall-clock
/// seconds back to the decision's clock.
pub(crate) fn restore(
    config: &Config,
    remembered: &Remembered,
    now: Instant,
    instant: impl Fn(f64) -> Instant,
) -> (State, Vec<String>) {
    let mut state = State::new(config, now);
    let mut notes = Vec::new();
    let server = |id: &str| config.server_id(id);
    for id in &remembered.drained {
        match server(id) {
            Some(s) => state.drained[s] = true,
            None => notes.push(format!("drained server `{id}` is no longer configured")),
        }
    }
    for (name, r) in &remembered.aliases {
        let Some(i) = DnsName::parse(name).ok().and_then(|n| config.alias_id(&n)) else {
            notes.push(format!("alias `{name}` is no longer configured"));
            continue;
        };
        let alias = &config.aliases[i];
        let mut candidate = |id: &str, what: &str| {
            let s = server(id).filter(|s| alias.servers.contains(s));
            if s.is_none() {
                notes.push(format!("alias `{name}`: {what} `{id}` is no longer one of its servers"));
            }
            s
        };
        let target = r.target.as_deref().and_then(|t| candidate(t, "target"));
        let decided = r.decided.as_deref().and_then(|t| candidate(t, "decided target"));
        let pinned = r.pinned.as_deref().and_then(|p| candidate(p, "pinned server"));
        let mut fences: Vec<Fence> = Vec::new();
        for f in &r.fences {
            let Some(s) = candidate(&f.server, "fenced server") else {
                continue;
            };
            let other = f
                .other
                .as_deref()
                .and_then(server)
                .filter(|o| alias.servers.contains(o));
            let reason = match (f.reason.as_str(), other) {
                ("superseded", Some(by)) => FenceReason::Superseded { by },
                ("lost-split-brain", Some(winner)) => FenceReason::LostSplitBrain { winner },
                ("same-timeline", Some(holder)) => FenceReason::SameTimeline { holder },
                _ => FenceReason::Inherited,
            };
            if !fences.iter().any(|x| x.server == s) {
                fences.push(Fence {
                    server: s,
                    reason,
                    since: instant(f.since),
                    timeline: f.timeline,
                });
            }
        }
        fences.sort_by_key(|f| f.server);
        let writer = super::fence::is_writer(alias.role);
        if !writer {
            fences.clear();
        }
        state.aliases[i] = AliasState {
            target,
            decided,
            decided_timeline: decided.and(r.decided_timeline).filter(|_| writer),
            // Reported if nothing matches at the first decision.
            matched: target.is_some(),
            since: target.and(r.since.map(&instant)),
            reason: target.map_or_else(String::new, |_| "kept from before the restart (state file)".to_string()),
            timeline_floor: r.timeline_floor.filter(|_| writer),
            fences,
            ..AliasState::default()
        };
        state.pins[i] = pinned;
    }
    (state, notes)
}
