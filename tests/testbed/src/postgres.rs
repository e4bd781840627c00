//! PostgreSQL binaries and one running cluster ([`Cluster`]): SQL over the
//! unix socket, promote, crash, freeze, read-only mode.
//!
//! All methods block (they run `psql` / `pg_ctl` with `std::process`) and
//! are bounded in time, so a wedged server makes a test fail with
//! [`TestbedError::Timeout`] instead of hanging CI.

use std::collections::BTreeSet;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Result, TestbedError};
use crate::pair::write_file;
use crate::process::{self, run, RunAs};

/// Install hint for the PostgreSQL server packages.
pub(crate) const PG_HINT: &str = "apt-get install -y postgresql-15";
/// How long a plain `sql()` may take before we give up.
const SQL_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a server to start (also passed to `pg_ctl -t`).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the PostgreSQL server binaries (`initdb`, `pg_ctl`, `pg_basebackup`,
/// `pg_rewind`, `postgres`, `psql`) live.
#[derive(Clone, Debug)]
pub struct PgBinaries {
    pub bindir: PathBuf,
}

impl PgBinaries {
    /// Find the binaries: `$PG_BINDIR` if set; else the highest-versioned
    /// `/usr/lib/postgresql/<major>/bin` (Debian keeps server binaries off
    /// `PATH`, and several majors may be installed); else the directory of
    /// `pg_ctl` on `PATH`. Fails with [`TestbedError::MissingBinary`] and an
    /// install hint if none has everything.
    pub fn locate() -> Result<Self> {
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            return Self::in_dir(dir);
        }
        let mut majors: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e = e.ok()?;
                let major = e.file_name().to_str()?.parse().ok()?;
                Some((major, e.path().join("bin")))
            })
            .filter(|(_, bin)| process::is_executable(&bin.join("pg_ctl")))
            .collect();
        majors.sort();
        if let Some((_, bin)) = majors.pop() {
            return Self::in_dir(bin);
        }
        match process::find_in_path("pg_ctl").and_then(|p| p.parent().map(Path::to_path_buf)) {
            Some(dir) => Self::in_dir(dir),
            None => Err(TestbedError::MissingBinary {
                name: "pg_ctl".into(),
                hint: PG_HINT.into(),
            }),
        }
    }

    /// Use the binaries in `dir`, checking that all needed programs exist.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let bins = PgBinaries { bindir: dir.into() };
        for name in ["initdb", "pg_ctl", "pg_basebackup", "pg_rewind", "postgres", "psql"] {
            let p = bins.path(name);
            if !process::is_executable(&p) {
                return Err(TestbedError::MissingBinary {
                    name: p.display().to_string(),
                    hint: PG_HINT.into(),
                });
            }
        }
        Ok(bins)
    }

    /// Full path of one program in [`PgBinaries::bindir`].
    pub fn path(&self, program: &str) -> PathBuf {
        self.bindir.join(program)
    }

    /// Run `sql` with `psql -XAtq` as a *client* (as the current OS user)
    /// against `conninfo` (e.g. from [`Cluster::conninfo`]), with
    /// `PGPASSWORD=password`. Returns trimmed stdout. Killed after `timeout`.
    /// This is how tests check what a TCP/TLS client sees.
    pub fn psql_client(&self, conninfo: &str, password: Option<&str>, sql: &str, timeout: Duration) -> Result<String> {
        let mut cmd = RunAs::Me.command(&self.path("psql"));
        cmd.args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql]);
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        let what = format!("psql \"{conninfo}\" -c {sql:?}");
        Ok(run(&mut cmd, &what, timeout, PG_HINT)?.stdout.trim().to_string())
    }
}

