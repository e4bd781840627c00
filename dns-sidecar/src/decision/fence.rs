//! Fencing: a writer alias never sends writes to a server that has diverged.
//!
//! Timelines only grow within one lineage. When a standby is promoted it
//! starts a new timeline, and the old primary, if it keeps running or comes
//! back, is left on the old one: its data has diverged from the new primary's
//! and it must be rebuilt (pg_rewind, a new base backup) before it may take
//! writes again. The rules, for `read-write` and `primary` aliases only:
//!
//! 1. **Timeline floor.** Every good probe of an unfenced candidate that is
//!    not in recovery raises the alias's floor to that server's timeline. A candidate
//!    whose known timeline is older than the floor is never chosen; if it is
//!    the current target, the alias stops answering it (SERVFAIL, whatever
//!    `on_no_match` says): "never an older timeline while a newer one has been
//!    seen".
//! 2. **Succession fence.** When the alias moves from server X to server Y
//!    (not by a pin), X is fenced for that alias: Y became the writer, so X,
//!    if it ever takes writes again without having been rebuilt, has diverged.
//! 3. **Split-brain fence.** When several candidates match at once and the
//!    chosen one's latest probe succeeded, the others are fenced: whichever
//!    the alias serves, the others lack its writes. This is what keeps the
//!    alias safe when timelines are unknown (WAL functions revoked).
//! 4. **Same-timeline fence.** A server other than the alias's own that
//!    becomes writable on the very timeline the alias's server is on is
//!    fenced: a promote always starts a newer timeline than the one it
//!    continues, so two servers on one timeline are two forks (typically a
//!    standby that kept following the old primary, promoted later, or the
//!    old primary restored from its own WAL, which promotes itself onto its
//!    own timeline + 1). It takes precedence over rule 5's "newer timeline"
//!    (see `same_timeline`), and applies whichever was seen first: a server
//!    already writable on that timeline when the alias settles on its server
//!    is fenced too (see `same_timeline_peers`).
//! 5. **Lifting.** A fence is lifted when its server is seen in recovery
//!    *and following the alias's current server* (rebuilt as a standby: its
//!    WAL receiver receives on that server's timeline, or streams, or has
//!    received and replayed exactly up to its position; see
//!    [`super::truth`]; recovery alone is not a rebuild: an old primary given
//!    `standby.signal` without pg_rewind is in recovery and never streams),
//!    when it is seen on a newer timeline than when it was fenced *and* the
//!    alias's current server is seen following it (the cluster was turned
//!    around while nobody looked; a newer timeline alone is no rebuild: that
//!    old primary, promoted by mistake, reaches one too),
//!    or by an operator (`dns-sidecar unfence`), who may also lower the floor
//!    (a cluster rebuilt from scratch starts again at timeline 1).
//! 6. A pin overrides fences, as it overrides everything else.
//!
//! Fences only ever remove candidates; `on_no_match` then applies as usual,
//! except that `keep-last` never keeps a target below the floor.
//!
//! Limits: a timeline's number is not its history. A fork on a *newer* number
//! than the alias's server (restored with access to an archive holding the
//! new primary's history files, or restored twice) passes rule 5 like a
//! rebuilt standby that was promoted; without timelines, a fork seen in
//! recovery passes it like a rebuilt standby.

use std::time::Instant;

use super::{timeline, truth, AliasState, Event, ServerHealth, State};
use crate::config::{AliasId, Config, IdVec, Role, ServerId};

/// Why a writer alias will not move to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fence {
    pub(crate) server: ServerId,
    pub(crate) reason: FenceReason,
    pub(crate) since: Instant,
    /// The server's timeline when it was fenced, if known: a newer one later
    /// proves it has been through recovery and a promote since.
    pub(crate) timeline: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FenceReason {
    /// The alias moved from this server to `by` (a promote, a failover).
    Superseded { by: ServerId },
    /// This server was writable at the same time as `winner`, which was chosen.
    LostSplitBrain { winner: ServerId },
    /// This server became writable on the timeline `holder`, the alias's
    /// server, is already on: a second server cannot continue one timeline,
    /// so it forked from an older primary (a standby that kept following the
    /// old primary and was promoted later).
    SameTimeline { holder: ServerId },
    /// Fenced earlier; the server it lost to is no longer configured.
    Inherited,
}

impl FenceReason {
    /// Short machine-friendly name, for `/status` and the state file.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            FenceReason::Superseded { .. } => "superseded",
            FenceReason::LostSplitBrain { .. } => "lost-split-brain",
            FenceReason::SameTimeline { .. } => "same-timeline",
            FenceReason::Inherited => "inherited",
        }
    }

    /// The other server involved, if any.
    pub(crate) fn other(&self) -> Option<ServerId> {
        match *self {
            FenceReason::Superseded { by } => Some(by),
            FenceReason::LostSplitBrain { winner } => Some(winner),
            FenceReason::SameTimeline { holder } => Some(holder),
            FenceReason::Inherited => None,
        }
    }
}

/// Why a server is barred from a writer alias right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bar<'a> {
    Fenced(&'a Fence),
    /// Its timeline is older than the newest one seen on a candidate.
    OlderTimeline {
        timeline: u32,
        floor: u32,
    },
}

