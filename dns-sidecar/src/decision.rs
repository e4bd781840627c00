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
//!   row (timeouts...). While fewer than `fall` ambiguous failures have been
//!   seen, its last known state stands (damping). A server that was down needs
//!   `rise` good probes in a row before it can be chosen again.
//! * The alias keeps its current target while that target still matches the
//!   role; otherwise it switches to the first matching candidate in the alias's
//!   list order, at the first observation that shows it (one probe interval).
//! * Two writable servers (split brain): the one on the newest timeline wins
//!   when every candidate's timeline is known and one is strictly newest;
//!   otherwise the current target is kept (or the first in list order).
//! * No candidate matches: keep the last target (policy `keep-last`) or answer
//!   SERVFAIL (`servfail`). Either way an event is emitted.
//! * Before the first round (every server reported once, or `deadline` after
//!   start) nothing is decided: the alias is not answered from a guess.

use std::time::Instant;

use crate::config::{Config, NoMatchPolicy, Role, ServerId};
use crate::control::{ControlError, Override};
use crate::name::DnsName;
use crate::observation::{FailureKind, Observation, ServerState};

/// Everything the decision remembers between calls.
#[derive(Debug, Clone)]
pub struct State {
    pub started: Instant,
    pub first_round_done: bool,
    pub servers: Vec<ServerHealth>,
    pub aliases: Vec<AliasState>,
    /// Manual pins, per alias (see [`apply_override`]).
    pub pins: Vec<Option<ServerId>>,
    /// Manually drained servers: never chosen.
    pub drained: Vec<bool>,
}

/// One server as the decision sees it.
#[derive(Debug, Clone, Default)]
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
}

/// One alias's current choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasState {
    pub target: Option<ServerId>,
    /// Whether `target` matched the role at the last decision.
    pub matched: bool,
    pub since: Option<Instant>,
    pub reason: String,
    /// The writable servers seen together at the last decision (split brain).
    pub split_brain: Vec<ServerId>,
}

/// Something worth a log line (and, later, a metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first round closed; `missing` lists servers that had not reported.
    FirstRound { missing: Vec<ServerId> },
    TargetChanged { alias: usize, old: Option<ServerId>, new: ServerId, reason: String },
    NoMatch { alias: usize, kept: Option<ServerId>, policy: NoMatchPolicy },
    SplitBrain { alias: usize, writable: Vec<ServerId>, chosen: ServerId, by_timeline: bool },
    ServerUp { server: ServerId, state: String },
    ServerDown { server: ServerId, error: String },
    /// A manual override was applied; `summary` says what it did.
    Override { summary: String },
}

/// What the DNS side should answer for an alias right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// First probe round not finished.
    Pending,
    Target(ServerId),
    /// No server matches and the policy (or the lack of any earlier target) says SERVFAIL.
    NoTarget,
}

impl State {
    pub fn new(config: &Config, now: Instant) -> State {
        State {
            started: now,
            first_round_done: false,
            servers: vec![ServerHealth::default(); config.servers.len()],
            aliases: vec![AliasState::default(); config.aliases.len()],
            pins: vec![None; config.aliases.len()],
            drained: vec![false; config.servers.len()],
        }
    }

    /// The answer for alias `i` under `config`'s policy.
    pub fn answer(&self, config: &Config, i: usize) -> Answer {
        let a = &self.aliases[i];
        if let Some(p) = self.pins[i] {
            return Answer::Target(p);
        }
        match a.target {
            _ if !self.first_round_done => Answer::Pending,
            Some(t) if self.drained[t] => Answer::NoTarget,
            Some(t) if a.matched || config.aliases[i].on_no_match == NoMatchPolicy::KeepLast => Answer::Target(t),
            _ => Answer::NoTarget,
        }
    }
}

/// Applies `observations` and re-decides every alias.
pub fn decide(prev: &State, observations: &[Observation], config: &Config, now: Instant) -> (State, Vec<Event>) {
    let mut state = prev.clone();
    let mut events = Vec::new();
    for o in observations {
        observe(&mut state.servers[o.server], o, config, &mut events);
    }
    if !state.first_round_done {
        let all = state.servers.iter().all(|s| s.reported);
        if all || now.duration_since(state.started) >= config.probe.deadline {
            state.first_round_done = true;
            let missing = (0..state.servers.len()).filter(|&s| !state.servers[s].reported).collect();
            events.push(Event::FirstRound { missing });
        } else {
            return (state, events);
        }
    }
    for i in 0..config.aliases.len() {
        decide_alias(&mut state, config, i, now, &mut events);
    }
    (state, events)
}

