//! An old primary pointed at the new primary *without* pg_rewind, as an
//! operator does by mistake (issue 16, item 2): `standby.signal` and a
//! `primary_conninfo`, nothing else. If its history forked before its own
//! position, PostgreSQL never streams ("new timeline N forked off current
//! database system timeline M before current recovery point"): it is in
//! recovery, replaying nothing more, and must not count as rebuilt.
//!
//! Like the rest of the testbed this blocks and is bounded in time.

use std::time::Duration;

use crate::error::Result;
use crate::postgres::Cluster;
use crate::process;

impl Cluster {
    /// Start a **stopped** server as a standby of `primary` without
    /// rewinding it: write `standby.signal` and a `primary_conninfo` to
    /// `primary`'s unix socket, start it and wait until it accepts
    /// connections in recovery (it does not wait for streaming, which a
    /// diverged server never reaches).
    pub fn start_as_standby_without_rewind(&self, primary: &Cluster) -> Result<()> {
        self.restart_in_recovery(
            "start_as_standby_without_rewind",
            "standby.signal",
            &format!(
                "# standby without pg_rewind (testbed diverged)\nprimary_conninfo = 'host={} port={} user=postgres \
                dbname=postgres'\n",
                primary.socket_dir.to_string_lossy(),
                primary.port
            ),
        )?;
        let what = format!(
            "{} started as a standby of {} without pg_rewind",
            self.name, primary.name
        );
        self.start()?;
        process::poll(&what, Duration::from_secs(10), Duration::from_millis(5), || {
            Ok(self.is_in_recovery()?.then_some(()))
        })
        .map_err(|e| e.with_log(what.clone(), &self.log_file))
    }
}
