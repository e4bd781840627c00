//! Carrying the decision state over a config reload.

use std::fmt;

use super::fence::{self, Fence};
use super::lag::Lagging;
use super::{AliasState, State};
use crate::config::{match_servers, AliasId, Config, Matched, ServerId};

/// Carries the decision state over a config reload (see [`reconfigure_noted`]);
/// the tests' shorthand (the engine reports the notes).
#[cfg(test)]
pub(crate) fn reconfigure(prev: &State, old: &Config, new: &Config) -> State {
    reconfigure_noted(prev, old, new).0
}

/// Carries the decision state over a config reload: servers keep their
/// health, drains and fences by identity ([`crate::config::match_servers`]:
/// the same endpoint under a new id is the same server renamed; the same id
/// with new settings keeps what it had until its new prober reports), so a
/// reload never blips an answer; aliases with the same name keep their
/// target while it is still a candidate, their fences and timeline floor,
/// and the standbys they keep off for lag (while they still have a lag
/// limit); pins follow the alias name and the server. Everything new starts
/// fresh (a new server is chosen only once it has reported; a new writer
/// alias starts with the newest timeline already known on its candidates).
///
/// The notes say what an operator must hear about: renames and moves, and
/// every fence, pin and drain the new config dropped, with why.
pub(crate) fn reconfigure_noted(prev: &State, old: &Config, new: &Config) -> (State, Vec<ReloadNote>) {
    let mut notes = Vec::new();
    let mut state = State {
        started: prev.started,
        first_round_done: prev.first_round_done,
        ..State::new(new, prev.started)
    };
    let map = carry_servers(prev, old, new, &mut state, &mut notes);
    note_removed_aliases(prev, old, new, &mut notes);
    for (i, na) in new.enumerate_aliases() {
        let Some(o) = old.alias_id(&na.name) else {
            state.aliases[i].timeline_floor = fence::initial_floor(&state, new, i);
            continue;
        };
        let keep = |t: ServerId| map[t.index()].filter(|t| na.servers.contains(t));
        note_dropped(prev, old, new, o, i, &map, &mut notes);
        let mut a = prev.aliases[o].remap(keep);
        // What the new config's alias no longer has a use for.
        if !na.spread.is_set() {
            a.set.clear();
        }
        if !na.max_lag.is_set() {
            a.lagging.clear();
        }
        if a.target.is_none() {
            a.matched = false;
        }
        let writer = fence::is_writer(na.role);
        if !writer {
            a.fences.clear();
            a.held.clear();
            a.timeline_floor = None;
        }
        state.aliases[i] = a;
        state.pins[i] = prev.pins[o].and_then(keep);
        if writer && state.aliases[i].timeline_floor.is_none() {
            state.aliases[i].timeline_floor = fence::initial_floor(&state, new, i);
        }
    }
    (state, notes)
}

/// Carries each server's health and drain to its new position; returns the
/// map from old positions to new ones.
fn carry_servers(
    prev: &State,
    old: &Config,
    new: &Config,
    state: &mut State,
    notes: &mut Vec<ReloadNote>,
) -> Vec<Option<ServerId>> {
    let matched = match_servers(&old.servers, &new.servers);
    let map: Vec<Option<ServerId>> = (matched.iter())
        .map(|m| m.map(|m| ServerId::new(m.new_index())))
        .collect();
    for ((o, m), &n) in old.enumerate_servers().map(|(o, _)| o).zip(&matched).zip(&map) {
        let id = || old.servers[o].id.clone();
        match (*m, n) {
            (Some(m), Some(n)) => {
                state.servers[n] = prev.servers[o].clone();
                state.drained[n] = prev.drained[o];
                match m {
                    Matched::Renamed(_) => notes.push(ReloadNote::Renamed {
                        old: id(),
                        new: new.servers[n].id.clone(),
                    }),
                    Matched::Moved(_) => notes.push(ReloadNote::Moved { server: id() }),
                    Matched::Same(_) => {}
                }
            }
            _ if prev.drained[o] => notes.push(ReloadNote::DrainDropped { server: id() }),
            _ => {}
        }
    }
    map
}

