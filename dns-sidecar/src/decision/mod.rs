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

mod answer;
mod damping;
mod event;
pub mod fence;
pub mod lag;
mod observe;
mod overrides;
mod reason;
mod reload;
pub mod select;
pub mod snapshot;
pub mod truth;

use std::time::Instant;

use crate::config::{AliasId, Config, IdVec, Prefer, Role, ServerId};
use crate::observation::{Observation, ServerState};

pub use answer::{Answer, AnswerKind};
pub use event::Event;
pub use fence::{Bar, Fence, FenceReason};
pub use overrides::apply_override;
pub use reload::{reconfigure, reconfigure_noted, Dropped, ReloadNote};

/// Everything the decision remembers between calls.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub started: Instant,
    pub first_round_done: bool,
    pub servers: IdVec<ServerId, ServerHealth>,
    pub aliases: IdVec<AliasId, AliasState>,
    /// Manual pins, per alias (see [`apply_override`]).
    pub pins: IdVec<AliasId, Option<ServerId>>,
    /// Manually drained servers: never chosen.
    pub drained: IdVec<ServerId, bool>,
}

/// One server as the decision sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerHealth {
    /// Whether it may be chosen (see the module rules).
    pub up: bool,
    /// The last good probe's state (kept while down, for status output).
    pub last_state: Option<ServerState>,
    pub last_error: Option<String>,
    pub last_success: Option<Instant>,
    pub reported: bool,
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
    /// When the current *down episode* began: set (and reported, once) at
    /// the first failure that leaves the server not up, cleared when it is
    /// up again. A server never up counts as down from its first failure.
    pub down_since: Option<Instant>,
    /// When the current run of good probes (or of failed ones) began: the
    /// first probe of the run. `fall` and `rise` are judged on its length
    /// in time as well as in probes (see [`damping`]).
    pub run_since: Option<Instant>,
    /// Its last good probe saw it in recovery with its WAL receiver having
    /// received more than at the good probe before (it streams).
    pub receiving: bool,
    /// Recent WAL positions while it is a primary (kept only when some
    /// alias has a `max_lag_time`; see [`lag::WalHistory`]).
    pub wal: lag::WalHistory,
    /// Round-trip times of its recent probe queries (`prefer = "nearest"`;
    /// cleared while it is down).
    pub rtt: select::RttWindow,
}

