//! A primary + streaming-replica pair ([`PgPair`]) on loopback, with TLS and
//! SCRAM passwords: the smallest real setup in which "which server is
//! writable" can change. [`PairOptions::trio`] adds a second replica, for
//! fault sequences where the new primary fails too.

use std::ffi::OsString;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Result, TestbedError};
use crate::pki::Ca;
use crate::postgres::{sql_literal, Cluster, PgBinaries, PG_HINT};
use crate::process::{self, run, RunAs, Watchdog, SH_PG_CRASH};
use crate::scratch;

/// Set to `1` to keep a pair's directory (logs, data) after it is dropped;
/// the servers are still stopped.
pub const KEEP_ENV: &str = "DNS_SIDECAR_TESTBED_KEEP";

/// How to set up a [`PgPair`]. `Default` gives the values documented on
/// each field.
#[derive(Clone, Debug)]
pub struct PairOptions {
    /// Address of the initial primary. Default `127.0.0.2`. Must be loopback.
    pub primary_ip: Ipv4Addr,
    /// Address of the initial replica. Default `127.0.0.3`. Must be loopback
    /// and differ from `primary_ip` (both servers use the same port).
    pub replica_ip: Ipv4Addr,
    /// DNS name in the primary's certificate. Default `pg-a.test`.
    pub primary_name: String,
    /// DNS name in the replica's certificate. Default `pg-b.test`.
    pub replica_name: String,
    /// Login role for the sidecar's probes, created with no grants at all.
    /// Default `probe`.
    pub probe_user: String,
    /// Password of `probe_user` and of the `postgres` superuser. Empty
    /// (the default) means a random 24-character one.
    pub password: String,
    /// More streaming replicas of the primary, as (loopback address, DNS name
    /// in its certificate); they become [`PgPair::extra`]. Default none;
    /// [`PairOptions::trio`] adds `127.0.0.4` / `pg-c.test`.
    pub extra_replicas: Vec<(Ipv4Addr, String)>,
}

impl Default for PairOptions {
    fn default() -> Self {
        PairOptions {
            primary_ip: Ipv4Addr::new(127, 0, 0, 2),
            replica_ip: Ipv4Addr::new(127, 0, 0, 3),
            primary_name: "pg-a.test".into(),
            replica_name: "pg-b.test".into(),
            probe_user: "probe".into(),
            password: String::new(),
            extra_replicas: Vec::new(),
        }
    }
}

impl PairOptions {
    /// The defaults plus a second replica on `127.0.0.4` (`pg-c.test`): a
    /// primary and two streaming replicas.
    pub fn trio() -> Self {
        PairOptions {
            extra_replicas: vec![(Ipv4Addr::new(127, 0, 0, 4), "pg-c.test".into())],
            ..Default::default()
        }
    }

    /// Every server's (address, name), the primary first.
    fn servers(&self) -> Vec<(Ipv4Addr, &str)> {
        let mut all = vec![
            (self.primary_ip, self.primary_name.as_str()),
            (self.replica_ip, self.replica_name.as_str()),
        ];
        all.extend(self.extra_replicas.iter().map(|(ip, n)| (*ip, n.as_str())));
        all
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TestbedError::InvalidOptions(m));
        let servers = self.servers();
        for (i, (ip, name)) in servers.iter().enumerate() {
            if !ip.is_loopback() {
                return bad(format!(
                    "{ip} is not a loopback address; the testbed never listens elsewhere"
                ));
            }
            if servers[..i].iter().any(|(other, _)| other == ip) {
                return bad(format!(
                    "{ip} is used by two servers; each needs its own address (all use the same port)"
                ));
            }
            if servers[..i].iter().any(|(_, other)| other == name) {
                return bad(format!("{name:?} names two servers"));
            }
        }
        for (_, name) in servers {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                return bad(format!("{name:?} is not a plain DNS name"));
            }
        }
        if self.probe_user.is_empty() || self.probe_user == "postgres" {
            return bad(format!(
                "probe_user {:?} must be a new, non-empty role name",
                self.probe_user
            ));
        }
        Ok(())
    }
}