fn observe(h: &mut ServerHealth, o: &Observation, config: &Config, events: &mut Vec<Event>) {
    let first = !h.reported;
    h.reported = true;
    match &o.outcome {
        Ok(s) => {
            h.consecutive_ok += 1;
            h.consecutive_fail = 0;
            h.last_state = Some(s.clone());
            h.last_success = Some(o.at);
            h.last_error = None;
            if !h.up && (first || h.consecutive_ok >= config.probe.rise) {
                h.up = true;
                events.push(Event::ServerUp { server: o.server, state: s.describe() });
            }
        }
        Err(f) => {
            h.consecutive_ok = 0;
            h.consecutive_fail += 1;
            h.last_error = Some(f.message.clone());
            let down = f.kind == FailureKind::Definite || h.consecutive_fail >= config.probe.fall;
            if down && (h.up || first) {
                h.up = false;
                events.push(Event::ServerDown { server: o.server, error: f.message.clone() });
            }
        }
    }
}

fn matches(h: &ServerHealth, role: Role) -> bool {
    let Some(s) = h.last_state.as_ref().filter(|_| h.up) else { return false };
    match role {
        Role::ReadWrite => s.writable(),
        Role::Primary => !s.in_recovery,
        Role::Standby => s.in_recovery,
        Role::ReadOnly => s.read_only,
        Role::PreferStandby | Role::Any => true,
    }
}

fn decide_alias(state: &mut State, config: &Config, i: usize, now: Instant, events: &mut Vec<Event>) {
    let alias = &config.aliases[i];
    let servers = &state.servers;
    let current = state.aliases[i].target;
    if let Some(pin) = state.pins[i] {
        let a = &mut state.aliases[i];
        a.matched = true;
        if current != Some(pin) {
            let reason = format!("pinned to {} by an operator", config.servers[pin].id);
            events.push(Event::TargetChanged { alias: i, old: current, new: pin, reason: reason.clone() });
            a.target = Some(pin);
            a.since = Some(now);
            a.reason = reason;
        }
        return;
    }
    let drained = &state.drained;
    let cands: Vec<ServerId> = alias.servers.iter().copied().filter(|&s| !drained[s] && matches(&servers[s], alias.role)).collect();
    let keep_or_first = |set: &[ServerId]| match current {
        Some(c) if set.contains(&c) => c,
        _ => set[0],
    };

    if cands.is_empty() {
        let a = &mut state.aliases[i];
        if a.matched || current.is_none() && a.reason.is_empty() {
            events.push(Event::NoMatch { alias: i, kept: current, policy: alias.on_no_match });
        }
        a.matched = false;
        a.split_brain.clear();
        if a.reason.is_empty() {
            a.reason = format!("no candidate is {}", alias.role.as_str());
        }
        return;
    }

    let mut by_timeline = false;
    let chosen = match alias.role {
        Role::ReadWrite | Role::Primary if cands.len() > 1 => {
            let timelines: Option<Vec<u32>> = cands.iter().map(|&s| servers[s].last_state.as_ref().and_then(|st| st.timeline)).collect();
            let newest = timelines.as_ref().and_then(|t| {
                let max = *t.iter().max()?;
                (t.iter().filter(|&&x| x == max).count() == 1).then(|| cands[t.iter().position(|&x| x == max).unwrap_or(0)])
            });
            by_timeline = newest.is_some();
            let chosen = newest.unwrap_or_else(|| keep_or_first(&cands));
            if state.aliases[i].split_brain != cands {
                events.push(Event::SplitBrain { alias: i, writable: cands.clone(), chosen, by_timeline });
            }
            chosen
        }
        Role::PreferStandby => {
            let standbys: Vec<ServerId> = cands.iter().copied().filter(|&s| servers[s].last_state.as_ref().is_some_and(|st| st.in_recovery)).collect();
            if standbys.is_empty() { keep_or_first(&cands) } else { keep_or_first(&standbys) }
        }
        _ => keep_or_first(&cands),
    };

    let reason = if current == Some(chosen) {
        None
    } else {
        Some(change_reason(state, config, i, current, chosen, by_timeline))
    };
    let a = &mut state.aliases[i];
    a.matched = true;
    a.split_brain = if cands.len() > 1 && matches!(alias.role, Role::ReadWrite | Role::Primary) { cands } else { Vec::new() };
    if let Some(reason) = reason {
        events.push(Event::TargetChanged { alias: i, old: current, new: chosen, reason: reason.clone() });
        a.target = Some(chosen);
        a.since = Some(now);
        a.reason = reason;
    }
}