/// One running (or stopped) PostgreSQL server of a [`crate::PgPair`].
///
/// The public fields describe how to reach it; `name` is the DNS name its
/// TLS certificate is issued for, so clients connect with
/// `host=<name> hostaddr=<ip>` and `sslmode=verify-full`.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// DNS name in the server certificate (e.g. `pg-a.test`).
    pub name: String,
    /// Loopback address the server listens on (TCP, TLS only).
    pub ip: Ipv4Addr,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Directory of the unix socket (superuser access, `trust`).
    pub socket_dir: PathBuf,
    /// Server log (`pg_ctl -l`).
    pub log_file: PathBuf,
    /// CA certificate that signed this server's certificate.
    pub ca_cert: PathBuf,
    /// Server certificate and key (PEM).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub(crate) bins: PgBinaries,
    pub(crate) run_as: RunAs,
}

impl Cluster {
    /// Fails unless the server is stopped (`what` names the caller).
    pub(crate) fn ensure_stopped(&self, what: &str) -> Result<()> {
        if self.is_running() {
            return Err(TestbedError::InvalidOptions(format!(
                "{} is running; stop it (stop_immediate) before {what}",
                self.name
            )));
        }
        Ok(())
    }

    /// Prepares a **stopped** server to start in recovery: writes the empty
    /// `signal` file and appends `conf` to its per-server settings. Those
    /// are rewritten on every rebuild (`write_cluster_conf`), so the
    /// settings end with a real rebuild.
    pub(crate) fn restart_in_recovery(&self, what: &str, signal: &str, conf: &str) -> Result<()> {
        self.ensure_stopped(what)?;
        let signal = self.data_dir.join(signal);
        write_file(&signal, "", 0o600)?;
        self.run_as.chown(&signal)?;
        let path = self.data_dir.join("testbed-cluster.conf");
        let mut text =
            fs::read_to_string(&path).map_err(|e| TestbedError::io(format!("reading {}", path.display()), e))?;
        text.push_str(conf);
        write_file(&path, &text, 0o600)?;
        self.run_as.chown(&path)
    }

    /// TCP address of the server.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// libpq connection string for a verified TLS connection as `user`
    /// (password not included; pass it via `PGPASSWORD` or the client API):
    /// `host=<name> hostaddr=<ip> port=<port> user=<user> dbname=postgres
    /// sslmode=verify-full sslrootcert=<ca>`.
    pub fn conninfo(&self, user: &str) -> String {
        format!(
            "host={} hostaddr={} port={} user={} dbname=postgres sslmode=verify-full sslrootcert={}",
            conn_quote(&self.name),
            self.ip,
            self.port,
            conn_quote(user),
            conn_quote(&self.ca_cert.to_string_lossy()),
        )
    }