impl Bar<'_> {
    /// One line for logs and `/status`.
    pub(crate) fn describe(&self, config: &Config) -> String {
        let id = |s: ServerId| config.servers[s].id.as_str();
        match self {
            Bar::Fenced(f) => {
                let tl = f.timeline.map_or_else(String::new, |t| format!(" on timeline {t}"));
                match f.reason {
                    FenceReason::Superseded { by } => {
                        format!(
                            "the alias left it{tl} for {}; it must be seen following the current primary as a standby (rebuilt) or unfenced",
                            id(by)
                        )
                    }
                    FenceReason::LostSplitBrain { winner } => {
                        format!(
                            "it lost a split brain{tl} to {}; it must be seen following the current primary as a standby (rebuilt) or unfenced",
                            id(winner)
                        )
                    }
                    FenceReason::SameTimeline { holder } => {
                        format!(
                            "it became writable{tl}, which {} already holds: it forked from an older primary; it must be seen following the current primary as a standby (rebuilt) or unfenced",
                            id(holder)
                        )
                    }
                    FenceReason::Inherited => format!(
                        "it was fenced{tl} (the server it lost to is no longer configured); it must be seen following the current primary as a standby (rebuilt) or unfenced"
                    ),
                }
            }
            Bar::OlderTimeline { timeline, floor } => {
                format!(
                    "its timeline {timeline} is older than timeline {floor} already seen on a candidate (diverged: rebuild it, or unfence if the cluster was recreated)"
                )
            }
        }
    }
}

/// Whether fencing applies to aliases of `role`: the ones that send writes.
pub(crate) fn is_writer(role: Role) -> bool {
    matches!(role, Role::ReadWrite | Role::Primary)
}

impl State {
    /// Why alias `alias` may not answer `server`, if it may not: the one
    /// place that says "a writer alias, and the server is fenced or below its
    /// floor". Readers are never barred (they obey the writers' truth
    /// instead: see [`truth::diverged`]).
    pub(crate) fn barred(&self, config: &Config, alias: AliasId, server: ServerId) -> Option<Bar<'_>> {
        if !is_writer(config.aliases[alias].role) {
            return None;
        }
        self.aliases[alias].bar(server, &self.servers)
    }
}

impl AliasState {
    /// Why `server` may not be chosen by this alias, if it were a writer
    /// alias (callers go through [`State::barred`], which asks the role).
    fn bar<'a>(&'a self, server: ServerId, servers: &IdVec<ServerId, ServerHealth>) -> Option<Bar<'a>> {
        if let Some(f) = self.fence(server) {
            return Some(Bar::Fenced(f));
        }
        let h = &servers[server];
        let in_recovery = h.last_state.as_ref().is_some_and(|s| s.in_recovery);
        match (timeline(h).filter(|_| !in_recovery), self.timeline_floor) {
            (Some(timeline), Some(floor)) if timeline < floor => Some(Bar::OlderTimeline { timeline, floor }),
            _ => None,
        }
    }

    pub(crate) fn fence(&self, server: ServerId) -> Option<&Fence> {
        self.fences.iter().find(|f| f.server == server)
    }

    /// Adds a fence unless `server` already has one; returns whether it did.
    fn add_fence(&mut self, fence: Fence) -> bool {
        if self.fence(fence.server).is_some() {
            return false;
        }
        let at = self.fences.partition_point(|f| f.server < fence.server);
        self.fences.insert(at, fence);
        true
    }
}

/// Rule 4: `fence.server` is writable on the timeline of the alias's own
/// server: a fork. Whatever fence it had (typically "superseded" on the
/// timeline the alias left it on) becomes this one, never lifted as
/// "promoted again" (rule 5).
///
/// Why this comes before the lift: an old primary restored from its own WAL
/// (recovery.signal, no primary) promotes itself onto its own timeline + 1,
/// exactly the number its successor took, while its old fence was taken on
/// the older timeline. When rule 5 came first, the fork's first probe on
/// that timeline lifted the old fence, and rule 4 fenced it again only at
/// its next probe. That was safe only while the fork was not yet *up* at
/// its first probe (back from a down episode, `rise` >= 2), which is what
/// tries with real servers showed. With `rise = 1`, at the first probe after
/// a sidecar restart, or when the fork was stopped, restored and promoted
/// between two probes (the kept connection's retry finds the fork, so no
/// failure is reported), it was up at once: with no other candidate the
/// alias moved to it (issue 15's code review was right).
///
/// Why nothing else gets through: the alias only moves to a newer timeline
/// than the one it left (rules 1 and 2), so a fork of a server it left,
/// on that server's timeline + 1, is on the holder's timeline (this rule) or
/// below the floor (rule 1).
pub(super) fn same_timeline(state: &mut State, config: &Config, i: AliasId, fence: Fence, events: &mut Vec<Event>) {
    let a = &mut state.aliases[i];
    if let Some(pos) = a.fences.iter().position(|f| f.server == fence.server) {
        if matches!(a.fences[pos].reason, FenceReason::SameTimeline { .. }) {
            return;
        }
        a.fences.remove(pos);
    }
    add(state, config, i, fence, events);
}

