//! What fault sequences do to a [`Cluster`] beyond crash, freeze and
//! promote: bring a killed old primary back as a writable server (on its old
//! timeline), rebuild a server as a standby of another (`pg_rewind` or a
//! fresh `pg_basebackup`), pause and resume WAL replay, end the probe's
//! sessions from the server side, and read the timeline for assertions.
//!
//! Like the rest of the testbed these block and are bounded in time.

use std::fs;
use std::time::Duration;

use crate::error::{Result, TestbedError};
use crate::pair::write_file;
use crate::postgres::{sql_literal, Cluster, PG_HINT};
use crate::process::{self, run};

/// How [`Cluster::rebuild_as_standby_of`] makes a server's data a copy of
/// its new primary's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebuild {
    /// `pg_rewind`: copy back only what changed since the timelines forked,
    /// as an operator does with an old primary after a failover. A server
    /// that was crashed rather than shut down is crash-recovered by
    /// `pg_rewind` itself first. A server that did not diverge needs no
    /// rewind and is only pointed at the new primary.
    Rewind,
    /// Empty the data directory and take a fresh `pg_basebackup`: what is
    /// left when a rewind is impossible.
    BaseBackup,
}

/// Upper bound for `pg_rewind` / `pg_basebackup` (they take well under a
/// second on `/dev/shm`).
const COPY_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a (re)started standby to stream from its primary.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

impl Cluster {
    /// Start a **stopped** server as a primary: remove `standby.signal` /
    /// `recovery.signal` if present, start it and wait until it accepts
    /// writes. An old primary killed with [`Cluster::stop_immediate`] has no
    /// such file: it crash-recovers and comes back writable **on its old
    /// timeline** (what a rebooted VM does), which is the diverged server a
    /// failover tool must not route writes to. A replica started this way
    /// becomes a second writable server on the timeline it had.
    pub fn start_writable(&self) -> Result<()> {
        if self.is_running() {
            return Err(TestbedError::InvalidOptions(format!(
                "{} is running; stop it (stop_immediate) before start_writable",
                self.name
            )));
        }
        for f in ["standby.signal", "recovery.signal"] {
            let p = self.data_dir.join(f);
            if p.exists() {
                fs::remove_file(&p).map_err(|e| TestbedError::io(format!("removing {}", p.display()), e))?;
            }
        }
        self.start()?;
        process::poll(
            &format!("{} to accept writes", self.name),
            Duration::from_secs(10),
            Duration::from_millis(5),
            || Ok((!self.is_in_recovery()?).then_some(())),
        )
        .map_err(|e| e.with_log(format!("starting {} as a primary", self.name), &self.log_file))
    }

    /// Make this server a streaming standby of `primary` (which must be
    /// running and writable): crash-stop it if it runs, bring its data in
    /// line with `primary` (`how`), write `standby.signal` and a
    /// `primary_conninfo` pointing at `primary`'s unix socket, restore its own
    /// address and certificate settings, start it and wait until it streams.
    /// Its timeline becomes `primary`'s.
    pub fn rebuild_as_standby_of(&self, primary: &Cluster, how: Rebuild) -> Result<()> {
        let what = format!("rebuilding {} as a standby of {} ({how:?})", self.name, primary.name);
        self.stop_immediate()?;
        match how {
            Rebuild::Rewind => self.rewind_from(primary),
            Rebuild::BaseBackup => {
                fs::remove_dir_all(&self.data_dir)
                    .map_err(|e| TestbedError::io(format!("removing {}", self.data_dir.display()), e))?;
                self.basebackup_from(primary)
            }
        }
        .map_err(|e| e.with_log(what.clone(), &self.log_file))?;
        // Both tools copy the source's configuration files, including its
        // listen address and certificate: put this server's back.
        self.write_cluster_conf()?;
        self.start()?;
        self.wait_streaming(STREAM_TIMEOUT)
    }

    /// Wait until this standby's WAL receiver is streaming.
    pub fn wait_streaming(&self, within: Duration) -> Result<()> {
        process::poll(
            &format!("{} to stream WAL", self.name),
            within,
            Duration::from_millis(5),
            || Ok((self.sql("SELECT status FROM pg_stat_wal_receiver")? == "streaming").then_some(())),
        )
        .map_err(|e| e.with_log(format!("waiting for {} to stream", self.name), &self.log_file))
    }

    /// End every session whose `application_name` is `application_name`
    /// (the sidecar's probe connections: `dns-sidecar` unless configured
    /// otherwise) with `pg_terminate_backend`, as an operator or an idle
    /// timeout would, and wait until they are gone. Returns how many were
    /// ended (0 if there were none).
    pub fn terminate_backends(&self, application_name: &str) -> Result<u32> {
        self.terminate_where(application_name, "")
    }

