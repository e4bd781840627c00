//! A fork made the way an operator makes one by mistake: an old primary
//! restored from its own data directory instead of being rebuilt from the new
//! primary (issue 15, item 6).
//!
//! Like the rest of the testbed this blocks and is bounded in time.

use std::fs;
use std::time::Duration;

use crate::error::{Result, TestbedError};
use crate::postgres::Cluster;
use crate::process;

impl Cluster {
    /// Start a **stopped** server in archive recovery from its own data
    /// directory only: `recovery.signal` (no `standby.signal`), no
    /// `primary_conninfo`, and a `restore_command` that finds nothing (an
    /// empty archive; PostgreSQL requires one outside standby mode). It
    /// replays the WAL in its own `pg_wal`, ends recovery there and promotes
    /// itself onto **its own timeline + 1**, the timeline number its promoted
    /// replica already took with a different history. Waits until it accepts
    /// writes (promoting it if its recovery has not ended by itself within a
    /// few seconds) and returns its timeline.
    pub fn start_restored_from_own_wal(&self) -> Result<u32> {
        self.ensure_stopped("start_restored_from_own_wal")?;
        let standby = self.data_dir.join("standby.signal");
        if standby.exists() {
            fs::remove_file(&standby).map_err(|e| TestbedError::io(format!("removing {}", standby.display()), e))?;
        }
        self.restart_in_recovery(
            "start_restored_from_own_wal",
            "recovery.signal",
            "# restored from its own WAL (testbed fork)\nrestore_command = 'exit 1'\nprimary_conninfo = ''\n",
        )?;
        let what = format!("{} restored from its own WAL", self.name);
        self.start()?;
        let ended = process::poll(&what, Duration::from_secs(5), Duration::from_millis(5), || {
            Ok((!self.is_in_recovery()?).then_some(()))
        });
        if ended.is_err() {
            self.promote(true)?;
        }
        if self.data_dir.join("recovery.signal").exists() {
            return Err(TestbedError::InvalidOptions(format!(
                "{what}: recovery.signal is still there after the promote"
            )));
        }
        self.timeline().map_err(|e| e.with_log(what, &self.log_file))
    }
}