/// One alias's current choice, and what it must remember to stay safe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasState {
    /// What the alias answers (the pin's server while pinned).
    pub target: Option<ServerId>,
    /// The last target the decision itself chose (not a pin). Writer aliases
    /// fence it when they move on, pinned or not in between.
    pub decided: Option<ServerId>,
    /// The timeline `decided` was last seen on (kept across restarts, when
    /// the server itself may not have reported yet).
    pub decided_timeline: Option<u32>,
    /// Whether `target` matched the role at the last decision.
    pub matched: bool,
    pub since: Option<Instant>,
    pub reason: String,
    /// The writable servers seen together at the last decision (split brain).
    pub split_brain: Vec<ServerId>,
    /// Writer aliases: the newest timeline seen on any candidate (served or
    /// not). Candidates on an older timeline are never chosen.
    pub timeline_floor: Option<u32>,
    /// Writer aliases: servers the alias must not move to (sorted by server).
    pub fences: Vec<Fence>,
    /// Servers that match the role but are kept off by a fence or the floor
    /// while no other candidate is allowed (so the episode is reported once,
    /// not on every probe).
    pub held: Vec<ServerId>,
    /// Reader aliases with a lag limit: standbys kept off for their lag
    /// (sorted by server).
    pub lagging: Vec<lag::Lagging>,
    /// Spreading reader aliases (`rotate`, `client`): the servers answered
    /// in turn, `target` (the lead) among them; empty while none matches
    /// and for other aliases (see [`select`]).
    pub set: Vec<ServerId>,
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
    fence::learn(&mut state, observations, config, now, &mut events);
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
            decide_alias(&mut state, config, i, now, &mut events);
        }
    }
    lag::learn(&mut state, observations, config, now, round_done, &mut events);
    if state.first_round_done {
        for &i in &readers {
            decide_alias(&mut state, config, i, now, &mut events);
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

/// Decides alias `i`: its pin, or the best allowed candidate, or nothing.
fn decide_alias(state: &mut State, config: &Config, i: AliasId, now: Instant, events: &mut Vec<Event>) {
    // What clients are told now (a pin's server while pinned) and what the
    // decision itself chose last: after an unpin the decision resumes from
    // its own choice, and `keep-last` never keeps a server only a pin chose.
    let answered = state.aliases[i].target;
    let current = state.aliases[i].decided;
    if let Some(pin) = state.pins[i] {
        follow_pin(state, config, i, pin, now, events);
        return;
    }
    let (matching, cands) = candidates(state, config, i, events);
    if cands.is_empty() {
        no_candidate(state, config, i, answered, current, now, events);
        return;
    }
    let (chosen, by_timeline) = choose(state, config, i, &matching, &cands, now, events);
    let reason = if answered == Some(chosen) {
        None
    } else {
        Some(reason::change_reason(state, config, i, answered, chosen, by_timeline))
    };
    let writer = fence::is_writer(config.aliases[i].role);
    if let (Some(old), true) = (state.aliases[i].decided.filter(|&d| d != chosen), writer) {
        fence::superseded(state, config, i, old, chosen, now, events);
    }
    let a = &mut state.aliases[i];
    if a.decided != Some(chosen) {
        a.decided_timeline = None;
    }
    a.decided = Some(chosen);
    a.decided_timeline = timeline(&state.servers[chosen]).or(a.decided_timeline);
    if writer {
        // What the alias serves is part of what it has seen (an unfence may
        // have reset the floor since this server last reported).
        a.timeline_floor = a.timeline_floor.max(a.decided_timeline);
    }
    a.matched = true;
    a.split_brain = if live(&state.servers, &matching) > 1 && writer {
        matching
    } else {
        Vec::new()
    };
    if let Some(reason) = reason {
        events.push(Event::TargetChanged {
            alias: i,
            old: answered,
            new: chosen,
            reason: reason.clone(),
        });
        a.target = Some(chosen);
        a.since = Some(now);
        a.reason = reason;
    }
    if writer {
        fence::same_timeline_peers(state, config, i, now, events);
    }
}

/// A pinned alias answers its pin, whatever the probes say.
fn follow_pin(state: &mut State, config: &Config, i: AliasId, pin: ServerId, now: Instant, events: &mut Vec<Event>) {
    let a = &mut state.aliases[i];
    a.matched = true;
    a.held.clear();
    if a.target != Some(pin) {
        let reason = format!("pinned to {} by an operator", config.servers[pin].id);
        events.push(Event::TargetChanged {
            alias: i,
            old: a.target,
            new: pin,
            reason: reason.clone(),
        });
        a.target = Some(pin);
        a.since = Some(now);
        a.reason = reason;
    }
}

/// Alias `i`'s candidates that match its role (split brains are judged on
/// these), and those of them it may choose (the fences allow them, and
/// `prefer-standby`'s fallback to the writer alias's choice); reports the
/// ones the fences hold off.
fn candidates(state: &mut State, config: &Config, i: AliasId, events: &mut Vec<Event>) -> (Vec<ServerId>, Vec<ServerId>) {
    let alias = &config.aliases[i];
    let writer = fence::is_writer(alias.role);
    let (servers, drained, a) = (&state.servers, &state.drained, &state.aliases[i]);
    let fresh = |s: ServerId| !a.lagging.iter().any(|l| l.server == s);
    // Readers obey the writers' truth: never a diverged server.
    let not_diverged = |s: ServerId| writer || truth::diverged(state, config, s).is_none();
    let matching: Vec<ServerId> = alias
        .servers
        .iter()
        .copied()
        .filter(|&s| !drained[s] && matches(&servers[s], alias.role) && fresh(s) && not_diverged(s))
        .collect();
    let cands: Vec<ServerId> = matching
        .iter()
        .copied()
        .filter(|&s| state.barred(config, i, s).is_none())
        .collect();
    fence::report_held(state, config, i, &matching, &cands, events);
    // prefer-standby with no standby to answer: the writer alias's own
    // choice, when a writer alias covers these servers (another writable
    // one is not the primary: it lost, or is about to).
    let cands = match alias.role {
        Role::PreferStandby => prefer_standby_cands(state, config, cands),
        _ => cands,
    };
    (matching, cands)
}

/// No candidate may be chosen: the alias keeps the decision's own last
/// choice (which `keep-last` answers), and says so once.
fn no_candidate(
    state: &mut State,
    config: &Config,
    i: AliasId,
    answered: Option<ServerId>,
    current: Option<ServerId>,
    now: Instant,
    events: &mut Vec<Event>,
) {
    let alias = &config.aliases[i];
    let a = &mut state.aliases[i];
    if a.target != current {
        // Unpinned while nothing matches: back to the decision's own
        // last choice (which `keep-last` keeps), not the pin's server.
        a.target = current;
        a.since = Some(now);
        a.reason.clear();
        if let Some(c) = current {
            let reason = format!(
                "unpinned; no candidate is {}, keeping {} ({})",
                alias.role.as_str(),
                config.servers[c].id,
                alias.on_no_match.as_str()
            );
            events.push(Event::TargetChanged {
                alias: i,
                old: answered,
                new: c,
                reason: reason.clone(),
            });
            a.reason = reason;
        }
    }
    if a.matched || current.is_none() && a.reason.is_empty() {
        events.push(Event::NoMatch {
            alias: i,
            last: current,
            policy: alias.on_no_match,
        });
    }
    a.matched = false;
    a.split_brain.clear();
    set_changed(a, i, Vec::new(), events);
    if a.reason.is_empty() {
        let within = if a.lagging.is_empty() {
            ""
        } else {
            " within the lag limit"
        };
        a.reason = format!("no candidate is {}{within}", alias.role.as_str());
    }
}

/// The server alias `i` answers among `cands` (not empty), and whether it
/// won a split brain by its timeline: writers judge remembered and live
/// writable servers, spreading and `nearest` readers their set, the others
/// keep their server or take the first in list order.
fn choose(
    state: &mut State,
    config: &Config,
    i: AliasId,
    matching: &[ServerId],
    cands: &[ServerId],
    now: Instant,
    events: &mut Vec<Event>,
) -> (ServerId, bool) {
    let alias = &config.aliases[i];
    let current = state.aliases[i].decided;
    let keep_or_first = |set: &[ServerId]| match current {
        Some(c) if set.contains(&c) => c,
        _ => set[0],
    };
    let servers = &state.servers;
    match alias.role {
        Role::ReadWrite | Role::Primary if matching.len() > 1 && live(servers, matching) <= 1 => {
            // One live writer at most, and others only remembered: the newest
            // known timeline among the allowed ones, as in a split brain, but
            // nobody lost one (a server left is fenced as superseded).
            (newest_timeline(servers, cands).unwrap_or_else(|| keep_or_first(cands)), false)
        }
        Role::ReadWrite | Role::Primary if matching.len() > 1 => {
            // Fenced servers lost already; among the rest the newest timeline wins.
            let chosen = newest_timeline(servers, cands).unwrap_or_else(|| keep_or_first(cands));
            // Chosen for its timeline: every other writable one is known to be older.
            let by_timeline = timeline(&servers[chosen]).is_some_and(|t| {
                matching
                    .iter()
                    .all(|&s| s == chosen || timeline(&servers[s]).is_some_and(|x| x < t))
            });
            if state.aliases[i].split_brain != matching {
                events.push(Event::SplitBrain {
                    alias: i,
                    writable: matching.to_vec(),
                    chosen,
                    by_timeline,
                });
            }
            fence::split_brain_losers(state, config, i, matching, chosen, now, events);
            (chosen, by_timeline)
        }
        _ if alias.spread.is_set() || alias.prefer == Prefer::Nearest => {
            let prev = if alias.spread.is_set() {
                state.aliases[i].set.clone()
            } else {
                Vec::new()
            };
            let median = |s: ServerId| state.servers[s].rtt.median();
            let set = select::set(alias, cands, median, &prev);
            let chosen = select::lead(&set, current).unwrap_or_else(|| keep_or_first(cands));
            if alias.spread.is_set() {
                set_changed(&mut state.aliases[i], i, set, events);
            }
            (chosen, false)
        }
        _ => (keep_or_first(cands), false),
    }
}

/// How many of `matching` are live: a split brain is two *live* writers; a
/// server whose last probe failed is only remembered as writable (damping),
/// e.g. a frozen old primary.
fn live(servers: &IdVec<ServerId, ServerHealth>, matching: &[ServerId]) -> usize {
    matching.iter().filter(|&&s| servers[s].consecutive_fail == 0).count()
}

/// Records a spreading alias's new set; an event when it differs.
fn set_changed(a: &mut AliasState, alias: AliasId, set: Vec<ServerId>, events: &mut Vec<Event>) {
    if a.set != set {
        events.push(Event::SetChanged {
            alias,
            old: std::mem::take(&mut a.set),
            new: set.clone(),
        });
        a.set = set;
    }
}

/// The one candidate on the strictly newest timeline, when every
/// candidate's timeline is known.
fn newest_timeline(servers: &IdVec<ServerId, ServerHealth>, cands: &[ServerId]) -> Option<ServerId> {
    let t: Vec<u32> = cands.iter().map(|&s| timeline(&servers[s])).collect::<Option<_>>()?;
    let max = *t.iter().max()?;
    (t.iter().filter(|&&x| x == max).count() == 1).then(|| cands[t.iter().position(|&x| x == max).unwrap_or(0)])
}

/// `prefer-standby`'s candidates: the standbys among `cands` if any;
/// otherwise, where a writer alias covers them, only its current primary
/// (none while it answers none); otherwise `cands` as they are.
fn prefer_standby_cands(state: &State, config: &Config, cands: Vec<ServerId>) -> Vec<ServerId> {
    let standby = |s: ServerId| state.servers[s].last_state.as_ref().is_some_and(|st| st.in_recovery);
    if cands.iter().any(|&s| standby(s)) {
        return cands.into_iter().filter(|&s| standby(s)).collect();
    }
    if !cands.iter().any(|&s| truth::has_writer(config, s)) {
        return cands;
    }
    cands
        .iter()
        .copied()
        .filter(|&s| truth::current_primary(state, config, s) == Some(s))
        .collect()
}


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
