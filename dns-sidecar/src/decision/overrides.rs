//! Manual overrides, applied to the decision state: pins, drains and
//! lifting fences. Each one re-decides at once, so its effect is in the next
//! published snapshot.

use std::time::Instant;

use super::{decide, Event, State};
use crate::config::{AliasId, Config, ServerId};
use crate::control::{ControlError, Override};
use crate::name::DnsName;

/// Applies a manual override and re-decides at once. Returns the new state,
/// the events and a one-line summary for the operator.
pub(crate) fn apply_override(
    prev: &State,
    config: &Config,
    op: &Override,
    now: Instant,
) -> Result<(State, Vec<Event>, String), ControlError> {
    let mut state = prev.clone();
    let mut events = Vec::new();
    let summary = match op {
        Override::Pin { alias, server } => {
            let (a, s) = (alias_index(config, alias)?, candidate(config, alias, server)?);
            state.pins[a] = Some(s);
            format!("alias {} pinned to {}", config.aliases[a].name, config.servers[s].id)
        }
        Override::Unpin { alias } => {
            let a = alias_index(config, alias)?;
            let was = state.pins[a].take();
            match was {
                Some(s) => format!(
                    "alias {} unpinned (was pinned to {})",
                    config.aliases[a].name, config.servers[s].id
                ),
                None => format!("alias {} was not pinned", config.aliases[a].name),
            }
        }
        Override::Drain { server } => {
            let s = server_index(config, server)?;
            state.drained[s] = true;
            format!(
                "server {} drained: it will not be chosen until undrained",
                config.servers[s].id
            )
        }
        Override::Undrain { server } => {
            let s = server_index(config, server)?;
            state.drained[s] = false;
            format!("server {} undrained", config.servers[s].id)
        }
        Override::Unfence { alias, server: None } => {
            unfence_all(&mut state, config, alias_index(config, alias)?, &mut events)
        }
        Override::Unfence {
            alias,
            server: Some(server),
        } => {
            let (a, s) = (alias_index(config, alias)?, candidate(config, alias, server)?);
            unfence_one(&mut state, config, a, s, &mut events)
        }
    };
    events.insert(
        0,
        Event::Override {
            summary: summary.clone(),
        },
    );
    let (state, more) = decide(&state, &[], config, now);
    events.extend(more);
    Ok((state, events, summary))
}

fn alias_index(config: &Config, name: &str) -> Result<AliasId, ControlError> {
    let canon = DnsName::parse(name).map_err(|_| ControlError::UnknownAlias(name.to_string()))?;
    config
        .alias_id(&canon)
        .ok_or_else(|| ControlError::UnknownAlias(name.to_string()))
}

fn server_index(config: &Config, id: &str) -> Result<ServerId, ControlError> {
    config
        .server_id(id)
        .ok_or_else(|| ControlError::UnknownServer(id.to_string()))
}

/// Server `server`, which must be one of alias `alias`'s servers (the alias
/// is known to exist).
fn candidate(config: &Config, alias: &str, server: &str) -> Result<ServerId, ControlError> {
    let (a, s) = (alias_index(config, alias)?, server_index(config, server)?);
    if !config.aliases[a].servers.contains(&s) {
        return Err(ControlError::NotACandidate {
            alias: alias.to_string(),
            server: server.to_string(),
        });
    }
    Ok(s)
}

/// Lifts every fence of alias `a` and resets its floor.
fn unfence_all(state: &mut State, config: &Config, a: AliasId, events: &mut Vec<Event>) -> String {
    let name = &config.aliases[a].name;
    let st = &mut state.aliases[a];
    let lifted: Vec<ServerId> = st.fences.drain(..).map(|f| f.server).collect();
    let floor = st.timeline_floor.take();
    st.held.clear();
    for &s in &lifted {
        events.push(Event::Unfenced {
            alias: a,
            server: s,
            reason: "lifted by an operator".into(),
        });
    }
    let ids: Vec<&str> = lifted.iter().map(|&s| config.servers[s].id.as_str()).collect();
    let floor = floor.map_or_else(
        || "no timeline floor".to_string(),
        |f| format!("timeline floor {f} reset"),
    );
    format!(
        "alias {name}: fences lifted ({}); {floor}",
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        }
    )
}

/// Lifts alias `a`'s fence on `s`, and lowers its floor to `s`'s timeline
/// when that is older.
fn unfence_one(state: &mut State, config: &Config, a: AliasId, s: ServerId, events: &mut Vec<Event>) -> String {
    let name = &config.aliases[a].name;
    let tl = state.servers[s]
        .last_state
        .as_ref()
        .filter(|x| !x.in_recovery)
        .and_then(|x| x.timeline);
    let st = &mut state.aliases[a];
    let had = st
        .fences
        .iter()
        .position(|f| f.server == s)
        .map(|p| st.fences.remove(p))
        .is_some();
    st.held.retain(|&h| h != s);
    let mut parts = Vec::new();
    if had {
        events.push(Event::Unfenced {
            alias: a,
            server: s,
            reason: "lifted by an operator".into(),
        });
        parts.push(format!("fence on {} lifted", config.servers[s].id));
    }
    if let (Some(t), Some(f)) = (tl, st.timeline_floor) {
        if t < f {
            st.timeline_floor = Some(t);
            parts.push(format!(
                "timeline floor lowered from {f} to {t} ({}'s timeline)",
                config.servers[s].id
            ));
        }
    }
    if parts.is_empty() {
        format!("alias {name}: {} was not fenced", config.servers[s].id)
    } else {
        format!("alias {name}: {}", parts.join("; "))
    }
}
