//! Building the `/status` snapshot from the config, the state and the
//! published routes.

use std::time::Instant;

use super::Engine;
use crate::config::{AliasId, ServerId};
use crate::decision::{lag, Answer, AnswerKind, Bar};
use crate::observation::format_lsn;
use crate::routes::Routes;
use crate::status::{AliasStatus, FenceStatus, LagStatus, ServerStatus, Status};

impl Engine {
    /// The `/status` document: what each alias answers (exactly what the
    /// published `routes` answer), each server's last probe, the history.
    pub(super) fn status(&self, routes: &Routes) -> Status {
        let now = Instant::now();
        let c = &self.config;
        Status {
            ready: self.state.first_round_done,
            generated_at: self.unix(now),
            aliases: c
                .enumerate_aliases()
                .map(|(i, _)| self.alias_status(routes, i))
                .collect(),
            servers: c.enumerate_servers().map(|(i, _)| self.server_status(i, now)).collect(),
            history: self.history.iter().cloned().collect(),
        }
    }

    /// Alias `i`'s entry in `/status`.
    fn alias_status(&self, routes: &Routes, i: AliasId) -> AliasStatus {
        let (c, st) = (&self.config, &self.state);
        let (a, s) = (&c.aliases[i], &st.aliases[i]);
        // Exactly what the published routes answer.
        let kind = (routes.get(a.name.as_str())).map_or(AnswerKind::Pending, |r| r.answer.kind());
        let servfail = kind == AnswerKind::Servfail;
        let served = match (kind, st.answer(c, i)) {
            (AnswerKind::Cname, Answer::Target(t)) => Some(t),
            _ => None,
        };
        AliasStatus {
            name: a.name.to_string(),
            role: a.role.as_str().into(),
            ttl: a.ttl,
            answer: kind.label().into(),
            server: served.map(|t| c.servers[t].id.clone()),
            target: served.map(|t| c.servers[t].target.to_string()),
            last_server: s.target.filter(|_| servfail).map(|t| c.servers[t].id.clone()),
            since: s.since.map(|t| self.unix(t)),
            reason: s.reason.clone(),
            pinned: st.pins[i].map(|p| c.servers[p].id.clone()),
            candidates: a.servers.iter().map(|&x| c.servers[x].id.clone()).collect(),
            timeline_floor: s.timeline_floor,
            fences: self.fence_status(i),
            max_lag_bytes: a.max_lag.bytes,
            max_lag_seconds: a.max_lag.time.map(|t| t.as_secs_f64()),
            lagging: s
                .lagging
                .iter()
                .map(|l| LagStatus {
                    server: c.servers[l.server].id.clone(),
                    reason: l.reason.clone(),
                    since: Some(self.unix(l.since)),
                    good_probes: l.good,
                })
                .collect(),
            ..crate::status_reader::reader(c, st, i, &self.shared.metrics)
        }
    }

    /// Server `i`'s entry in `/status`.
    fn server_status(&self, i: ServerId, now: Instant) -> ServerStatus {
        let (c, st) = (&self.config, &self.state);
        let (s, h) = (&c.servers[i], &st.servers[i]);
        let ls = h.last_state.as_ref();
        let lag = lag::measure(st, c, i, now);
        ServerStatus {
            server: s.id.clone(),
            target: s.target.to_string(),
            host: s.conn.host.clone(),
            port: s.conn.port,
            up: h.up,
            drained: st.drained[i],
            writable: ls.map(|x| x.writable()),
            in_recovery: ls.map(|x| x.in_recovery),
            read_only: ls.map(|x| x.read_only),
            timeline: ls.and_then(|x| x.timeline),
            replay_lag_bytes: ls.and_then(|x| x.replay_lag_bytes),
            wal_lsn: ls.and_then(|x| x.wal_lsn).map(format_lsn),
            lag_primary: lag.as_ref().and_then(|l| l.primary).map(|p| c.servers[p].id.clone()),
            lag_bytes: lag.as_ref().and_then(|l| l.bytes),
            lag_seconds: lag
                .as_ref()
                .and_then(|l| l.time)
                .map(|t| t.unwrap_or_else(|more| more).as_secs_f64()),
            diverged: crate::decision::truth::diverged(st, c, i),
            last_error: h.last_error.clone(),
            last_success: h.last_success.map(|t| self.unix(t)),
            last_probe_ms: self.last_latency[i].map(|d| d.as_secs_f64() * 1000.0),
            consecutive_failures: h.consecutive_fail,
        }
    }

    /// Alias `i`'s fences and floor-barred servers, for `/status`.
    pub(super) fn fence_status(&self, i: AliasId) -> Vec<FenceStatus> {
        let (c, st) = (&self.config, &self.state);
        let a = &st.aliases[i];
        c.aliases[i]
            .servers
            .iter()
            .filter_map(|&s| {
                let bar = st.barred(c, i, s)?;
                let (kind, timeline, since) = match bar {
                    Bar::Fenced(f) => (f.reason.kind(), f.timeline, Some(self.unix(f.since))),
                    Bar::OlderTimeline { timeline, .. } => ("older-timeline", Some(timeline), None),
                };
                Some(FenceStatus {
                    server: c.servers[s].id.clone(),
                    kind: kind.into(),
                    reason: bar.describe(c),
                    timeline,
                    since,
                    holding: a.held.contains(&s),
                })
            })
            .collect()
    }
}