/// A running PostgreSQL 15 primary and its streaming replica, both on the
/// same port on two loopback addresses, reachable over TCP only with TLS
/// and a SCRAM password. Dropping it stops both servers and deletes
/// everything.
#[derive(Debug)]
pub struct PgPair {
    /// Scratch directory holding everything (`pki/`, `a/`, `b/`).
    pub dir: PathBuf,
    /// CA certificate (PEM) to verify both servers: use as `sslrootcert`
    /// with `sslmode=verify-full`.
    pub ca_cert: PathBuf,
    /// The port both servers listen on (each on its own IP).
    pub port: u16,
    /// Initially the primary. The field names do not follow promotions.
    pub primary: Cluster,
    /// Initially the streaming replica.
    pub replica: Cluster,
    /// Further streaming replicas of the primary
    /// ([`PairOptions::extra_replicas`], in order; with
    /// [`PairOptions::trio`], `extra[0]` is `pg-c.test` on `127.0.0.4`).
    pub extra: Vec<Cluster>,
    /// Role for the sidecar's probes (`LOGIN`, no grants).
    pub probe_user: String,
    /// Password of `probe_user` and of the `postgres` superuser.
    pub password: String,
    _watchdog: Option<Watchdog>,
}

impl PgPair {
    /// Create, start and connect a primary/replica pair. **Blocking**
    /// (spawns `initdb`, `openssl`, `pg_ctl`, `pg_basebackup`, `psql` with
    /// `std::process`; ~0.5-1 s on `/dev/shm`): call it before entering a
    /// runtime or from `tokio::task::spawn_blocking`.
    ///
    /// Steps: scratch dir and a port free on both IPs; CA and per-server
    /// certificates (in parallel with `initdb` of the primary); configure and
    /// start the primary; create the probe role; `pg_basebackup -R` the
    /// replica, give it its own address/socket/certificate, start it and wait
    /// until the primary reports it as streaming. On failure everything
    /// started so far is torn down and the error carries the log tail.
    pub fn start(bins: &PgBinaries, opts: PairOptions) -> Result<Self> {
        opts.validate()?;
        let t0 = Instant::now();
        let run_as = RunAs::for_postgres()?;
        let dir = scratch::unique_dir("dns-sidecar-testbed")?;
        let ips: Vec<IpAddr> = opts.servers().iter().map(|(ip, _)| IpAddr::V4(*ip)).collect();
        let port = match scratch::free_port(&ips, false) {
            Ok(p) => p,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let password = if opts.password.is_empty() {
            random_password()
        } else {
            opts.password.clone()
        };
        let pki = dir.join("pki");
        let cluster = |sub: &str, name: &str, ip: Ipv4Addr| {
            let cdir = dir.join(sub);
            Cluster {
                name: name.to_string(),
                ip,
                port,
                data_dir: cdir.join("data"),
                socket_dir: cdir.join("sock"),
                log_file: cdir.join("postgres.log"),
                ca_cert: pki.join("ca.crt"),
                cert_file: pki.join(format!("{name}.crt")),
                key_file: pki.join(format!("{name}.key")),
                bins: bins.clone(),
                run_as: run_as.clone(),
            }
        };
        let primary = cluster("a", &opts.primary_name, opts.primary_ip);
        let replica = cluster("b", &opts.replica_name, opts.replica_ip);
        let extra = (opts.extra_replicas.iter().enumerate())
            .map(|(i, (ip, name))| cluster(&format!("r{}", i + 2), name, *ip))
            .collect();
        // Constructed before anything runs, so that an early `?` return
        // drops it and Drop tears down whatever was already started.
        let mut pair = PgPair {
            ca_cert: pki.join("ca.crt"),
            dir,
            port,
            primary,
            replica,
            extra,
            probe_user: opts.probe_user.clone(),
            password,
            _watchdog: None,
        };
        pair._watchdog = Some(Watchdog::spawn(
            &format!("{SH_PG_CRASH}\ndir=$1; shift\nfor d in \"$@\"; do pg_crash \"$d\"; done\nrm -rf \"$dir\"\n"),
            &std::iter::once(OsString::from(&pair.dir))
                .chain(pair.clusters().iter().map(|c| OsString::from(&c.data_dir)))
                .collect::<Vec<_>>(),
        )?);
        pair.setup(&pki)?;
        tracing::info!(
            dir = %pair.dir.display(),
            port = pair.port,
            servers = pair.clusters().len(),
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "testbed: PostgreSQL pair started"
        );
        Ok(pair)
    }

    fn setup(&self, pki: &Path) -> Result<()> {
        let p = &self.primary;
        let all = self.clusters();
        let replicas = &all[1..];
        let t0 = Instant::now();
        let step = |what: &str| tracing::debug!(elapsed_ms = t0.elapsed().as_millis() as u64, "testbed: {what}");
        for &c in &all {
            let cdir = c.log_file.parent().expect("cluster dir");
            mkdir(cdir)?;
            mkdir(&c.socket_dir)?;
            c.run_as.chown(cdir)?;
            c.run_as.chown(&c.socket_dir)?;
            check_socket_path(c)?;
        }
        let pwfile = p.log_file.with_file_name("pwfile");
        write_file(&pwfile, &format!("{}\n", self.password), 0o600)?;
        p.run_as.chown(&pwfile)?;

        // PKI and initdb are independent; run them concurrently.
        let (ca_result, initdb_result) = std::thread::scope(|s| {
            let ca = s.spawn(|| -> Result<()> {
                let ca = Ca::create(pki)?;
                for &c in &all {
                    let sc = ca.issue_server(&c.name, &c.name, IpAddr::V4(c.ip))?;
                    c.run_as.chown(&sc.key)?;
                }
                Ok(())
            });
            let init = self.initdb(&pwfile);
            (ca.join().expect("pki thread panicked"), init)
        });
        let _ = fs::remove_file(&pwfile);
        initdb_result?;
        ca_result?;
        step("initdb and certificates done");

        write_file(&p.data_dir.join("pg_hba.conf"), PG_HBA, 0o600)?;
        let mut conf = fs::read_to_string(p.data_dir.join("postgresql.conf"))
            .map_err(|e| TestbedError::io("reading postgresql.conf", e))?;
        conf.push_str(&common_conf(self.port));
        write_file(&p.data_dir.join("postgresql.conf"), &conf, 0o600)?;
        p.write_cluster_conf()?;
        for f in ["pg_hba.conf", "postgresql.conf"] {
            p.run_as.chown(&p.data_dir.join(f))?;
        }
        p.start()?;
        step("primary started");

        p.sql(&format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            sql_ident(&self.probe_user),
            sql_literal(&self.password)
        ))
        .map_err(|e| e.with_log("creating the probe role", &p.log_file))?;

        // Replicas are independent of each other: base backups in parallel.
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let threads: Vec<_> = (replicas.iter())
                .map(|&r| {
                    s.spawn(move || {
                        r.basebackup_from(p)?;
                        r.write_cluster_conf()?;
                        r.start()
                    })
                })
                .collect();
            (threads.into_iter())
                .map(|t| t.join().expect("replica setup thread panicked"))
                .collect()
        });
        results.into_iter().collect::<Result<()>>()?;
        step("replicas started");

        let want = replicas.len().to_string();
        process::poll(
            &format!("{want} replica(s) to stream from {}", p.name),
            Duration::from_secs(30),
            Duration::from_millis(5),
            || {
                let n = p.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")?;
                Ok((n == want).then_some(()))
            },
        )
        .map_err(|e| e.with_log("waiting for streaming replication", &p.log_file))
    }

    fn initdb(&self, pwfile: &Path) -> Result<()> {
        let p = &self.primary;
        let mut cmd = p.pg_command("initdb");
        cmd.arg("-D")
            .arg(&p.data_dir)
            .args(["--auth-local=trust", "--auth-host=scram-sha-256", "-U", "postgres"])
            .arg(format!("--pwfile={}", pwfile.display()))
            // C locale / UTF8: independent of the host's locales. -N: no
            // fsync (tmpfs anyway). 1 MiB WAL segments: a smaller data dir,
            // which matters when /dev/shm is small.
            .args([
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
                "--no-instructions",
                "--wal-segsize=1",
            ]);
        let what = format!("initdb for {}", p.name);
        run(&mut cmd, &what, Duration::from_secs(120), PG_HINT)?;
        Ok(())
    }

    /// Every cluster: the primary, the replica, then [`PgPair::extra`].
    pub fn clusters(&self) -> Vec<&Cluster> {
        let mut all = vec![&self.primary, &self.replica];
        all.extend(&self.extra);
        all
    }

    /// Rotates the certificate authority: makes a new CA in `pki/<name>`,
    /// issues every server a new certificate (same names and addresses) from
    /// it, installs them over the servers' certificate and key files, and
    /// has the running servers load them (`pg_reload_conf()`; returns once
    /// each one presents the new certificate). Returns the new CA
    /// certificate's path; [`PgPair::ca_cert`] keeps the old CA, so clients
    /// that trust only it now fail verification on new connections.
    pub fn rotate_ca(&self, name: &str) -> Result<PathBuf> {
        let ca = Ca::create(&self.dir.join("pki").join(name))?;
        for c in self.clusters() {
            let sc = ca.issue_server(&c.name, &c.name, IpAddr::V4(c.ip))?;
            for (from, to) in [(&sc.cert, &c.cert_file), (&sc.key, &c.key_file)] {
                fs::copy(from, to)
                    .map_err(|e| TestbedError::io(format!("copying {} to {}", from.display(), to.display()), e))?;
            }
            c.run_as.chown(&c.key_file)?;
            c.run_as.chown(&c.cert_file)?;
            c.sql("SELECT pg_reload_conf()")?;
        }
        for c in self.clusters() {
            let conninfo = c
                .conninfo(&self.probe_user)
                .replace(&c.ca_cert.to_string_lossy().into_owned(), &ca.cert.to_string_lossy());
            process::poll(
                &format!("{} to present its new certificate", c.name),
                Duration::from_secs(30),
                Duration::from_millis(20),
                || {
                    let ok = c
                        .bins
                        .psql_client(&conninfo, Some(&self.password), "SELECT 1", Duration::from_secs(5))
                        .is_ok();
                    Ok(ok.then_some(()))
                },
            )?;
        }
        Ok(ca.cert)
    }
}

