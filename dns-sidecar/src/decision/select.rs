//! Reader aliases that spread (`spread = "rotate" | "client"`) or prefer
//! the nearest server (`prefer = "nearest"`): which matching candidates
//! form the alias's *set*, in order. Pure: the decision passes the matching
//! candidates (up, role, lag limit, not fenced, not drained, risen) and the
//! servers' recent round-trip times.
//!
//! * `prefer = "order"`: the set is every matching candidate, in the
//!   alias's `servers` order.
//! * `prefer = "nearest"`: the *near group*: the matching candidates whose
//!   median probe round-trip time (of the last [`RTT_WINDOW`] probes on an
//!   open connection) is within [`ENTER`] of the best one's; a member stays
//!   in it while within the wider [`LEAVE`], so jitter of one server or the
//!   other does not flip it. Ordered nearest first. Candidates not measured
//!   yet join only while no candidate is measured. When the near ones stop
//!   matching, the group is formed from the others (the nearest of those).
//!
//! The decision then keeps its current lead server while it is in the set
//! (`spread = "first"` answers only that one: with `nearest`, the nearest
//! matching server, which changes only when another is nearer by the
//! margin), and `rotate` / `client` answer the whole set.

use std::collections::VecDeque;
use std::time::Duration;

use super::{matches, truth, State};
use crate::config::{Alias, AliasId, Config, Prefer, Role, ServerId, Spread};

/// How many recent round-trip times are kept per server.
pub(crate) const RTT_WINDOW: usize = 5;

/// A margin: `pct` percent of the reference, and at least `min`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Margin {
    pub(crate) pct: u32,
    pub(crate) min: Duration,
}

/// A candidate joins the near group within this of the best median.
pub(crate) const ENTER: Margin = Margin {
    pct: 25,
    min: Duration::from_millis(2),
};

/// A member leaves the near group beyond this of the best median.
pub(crate) const LEAVE: Margin = Margin {
    pct: 50,
    min: Duration::from_millis(4),
};

impl Margin {
    /// Whether `x` is within this margin of `best`.
    pub(crate) fn admits(self, best: Duration, x: Duration) -> bool {
        x <= best + (best * self.pct / 100).max(self.min)
    }
}

/// The last [`RTT_WINDOW`] round-trip times of one server's probe query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RttWindow(VecDeque<Duration>);

impl RttWindow {
    pub(crate) fn push(&mut self, rtt: Duration) {
        if self.0.len() == RTT_WINDOW {
            self.0.pop_front();
        }
        self.0.push_back(rtt);
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// The median (the lower middle one of an even count); `None` before
    /// the first sample.
    pub(crate) fn median(&self) -> Option<Duration> {
        let mut v: Vec<Duration> = self.0.iter().copied().collect();
        v.sort();
        v.get(v.len().saturating_sub(1) / 2).copied()
    }
}

/// The alias's set among `cands` (the matching candidates, in the alias's
/// order), given each server's median round-trip time and the previous set.
pub(crate) fn set(
    alias: &Alias,
    cands: &[ServerId],
    median: impl Fn(ServerId) -> Option<Duration>,
    prev: &[ServerId],
) -> Vec<ServerId> {
    if alias.prefer == Prefer::Order {
        return cands.to_vec();
    }
    let best = cands.iter().filter_map(|&s| median(s)).min();
    let Some(best) = best else {
        return cands.to_vec();
    };
    let mut group: Vec<(Duration, usize, ServerId)> = cands
        .iter()
        .enumerate()
        .filter_map(|(k, &s)| {
            let m = median(s)?;
            let margin = if prev.contains(&s) { LEAVE } else { ENTER };
            margin.admits(best, m).then_some((m, k, s))
        })
        .collect();
    group.sort();
    group.into_iter().map(|(_, _, s)| s).collect()
}

/// The lead server of `set`: the current one while it is in the set (so
/// the lead, which a `first` alias answers and a hook is told, changes only
/// when it must), else the set's first.
pub(crate) fn lead(set: &[ServerId], current: Option<ServerId>) -> Option<ServerId> {
    match current {
        Some(c) if set.contains(&c) => Some(c),
        _ => set.first().copied(),
    }
}

/// Why each candidate of reader alias `i` that DNS does not answer now is
/// out (for `/status` and `dns-sidecar status`), given what it answers.
pub(crate) fn excluded(state: &State, config: &Config, i: AliasId, answered: &[ServerId]) -> Vec<(ServerId, String)> {
    let alias = &config.aliases[i];
    let a = &state.aliases[i];
    let id = |s: ServerId| config.servers[s].id.as_str();
    let best = answered.iter().filter_map(|&s| state.servers[s].rtt.median()).min();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let why = |s: ServerId| -> String {
        let h = &state.servers[s];
        if let Some(p) = state.pins[i] {
            return format!("the alias is pinned to {} by an operator", id(p));
        }
        if state.drained[s] {
            return "drained by an operator".into();
        }
        if !h.up {
            let err = h.last_error.as_deref().unwrap_or("no probe result yet");
            return match (h.consecutive_ok, h.last_state.is_some()) {
                (n, true) if n > 0 => format!("damped: rising ({n}/{} good probes)", config.probe.rise),
                _ => format!("down ({err})"),
            };
        }
        if let Some(d) = truth::diverged(state, config, s) {
            return format!("diverged: {d}");
        }
        if let Some(l) = a.lagging.iter().find(|l| l.server == s) {
            return format!(
                "lagging: {} (within the limit for {}/{} probes)",
                l.reason, l.good, config.probe.rise
            );
        }
        let desc = h.last_state.as_ref().map_or_else(String::new, |x| x.describe());
        if !matches(h, alias.role) {
            return format!("not {} ({desc})", alias.role.as_str());
        }
        let standby = |x: ServerId| state.servers[x].last_state.as_ref().is_some_and(|st| st.in_recovery);
        if alias.role == Role::PreferStandby && !standby(s) && answered.iter().any(|&x| standby(x)) {
            return format!("a standby is preferred ({desc})");
        }
        if alias.prefer == Prefer::Nearest {
            match (h.rtt.median(), best) {
                (None, _) => return "round trip not measured yet (prefer = \"nearest\")".into(),
                (Some(m), Some(b)) if !ENTER.admits(b, m) => {
                    return format!(
                        "farther: median round trip {:.2} ms, nearest {:.2} ms (prefer = \"nearest\")",
                        ms(m),
                        ms(b)
                    )
                }
                _ => {}
            }
        }
        if alias.spread == Spread::First {
            let lead = answered.first().map_or("-", |&x| id(x));
            return format!("matches, but spread = \"first\" answers one server ({lead})");
        }
        // Matches, yet not in the set: it joins at the next decision.
        "matches; joins the set at the next decision".into()
    };
    (alias.servers.iter().copied())
        .filter(|s| !answered.contains(s))
        .map(|s| (s, why(s)))
        .collect()
}
