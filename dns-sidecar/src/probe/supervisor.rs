//! Keeps exactly one prober task per configured server, across reloads: a
//! server whose settings did not change keeps its task (and so its open
//! connection and its place in the decision), a changed one is restarted, a
//! removed one is stopped.
//!
//! Each task is supervised ([`crate::supervise`]): a prober that ends or
//! panics without having been stopped here (or by the process's stop) is a
//! death of the process; one stopped by a reload is not.

use std::collections::HashMap;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{IncidentSet, Prober, TlsSetupError};
use crate::config::{Config, ProbeTiming, Server};
use crate::observation::ProbeReport;
use crate::supervise::Supervisor;

struct Running {
    server: Server,
    timing: ProbeTiming,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A prober could not be built (its TLS settings are unusable).
#[derive(Debug, thiserror::Error)]
#[error("server `{server}`: {source}")]
pub struct SetupError {
    pub server: String,
    #[source]
    pub source: TlsSetupError,
}

pub struct Probers {
    running: HashMap<String, Running>,
    /// Handed (cloned) to every prober; see [`crate::shared::Shared::incident`].
    incident: IncidentSet,
    supervisor: Supervisor,
}

impl Probers {
    /// No probers yet; each one started later follows `incident` and is
    /// watched by `supervisor`.
    pub fn new(incident: IncidentSet, supervisor: Supervisor) -> Probers {
        Probers {
            running: HashMap::new(),
            incident,
            supervisor,
        }
    }

    /// Builds probers for every server in `config` that lacks an identical
    /// running one. Fails without changing anything if one cannot be built.
    pub fn sync(&mut self, config: &Config, tx: &mpsc::Sender<ProbeReport>) -> Result<SyncReport, SetupError> {
        let mut fresh = Vec::new();
        for s in &config.servers {
            let same = self
                .running
                .get(&s.id)
                .is_some_and(|r| r.server == *s && r.timing == config.probe);
            if !same {
                let p = Prober::new(s, config.probe).map_err(|source| SetupError {
                    server: s.id.clone(),
                    source,
                })?;
                fresh.push((s.clone(), p));
            }
        }
        let mut report = SyncReport::default();
        let keep: Vec<&str> = config.servers.iter().map(|s| s.id.as_str()).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|id| !keep.contains(&id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(r) = self.running.remove(&id) {
                let _ = r.stop.send(true);
                report.stopped.push(id);
            }
        }
        for (server, p) in fresh {
            let (stop, stop_rx) = watch::channel(false);
            let id = server.id.clone();
            let task = tokio::spawn(self.supervisor.watch_stoppable(
                format!("prober {id}"),
                Some(stop_rx.clone()),
                p.run(tx.clone(), stop_rx, self.incident.clone()),
            ));
            if let Some(old) = self.running.insert(
                id.clone(),
                Running {
                    server,
                    timing: config.probe,
                    stop,
                    task,
                },
            ) {
                let _ = old.stop.send(true);
                report.restarted.push(id);
            } else {
                report.started.push(id);
            }
        }
        Ok(report)
    }

    /// Stops every prober and waits for them to close their connections.
    pub async fn stop_all(&mut self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        for (_, r) in self.running.drain() {
            let _ = r.task.await;
        }
    }
}

/// What [`Probers::sync`] did, by server id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
}
