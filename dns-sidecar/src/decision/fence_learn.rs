//! What the probes teach the fences (see [`super::fence`] for the rules),
//! before any alias is decided: rule 1's floor, rule 4's fork seen on the
//! alias's own timeline, rule 5's release on evidence of a rebuild.

use std::time::Instant;

use super::fence::{is_writer, same_timeline, Fence, FenceReason};
use super::{truth, Event, State};
use crate::config::{AliasId, Config, ServerId};
use crate::observation::{Observation, ServerState};

/// What the probes teach the fences, before any alias is decided: timelines
/// seen on unfenced servers raise the floors, and servers seen following
/// the alias's server (or followed by it) are released.
pub(super) fn learn(
    state: &mut State,
    observations: &[Observation],
    config: &Config,
    now: Instant,
    events: &mut Vec<Event>,
) {
    for o in observations {
        let Ok(s) = &o.outcome else { continue };
        for (i, alias) in config.enumerate_aliases() {
            if !is_writer(alias.role) || !alias.servers.contains(&o.server) {
                continue;
            }
            if forked_from_holder(state, config, i, o.server, s, now, events) {
                continue;
            }
            release(state, config, i, o.server, s, events);
            // Rule 1: the floor is raised by servers the alias may follow; a
            // fenced server's timeline is no truth (a fork promoted by
            // mistake must not bar the healthy primary).
            let a = &mut state.aliases[i];
            if let Some(t) = s.timeline.filter(|_| !s.in_recovery && a.fence(o.server).is_none()) {
                a.timeline_floor = Some(a.timeline_floor.map_or(t, |f| f.max(t)));
            }
        }
    }
}

/// Records the timeline of alias `i`'s own server when `server` is it;
/// fences `server` when it is writable on that very timeline (rule 4, before
/// rule 5: the holder's timeline is not "newer" for this server, whatever
/// its old fence says). Returns whether it fenced it.
fn forked_from_holder(
    state: &mut State,
    config: &Config,
    i: AliasId,
    server: ServerId,
    s: &ServerState,
    now: Instant,
    events: &mut Vec<Event>,
) -> bool {
    let a = &mut state.aliases[i];
    let holder = a.decided.filter(|&d| d != server);
    let holder_tl = a.decided_timeline;
    let Some(t) = s.timeline.filter(|_| !s.in_recovery) else {
        return false;
    };
    if a.decided == Some(server) {
        a.decided_timeline = Some(t);
    }
    let (Some(holder), Some(ht)) = (holder, holder_tl) else {
        return false;
    };
    if t != ht {
        return false;
    }
    // A fence of another kind becomes this one. The floor: `t` is the
    // holder's timeline (truth).
    a.timeline_floor = Some(a.timeline_floor.map_or(t, |f| f.max(t)));
    let fence = Fence {
        server,
        reason: FenceReason::SameTimeline { holder },
        since: now,
        timeline: Some(t),
    };
    same_timeline(state, config, i, fence, events);
    true
}

/// Rule 5: lifts alias `i`'s fence on `server` (probed good, as `s`) on
/// evidence of a rebuild: in recovery *and* following the alias's current
/// server (see `truth::follows`), not recovery alone; or promoted again
/// since it was fenced *and* the server that superseded it now follows it
/// (the cluster moved back to it). A newer timeline alone is no rebuild (an
/// old primary restored without pg_rewind and promoted by mistake reaches
/// one too).
fn release(state: &mut State, config: &Config, i: AliasId, server: ServerId, s: &ServerState, events: &mut Vec<Event>) {
    let decided = state.aliases[i].decided.filter(|&d| d != server);
    let following = decided.filter(|&p| truth::follows(state, server, p));
    let followed = decided.filter(|&d| truth::follows(state, d, server));
    let a = &mut state.aliases[i];
    let pos = a.fences.iter().position(|f| f.server == server);
    let newer = pos.is_some_and(|pos| match (s.timeline, a.fences[pos].timeline) {
        (Some(now), Some(then)) if !s.in_recovery => now > then && followed.is_some(),
        _ => false,
    });
    let Some(pos) = pos.filter(|_| following.is_some() || newer) else {
        return;
    };
    a.fences.remove(pos);
    let reason = if let Some(p) = following {
        format!(
            "rebuilt as a standby: in recovery and following {} ({})",
            config.servers[p].id,
            s.describe()
        )
    } else {
        format!(
            "promoted again since it was fenced (now {}), and {} follows it",
            s.describe(),
            followed.map_or("", |d| config.servers[d].id.as_str())
        )
    };
    events.push(Event::Unfenced {
        alias: i,
        server,
        reason,
    });
}