impl Drop for PgPair {
    /// Thaw and crash-stop every server, then delete the directory. Never
    /// panics; failures are logged with `tracing::warn!`.
    fn drop(&mut self) {
        for c in self.clusters().into_iter().rev() {
            if let Err(e) = c.stop_immediate() {
                tracing::warn!(cluster = %c.name, error = %e, "testbed: stop failed; killing");
                if let Some(pm) = c.pid() {
                    let mut pids = process::children_of(pm);
                    pids.push(pm);
                    let _ = process::signal(&pids, process::Signal::Cont);
                    let _ = process::signal(&pids, process::Signal::Kill);
                }
            }
        }
        if std::env::var_os(KEEP_ENV).is_some_and(|v| v == "1") {
            tracing::info!(dir = %self.dir.display(), "testbed: keeping pair directory");
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "testbed: cannot remove pair directory");
        }
    }
}

/// Only local (unix socket, `trust`: the harness itself, replication) and
/// TLS-with-password TCP from loopback. No `host` lines, so a plaintext TCP
/// client is rejected ("no pg_hba.conf entry ... no encryption").
const PG_HBA: &str = "\
# dns-sidecar testbed: TCP clients must use TLS and a SCRAM password.
local   all          all                  trust
local   replication  all                  trust
hostssl all          all   127.0.0.0/8    scram-sha-256
hostssl all          all   ::1/128        scram-sha-256
";