    /// Postmaster pid from the first line of `postmaster.pid`, if the file
    /// exists (it is removed when the server shuts down).
    pub fn pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// True if the postmaster process exists (and is not a zombie).
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(process::alive)
    }

    /// Run `sql` with `psql -XAtq` over the unix socket as the superuser
    /// `postgres`; returns trimmed stdout. Fails after 30 s (e.g. when the
    /// cluster is frozen).
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.sql_timeout(sql, SQL_TIMEOUT)
    }

    /// [`Cluster::sql`] with an explicit time bound.
    pub fn sql_timeout(&self, sql: &str, timeout: Duration) -> Result<String> {
        self.psql(&[sql], timeout)
    }

    /// Run several statements, each in its own implicit transaction (needed
    /// for `ALTER SYSTEM`, which refuses to run in a multi-statement string).
    fn psql(&self, statements: &[&str], timeout: Duration) -> Result<String> {
        let mut cmd = self.pg_command("psql");
        cmd.args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres"])
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string());
        for s in statements {
            cmd.arg("-c").arg(s);
        }
        let what = format!("psql on {} {:?}", self.name, statements);
        Ok(run(&mut cmd, &what, timeout, PG_HINT)?.stdout.trim().to_string())
    }

    /// `SELECT pg_is_in_recovery()`.
    pub fn is_in_recovery(&self) -> Result<bool> {
        Ok(self.sql("SELECT pg_is_in_recovery()")? == "t")
    }

    /// Start the server (again) and wait until it accepts connections.
    /// A no-op if it is already running.
    ///
    /// `pg_ctl start -w` only checks readiness every 100 ms, so we also watch
    /// the status line of `postmaster.pid` ourselves every 2 ms and return as
    /// soon as it says `ready` (primary) or `standby` (hot standby accepting
    /// connections); a `pg_ctl` failure is still reported, with the log tail.
    pub fn start(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let what = format!("starting PostgreSQL {} ({})", self.name, self.data_dir.display());
        self.start_inner(&what).map_err(|e| e.with_log(what, &self.log_file))
    }

    fn start_inner(&self, what: &str) -> Result<()> {
        let out_path = self.log_file.with_file_name("pg_ctl.out");
        let out =
            fs::File::create(&out_path).map_err(|e| TestbedError::io(format!("creating {}", out_path.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| TestbedError::io("dup pg_ctl output file", e))?;
        let mut cmd = self.pg_command("pg_ctl");
        cmd.args(["start", "-w", "-s", "-t"])
            .arg(START_TIMEOUT.as_secs().to_string())
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = process::spawn(&mut cmd, what, PG_HINT)?;
        let deadline = Instant::now() + START_TIMEOUT + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| TestbedError::io(what, e))? {
                if status.success() {
                    return Ok(());
                }
                return Err(TestbedError::Command {
                    what: "pg_ctl start".into(),
                    status,
                    output: fs::read_to_string(&out_path).unwrap_or_default().trim().to_string(),
                });
            }
            if self.pidfile_ready() {
                // pg_ctl notices within 100 ms and exits 0; reap it in the
                // background so it does not linger as a zombie.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestbedError::Timeout {
                    what: what.into(),
                    waited: START_TIMEOUT,
                    detail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Line 8 of `postmaster.pid` is the postmaster status
    /// (`starting`/`stopping`/`ready`/`standby`); line 1 its pid.
    fn pidfile_ready(&self) -> bool {
        let Ok(text) = fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().collect();
        let pid_alive = lines
            .first()
            .and_then(|l| l.trim().parse().ok())
            .is_some_and(process::alive);
        pid_alive && matches!(lines.get(7).map(|s| s.trim()), Some("ready" | "standby"))
    }

    /// Ask a standby to become a primary (`pg_ctl promote -W`, i.e. without
    /// pg_ctl's own 100 ms polling). With `wait`, poll
    /// `SELECT pg_is_in_recovery()` every 5 ms until it is false (at most
    /// 10 s); in practice the server is writable 20-35 ms after the request.
    pub fn promote(&self, wait: bool) -> Result<()> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.args(["promote", "-W", "-s", "-D"]).arg(&self.data_dir);
        let what = format!("pg_ctl promote {}", self.name);
        run(&mut cmd, &what, SQL_TIMEOUT, PG_HINT).map_err(|e| e.with_log(what.clone(), &self.log_file))?;
        if wait {
            process::poll(
                &format!("promotion of {}", self.name),
                Duration::from_secs(10),
                Duration::from_millis(5),
                || Ok((!self.is_in_recovery()?).then_some(())),
            )
            .map_err(|e| e.with_log(what, &self.log_file))?;
        }
        Ok(())
    }

    /// Crash-stop the server (`pg_ctl stop -m immediate`: SIGQUIT, no
    /// checkpoint, like a power cut for clients) and wait until the
    /// postmaster is gone. Thaws first, since a stopped process cannot act on
    /// the signal. A no-op if the server is not running.
    pub fn stop_immediate(&self) -> Result<()> {
        let Some(pm) = self.pid().filter(|&p| process::alive(p)) else {
            return Ok(());
        };
        self.thaw()?;
        let mut cmd = self.pg_command("pg_ctl");
        cmd.args(["stop", "-m", "immediate", "-W", "-s", "-D"])
            .arg(&self.data_dir);
        let what = format!("pg_ctl stop -m immediate {}", self.name);
        run(&mut cmd, &what, SQL_TIMEOUT, PG_HINT)?;
        let pidfile = self.data_dir.join("postmaster.pid");
        process::poll(&what, Duration::from_secs(30), Duration::from_millis(2), || {
            Ok((!pidfile.exists() && !process::alive(pm)).then_some(()))
        })
        .map_err(|e| e.with_log(what, &self.log_file))
    }

    /// Freeze the server: SIGSTOP the postmaster and then every child
    /// (backends, walsender/walreceiver, background workers), found via the
    /// ppid in `/proc/*/stat`. Simulates a hung VM / network black hole:
    /// the kernel still completes TCP handshakes into the listen backlog,
    /// but nothing ever answers, on new or existing connections. Returns once
    /// every process is actually stopped.
    pub fn freeze(&self) -> Result<()> {
        let pm = self
            .pid()
            .filter(|&p| process::alive(p))
            .ok_or_else(|| TestbedError::NotRunning(format!("PostgreSQL {}", self.name)))?;
        let mut stopped = BTreeSet::from([pm]);
        process::signal(&[pm], process::Signal::Stop)?;
        // Once the postmaster is stopped it cannot fork, so the child list
        // taken afterwards is complete.
        wait_stopped(&stopped)?;
        loop {
            let new: Vec<u32> = process::children_of(pm)
                .into_iter()
                .filter(|p| !stopped.contains(p))
                .collect();
            if new.is_empty() {
                break;
            }
            process::signal(&new, process::Signal::Stop)?;
            stopped.extend(new);
        }
        wait_stopped(&stopped)
    }

    /// Undo [`Cluster::freeze`]: SIGCONT all children and the postmaster.
    /// Harmless if the server is not frozen or not running.
    pub fn thaw(&self) -> Result<()> {
        let Some(pm) = self.pid() else {
            return Ok(());
        };
        let mut pids = process::children_of(pm);
        pids.push(pm);
        process::signal(&pids, process::Signal::Cont)
    }

    /// `ALTER SYSTEM SET default_transaction_read_only = on|off` plus
    /// `pg_reload_conf()`, then wait (at most 5 s) until a new session sees
    /// the new value. This is what Azure Database for PostgreSQL does when
    /// storage is full: the server is up and not in recovery, yet refuses
    /// writes by default.
    pub fn set_default_read_only(&self, on: bool) -> Result<()> {
        let value = if on { "on" } else { "off" };
        self.psql(
            &[
                &format!("ALTER SYSTEM SET default_transaction_read_only = {value}"),
                "SELECT pg_reload_conf()",
            ],
            SQL_TIMEOUT,
        )?;
        process::poll(
            &format!("{}: default_transaction_read_only = {value}", self.name),
            Duration::from_secs(5),
            Duration::from_millis(5),
            || Ok((self.sql("SHOW default_transaction_read_only")? == value).then_some(())),
        )
    }

    /// A command for a PostgreSQL program, run as the server's OS user, from
    /// a directory that user can enter (PostgreSQL programs call getcwd()
    /// and fail if the caller's cwd, e.g. under /root, is not accessible).
    pub(crate) fn pg_command(&self, program: &str) -> Command {
        let mut cmd = self.run_as.command(&self.bins.path(program));
        if let Some(dir) = self.log_file.parent() {
            cmd.current_dir(dir);
        }
        cmd
    }
}

/// Wait until every pid in `pids` is stopped ('T') or gone.
fn wait_stopped(pids: &BTreeSet<u32>) -> Result<()> {
    process::poll(
        "SIGSTOP to take effect",
        Duration::from_secs(5),
        Duration::from_millis(1),
        || {
            Ok(pids
                .iter()
                .all(|&p| !matches!(process::proc_stat(p), Some((s, _)) if s != 'T' && s != 't' && s != 'Z'))
                .then_some(()))
        },
    )
}

/// Quote a libpq conninfo value if needed (`'...'` with `\'` and `\\`).
pub(crate) fn conn_quote(v: &str) -> String {
    if !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// SQL string literal (also valid in postgresql.conf).
pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