fn change_reason(state: &State, config: &Config, i: usize, old: Option<ServerId>, new: ServerId, by_timeline: bool) -> String {
    let alias = &config.aliases[i];
    let id = |s: ServerId| config.servers[s].id.as_str();
    let desc = |s: ServerId| state.servers[s].last_state.as_ref().map_or_else(|| "unknown".to_string(), ServerState::describe);
    let new_part = format!("{} is {}", id(new), desc(new));
    let Some(old) = old else {
        return format!("first decision: {new_part}");
    };
    let h = &state.servers[old];
    if state.drained[old] {
        return format!("{} was drained by an operator; {new_part}", id(old));
    }
    if by_timeline && matches(h, alias.role) {
        return format!("split brain: {} and {} are both writable; {new_part} (newer timeline wins)", id(old), id(new));
    }
    if !h.up {
        return format!("{} is down ({}); {new_part}", id(old), h.last_error.as_deref().unwrap_or("no answer"));
    }
    if !matches(h, alias.role) {
        return format!("{} is no longer {} (now {}); {new_part}", id(old), alias.role.as_str(), desc(old));
    }
    format!("{new_part}, preferred for {}", alias.role.as_str())
}

/// Applies a manual override and re-decides at once, so the change is
/// visible in the next published snapshot. Returns the new state, the events
/// and a one-line summary for the operator.
pub fn apply_override(prev: &State, config: &Config, op: &Override, now: Instant) -> Result<(State, Vec<Event>, String), ControlError> {
    let alias_index = |name: &str| {
        let canon = DnsName::parse(name).map_err(|_| ControlError::UnknownAlias(name.to_string()))?;
        config.aliases.iter().position(|a| a.name == canon).ok_or_else(|| ControlError::UnknownAlias(name.to_string()))
    };
    let server_index = |id: &str| config.servers.iter().position(|s| s.id == id).ok_or_else(|| ControlError::UnknownServer(id.to_string()));
    let mut state = prev.clone();
    let summary = match op {
        Override::Pin { alias, server } => {
            let (a, s) = (alias_index(alias)?, server_index(server)?);
            if !config.aliases[a].servers.contains(&s) {
                return Err(ControlError::NotACandidate { alias: alias.clone(), server: server.clone() });
            }
            state.pins[a] = Some(s);
            format!("alias {} pinned to {}", config.aliases[a].name, config.servers[s].id)
        }
        Override::Unpin { alias } => {
            let a = alias_index(alias)?;
            let was = state.pins[a].take();
            match was {
                Some(s) => format!("alias {} unpinned (was pinned to {})", config.aliases[a].name, config.servers[s].id),
                None => format!("alias {} was not pinned", config.aliases[a].name),
            }
        }
        Override::Drain { server } => {
            let s = server_index(server)?;
            state.drained[s] = true;
            format!("server {} drained: it will not be chosen until undrained", config.servers[s].id)
        }
        Override::Undrain { server } => {
            let s = server_index(server)?;
            state.drained[s] = false;
            format!("server {} undrained", config.servers[s].id)
        }
    };
    let mut events = vec![Event::Override { summary: summary.clone() }];
    let (state, more) = decide(&state, &[], config, now);
    events.extend(more);
    Ok((state, events, summary))
}

/// Carries the decision state over a config reload: servers with the same id
/// and the same settings keep their health; aliases with the same name keep
/// their target while it is still a candidate; pins and drains follow their
/// names. Everything new starts fresh (a new server is chosen only once it
/// has reported).
pub fn reconfigure(prev: &State, old: &Config, new: &Config) -> State {
    let mut state = State { started: prev.started, first_round_done: prev.first_round_done, ..State::new(new, prev.started) };
    let old_index = |id: &str| old.servers.iter().position(|s| s.id == id);
    let map: Vec<Option<ServerId>> = old
        .servers
        .iter()
        .map(|os| new.servers.iter().position(|ns| ns.id == os.id))
        .collect();
    for (i, ns) in new.servers.iter().enumerate() {
        if let Some(o) = old_index(&ns.id) {
            if old.servers[o] == *ns {
                state.servers[i] = prev.servers[o].clone();
            }
            state.drained[i] = prev.drained[o];
        }
    }
    for (i, na) in new.aliases.iter().enumerate() {
        let Some(o) = old.aliases.iter().position(|a| a.name == na.name) else { continue };
        let mut a = prev.aliases[o].clone();
        a.target = a.target.and_then(|t| map[t]).filter(|t| na.servers.contains(t));
        a.split_brain = a.split_brain.iter().filter_map(|&t| map[t]).collect();
        if a.target.is_none() {
            a.matched = false;
        }
        state.aliases[i] = a;
        state.pins[i] = prev.pins[o].and_then(|p| map[p]).filter(|p| na.servers.contains(p));
    }
    state
}

#[cfg(test)]
mod tests;
