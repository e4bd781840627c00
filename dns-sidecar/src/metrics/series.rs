//! The series whose labels the config determines: created at 0 from
//! start-up ([`Metrics::prepare`]) and removed when a reload drops their
//! server, alias or upstream ([`Metrics::forget`]).
//!
//! Prometheus's `increase()` needs a sample before the first event, or the
//! first split brain after a start would never raise an alert; and a gauge
//! nobody updates any more must not keep its last value.

use super::labels::{
    AliasLabel, AliasServer, ProbeResult, ResultLabel, ServerLabel, UpstreamAddr, UpstreamLabel, ADMIN_REFUSED_RESULTS,
    CONNECT_RESULTS, HOOK_RESULTS, PROBE_RESULTS, RELOAD_RESULTS, STATE_WRITE_RESULTS, UPSTREAM_ERROR_KINDS,
};
use super::Metrics;
use crate::config::Config;

impl Metrics {
    /// Creates, at 0, every series whose labels `config` determines, so that
    /// alerts see them before their first event. Idempotent (existing series
    /// keep their values); call at start and after each reload.
    pub(crate) fn prepare(&self, config: &Config) {
        let result = |r: &str| ResultLabel { result: r.into() };
        for r in RELOAD_RESULTS {
            let _ = self.reloads.get_or_create(&result(r));
        }
        for r in HOOK_RESULTS {
            let _ = self.hook_runs.get_or_create(&result(r));
        }
        for r in STATE_WRITE_RESULTS {
            let _ = self.state_writes.get_or_create(&result(r));
        }
        for s in &config.servers {
            let l = ServerLabel { server: s.id.clone() };
            for r in PROBE_RESULTS {
                let _ = self.probes.get_or_create(&ProbeResult {
                    server: s.id.clone(),
                    result: r.into(),
                });
            }
            for r in CONNECT_RESULTS {
                let _ = self.probe_connects.get_or_create(&ProbeResult {
                    server: s.id.clone(),
                    result: r.into(),
                });
            }
            let _ = self.probe_latency.get_or_create(&l);
            let _ = self.server_up.get_or_create(&l);
            let _ = self.server_writable.get_or_create(&l);
        }
        for a in &config.aliases {
            let l = AliasLabel {
                alias: a.name.to_string(),
            };
            for f in [
                &self.target_changes,
                &self.split_brain,
                &self.no_match,
                &self.fences,
                &self.fence_holds,
            ] {
                let _ = f.get_or_create(&l);
            }
            for &s in &a.servers {
                let l = AliasServer {
                    alias: a.name.to_string(),
                    server: config.servers[s].id.clone(),
                };
                let _ = self.alias_target.get_or_create(&l);
                let _ = self.fenced.get_or_create(&l);
                let _ = self.reader.answers.get_or_create(&l);
            }
            let _ = self.reader.set_size.get_or_create(&l);
        }
        for r in ADMIN_REFUSED_RESULTS {
            let _ = self.admin_refused.get_or_create(&result(r));
        }
        for (zone, u) in config
            .upstreams()
            .flat_map(|(z, u)| u.servers.iter().map(move |s| (z, s)))
        {
            // Upstreams start in use; the DNS side sets 0 when one is taken
            // out. A reload keeps what an existing series says.
            let addr = UpstreamAddr {
                upstream: u.to_string(),
                zone: zone.to_string(),
            };
            if self.upstream_health.get(&addr).is_none() {
                self.upstream_health.get_or_create(&addr).set(1);
            }
            for k in UPSTREAM_ERROR_KINDS {
                // The label is the address as the DNS side writes it.
                let _ = self.upstream_errors.get_or_create(&UpstreamLabel {
                    upstream: u.to_string(),
                    zone: zone.to_string(),
                    kind: k.into(),
                });
            }
        }
    }

    /// Removes the series of servers, aliases and upstreams that `old` had
    /// and `new` does not (after a reload), so no alert fires on a name that
    /// is gone, and a gauge never keeps a value nobody updates.
    pub(crate) fn forget(&self, old: &Config, new: &Config) {
        for s in old.servers.iter().filter(|s| !new.servers.iter().any(|n| n.id == s.id)) {
            let l = ServerLabel { server: s.id.clone() };
            for r in PROBE_RESULTS {
                self.probes.remove(&ProbeResult {
                    server: s.id.clone(),
                    result: r.into(),
                });
            }
            for r in CONNECT_RESULTS {
                self.probe_connects.remove(&ProbeResult {
                    server: s.id.clone(),
                    result: r.into(),
                });
            }
            self.probe_latency.remove(&l);
            self.server_up.remove(&l);
            self.server_writable.remove(&l);
        }
        for a in &old.aliases {
            let kept = new.aliases.iter().find(|n| n.name == a.name);
            if kept.is_none() {
                let l = AliasLabel {
                    alias: a.name.to_string(),
                };
                for f in [
                    &self.target_changes,
                    &self.split_brain,
                    &self.no_match,
                    &self.fences,
                    &self.fence_holds,
                ] {
                    f.remove(&l);
                }
            }
            for &s in &a.servers {
                let id = &old.servers[s].id;
                let still = kept.is_some_and(|n| n.servers.iter().any(|&x| new.servers[x].id == *id));
                if !still {
                    let l = AliasServer {
                        alias: a.name.to_string(),
                        server: id.clone(),
                    };
                    self.alias_target.remove(&l);
                    self.fenced.remove(&l);
                }
            }
        }
        let upstreams = |c: &Config| {
            c.upstreams()
                .flat_map(|(z, u)| u.servers.iter().map(move |s| (z.to_string(), s.to_string())))
                .collect::<Vec<_>>()
        };
        let keep = upstreams(new);
        for (zone, u) in upstreams(old).into_iter().filter(|u| !keep.contains(u)) {
            for k in UPSTREAM_ERROR_KINDS {
                self.upstream_errors.remove(&UpstreamLabel {
                    upstream: u.clone(),
                    zone: zone.clone(),
                    kind: k.into(),
                });
            }
            self.upstream_health.remove(&UpstreamAddr { upstream: u, zone });
        }
    }
}