/// The fences of aliases the new config no longer has.
fn note_removed_aliases(prev: &State, old: &Config, new: &Config, notes: &mut Vec<ReloadNote>) {
    for (o, oa) in old.enumerate_aliases() {
        if new.aliases.iter().any(|a| a.name == oa.name) {
            continue;
        }
        for f in &prev.aliases[o].fences {
            notes.push(ReloadNote::FenceDropped {
                alias: oa.name.to_string(),
                server: old.servers[f.server].id.clone(),
                kind: f.reason.kind(),
                why: Dropped::AliasRemoved,
            });
        }
    }
}

/// The fences and the pin of old alias `o` that new alias `i` (the same
/// name) does not carry, with why.
fn note_dropped(
    prev: &State,
    old: &Config,
    new: &Config,
    o: AliasId,
    i: AliasId,
    map: &[Option<ServerId>],
    notes: &mut Vec<ReloadNote>,
) {
    let na = &new.aliases[i];
    let name = |s: ServerId| old.servers[s].id.clone();
    let kept = |t: ServerId| map[t.index()].is_some_and(|t| na.servers.contains(&t));
    // Why `t` (an old server id) is not carried into this alias.
    let why = |t: ServerId| match map[t.index()] {
        None => Dropped::ServerRemoved,
        Some(_) => Dropped::NotACandidate,
    };
    let alias = na.name.to_string();
    let writer = fence::is_writer(na.role);
    for f in &prev.aliases[o].fences {
        let why = match kept(f.server) {
            false => why(f.server),
            true if !writer => Dropped::NotAWriter,
            true => continue,
        };
        notes.push(ReloadNote::FenceDropped {
            alias: alias.clone(),
            server: name(f.server),
            kind: f.reason.kind(),
            why,
        });
    }
    if let Some(p) = prev.pins[o].filter(|&p| !kept(p)) {
        notes.push(ReloadNote::PinDropped {
            alias,
            server: name(p),
            why: why(p),
        });
    }
}

impl AliasState {
    /// This alias's state with every server renumbered by `keep` (those it
    /// returns `None` for are dropped). Every field is named (no `..`): a
    /// field added to [`AliasState`] that holds servers cannot be forgotten
    /// by a reload.
    fn remap(&self, keep: impl Fn(ServerId) -> Option<ServerId>) -> AliasState {
        let AliasState {
            target,
            decided,
            decided_timeline,
            matched,
            since,
            reason,
            split_brain,
            timeline_floor,
            fences,
            held,
            lagging,
            set,
        } = self;
        let decided = decided.and_then(&keep);
        let mut fences: Vec<Fence> = (fences.iter())
            .filter_map(|f| {
                let server = keep(f.server)?;
                let reason = remap(f.reason, &keep);
                Some(Fence {
                    server,
                    reason,
                    ..f.clone()
                })
            })
            .collect();
        fences.sort_by_key(|f| f.server);
        let mut lagging: Vec<Lagging> = (lagging.iter())
            .filter_map(|l| {
                Some(Lagging {
                    server: keep(l.server)?,
                    ..l.clone()
                })
            })
            .collect();
        lagging.sort_by_key(|l| l.server);
        AliasState {
            target: target.and_then(&keep),
            decided,
            decided_timeline: decided.and(*decided_timeline),
            matched: *matched,
            since: *since,
            reason: reason.clone(),
            split_brain: split_brain.iter().filter_map(|&s| keep(s)).collect(),
            timeline_floor: *timeline_floor,
            fences,
            held: held.iter().filter_map(|&s| keep(s)).collect(),
            lagging,
            // A spreading alias's set, until the next decision re-forms it.
            set: set.iter().filter_map(|&s| keep(s)).collect(),
        }
    }
}

/// Something a reload did to the decision state, for one log line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReloadNote {
    /// The same endpoint under a new id: health, fences, drain and pins
    /// follow it.
    Renamed {
        old: String,
        new: String,
    },
    /// The same id at another endpoint: what it knew is kept until its new
    /// prober reports.
    Moved {
        server: String,
    },
    /// A fence the new config no longer has (old server id).
    FenceDropped {
        alias: String,
        server: String,
        /// [`fence::FenceReason::kind`].
        kind: &'static str,
        why: Dropped,
    },
    PinDropped {
        alias: String,
        server: String,
        why: Dropped,
    },
    DrainDropped {
        server: String,
    },
}

