//! Events become log lines, metrics and `/status` history entries: one
//! function per decision event, each writing its line, its counter and its
//! history entry in one place (the on-change hooks follow what is answered,
//! not events: see [`Engine::tell_hooks`]).
//!
//! [`health`] reports the rate-limited server up/down lines, [`answers`] the
//! answer changes no event explains, [`reload`] what a reload did.

mod answers;
mod health;
mod reload;

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::{error, info, warn};

use super::Engine;
use crate::config::{AliasId, NoMatchPolicy, ServerId};
use crate::decision::{Answer, Event};
use crate::metrics::AliasLabel;
use crate::status::{HistoryEntry, HistoryKind, HISTORY_LEN};

/// Adds one to `alias`'s counter in `family`.
fn count(family: &Family<AliasLabel, Counter>, alias: &str) {
    family.get_or_create(&AliasLabel { alias: alias.into() }).inc();
}

impl Engine {
    /// Reports one decision event.
    pub(super) fn log_event(&mut self, e: &Event, now: Instant) {
        match e {
            Event::FirstRound { missing } => self.first_round(missing),
            Event::TargetChanged {
                alias,
                old,
                new,
                reason,
            } => self.target_changed(*alias, *old, *new, reason),
            Event::NoMatch { alias, policy, .. } => self.no_match(*alias, *policy),
            Event::SplitBrain {
                alias,
                writable,
                chosen,
                by_timeline,
            } => self.split_brain(*alias, writable, *chosen, *by_timeline),
            Event::ServerUp {
                server,
                state,
                down_for,
            } => {
                let c = self.config.clone();
                if let Some(line) = self.episodes.up(&c.servers[*server].id, state, *down_for) {
                    self.log_episode(line);
                }
            }
            Event::ServerDown { server, error, was_up } => {
                let c = self.config.clone();
                if let Some(line) = self.episodes.down(&c.servers[*server].id, error, *was_up, now) {
                    self.log_episode(line);
                }
            }
            Event::Fenced { alias, server, reason } => self.fenced(*alias, *server, reason),
            Event::FenceHeld { alias, server, reason } => self.fence_held(*alias, *server, reason),
            Event::Unfenced { alias, server, reason } => self.unfenced(*alias, *server, reason),
            Event::LagExceeded { alias, server, reason } => self.lag_exceeded(*alias, *server, reason),
            Event::LagRecovered { alias, server, reason } => self.lag_recovered(*alias, *server, reason),
            Event::SetChanged { alias, old, new } => self.set_changed(*alias, old, new),
            Event::Override { summary } => {
                warn!(summary = summary.as_str(), "manual override");
                self.record(HistoryKind::Override, None, None, summary.clone());
            }
        }
    }

