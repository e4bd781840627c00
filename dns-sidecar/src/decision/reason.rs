//! The sentences an operator reads: why an alias moved, why it answers
//! SERVFAIL, and why each candidate is or is not chosen. Pure formatting of
//! the state; nothing here decides.

use super::{matches, State};
use crate::config::{AliasId, Config, NoMatchPolicy, ServerId};
use crate::observation::ServerState;

impl State {
    /// Why alias `i` answers SERVFAIL when [`State::answer`] says
    /// [`super::Answer::NoTarget`]: what the operator would ask first.
    pub(crate) fn servfail_reason(&self, config: &Config, i: AliasId) -> String {
        let alias = &config.aliases[i];
        let a = &self.aliases[i];
        let id = |s: ServerId| config.servers[s].id.as_str();
        let last = match a.target {
            Some(t) if self.drained[t] => format!("{} was drained by an operator", id(t)),
            Some(t) => match self.barred(config, i, t) {
                Some(b) => format!("{} is fenced: {}", id(t), b.describe(config)),
                None if alias.on_no_match == NoMatchPolicy::Servfail => {
                    format!("on_no_match = \"servfail\" (last target: {})", id(t))
                }
                None => format!("keep-last keeps {}", id(t)),
            },
            None if alias.on_no_match == NoMatchPolicy::Servfail => "on_no_match = \"servfail\"".to_string(),
            None => "no candidate has matched since the start, so keep-last has nothing to keep".to_string(),
        };
        format!("{last}; candidates: {}", self.candidates_summary(config, i))
    }

    /// One phrase per candidate of alias `i`: why it is or is not chosen.
    pub(crate) fn candidates_summary(&self, config: &Config, i: AliasId) -> String {
        let alias = &config.aliases[i];
        alias
            .servers
            .iter()
            .map(|&s| {
                let h = &self.servers[s];
                let id = config.servers[s].id.as_str();
                let desc = h
                    .last_state
                    .as_ref()
                    .map_or_else(|| "never probed successfully".to_string(), ServerState::describe);
                if self.drained[s] {
                    format!("{id} drained")
                } else if !h.up {
                    format!(
                        "{id} down ({})",
                        h.last_error.as_deref().unwrap_or("no probe result yet")
                    )
                } else if let Some(b) = self.barred(config, i, s) {
                    format!("{id} {desc}, fenced ({})", b.describe(config))
                } else {
                    format!("{id} {desc}")
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

pub(super) fn change_reason(
    state: &State,
    config: &Config,
    i: AliasId,
    old: Option<ServerId>,
    new: ServerId,
    by_timeline: bool,
) -> String {
    let alias = &config.aliases[i];
    let id = |s: ServerId| config.servers[s].id.as_str();
    let desc = |s: ServerId| {
        state.servers[s]
            .last_state
            .as_ref()
            .map_or_else(|| "unknown".to_string(), ServerState::describe)
    };
    let new_part = format!("{} is {}", id(new), desc(new));
    let Some(old) = old else {
        return format!("first decision: {new_part}");
    };
    let h = &state.servers[old];
    if state.drained[old] {
        return format!("{} was drained by an operator; {new_part}", id(old));
    }
    if by_timeline && matches(h, alias.role) {
        return format!(
            "split brain: {} and {} are both writable; {new_part} (newer timeline wins)",
            id(old),
            id(new)
        );
    }
    if h.up && h.consecutive_fail > 0 && matches(h, alias.role) {
        return format!(
            "{} has failed its last {} probe(s) ({}; remembered as up through damping, not a split brain); {new_part}",
            id(old),
            h.consecutive_fail,
            h.last_error.as_deref().unwrap_or("no answer")
        );
    }
    if !h.up {
        return format!(
            "{} is down ({}); {new_part}",
            id(old),
            h.last_error.as_deref().unwrap_or("no answer")
        );
    }
    if let Some(l) = state.aliases[i].lagging.iter().find(|l| l.server == old) {
        return format!("{} is too far behind the primary: {}; {new_part}", id(old), l.reason);
    }
    if !matches(h, alias.role) {
        return format!(
            "{} is no longer {} (now {}); {new_part}",
            id(old),
            alias.role.as_str(),
            desc(old)
        );
    }
    if let Some(bar) = state.barred(config, i, old) {
        return format!("{} is fenced: {}; {new_part}", id(old), bar.describe(config));
    }
    format!("{new_part}, preferred for {}", alias.role.as_str())
}
