//! The failover decision, as a pure function:
//! `(previous state, observations, config, now) -> (next state, events)`.
//!
//! No I/O, no clocks, no locks: everything it needs is passed in, so every rule
//! below is unit-tested without a database and several sidecar instances given
//! the same observations reach the same answer.
//!
//! Rules, per alias:
//! * A server is *up* after its first good probe. It goes *down* at once on a
//!   definite failure (refused/closed), or after `fall` ambiguous failures in a
//!   row (timeouts...) that have lasted about `fall` intervals. Until then its
//!   last known state stands (damping). A server that was down needs `rise`
//!   good probes in a row, lasting about `rise` intervals, before it can be
//!   chosen again (damping is time, not probe count: see `damping.rs`).
//! * The alias keeps its current target while that target still matches the
//!   role; otherwise it switches to the first matching candidate in the alias's
//!   list order, at the first observation that shows it (one probe interval).
//! * Writer aliases (`read-write`, `primary`) are *fenced* (see [`fence`]):
//!   never a server on an older timeline than the newest one seen on an
//!   unfenced candidate, never back to a server they left or that lost a
//!   split brain until it has been seen following the alias's server
//!   (rebuilt as a standby), not merely in recovery.
//! * Two writable servers (split brain): the one on the newest timeline wins
//!   when every candidate's timeline is known and one is strictly newest;
//!   otherwise the current target is kept (or the first in list order). A
//!   split brain is two *live* writers: a server whose last probe failed is
//!   only remembered (damping) and loses nothing; it is superseded.
//! * Readers obey the writers' truth (see [`truth`]): writer aliases are
//!   decided first; no alias answers a server a writer alias fenced, lag is
//!   measured against the writer alias's choice only, and `prefer-standby`
//!   falls back to exactly that choice.
//! * Reader aliases with a lag limit (`max_lag`, `max_lag_time`; see [`lag`]):
//!   a standby further behind the primary than the limit does not match, and
//!   matches again only after `rise` good probes within it. `prefer-standby`
//!   then falls back to a primary, never to a lagging standby.
//! * No candidate matches: keep the last target (policy `keep-last`) or answer
//!   SERVFAIL (`servfail`). Either way an event is emitted. `keep-last` never
//!   keeps a drained or fenced target.
//! * Before the first round (every server reported once, or `deadline` after
//!   start) nothing is decided: the alias is not answered from a guess.
//! * A pin overrides all of the above.

mod alias;
mod answer;
mod damping;
mod event;
pub(crate) mod fence;
mod fence_learn;
pub(crate) mod lag;
mod lag_learn;
mod observe;
mod overrides;
mod reason;
mod reload;
pub(crate) mod select;
pub(crate) mod snapshot;
pub(crate) mod truth;

use std::time::Instant;

use crate::config::{AliasId, Config, IdVec, Role, ServerId};
use crate::observation::{Observation, ServerState};

pub(crate) use answer::{Answer, AnswerKind};
pub(crate) use event::Event;
#[cfg(test)]
pub(crate) use fence::FenceReason;
pub(crate) use fence::{Bar, Fence};
pub(crate) use overrides::apply_override;
#[cfg(test)]
pub(crate) use reload::reconfigure;
pub(crate) use reload::{reconfigure_noted, ReloadNote};

/// Everything the decision remembers between calls.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub(crate) started: Instant,
    pub(crate) first_round_done: bool,
    pub(crate) servers: IdVec<ServerId, ServerHealth>,
    pub(crate) aliases: IdVec<AliasId, AliasState>,
    /// Manual pins, per alias (see [`apply_override`]).
    pub(crate) pins: IdVec<AliasId, Option<ServerId>>,
    /// Manually drained servers: never chosen.
    pub(crate) drained: IdVec<ServerId, bool>,
}

/// One server as the decision sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ServerHealth {
    /// Whether it may be chosen (see the module rules).
    pub(crate) up: bool,
    /// The last good probe's state (kept while down, for status output).
    pub(crate) last_state: Option<ServerState>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_success: Option<Instant>,
    pub(crate) reported: bool,
    pub(crate) consecutive_ok: u32,
    pub(crate) consecutive_fail: u32,
    /// When the current *down episode* began: set (and reported, once) at
    /// the first failure that leaves the server not up, cleared when it is
    /// up again. A server never up counts as down from its first failure.
    pub(crate) down_since: Option<Instant>,
    /// When the current run of good probes (or of failed ones) began: the
    /// first probe of the run. `fall` and `rise` are judged on its length
    /// in time as well as in probes (see [`damping`]).
    pub(crate) run_since: Option<Instant>,
    /// Its last good probe saw it in recovery with its WAL receiver having
    /// received more than at the good probe before (it streams).
    pub(crate) receiving: bool,
    /// Recent WAL positions while it is a primary (kept only when some
    /// alias has a `max_lag_time`; see [`lag::WalHistory`]).
    pub(crate) wal: lag::WalHistory,
    /// Round-trip times of its recent probe queries (`prefer = "nearest"`;
    /// cleared while it is down).
    pub(crate) rtt: select::RttWindow,
}

