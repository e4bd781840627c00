//! Deciding one alias, once the probes' results are in: its pin, else the
//! best candidate its role, the fences, the lag limit and the writers'
//! truth allow (see the rules in the module doc of [`super`]), else nothing.

use std::time::Instant;

use super::{fence, matches, reason, select, timeline, truth, AliasState, Event, ServerHealth, State};
use crate::config::{AliasId, Config, IdVec, Prefer, Role, ServerId};

/// Decides alias `i`: its pin, or the best allowed candidate, or nothing.
pub(super) fn decide_alias(state: &mut State, config: &Config, i: AliasId, now: Instant, events: &mut Vec<Event>) {
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
fn candidates(
    state: &mut State,
    config: &Config,
    i: AliasId,
    events: &mut Vec<Event>,
) -> (Vec<ServerId>, Vec<ServerId>) {
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
            (
                newest_timeline(servers, cands).unwrap_or_else(|| keep_or_first(cands)),
                false,
            )
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
