//! Publishing a decision: the routes snapshot (when changed), the status
//! snapshot, the gauges and the incident probe set.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::Engine;
use crate::decision::{fence, Answer};
use crate::metrics::{AliasServer, ServerLabel};
use crate::routes::Routes;

impl Engine {
    /// Publishes routes (when changed), status and gauges.
    pub(super) fn publish(&mut self) {
        let routes = Routes::from_state(&self.config, &self.state);
        let status = self.status(&routes);
        if **self.shared.routes.load() != routes {
            self.shared.routes.store(Arc::new(routes));
        }
        let m = &self.shared.metrics;
        for (i, s) in self.config.enumerate_servers() {
            let h = &self.state.servers[i];
            let l = ServerLabel { server: s.id.clone() };
            m.server_up.get_or_create(&l).set(h.up as i64);
            m.server_writable
                .get_or_create(&l)
                .set(h.last_state.as_ref().is_some_and(|st| st.writable()) as i64);
        }
        for (i, a) in self.config.enumerate_aliases() {
            // What DNS answers: an alias answering SERVFAIL (drained or
            // fenced target, `servfail` policy, before the first round) has
            // no target, so `sum by (alias) (dns_sidecar_alias_target) == 0`.
            let answered = match self.state.answer(&self.config, i) {
                Answer::Target(s) => Some(s),
                Answer::Pending | Answer::NoTarget => None,
            };
            for &s in &a.servers {
                m.alias_target
                    .get_or_create(&AliasServer {
                        alias: a.name.to_string(),
                        server: self.config.servers[s].id.clone(),
                    })
                    .set((answered == Some(s)) as i64);
            }
        }
        crate::status_reader::set_sizes(&self.config, &self.state, m);
        for (i, a) in self.config.enumerate_aliases() {
            for &s in &a.servers {
                let fenced = self.state.barred(&self.config, i, s).is_some();
                m.fenced
                    .get_or_create(&AliasServer {
                        alias: a.name.to_string(),
                        server: self.config.servers[s].id.clone(),
                    })
                    .set(fenced as i64);
            }
        }
        let incident = self.incident_servers();
        self.shared.incident.send_if_modified(|cur| {
            let differs = **cur != incident;
            if differs {
                *cur = Arc::new(incident);
            }
            differs
        });
        let overrides =
            self.state.pins.iter().filter(|p| p.is_some()).count() + self.state.drained.iter().filter(|d| **d).count();
        m.overrides.set(overrides as i64);
        m.ready.set(self.state.first_round_done as i64);
        self.shared.status.store(Arc::new(status));
    }

    /// The servers to probe at the incident interval: every candidate of a
    /// writer alias that has no matching candidate, or whose target's last
    /// probe failed.
    pub(super) fn incident_servers(&self) -> BTreeSet<String> {
        let st = &self.state;
        let mut set = BTreeSet::new();
        if !st.first_round_done {
            return set;
        }
        for (i, a) in self.config.enumerate_aliases() {
            let s = &st.aliases[i];
            let target_failing = s
                .target
                .is_some_and(|t| !st.servers[t].up || st.servers[t].consecutive_fail > 0);
            // Writer aliases only: the cadence exists to follow a promote. A
            // reader alias without a standby (replay paused for hours, the
            // replica down for maintenance) must not keep its servers at
            // 100 probes per second.
            if fence::is_writer(a.role) && st.pins[i].is_none() && (!s.matched || target_failing) {
                set.extend(a.servers.iter().map(|&x| self.config.servers[x].id.clone()));
            }
        }
        set
    }
}
