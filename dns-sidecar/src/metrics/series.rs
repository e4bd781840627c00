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
use prometheus_client::metrics::family::{Family, MetricConstructor};

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
            self.server_series(&s.id, Op::Create);
        }
        for a in &config.aliases {
            self.alias_series(&a.name.to_string(), Op::Create);
            for &s in &a.servers {
                self.alias_server_series(&a.name.to_string(), &config.servers[s].id, Op::Create);
            }
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
            self.server_series(&s.id, Op::Remove);
        }
        for a in &old.aliases {
            let kept = new.aliases.iter().find(|n| n.name == a.name);
            if kept.is_none() {
                self.alias_series(&a.name.to_string(), Op::Remove);
            }
            for &s in &a.servers {
                let id = &old.servers[s].id;
                let still = kept.is_some_and(|n| n.servers.iter().any(|&x| new.servers[x].id == *id));
                if !still {
                    self.alias_server_series(&a.name.to_string(), id, Op::Remove);
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

/// What [`Metrics::prepare`] and [`Metrics::forget`] do to a series.
#[derive(Clone, Copy)]
enum Op {
    Create,
    Remove,
}

impl Op {
    fn apply<L, M, C>(self, family: &Family<L, M, C>, label: &L)
    where
        L: Clone + std::hash::Hash + Eq,
        C: MetricConstructor<M>,
    {
        match self {
            Op::Create => {
                let _ = family.get_or_create(label);
            }
            Op::Remove => {
                family.remove(label);
            }
        }
    }
}

/// The series of one server, one alias, and one server of an alias: listed
/// once, so that [`Metrics::prepare`] creates and [`Metrics::forget`]
/// removes the same ones (a series created but never removed would keep its
/// last value after its alias or server is gone).
impl Metrics {
    fn server_series(&self, server: &str, op: Op) {
        for r in PROBE_RESULTS {
            let l = ProbeResult {
                server: server.into(),
                result: r.into(),
            };
            op.apply(&self.probes, &l);
        }
        for r in CONNECT_RESULTS {
            let l = ProbeResult {
                server: server.into(),
                result: r.into(),
            };
            op.apply(&self.probe_connects, &l);
        }
        let l = ServerLabel { server: server.into() };
        op.apply(&self.probe_latency, &l);
        op.apply(&self.server_up, &l);
        op.apply(&self.server_writable, &l);
    }

    fn alias_series(&self, alias: &str, op: Op) {
        let l = AliasLabel { alias: alias.into() };
        for f in [
            &self.target_changes,
            &self.split_brain,
            &self.no_match,
            &self.fences,
            &self.fence_holds,
        ] {
            op.apply(f, &l);
        }
        op.apply(&self.reader.set_size, &l);
    }

    fn alias_server_series(&self, alias: &str, server: &str, op: Op) {
        let l = AliasServer {
            alias: alias.into(),
            server: server.into(),
        };
        op.apply(&self.alias_target, &l);
        op.apply(&self.fenced, &l);
        op.apply(&self.reader.answers, &l);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Servers `servers` (target `pg-<id>.test`) and `aliases`.
    fn config(servers: &[&str], aliases: &str) -> Config {
        let mut text = String::from("[dns]\nlisten = [\"127.0.0.1:5353\"]\n[[zones]]\nname = \"db.internal\"\n[probe]\nuser = \"probe\"\nsslmode = \"require\"\n");
        for s in servers {
            text.push_str(&format!("[servers.{s}]\ntarget = \"pg-{s}.test\"\n"));
        }
        text.push_str(aliases);
        Config::from_toml(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    const PROD: &str = "[[aliases]]\nname = \"prod.db.internal\"\nservers = [\"a\", \"b\"]\n";
    const READERS: &str =
        "[[aliases]]\nname = \"ro.db.internal\"\nrole = \"standby\"\nservers = [\"b\", \"c\"]\nspread = \"rotate\"\n";

    /// The sample lines of the exposition that name `needle`.
    fn naming(m: &Metrics, needle: &str) -> Vec<String> {
        m.encode()
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_reload_removes_every_series_prepare_made_for_what_it_dropped() {
        let old = config(&["a", "b", "c"], &format!("{PROD}{READERS}"));
        let m = Metrics::new();
        m.prepare(&old);
        let before = naming(&m, "ro.db.internal");
        for metric in [
            "reader_set_size",
            "reader_answers_total",
            "alias_target",
            "fenced",
            "no_match_total",
        ] {
            assert!(
                before.iter().any(|l| l.starts_with(&format!("dns_sidecar_{metric}{{"))),
                "{metric} not prepared: {before:?}"
            );
        }
        assert!(!naming(&m, "server=\"c\"").is_empty());

        // The reader alias and server c go; prod and its servers stay.
        let new = config(&["a", "b"], PROD);
        m.forget(&old, &new);
        m.prepare(&new);
        assert_eq!(naming(&m, "ro.db.internal"), Vec::<String>::new());
        assert_eq!(naming(&m, "server=\"c\""), Vec::<String>::new());
        assert!(!naming(&m, "prod.db.internal").is_empty());
        assert!(!naming(&m, "server=\"b\"").is_empty());
    }
}
