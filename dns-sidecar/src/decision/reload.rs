//! Carrying the decision state over a config reload.

use super::{fence, State};
use crate::config::{Config, ServerId};

/// Carries the decision state over a config reload: servers keep their
/// health by id, even when their settings changed, until their new prober
/// reports (so a reload never blips an answer); aliases with the same name
/// keep their target while it is still a candidate, their fences and
/// timeline floor, and the standbys they keep off for lag (while they still
/// have a lag limit); pins and drains follow their names. Everything new starts
/// fresh (a new server is chosen only once it has reported; a new writer
/// alias starts with the newest timeline already known on its candidates).
pub fn reconfigure(prev: &State, old: &Config, new: &Config) -> State {
    let mut state = State {
        started: prev.started,
        first_round_done: prev.first_round_done,
        ..State::new(new, prev.started)
    };
    let map: Vec<Option<ServerId>> = old
        .servers
        .iter()
        .map(|os| new.servers.iter().position(|ns| ns.id == os.id))
        .collect();
    for (o, n) in map.iter().enumerate() {
        if let Some(n) = *n {
            state.servers[n] = prev.servers[o].clone();
            state.drained[n] = prev.drained[o];
        }
    }
    for (i, na) in new.aliases.iter().enumerate() {
        let Some(o) = old.aliases.iter().position(|a| a.name == na.name) else {
            state.aliases[i].timeline_floor = fence::initial_floor(&state, new, i);
            continue;
        };
        let keep = |t: &ServerId| map[*t].filter(|t| na.servers.contains(t));
        let mut a = prev.aliases[o].clone();
        a.target = a.target.as_ref().and_then(keep);
        a.decided = a.decided.as_ref().and_then(keep);
        if a.decided.is_none() {
            a.decided_timeline = None;
        }
        a.split_brain = a.split_brain.iter().filter_map(keep).collect();
        a.held = a.held.iter().filter_map(keep).collect();
        a.fences = a
            .fences
            .iter()
            .filter_map(|f| {
                let server = keep(&f.server)?;
                let reason = remap(f.reason, |s| keep(&s));
                Some(fence::Fence {
                    server,
                    reason,
                    ..f.clone()
                })
            })
            .collect();
        a.fences.sort_by_key(|f| f.server);
        a.lagging = a
            .lagging
            .iter()
            .filter_map(|l| {
                Some(super::lag::Lagging {
                    server: keep(&l.server)?,
                    ..l.clone()
                })
            })
            .collect();
        a.lagging.sort_by_key(|l| l.server);
        if !na.max_lag.is_set() {
            a.lagging.clear();
        }
        if a.target.is_none() {
            a.matched = false;
        }
        if !fence::is_writer(na.role) {
            a.fences.clear();
            a.held.clear();
            a.timeline_floor = None;
        }
        state.aliases[i] = a;
        state.pins[i] = prev.pins[o].as_ref().and_then(keep);
        if fence::is_writer(na.role) && state.aliases[i].timeline_floor.is_none() {
            state.aliases[i].timeline_floor = fence::initial_floor(&state, new, i);
        }
    }
    state
}

/// The same reason with its other server renumbered (or `Inherited` when that
/// server is gone).
fn remap(r: fence::FenceReason, map: impl Fn(ServerId) -> Option<ServerId>) -> fence::FenceReason {
    use fence::FenceReason::*;
    match r {
        Superseded { by } => map(by).map_or(Inherited, |by| Superseded { by }),
        LostSplitBrain { winner } => map(winner).map_or(Inherited, |winner| LostSplitBrain { winner }),
        SameTimeline { holder } => map(holder).map_or(Inherited, |holder| SameTimeline { holder }),
        Inherited => Inherited,
    }
}