    /// Adds an entry to the `/status` history (the oldest goes when full).
    pub(super) fn record(&mut self, kind: HistoryKind, alias: Option<String>, server: Option<String>, message: String) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        let at = self.unix(Instant::now());
        self.history.push_back(HistoryEntry {
            at,
            kind: kind.as_str().into(),
            alias,
            server,
            message,
        });
    }

    /// Records an event about one server of one alias, in the history.
    fn record_pair(&mut self, kind: HistoryKind, alias: AliasId, server: ServerId, message: String) {
        let c = &self.config;
        let (alias, server) = (c.aliases[alias].name.to_string(), c.servers[server].id.clone());
        self.record(kind, Some(alias), Some(server), message);
    }

    fn first_round(&mut self, missing: &[ServerId]) {
        if missing.is_empty() {
            info!("first probe round complete; answering aliases");
            self.record(HistoryKind::FirstRound, None, None, "first probe round complete".into());
            return;
        }
        let c = &self.config;
        let names: Vec<&str> = missing.iter().map(|&s| c.servers[s].id.as_str()).collect();
        warn!(
            servers = ?names,
            "first probe round closed at the probe deadline without these servers reporting; answering with what is known"
        );
        let message = format!("first round closed at the deadline; not reported: {}", names.join(", "));
        self.record(HistoryKind::FirstRound, None, None, message);
    }

    fn target_changed(&mut self, a: AliasId, old: Option<ServerId>, new: ServerId, reason: &str) {
        let c = self.config.clone();
        let server = |s: ServerId| c.servers[s].id.as_str();
        let target = c.servers[new].target.as_str();
        let old_target = old.map_or("-", |o| c.servers[o].target.as_str());
        warn!(
            alias = c.aliases[a].name.as_str(),
            server = server(new),
            target,
            old_server = old.map_or("-", server),
            old_target,
            reason,
            "alias target changed"
        );
        count(&self.shared.metrics.target_changes, c.aliases[a].name.as_str());
        let message = format!("{} -> {}: {reason}", old.map_or("-", server), server(new));
        self.record_pair(HistoryKind::TargetChanged, a, new, message);
    }

    fn no_match(&mut self, a: AliasId, policy: NoMatchPolicy) {
        let c = self.config.clone();
        // Says what DNS answers now, not what the policy would like.
        let served = self.state.answer(&c, a);
        let (answer, srv, target) = self.answer_fields(a);
        let reason = match served {
            Answer::NoTarget => self.state.servfail_reason(&c, a),
            _ => format!(
                "keep-last keeps {srv}; candidates: {}",
                self.state.candidates_summary(&c, a)
            ),
        };
        let role = c.aliases[a].role.as_str();
        error!(
            alias = c.aliases[a].name.as_str(),
            role,
            answer,
            server = srv.as_str(),
            target = target.as_str(),
            policy = policy.as_str(),
            reason = reason.as_str(),
            "no candidate server matches the alias's role"
        );
        count(&self.shared.metrics.no_match, c.aliases[a].name.as_str());
        let said = match served {
            Answer::NoTarget => "answering SERVFAIL".to_string(),
            _ => format!("answering {srv}"),
        };
        let server = matches!(served, Answer::Target(_)).then_some(srv);
        let message = format!("no candidate is {role}; {said}: {reason}");
        self.record(
            HistoryKind::NoMatch,
            Some(c.aliases[a].name.to_string()),
            server,
            message,
        );
    }

    fn split_brain(&mut self, a: AliasId, writable: &[ServerId], chosen: ServerId, by_timeline: bool) {
        let c = self.config.clone();
        let names: Vec<&str> = writable.iter().map(|&s| c.servers[s].id.as_str()).collect();
        let by = if by_timeline {
            "newest timeline"
        } else {
            "no timeline data: kept the current target"
        };
        let chosen_id = c.servers[chosen].id.as_str();
        error!(
            alias = c.aliases[a].name.as_str(),
            writable = ?names,
            chosen = chosen_id,
            by,
            "SPLIT BRAIN: more than one candidate is writable"
        );
        count(&self.shared.metrics.split_brain, c.aliases[a].name.as_str());
        let message = format!("writable: {}; chose {chosen_id} by {by}", names.join(", "));
        self.record_pair(HistoryKind::SplitBrain, a, chosen, message);
    }

    fn fenced(&mut self, a: AliasId, s: ServerId, reason: &str) {
        let c = &self.config;
        warn!(
            alias = c.aliases[a].name.as_str(),
            server = c.servers[s].id.as_str(),
            reason,
            "server fenced: the alias will not move to it"
        );
        count(&self.shared.metrics.fences, c.aliases[a].name.as_str());
        self.record_pair(HistoryKind::Fenced, a, s, reason.to_string());
    }

    fn fence_held(&mut self, a: AliasId, s: ServerId, reason: &str) {
        // `server` is the fenced one; `serving` what DNS answers instead.
        let (answer, serving, _) = self.answer_fields(a);
        let c = &self.config;
        error!(
            alias = c.aliases[a].name.as_str(),
            server = c.servers[s].id.as_str(),
            reason,
            answer,
            serving = serving.as_str(),
            "FENCED: the alias is kept off a server that matches its role, because it has diverged; run `dns-sidecar unfence` only once it was rebuilt or the cluster recreated"
        );
        count(&self.shared.metrics.fence_holds, c.aliases[a].name.as_str());
        self.record_pair(HistoryKind::FenceHeld, a, s, reason.to_string());
    }

    fn unfenced(&mut self, a: AliasId, s: ServerId, reason: &str) {
        let c = &self.config;
        info!(
            alias = c.aliases[a].name.as_str(),
            server = c.servers[s].id.as_str(),
            reason,
            "fence lifted"
        );
        self.record_pair(HistoryKind::Unfenced, a, s, reason.to_string());
    }

    fn lag_exceeded(&mut self, a: AliasId, s: ServerId, reason: &str) {
        let c = &self.config;
        warn!(
            alias = c.aliases[a].name.as_str(),
            server = c.servers[s].id.as_str(),
            lag = reason,
            "standby too far behind the primary: the alias will not choose it until it is within the limit for `rise` probes"
        );
        self.record_pair(HistoryKind::LagExceeded, a, s, reason.to_string());
    }

    fn lag_recovered(&mut self, a: AliasId, s: ServerId, reason: &str) {
        let c = &self.config;
        info!(
            alias = c.aliases[a].name.as_str(),
            server = c.servers[s].id.as_str(),
            lag = reason,
            "standby within the alias's lag limit again"
        );
        self.record_pair(HistoryKind::LagRecovered, a, s, reason.to_string());
    }

    fn set_changed(&mut self, a: AliasId, old: &[ServerId], new: &[ServerId]) {
        let c = &self.config;
        let ids = |v: &[ServerId]| {
            v.iter()
                .map(|&s| c.servers[s].id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (old, new) = (ids(old), ids(new));
        let alias = c.aliases[a].name.to_string();
        info!(
            alias = alias.as_str(),
            set = new.as_str(),
            old_set = old.as_str(),
            "reader set changed"
        );
        self.record(
            HistoryKind::SetChanged,
            Some(alias),
            None,
            format!("[{old}] -> [{new}]"),
        );
    }

    /// The `answer`, `server` and `target` of alias `i` for a log line.
    pub(super) fn answer_fields(&self, i: AliasId) -> (&'static str, String, String) {
        let answer = self.state.answer(&self.config, i);
        match answer {
            Answer::Target(s) => (
                answer.kind().label(),
                self.config.servers[s].id.clone(),
                self.config.servers[s].target.to_string(),
            ),
            Answer::NoTarget | Answer::Pending => (answer.kind().label(), "-".into(), "-".into()),
        }
    }
}
