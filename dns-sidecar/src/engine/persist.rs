//! The state file: restored before the first decision, written (in decision
//! order, with a deadline) whenever what must survive a restart changes.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::Engine;
use crate::decision::snapshot::{capture, restore};
use crate::hook::reconcile::{Confirmed, Record, ToHooks};
use crate::metrics::ResultLabel;
use crate::statefile;
use crate::status::HistoryKind;

/// How long a decision waits for its state-file write before publishing
/// anyway (a hung disk must not stop the alias from following a failover).
const STATE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

impl Engine {
    /// Restores the state file's content, if there is one, before anything
    /// is decided.
    pub(super) fn restore(&mut self, now: Instant) {
        let Some(path) = self.state_file.clone() else {
            warn!(
                "no [state] path configured: fences and timelines seen are kept in memory only and forgotten at a restart (see docs/design.md: The state file)"
            );
            return;
        };
        match statefile::load(&path) {
            Ok(None) => info!(path = %path.display(), "no state file yet; starting fresh"),
            Ok(Some(remembered)) => {
                let (state, notes) = restore(&self.config, &remembered, now, |u| self.instant(u));
                for note in &notes {
                    warn!(path = %path.display(), "state file: {note}");
                }
                self.hooked = remembered
                    .aliases
                    .iter()
                    .filter(|(name, _)| self.config.aliases.iter().any(|a| a.name.as_str() == name.as_str()))
                    .map(|(name, a)| {
                        let r = Record {
                            hooked: a.hooked.clone(),
                            unsure: a.hook_unsure.clone(),
                        };
                        (name.clone(), r)
                    })
                    .filter(|(_, r)| *r != Record::default())
                    .collect();
                let records = self.hooked.iter().map(|(a, t)| (a.clone(), t.clone())).collect();
                // The first message: the runner reads it before any answer.
                let _ = self.hooks.try_send(ToHooks::Restored(records));
                let fences: usize = state.aliases.iter().map(|a| a.fences.len()).sum();
                info!(path = %path.display(), fences, "state restored from the state file");
                self.record(
                    HistoryKind::StateFile,
                    None,
                    None,
                    format!("restored from {} ({fences} fences)", path.display()),
                );
                self.state = state;
            }
            Err(err) => {
                error!(error = %err, "state file ignored");
                self.record(HistoryKind::StateFile, None, None, err.to_string());
                if !err.may_overwrite() {
                    self.state_file = None;
                }
            }
        }
    }

    pub(super) async fn persist(&mut self) {
        let Some(path) = self.state_file.clone() else { return };
        let mut remembered = capture(&self.state, &self.config, |t| self.unix(t));
        for (name, a) in remembered.aliases.iter_mut() {
            let r = self.hooked.get(name).cloned().unwrap_or_default();
            (a.hooked, a.hook_unsure) = (r.hooked, r.unsure);
        }
        let at = self.unix(Instant::now());
        // Taken here, in decision order: a write given up on below may still
        // land later, but never over this one's successors.
        let (writer, generation) = (self.writer.clone(), self.writer.generation());
        let write = tokio::task::spawn_blocking(move || writer.store(&path, generation, &remembered, at).map(|_| ()));
        let result = match tokio::time::timeout(STATE_WRITE_TIMEOUT, write).await {
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
            Ok(Err(join)) => Err(format!("state file writer failed: {join}")),
            Err(_) => Err(format!(
                "state file write did not finish within {STATE_WRITE_TIMEOUT:?}; answering anyway"
            )),
        };
        let label = if result.is_ok() { "ok" } else { "error" };
        self.shared
            .metrics
            .state_writes
            .get_or_create(&ResultLabel { result: label.into() })
            .inc();
        match result {
            Ok(()) if self.state_file_failing => {
                self.state_file_failing = false;
                info!("state file written again");
            }
            Ok(()) => {}
            Err(msg) if !self.state_file_failing => {
                self.state_file_failing = true;
                error!(error = %msg, "cannot persist the decision state; a restart would forget fences and timelines");
                self.record(HistoryKind::StateFile, None, None, msg);
            }
            Err(_) => {}
        }
    }

    /// The hook runner's knowledge of an external record changed (a run
    /// starts, or succeeded): it goes to the state file.
    pub(super) async fn hook_confirmed(&mut self, c: Confirmed) {
        if !self.config.aliases.iter().any(|a| a.name.as_str() == c.alias) {
            return;
        }
        if self.hooked.insert(c.alias, c.record.clone()).as_ref() != Some(&c.record) {
            self.persist().await;
        }
    }
}
