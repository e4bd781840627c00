//! The cluster's truth, as the writer aliases hold it, for everything else:
//! which server is the current primary, whether a standby follows it, and
//! which servers have diverged from it.
//!
//! Reader aliases (and the lag they measure) never judge the cluster on
//! their own: a server a writer alias has fenced (superseded, lost a split
//! brain, forked) or keeps below its timeline floor has diverged for every
//! alias; a standby is measured only against the writer alias's own choice,
//! and a standby whose WAL receiver receives on another timeline than that
//! primary's follows another branch (diverged too). A `prefer-standby`
//! alias with no standby to answer falls back to exactly the writer alias's
//! choice.
//!
//! Whether a standby *follows* the current primary (what lifts a fence,
//! see [`super::fence`] rule 5) needs evidence, not only recovery:
//! * its WAL receiver receives on the primary's timeline
//!   (`pg_stat_wal_receiver.received_tli`, visible only to probe roles with
//!   `pg_read_all_stats`, e.g. `pg_monitor`); or, when that is not visible,
//! * its WAL receiver received more since its previous probe (it streams), or
//!   its receiver was started and it has replayed exactly the primary's
//!   position (an idle primary, a standby caught up).
//!
//! An old primary given `standby.signal` without pg_rewind, whose history
//! forked before its own position, never streams: its received position
//! stays where it asked to start (a segment boundary) and its replay
//! position is its own, past the fork, so none of these holds. Limits:
//! without `pg_read_all_stats` a standby streaming from another server than
//! the current primary (a cascade, or a stale old primary) is taken to
//! follow it, and so is a diverged one whose own position happens to equal
//! the primary's to the byte.

use super::{fence, timeline, State};
use crate::config::{AliasId, Config, ServerId};

/// Writer aliases that have `server` among their candidates, in config order.
fn writers(config: &Config, server: ServerId) -> impl Iterator<Item = AliasId> + '_ {
    (config.enumerate_aliases())
        .filter(move |(_, a)| fence::is_writer(a.role) && a.servers.contains(&server))
        .map(|(i, _)| i)
}

/// The current primary of `server`'s cluster: the server the first writer
/// alias that has `server` among its candidates chose and still answers (not
/// in recovery, not fenced, not below its floor); `None` when no writer alias
/// covers `server` or it answers none.
pub(crate) fn current_primary(state: &State, config: &Config, server: ServerId) -> Option<ServerId> {
    writers(config, server).find_map(|i| {
        let a = &state.aliases[i];
        let d = a.decided.filter(|_| a.matched)?;
        let st = state.servers[d].last_state.as_ref()?;
        (!st.in_recovery && !state.drained[d] && state.barred(config, i, d).is_none()).then_some(d)
    })
}

/// Whether a writer alias covers `server` (so readers take their primary
/// from it rather than judging on their own).
pub(crate) fn has_writer(config: &Config, server: ServerId) -> bool {
    writers(config, server).next().is_some()
}

/// Whether `server`, in recovery, follows `primary` (see the module doc).
pub(crate) fn follows(state: &State, server: ServerId, primary: ServerId) -> bool {
    let h = &state.servers[server];
    let (Some(st), Some(p)) = (h.last_state.as_ref(), state.servers[primary].last_state.as_ref()) else {
        return false;
    };
    if !st.in_recovery || p.in_recovery {
        return false;
    }
    match (st.received_timeline, p.timeline) {
        (Some(t), Some(pt)) => t == pt,
        (Some(_), None) => false,
        (None, _) => {
            // Its receiver was started (standby mode with a primary) and it has
            // replayed exactly the primary's position. (The received position
            // itself says little: a rebuilt standby that replayed the copied
            // WAL asks to stream from the start of its segment, where it
            // stays while the primary is idle, as a diverged one's does.)
            let caught_up = st.received_lsn.is_some() && st.wal_lsn.is_some() && st.wal_lsn == p.wal_lsn;
            h.receiving || caught_up
        }
    }
}

/// Why `server` has diverged from its cluster's truth, if it has: a reader
/// alias never answers it, and its lag is not measured.
pub(crate) fn diverged(state: &State, config: &Config, server: ServerId) -> Option<String> {
    for i in writers(config, server) {
        if let Some(b) = state.barred(config, i, server) {
            return Some(format!("fenced by {}: {}", config.aliases[i].name, b.describe(config)));
        }
    }
    let st = state.servers[server].last_state.as_ref().filter(|s| s.in_recovery)?;
    let p = current_primary(state, config, server)?;
    let pt = timeline(&state.servers[p])?;
    match st.received_timeline {
        Some(t) if t != pt => Some(format!(
            "it receives WAL on timeline {t}, another branch than timeline {pt} of the primary {}",
            config.servers[p].id
        )),
        _ => None,
    }
}
