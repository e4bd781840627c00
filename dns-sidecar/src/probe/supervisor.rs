//! Keeps exactly one prober task per configured server, across reloads: a
//! server whose connection settings, probe timing and trust anchors (the
//! *contents* of its `sslrootcert` file, re-read at every reload) did not
//! change keeps its task (and so its open connection and its place in the
//! decision), even when it was renamed ([`crate::config::match_servers`]);
//! a changed one is restarted, a removed one is stopped.
//!
//! Each task is supervised ([`crate::supervise`]): a prober that ends or
//! panics without having been stopped here (or by the process's stop) is a
//! death of the process; one stopped by a reload is not.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{tls, IncidentSet, Prober, TlsSetupError};
use crate::config::{match_servers, Config, ProbeTiming, Server};
use crate::credential::Registry;
use crate::metrics::CredentialResult;
use crate::observation::ProbeReport;
use crate::supervise::Supervisor;

struct Running {
    server: Server,
    timing: ProbeTiming,
    /// The `sslrootcert` contents its TLS connector was built with.
    roots: Option<String>,
    /// Tells the prober its new id when the server is renamed.
    name: watch::Sender<Arc<str>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A prober could not be built (its TLS settings are unusable).
#[derive(Debug, thiserror::Error)]
#[error("server `{server}`: {source}")]
pub struct SetupError {
    pub(crate) server: String,
    #[source]
    pub(crate) source: TlsSetupError,
}

pub(crate) struct Probers {
    running: HashMap<String, Running>,
    /// Handed (cloned) to every prober; see [`crate::shared::Shared::incident`].
    incident: IncidentSet,
    supervisor: Supervisor,
    /// The password sources' refreshers, shared by the probers.
    credentials: Registry,
}

/// What [`Probers::sync`] does with one server of the new config.
enum Plan {
    /// Keep the running prober at this index of the old list (renamed when
    /// the ids differ).
    Keep(usize),
    /// Start a prober.
    Start(Start),
}

/// A prober to start, replacing the one at an index of the old list (for the
/// reason given), if any.
struct Start {
    prober: Box<Prober>,
    roots: Option<String>,
    replaces: Option<(usize, &'static str)>,
}

impl Probers {
    /// No probers yet; each one started later follows `incident` and is
    /// watched by `supervisor` (as are the password refreshers, which count
    /// their fetches in `credential_metrics`).
    pub(crate) fn new(
        incident: IncidentSet,
        supervisor: Supervisor,
        credential_metrics: Family<CredentialResult, Counter>,
    ) -> Probers {
        Probers {
            running: HashMap::new(),
            incident,
            credentials: Registry::new(supervisor.clone(), credential_metrics),
            supervisor,
        }
    }

    /// Builds probers for every server in `config` that lacks an identical
    /// running one: one of the same identity (same id or renamed), the same
    /// connection settings and timing, and a TLS connector built from the
    /// same `sslrootcert` contents (the file is read again here, so a CA
    /// replaced in place is picked up by a reload whose config text did not
    /// change). Fails without changing anything if one cannot be built.
    pub(crate) fn sync(&mut self, config: &Config, tx: &mpsc::Sender<ProbeReport>) -> Result<SyncReport, SetupError> {
        let mut ids: Vec<String> = self.running.keys().cloned().collect();
        ids.sort();
        let plans = self.plans(config, &ids)?;
        let mut report = SyncReport::default();
        let mut old_running: Vec<Option<Running>> = ids.iter().map(|id| self.running.remove(id)).collect();
        for (s, plan) in config.servers.iter().zip(plans) {
            let running = match plan {
                Plan::Keep(o) => {
                    let mut r = old_running[o].take().expect("each old prober is matched once");
                    if r.server.id != s.id {
                        let _ = r.name.send(Arc::from(s.id.as_str()));
                        report.renamed.push(format!("{} -> {}", r.server.id, s.id));
                    }
                    r.server = s.clone();
                    r
                }
                Plan::Start(start) => {
                    let replaced = start.replaces.and_then(|(o, why)| Some((old_running[o].take()?, why)));
                    self.start(s, config, tx, start, replaced, &mut report)
                }
            };
            self.running.insert(s.id.clone(), running);
        }
        for r in old_running.into_iter().flatten() {
            let _ = r.stop.send(true);
            report.stopped.push(r.server.id);
        }
        self.credentials
            .retain(config.servers.iter().filter_map(|s| s.conn.password.as_ref()));
        Ok(report)
    }

