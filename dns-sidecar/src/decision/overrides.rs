//! Manual overrides, applied to the decision state: pins, drains and
//! lifting fences. Each one re-decides at once, so its effect is in the next
//! published snapshot.

use std::time::Instant;

use super::{decide, Event, State};
use crate::config::Config;
use crate::control::{ControlError, Override};
use crate::name::DnsName;

/// Applies a manual override and re-decides at once. Returns the new state,
/// the events and a one-line summary for the operator.
pub fn apply_override(
    prev: &State,
    config: &Config,
    op: &Override,
    now: Instant,
) -> Result<(State, Vec<Event>, String), ControlError> {
    let alias_index = |name: &str| {
        let canon = DnsName::parse(name).map_err(|_| ControlError::UnknownAlias(name.to_string()))?;
        config
            .aliases
            .iter()
            .position(|a| a.name == canon)
            .ok_or_else(|| ControlError::UnknownAlias(name.to_string()))
    };
    let server_index = |id: &str| {
        config
            .servers
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| ControlError::UnknownServer(id.to_string()))
    };
    let mut state = prev.clone();
    let mut events = Vec::new();
    let summary = match op {
        Override::Pin { alias, server } => {
            let (a, s) = (alias_index(alias)?, server_index(server)?);
            if !config.aliases[a].servers.contains(&s) {
                return Err(ControlError::NotACandidate {
                    alias: alias.clone(),
                    server: server.clone(),
                });
            }
            state.pins[a] = Some(s);
            format!("alias {} pinned to {}", config.aliases[a].name, config.servers[s].id)
        }
        Override::Unpin { alias } => {
            let a = alias_index(alias)?;
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
            let s = server_index(server)?;
            state.drained[s] = true;
            format!(
                "server {} drained: it will not be chosen until undrained",
                config.servers[s].id
            )
        }
        Override::Undrain { server } => {
            let s = server_index(server)?;
            state.drained[s] = false;
            format!("server {} undrained", config.servers[s].id)
        }
        Override::Unfence { alias, server } => {
            let a = alias_index(alias)?;
            let name = &config.aliases[a].name;
            match server {
                None => {
                    let st = &mut state.aliases[a];
                    let lifted: Vec<usize> = st.fences.drain(..).map(|f| f.server).collect();
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
                Some(server) => {
                    let s = server_index(server)?;
                    if !config.aliases[a].servers.contains(&s) {
                        return Err(ControlError::NotACandidate {
                            alias: alias.clone(),
                            server: server.clone(),
                        });
                    }
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
            }
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