/// One alias's current choice, and what it must remember to stay safe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AliasState {
    /// What the alias answers (the pin's server while pinned).
    pub(crate) target: Option<ServerId>,
    /// The last target the decision itself chose (not a pin). Writer aliases
    /// fence it when they move on, pinned or not in between.
    pub(crate) decided: Option<ServerId>,
    /// The timeline `decided` was last seen on (kept across restarts, when
    /// the server itself may not have reported yet).
    pub(crate) decided_timeline: Option<u32>,
    /// Whether `target` matched the role at the last decision.
    pub(crate) matched: bool,
    pub(crate) since: Option<Instant>,
    pub(crate) reason: String,
    /// The writable servers seen together at the last decision (split brain).
    pub(crate) split_brain: Vec<ServerId>,
    /// Writer aliases: the newest timeline seen on any candidate (served or
    /// not). Candidates on an older timeline are never chosen.
    pub(crate) timeline_floor: Option<u32>,
    /// Writer aliases: servers the alias must not move to (sorted by server).
    pub(crate) fences: Vec<Fence>,
    /// Servers that match the role but are kept off by a fence or the floor
    /// while no other candidate is allowed (so the episode is reported once,
    /// not on every probe).
    pub(crate) held: Vec<ServerId>,
    /// Reader aliases with a lag limit: standbys kept off for their lag
    /// (sorted by server).
    pub(crate) lagging: Vec<lag::Lagging>,
    /// Spreading reader aliases (`rotate`, `client`): the servers answered
    /// in turn, `target` (the lead) among them; empty while none matches
    /// and for other aliases (see [`select`]).
    pub(crate) set: Vec<ServerId>,
}

impl State {
    pub fn new(config: &Config, now: Instant) -> State {
        State {
            started: now,
            first_round_done: false,
            servers: IdVec::filled(ServerHealth::default(), config.servers.len()),
            aliases: IdVec::filled(AliasState::default(), config.aliases.len()),
            pins: IdVec::filled(None, config.aliases.len()),
            drained: IdVec::filled(false, config.servers.len()),
        }
    }
}

/// Applies `observations` and re-decides every alias.
pub fn decide(prev: &State, observations: &[Observation], config: &Config, now: Instant) -> (State, Vec<Event>) {
    let mut state = prev.clone();
    let mut events = Vec::new();
    for o in observations {
        observe::observe(&mut state.servers[o.server], o, config, &mut events);
    }
    fence_learn::learn(&mut state, observations, config, now, &mut events);
    // Whether the first round was complete before these observations (a
    // primary may simply not have reported yet; see `lag`).
    let round_done = state.first_round_done;
    if !state.first_round_done {
        let all = state.servers.iter().all(|s| s.reported);
        if all || now.duration_since(state.started) >= config.probe.deadline {
            state.first_round_done = true;
            let missing = (state.servers.iter_enumerated())
                .filter(|(_, h)| !h.reported)
                .map(|(s, _)| s)
                .collect();
            events.push(Event::FirstRound { missing });
        }
    }
    // Writer aliases first: reader aliases (and the lag they measure) take
    // the cluster's truth (the current primary, the fences) from their
    // decision of this very round (see [`truth`]).
    let (writers, readers): (Vec<AliasId>, Vec<AliasId>) =
        (config.enumerate_aliases().map(|(i, _)| i)).partition(|&i| fence::is_writer(config.aliases[i].role));
    if state.first_round_done {
        for &i in &writers {
            alias::decide_alias(&mut state, config, i, now, &mut events);
        }
    }
    lag_learn::learn(&mut state, observations, config, now, round_done, &mut events);
    if state.first_round_done {
        for &i in &readers {
            alias::decide_alias(&mut state, config, i, now, &mut events);
        }
    }
    (state, events)
}

fn matches(h: &ServerHealth, role: Role) -> bool {
    let Some(s) = h.last_state.as_ref().filter(|_| h.up) else {
        return false;
    };
    match role {
        Role::ReadWrite => s.writable(),
        Role::Primary => !s.in_recovery,
        Role::Standby => s.in_recovery,
        Role::ReadOnly => s.read_only,
        Role::PreferStandby | Role::Any => true,
    }
}

fn timeline(h: &ServerHealth) -> Option<u32> {
    h.last_state.as_ref().and_then(|s| s.timeline)
}

#[cfg(test)]
mod fixture;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fence_tests;

#[cfg(test)]
mod lag_tests;

#[cfg(test)]
mod properties;

#[cfg(test)]
mod select_properties;