/// Settings shared by both servers (the replica inherits postgresql.conf
/// through pg_basebackup). Durability is off because the data is
/// throwaway and tmpfs-backed; replication is on; TLS is mandatory via
/// pg_hba.conf. Per-server settings live in `testbed-cluster.conf`.
fn common_conf(port: u16) -> String {
    format!(
        "
# ---- dns-sidecar testbed ----
port = {port}
fsync = off
synchronous_commit = off
# pg_rewind (Cluster::rebuild_as_standby_of) needs full-page images and
# hint-bit WAL records to find every page that diverged.
full_page_writes = on
wal_log_hints = on
# A standby that found no WAL (its primary restarted, a timeline switch
# after a rebuild) tries again after this long instead of 5 s.
wal_retrieve_retry_interval = '100ms'
shared_buffers = 16MB
max_connections = 30
wal_level = replica
max_wal_senders = 10
wal_keep_size = 64MB
hot_standby = on
ssl = on
password_encryption = 'scram-sha-256'
dynamic_shared_memory_type = mmap
log_line_prefix = '%m [%p] %q%u@%d '
include 'testbed-cluster.conf'
"
    )
}

/// Unix socket paths are limited to 107 bytes.
fn check_socket_path(c: &Cluster) -> Result<()> {
    let len = c.socket_dir.as_os_str().len() + format!("/.s.PGSQL.{}", c.port).len();
    if len > 107 {
        return Err(TestbedError::InvalidOptions(format!(
            "socket path under {} is {len} bytes (max 107); set {} to a shorter directory",
            c.socket_dir.display(),
            scratch::DIR_ENV
        )));
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(|e| TestbedError::io(format!("creating {}", p.display()), e))
}

pub(crate) fn write_file(p: &Path, contents: &str, mode: u32) -> Result<()> {
    fs::write(p, contents).map_err(|e| TestbedError::io(format!("writing {}", p.display()), e))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| TestbedError::io(format!("chmod {}", p.display()), e))
}

fn random_password() -> String {
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..24)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