    /// What to do with each server of `config`, given the running probers
    /// `ids` (sorted); builds every prober to start first, so that one that
    /// cannot be built changes nothing.
    fn plans(&self, config: &Config, ids: &[String]) -> Result<Vec<Plan>, SetupError> {
        let old: Vec<Server> = ids.iter().map(|id| self.running[id].server.clone()).collect();
        let mut from: Vec<Option<usize>> = vec![None; config.servers.len()];
        for (o, m) in match_servers(&old, &config.servers).iter().enumerate() {
            if let Some(m) = m {
                from[m.new_index()] = Some(o);
            }
        }
        let mut plans = Vec::new();
        for (n, s) in config.servers.iter().enumerate() {
            let err = |source| SetupError {
                server: s.id.clone(),
                source,
            };
            let roots = tls::read_roots(&s.conn).map_err(err)?;
            let change = from[n].map(|o| {
                let r = &self.running[&ids[o]];
                let why = if r.server.conn != s.conn {
                    Some("connection settings changed")
                } else if r.timing != config.probe {
                    Some("probe timing changed")
                } else if r.roots != roots {
                    Some("sslrootcert contents changed")
                } else {
                    None
                };
                (o, why)
            });
            match change {
                Some((o, None)) => plans.push(Plan::Keep(o)),
                Some((o, Some(why))) => plans.push(Plan::Start(Start {
                    prober: Box::new(Prober::with_roots(s, config.probe, roots.as_deref()).map_err(err)?),
                    roots,
                    replaces: Some((o, why)),
                })),
                None => plans.push(Plan::Start(Start {
                    prober: Box::new(Prober::with_roots(s, config.probe, roots.as_deref()).map_err(err)?),
                    roots,
                    replaces: None,
                })),
            }
        }
        Ok(plans)
    }

    /// Starts `start`'s prober for `s` under the supervisor, then stops the
    /// prober it replaces (`replaced`, taken from the old list), if any.
    fn start(
        &mut self,
        s: &Server,
        config: &Config,
        tx: &mpsc::Sender<ProbeReport>,
        start: Start,
        replaced: Option<(Running, &'static str)>,
        report: &mut SyncReport,
    ) -> Running {
        let Start { prober, roots, .. } = start;
        let (stop, stop_rx) = watch::channel(false);
        let (name, names) = watch::channel(Arc::from(s.id.as_str()));
        let mut prober = (*prober).follow_renames(names);
        if let Some(source) = &s.conn.password {
            prober = prober.with_credential(self.credentials.get(source));
        }
        let task = tokio::spawn(self.supervisor.watch_stoppable(
            format!("prober {}", s.id),
            Some(stop_rx.clone()),
            prober.run(tx.clone(), stop_rx, self.incident.clone()),
        ));
        match replaced {
            Some((old, why)) => {
                let _ = old.stop.send(true);
                let was = if old.server.id == s.id {
                    String::new()
                } else {
                    format!(", was {}", old.server.id)
                };
                report.restarted.push(format!("{} ({why}{was})", s.id));
            }
            None => report.started.push(s.id.clone()),
        }
        Running {
            server: s.clone(),
            timing: config.probe,
            roots,
            name,
            stop,
            task,
        }
    }

    /// Stops every prober and waits for them to close their connections.
    pub(crate) async fn stop_all(&mut self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        self.credentials.stop_all();
        for (_, r) in self.running.drain() {
            let _ = r.task.await;
        }
    }
}

/// What [`Probers::sync`] did, by server id.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SyncReport {
    pub(crate) started: Vec<String>,
    /// `id (reason)`: a new prober (and connection) for the same server.
    pub(crate) restarted: Vec<String>,
    /// `old -> new`: the same prober and connection under a new id.
    pub(crate) renamed: Vec<String>,
    pub(crate) stopped: Vec<String>,
}