/// Rule 4 from the other side: the alias's server is settled (chosen, its
/// timeline known), and a server already writable on that timeline is a fork
/// too, although it was probed before the alias had that server (so
/// [`crate::decision::fence_learn::learn`] had no holder to compare it with) and never lost a split brain
/// (drained meanwhile, so not a candidate then). Only servers with no fence
/// yet: an existing one stands.
pub(super) fn same_timeline_peers(
    state: &mut State,
    config: &Config,
    i: AliasId,
    now: Instant,
    events: &mut Vec<Event>,
) {
    let a = &state.aliases[i];
    let (Some(holder), Some(t)) = (a.decided, a.decided_timeline) else {
        return;
    };
    let peers: Vec<ServerId> = (config.aliases[i].servers.iter().copied())
        .filter(|&s| s != holder && a.fence(s).is_none())
        .filter(|&s| {
            let h = &state.servers[s];
            h.up && h
                .last_state
                .as_ref()
                .is_some_and(|st| !st.in_recovery && st.timeline == Some(t))
        })
        .collect();
    for server in peers {
        let fence = Fence {
            server,
            reason: FenceReason::SameTimeline { holder },
            since: now,
            timeline: Some(t),
        };
        add(state, config, i, fence, events);
    }
}

/// The newest timeline any candidate of alias `i` is known to be on (used
/// when an alias starts with no history, e.g. added by a reload).
pub(super) fn initial_floor(state: &State, config: &Config, i: AliasId) -> Option<u32> {
    let alias = &config.aliases[i];
    if !is_writer(alias.role) {
        return None;
    }
    alias
        .servers
        .iter()
        .filter_map(|&s| {
            state.servers[s]
                .last_state
                .as_ref()
                .filter(|st| !st.in_recovery)
                .and_then(|st| st.timeline)
        })
        .max()
}

/// Records (and reports once per episode) the servers that match the role
/// but are kept off by a fence or the floor while nothing else is allowed:
/// the fences are then what keeps the alias from answering.
pub(super) fn report_held(
    state: &mut State,
    config: &Config,
    i: AliasId,
    matching: &[ServerId],
    allowed: &[ServerId],
    events: &mut Vec<Event>,
) {
    let held: Vec<ServerId> = if allowed.is_empty() {
        matching.to_vec()
    } else {
        Vec::new()
    };
    let a = &state.aliases[i];
    for &s in held.iter().filter(|s| !a.held.contains(s)) {
        if let Some(bar) = state.barred(config, i, s) {
            events.push(Event::FenceHeld {
                alias: i,
                server: s,
                reason: bar.describe(config),
            });
        }
    }
    state.aliases[i].held = held;
}

/// Rule 3: when several candidates match and `chosen` is freshly confirmed,
/// the others are fenced.
pub(super) fn split_brain_losers(
    state: &mut State,
    config: &Config,
    i: AliasId,
    matching: &[ServerId],
    chosen: ServerId,
    now: Instant,
    events: &mut Vec<Event>,
) {
    if state.servers[chosen].consecutive_fail > 0 {
        // The chosen server's state is only remembered (damping): it has not
        // been seen writable alongside the others, so nobody lost anything.
        return;
    }
    for &s in matching.iter().filter(|&&s| s != chosen) {
        let fence = Fence {
            server: s,
            reason: FenceReason::LostSplitBrain { winner: chosen },
            since: now,
            timeline: timeline(&state.servers[s]),
        };
        add(state, config, i, fence, events);
    }
}

/// Rule 2: the alias moved from `old` to `new`; unless `old`, last seen in
/// recovery, already follows `new` (rule 5's evidence of a rebuild, in hand
/// before the move).
///
/// Why: the alias often leaves a server *because* it was seen rebuilt as a
/// standby (keep-last kept it meanwhile), before the new primary was seen.
/// Rule 5 lifts a fence only at its server's own probe, so a fence taken
/// then waited for one more probe in recovery; promoted again first (a
/// switchover back), the server was seen only on its newer timeline, which
/// alone lifts nothing, and the alias stayed on the server it had just left
/// behind (found by `instances_started_at_different_times_agree`).
pub(super) fn superseded(
    state: &mut State,
    config: &Config,
    i: AliasId,
    old: ServerId,
    new: ServerId,
    now: Instant,
    events: &mut Vec<Event>,
) {
    if truth::follows(state, old, new) {
        return;
    }
    let fence = Fence {
        server: old,
        reason: FenceReason::Superseded { by: new },
        since: now,
        timeline: timeline(&state.servers[old]),
    };
    add(state, config, i, fence, events);
}

fn add(state: &mut State, config: &Config, i: AliasId, fence: Fence, events: &mut Vec<Event>) {
    let server = fence.server;
    if state.aliases[i].add_fence(fence) {
        let a = &state.aliases[i];
        let reason = a
            .fence(server)
            .map(|f| Bar::Fenced(f).describe(config))
            .unwrap_or_default();
        events.push(Event::Fenced {
            alias: i,
            server,
            reason,
        });
    }
}