/// Why a reload dropped a fence or a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// The server is no longer configured (no server with its id or its endpoint).
    ServerRemoved,
    /// The server is no longer one of the alias's servers.
    NotACandidate,
    /// The alias is no longer configured.
    AliasRemoved,
    /// The alias is no longer a writer alias (fences bar writers only).
    NotAWriter,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dropped::ServerRemoved => "the server is no longer configured",
            Dropped::NotACandidate => "the server is no longer one of the alias's servers",
            Dropped::AliasRemoved => "the alias is no longer configured",
            Dropped::NotAWriter => "the alias is no longer a writer alias",
        })
    }
}

impl fmt::Display for ReloadNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadNote::Renamed { old, new } => write!(
                f,
                "server `{old}` renamed to `{new}` (same host, hostaddr and port): its health, fences, drain and pins are kept"
            ),
            ReloadNote::Moved { server } => write!(
                f,
                "server `{server}` now has another host, hostaddr or port: its health, fences, drain and pins are kept until its new prober reports"
            ),
            ReloadNote::FenceDropped { alias, server, kind, why } => {
                write!(f, "alias `{alias}`: fence on `{server}` ({kind}) dropped: {why}")
            }
            ReloadNote::PinDropped { alias, server, why } => {
                write!(f, "alias `{alias}`: pin on `{server}` dropped: {why}")
            }
            ReloadNote::DrainDropped { server } => {
                write!(f, "drain of `{server}` dropped: the server is no longer configured")
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::{config_text, primary, standby, Sim, A, ALIAS, B};
    use super::super::{decide, Answer, Event, FenceReason};
    use super::*;
    use crate::control::Override;

    /// A fenced `a` (lost a split brain to `b`, which the alias answers),
    /// `a` drained, the alias pinned to `b`.
    fn fenced() -> Sim {
        let mut s = Sim::new("read-write", "keep-last");
        s.step(&[(A, primary(Some(1))), (B, standby())]);
        assert_eq!(
            s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
            Answer::Target(B)
        );
        assert!(s.state.aliases[ALIAS].fence(A).is_some(), "a lost the split brain");
        s.apply(Override::Drain { server: "a".into() }).unwrap();
        s.apply(Override::Pin {
            alias: "prod.db.internal".into(),
            server: "b".into(),
        })
        .unwrap();
        s
    }

    fn config(text: &str) -> Config {
        Config::from_toml(Path::new("t.toml"), text).unwrap()
    }

    /// [`config_text`] with `[servers.a]` renamed to `id` (same host: the
    /// target's name) and the alias's servers spelled `servers`.
    fn renamed(id: &str, servers: &str) -> Config {
        config(
            &config_text("read-write", "keep-last")
                .replace("[servers.a]", &format!("[servers.{id}]\nhost = \"pg-a.test\""))
                .replace("servers = [\"a\", \"b\"]", &format!("servers = {servers}")),
        )
    }

    #[test]
    fn a_rename_keeps_health_fences_drains_and_pins() {
        let s = fenced();
        // `z` sorts after `b`: the renamed server changes index too.
        let new = renamed("z", r#"["b", "z"]"#);
        let (z, b) = (ServerId::new(1), ServerId::new(0));
        assert_eq!(new.servers[z].id, "z");
        let (next, notes) = reconfigure_noted(&s.state, &s.config, &new);
        assert_eq!(
            notes,
            [ReloadNote::Renamed {
                old: "a".into(),
                new: "z".into()
            }]
        );
        assert_eq!(next.servers[z], s.state.servers[A], "health follows the rename");
        assert_eq!(next.servers[b], s.state.servers[B]);
        assert!(next.drained[z] && !next.drained[b], "the drain follows the rename");
        assert_eq!(next.pins[ALIAS], Some(b));
        let a = &next.aliases[ALIAS];
        assert_eq!(a.target, Some(b));
        assert_eq!(a.fences.len(), 1, "{:?}", a.fences);
        assert_eq!(a.fences[0].server, z);
        assert_eq!(a.fences[0].reason, FenceReason::LostSplitBrain { winner: b });
        assert_eq!(a.fences[0].since, s.state.aliases[ALIAS].fences[0].since);
        assert_eq!(a.timeline_floor, Some(2));
        // No blip: the next decision (no probe has reported since) answers
        // the same server and changes nothing.
        let (after, events) = decide(&next, &[], &new, s.now);
        assert_eq!(after.answer(&new, ALIAS), Answer::Target(b));
        assert!(
            !events.iter().any(|e| matches!(e, Event::TargetChanged { .. })),
            "{events:?}"
        );
        // Unpinned and undrained, the renamed server stays fenced.
        let mut s2 = Sim::with_config(new);
        s2.state = after;
        s2.now = s.now;
        s2.apply(Override::Unpin {
            alias: "prod.db.internal".into(),
        })
        .unwrap();
        s2.apply(Override::Undrain { server: "z".into() }).unwrap();
        assert_eq!(s2.step(&[(b, standby()), (z, primary(Some(1)))]), Answer::Target(b));
        assert!(s2.state.aliases[ALIAS].fence(z).is_some());
    }

    #[test]
    fn a_new_server_at_another_port_is_not_a_rename() {
        let s = fenced();
        let new = config(
            &config_text("read-write", "keep-last")
                .replace("[servers.a]", "[servers.z]\nhost = \"pg-a.test\"\nport = 6000")
                .replace("servers = [\"a\", \"b\"]", "servers = [\"b\", \"z\"]"),
        );
        let (next, notes) = reconfigure_noted(&s.state, &s.config, &new);
        assert!(
            !next.servers[ServerId::new(1)].reported,
            "z is another server: no health yet"
        );
        assert!(!next.drained[ServerId::new(1)]);
        assert!(next.aliases[ALIAS].fences.is_empty());
        assert_eq!(
            notes,
            [
                ReloadNote::DrainDropped { server: "a".into() },
                ReloadNote::FenceDropped {
                    alias: "prod.db.internal.".into(),
                    server: "a".into(),
                    kind: "lost-split-brain",
                    why: Dropped::ServerRemoved,
                },
            ]
        );
    }

    #[test]
    fn every_dropped_fence_and_pin_is_noted_with_why() {
        let s = fenced();
        let fence = |alias: &str, why| ReloadNote::FenceDropped {
            alias: alias.into(),
            server: "a".into(),
            kind: "lost-split-brain",
            why,
        };
        // a stays configured but leaves the alias.
        let new = renamed("a", r#"["b"]"#);
        let (next, notes) = reconfigure_noted(&s.state, &s.config, &new);
        assert!(next.aliases[ALIAS].fences.is_empty());
        assert_eq!(notes, [fence("prod.db.internal.", Dropped::NotACandidate)]);
        // The alias becomes a reader alias.
        let new = config(&config_text("read-only", "keep-last"));
        let (_, notes) = reconfigure_noted(&s.state, &s.config, &new);
        assert_eq!(notes, [fence("prod.db.internal.", Dropped::NotAWriter)]);
        // The alias is renamed (a new alias): its fences go with the old name.
        let new = config(&config_text("read-write", "keep-last").replace("prod.db.internal", "main.db.internal"));
        let (_, notes) = reconfigure_noted(&s.state, &s.config, &new);
        assert_eq!(notes, [fence("prod.db.internal.", Dropped::AliasRemoved)]);
        // The pinned server leaves the alias.
        let new = renamed("a", r#"["a"]"#);
        let (next, notes) = reconfigure_noted(&s.state, &s.config, &new);
        assert_eq!(next.pins[ALIAS], None);
        assert_eq!(
            notes,
            [ReloadNote::PinDropped {
                alias: "prod.db.internal.".into(),
                server: "b".into(),
                why: Dropped::NotACandidate,
            }]
        );
        assert!(
            next.aliases[ALIAS]
                .fences
                .iter()
                .all(|f| f.reason == FenceReason::Inherited),
            "the fence on a stays; its winner is gone: {:?}",
            next.aliases[ALIAS].fences
        );
    }
}