    /// [`Self::terminate_backends`], limited to sessions that have run a
    /// query and sit idle between queries: a client's established, kept
    /// connection. A brand-new session (still authenticating, or before or
    /// during its first query) is spared, so a test of "one killed session is
    /// not a failure" never also ends the replacement connection a probe is
    /// setting up (two faults in one probe), however slowly a loaded machine
    /// sets it up.
    pub fn terminate_idle_backends(&self, application_name: &str) -> Result<u32> {
        self.terminate_where(application_name, "AND state = 'idle' AND query_start IS NOT NULL")
    }

    fn terminate_where(&self, application_name: &str, filter: &str) -> Result<u32> {
        let out = self.sql(&format!(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
             WHERE application_name = {} AND pid <> pg_backend_pid() {filter}",
            sql_literal(application_name)
        ))?;
        out.parse()
            .map_err(|_| TestbedError::InvalidOptions(format!("unexpected count {out:?}")))
    }

    /// `pg_wal_replay_pause()`: this standby keeps receiving WAL but applies
    /// none after the record in progress, so its replay lag grows on demand.
    /// Fails on a server that is not in recovery.
    pub fn pause_replay(&self) -> Result<()> {
        self.sql("SELECT pg_wal_replay_pause()").map(drop)
    }

    /// `pg_wal_replay_resume()`: undo [`Cluster::pause_replay`].
    pub fn resume_replay(&self) -> Result<()> {
        self.sql("SELECT pg_wal_replay_resume()").map(drop)
    }

    /// The timeline this server writes WAL on (a primary: the first 8 hex
    /// digits of the current WAL file name, as the sidecar's probe reads it;
    /// it changes the moment a promote ends) or replays (a standby: the
    /// timeline its WAL receiver streams, else that of its last restartpoint).
    pub fn timeline(&self) -> Result<u32> {
        let out = self.sql(
            "SELECT CASE WHEN pg_is_in_recovery() \
               THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming'), \
                             (SELECT timeline_id FROM pg_control_checkpoint())) \
               ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
        )?;
        out.parse()
            .map_err(|_| TestbedError::InvalidOptions(format!("unexpected timeline {out:?} from {}", self.name)))
    }

    /// `pg_basebackup -R` of `primary` into this server's (absent or empty)
    /// data directory, over `primary`'s unix socket.
    pub(crate) fn basebackup_from(&self, primary: &Cluster) -> Result<()> {
        let mut cmd = self.pg_command("pg_basebackup");
        cmd.arg("-D")
            .arg(&self.data_dir)
            // -R: write standby.signal + primary_conninfo (via the primary's
            // unix socket); -c fast: do not wait for a spread checkpoint.
            .args(["-R", "-X", "stream", "-c", "fast", "-N", "-w", "-U", "postgres"])
            .arg("-h")
            .arg(&primary.socket_dir)
            .arg("-p")
            .arg(primary.port.to_string());
        let what = format!("pg_basebackup of {} into {}", primary.name, self.name);
        run(&mut cmd, &what, COPY_TIMEOUT, PG_HINT).map_err(|e| e.with_log(what, &primary.log_file))?;
        Ok(())
    }

    /// `pg_rewind -R` of this (stopped) server's data directory from the
    /// running `primary`.
    fn rewind_from(&self, primary: &Cluster) -> Result<()> {
        // pg_rewind reads the source's timeline from its control file, which
        // a freshly promoted server only updates at its next checkpoint;
        // without one it sees "the same timeline" and rewinds nothing.
        primary.sql("CHECKPOINT")?;
        let source = format!(
            "host={} port={} user=postgres dbname=postgres",
            crate::postgres::conn_quote(&primary.socket_dir.to_string_lossy()),
            primary.port
        );
        let mut cmd = self.pg_command("pg_rewind");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("--source-server")
            .arg(&source)
            // -R: standby.signal + primary_conninfo from the source string;
            // -N: no fsync (tmpfs).
            .args(["-R", "-N"]);
        let what = format!("pg_rewind of {} from {}", self.name, primary.name);
        let out = run(&mut cmd, &what, COPY_TIMEOUT, PG_HINT)?;
        // What it did (or that no rewind was needed), for whoever reads the
        // kept directory of a failed test.
        let log = self.log_file.with_file_name("pg_rewind.log");
        fs::write(&log, format!("{}{}", out.stderr, out.stdout))
            .map_err(|e| TestbedError::io(format!("writing {}", log.display()), e))?;
        Ok(())
    }

    /// Per-server settings (`testbed-cluster.conf`, included by the shared
    /// `postgresql.conf`): its own address, socket directory and certificate.
    pub(crate) fn write_cluster_conf(&self) -> Result<()> {
        let q = |p: &std::path::Path| sql_literal(&p.to_string_lossy());
        let text = format!(
            "cluster_name = {}\nlisten_addresses = '{}'\nunix_socket_directories = {}\nssl_cert_file = \
                {}\nssl_key_file = {}\n",
            sql_literal(&self.name),
            self.ip,
            q(&self.socket_dir),
            q(&self.cert_file),
            q(&self.key_file),
        );
        let path = self.data_dir.join("testbed-cluster.conf");
        write_file(&path, &text, 0o600)?;
        self.run_as.chown(&path)
    }
}
