//! One prober task per server.
//!
//! Each task keeps one connection open and runs the probe query on it every
//! `interval` (about 0.03 ms of server time, and a closed connection is noticed
//! at once), and every `fresh_connection_interval` proves that a brand-new
//! client can still connect (TCP, TLS, authentication, connection limits).
//!
//! Every probe, connect included, runs under one hard `deadline`: a frozen
//! server (SIGSTOP) accepts TCP connects into its backlog and then never
//! answers, and without the deadline a probe would hang for minutes. A probe
//! that misses the deadline is dropped with its connection, so a late answer
//! can never be reported. Tasks are independent: a stuck server delays only
//! its own observations.
//!
//! A probe that fails on the kept connection is retried once on a new
//! connection within the same deadline, so a session ended by someone else
//! (`pg_terminate_backend`, an idle timeout, a proxy) does not count against a
//! healthy server. While a server is in the incident set
//! ([`crate::shared::Shared::incident`]) its task probes every
//! `incident_interval` instead of every `interval`.
//!
//! The cadence reuses the kept connection; only a probe without one (or one
//! due to prove a fresh connection) connects. New connections to a server
//! whose connects keep failing are spaced by a capped, jittered exponential
//! backoff ([`backoff`]), so a server that refuses or hangs up is not sent a
//! connection every `incident_interval` by every sidecar of a fleet.

mod backoff;
mod cadence;
mod query;
pub(crate) mod supervisor;
pub(crate) mod tls;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres_native_tls::MakeTlsConnector;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tracing::{debug, warn};

use crate::config::{ProbeTiming, Server};
use crate::credential::Credential;
use crate::observation::{FailureCause, FailureKind, ProbeFailure, ProbeReport, ServerState};
use backoff::ConnectBackoff;
use cadence::Cadence;

pub(crate) use tls::TlsSetupError;

/// A probe's connection, with the task that drives it.
struct Kept {
    client: Client,
    driver: JoinHandle<()>,
}

impl Kept {
    /// Closes politely (Terminate message), waiting at most a second for a
    /// stuck server.
    async fn close(self) {
        let Kept { client, mut driver } = self;
        drop(client);
        if tokio::time::timeout(Duration::from_secs(1), &mut driver).await.is_err() {
            driver.abort();
        }
    }

    /// Closes in the background (used when replacing the kept connection).
    fn close_later(self) {
        tokio::spawn(self.close());
    }
}

/// The servers to probe at the incident interval; see
/// [`crate::shared::Shared::incident`].
pub(crate) type IncidentSet = watch::Receiver<Arc<BTreeSet<String>>>;

/// Probes one server until `shutdown` flips to true.
pub(crate) struct Prober {
    name: Arc<str>,
    /// The server's id after a reload renamed it (see [`Prober::follow_renames`]).
    renames: Option<watch::Receiver<Arc<str>>>,
    pg: tokio_postgres::Config,
    tls: MakeTlsConnector,
    timing: ProbeTiming,
    kept: Option<Kept>,
    last_fresh: Option<Instant>,
    sql: &'static str,
    /// The last probe query's round trip on its open connection.
    rtt: Option<Duration>,
    /// Spacing of new connections while connects keep failing.
    backoff: ConnectBackoff,
    /// The current probe's new connection, if it opened one.
    attempt: Option<ConnectAttempt>,
    /// Where the password comes from (`None`: no password is sent); read
    /// before every new connection, never waited on.
    credential: Option<Credential>,
}

/// A new connection opened by the current probe.
#[derive(Debug, Clone, Copy)]
struct ConnectAttempt {
    started: Instant,
    /// `None` while the connect is still under way (a deadline that hits then
    /// is the connect's timeout).
    result: Option<Result<(), FailureCause>>,
}

impl Prober {
    /// A prober of `server`, reading its `sslrootcert` file (for tests; the
    /// supervisor reads the file itself, see [`Prober::with_roots`]).
    #[cfg(test)]
    pub(crate) fn new(server: &Server, timing: ProbeTiming) -> Result<Prober, TlsSetupError> {
        Prober::with_roots(server, timing, tls::read_roots(&server.conn)?.as_deref())
    }

    /// `Prober::new` with the contents of the server's `sslrootcert` file
    /// already read ([`tls::read_roots`]), so the caller knows exactly which
    /// trust anchors this prober verifies with.
    pub(crate) fn with_roots(
        server: &Server,
        timing: ProbeTiming,
        roots: Option<&str>,
    ) -> Result<Prober, TlsSetupError> {
        let c = &server.conn;
        let (tls, mode) = tls::connector_with(c, roots)?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&c.host)
            .port(c.port)
            .user(&c.user)
            .dbname(&c.dbname)
            .application_name(&c.application_name)
            .ssl_mode(mode);
        if let Some(addr) = c.hostaddr {
            pg.hostaddr(addr);
        }
        Ok(Prober {
            name: Arc::from(server.id.as_str()),
            renames: None,
            pg,
            tls,
            timing,
            kept: None,
            last_fresh: None,
            sql: query::FULL,
            rtt: None,
            backoff: ConnectBackoff::default(),
            attempt: None,
            credential: c.password.as_ref().map(Credential::detached),
        })
    }

    /// Makes the prober take its password from `credential` (a shared,
    /// refreshed source; see [`crate::credential::Registry`]).
    pub(crate) fn with_credential(mut self, credential: Credential) -> Prober {
        self.credential = Some(credential);
        self
    }

    /// Sets the password for the next connection; a failure when the
    /// source has none to give (not fetched yet, or expired).
    fn take_password(&mut self) -> Result<(), ProbeFailure> {
        let Some(c) = &self.credential else { return Ok(()) };
        match c.current() {
            Ok(secret) => {
                self.pg.password(secret.expose());
                Ok(())
            }
            Err(message) => Err(ProbeFailure {
                kind: FailureKind::Ambiguous,
                cause: FailureCause::Auth,
                message,
            }),
        }
    }

    /// An authentication failure names the password source (never the
    /// password) and asks the source for a new value (rate-limited there).
    fn refused(&self, mut f: ProbeFailure) -> ProbeFailure {
        if f.cause != FailureCause::Auth {
            return f;
        }
        if let Some(c) = &self.credential {
            c.refused();
            f.message.push_str(&format!(" (password source: {})", c.source()));
            if let Some(p) = c.problem() {
                f.message.push_str(&format!("; its last refresh failed: {p}"));
            }
        }
        f
    }

    /// Makes the prober take the server's new id from `names` when a reload
    /// renames the server (same endpoint, see [`crate::config::match_servers`]),
    /// so it keeps its connection and its reports follow the new name.
    pub(crate) fn follow_renames(mut self, names: watch::Receiver<Arc<str>>) -> Prober {
        self.renames = Some(names);
        self
    }

    /// Takes a new name, if one was sent; whether it changed.
    fn take_rename(&mut self) -> bool {
        let Some(rx) = &mut self.renames else { return false };
        if !rx.has_changed().unwrap_or(false) {
            return false;
        }
        let name = rx.borrow_and_update().clone();
        debug!(server = %name, old = %self.name, "prober renamed");
        self.name = name;
        true
    }

    /// The probe loop. Reports go to `tx`; stops when `shutdown` is true
    /// or the receiver is gone. While `incident` contains this server's id it
    /// probes every `incident_interval` (starting at once) instead of every
    /// `interval`. Probes never overlap: the next one starts after the last
    /// one finished or hit its deadline. A probe that has to open a new
    /// connection also waits for the connect backoff ([`backoff`]).
    pub(crate) async fn run(
        mut self,
        tx: mpsc::Sender<ProbeReport>,
        mut shutdown: watch::Receiver<bool>,
        mut incident: IncidentSet,
    ) {
        let mut cadence = Cadence::new(&self.timing, Instant::now());
        cadence.set_fast(incident.borrow_and_update().contains(&*self.name), Instant::now());
        let mut incident_open = true;
        if let Some(c) = self.credential.clone() {
            // A token source's first fetch (bounded; see `Credential::first_fetch`).
            tokio::select! {
                _ = tokio::time::timeout(self.timing.deadline, c.first_fetch()) => {}
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
        }
        loop {
            if self.take_rename() {
                cadence.set_fast(incident.borrow().contains(&*self.name), Instant::now());
            }
            let due = match self.backoff.not_before() {
                Some(t) if self.kept.is_none() => cadence.next.max(t),
                _ => cadence.next,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                changed = incident.changed(), if incident_open => {
                    match changed {
                        Ok(()) => self.incident_changed(&mut cadence, &mut incident),
                        // Nobody can change the set any more: keep the cadence.
                        Err(_) => incident_open = false,
                    }
                    continue;
                }
                _ = crate::shutdown::stopped(&mut shutdown) => break,
            }
            let started = Instant::now();
            let outcome = tokio::select! {
                r = tokio::time::timeout(self.timing.deadline, self.probe_once()) => r,
                _ = crate::shutdown::stopped(&mut shutdown) => break,
            };
            let report = self.report(outcome, started, &mut cadence, &incident);
            if tx.send(report).await.is_err() {
                break;
            }
        }
        if let Some(k) = self.kept.take() {
            k.close().await;
        }
    }

    /// The incident set changed: probe at the cadence it now asks for.
    fn incident_changed(&self, cadence: &mut Cadence, incident: &mut IncidentSet) {
        let fast = incident.borrow_and_update().contains(&*self.name);
        if fast != cadence.fast {
            debug!(server = %self.name, incident = fast, "probe cadence changed");
        }
        cadence.set_fast(fast, Instant::now());
    }

    /// The report of a probe that started at `started` and ended with
    /// `outcome` (`Err` when it hit the deadline); drops the connection after
    /// a failure, and counts a new connection's result into the backoff.
    fn report(
        &mut self,
        outcome: Result<Result<ServerState, ProbeFailure>, tokio::time::error::Elapsed>,
        started: Instant,
        cadence: &mut Cadence,
        incident: &IncidentSet,
    ) -> ProbeReport {
        let outcome = match outcome {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(f)) => {
                self.reset();
                Err(f)
            }
            Err(_) => {
                self.reset();
                Err(ProbeFailure {
                    kind: FailureKind::Ambiguous,
                    cause: FailureCause::Timeout,
                    message: format!("no answer within the probe deadline of {:?}", self.timing.deadline),
                })
            }
        };
        if let Err(f) = &outcome {
            debug!(server = %self.name, error = %f.message, "probe failed");
        }
        let connect = self.connect_result(outcome.is_ok());
        let now = Instant::now();
        cadence.probed(started, now);
        if self.take_rename() {
            cadence.set_fast(incident.borrow().contains(&*self.name), now);
        }
        ProbeReport {
            server: self.name.clone(),
            at: now,
            latency: now - started,
            rtt: self.rtt.take().filter(|_| outcome.is_ok()),
            outcome,
            connect,
        }
    }

    /// The result of the new connection this probe opened, if it opened one,
    /// counted into the connect backoff by whether the probe `succeeded`.
    fn connect_result(&mut self, succeeded: bool) -> Option<Result<(), FailureCause>> {
        let a = self.attempt.take()?;
        if succeeded {
            self.backoff.succeeded();
        } else {
            self.backoff
                .failed(a.started, self.timing.incident_interval, backoff::draw_jitter());
            if self.backoff.failures() == 2 {
                debug!(server = %self.name, "new connections keep failing; spacing them out (connect backoff)");
            }
        }
        // A deadline that hit during the connect is its timeout.
        Some(a.result.unwrap_or(Err(FailureCause::Timeout)))
    }

    /// Drops the connection at once (it may belong to a frozen server).
    fn reset(&mut self) {
        if let Some(k) = self.kept.take() {
            k.driver.abort();
        }
    }

    /// One probe: on the kept connection when there is one and a fresh
    /// connection is not due, else on a new connection.
    ///
    /// A failure on the kept connection is retried once on a new connection
    /// (still under the caller's deadline) and only the retry's result counts:
    /// the session may have been ended by something other than the server
    /// failing (`pg_terminate_backend`, an idle-session timeout, a proxy or
    /// NAT dropping an idle connection), and a healthy server must not be
    /// reported down for that. A server that really is going away refuses the
    /// new connection or says it is shutting down, which is reported as usual;
    /// a retry whose session is ended again counts as ambiguous (see
    /// [`query::classify_retry`]).
    async fn probe_once(&mut self) -> Result<ServerState, ProbeFailure> {
        let mut retry = false;
        if self.kept.as_ref().is_some_and(|k| k.driver.is_finished()) {
            // The server already ended it; no need to find out by querying.
            self.kept = None;
            retry = true;
        }
        let fresh_due = self
            .last_fresh
            .is_none_or(|t| t.elapsed() >= self.timing.fresh_connection_interval);
        if self.kept.is_some() && !fresh_due {
            match self.query().await {
                Ok(state) => return Ok(state),
                Err(e) => {
                    debug!(
                        server = %self.name,
                        error = %e,
                        "probe on the kept connection failed; retrying on a new connection"
                    );
                    self.reset();
                    retry = true;
                }
            }
        }
        let classify = if retry { query::classify_retry } else { query::classify };
        self.take_password()?;
        self.attempt = Some(ConnectAttempt {
            started: Instant::now(),
            result: None,
        });
        let connected = self.connect().await.map_err(|e| self.refused(classify(&e)));
        if let Some(a) = &mut self.attempt {
            a.result = Some(connected.as_ref().map(|_| ()).map_err(|f| f.cause));
        }
        connected?;
        let mut state = self.query().await.map_err(|e| classify(&e))?;
        state.fresh_connection = true;
        Ok(state)
    }

    /// Opens a new connection and keeps it (the old one is closed politely
    /// in the background).
    async fn connect(&mut self) -> Result<(), tokio_postgres::Error> {
        let (client, connection) = self.pg.connect(self.tls.clone()).await?;
        let name = self.name.clone();
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(server = %name, error = %e, "probe connection ended");
            }
        });
        if let Some(old) = self.kept.replace(Kept { client, driver }) {
            old.close_later();
        }
        self.last_fresh = Some(Instant::now());
        Ok(())
    }

    /// Runs the probe query on the kept connection.
    async fn query(&mut self) -> Result<ServerState, tokio_postgres::Error> {
        let client = &self.kept.as_ref().expect("a kept connection").client;
        let started = Instant::now();
        let r = query::run(client, self.sql).await;
        self.rtt = Some(started.elapsed());
        match r {
            Err(e) if query::is_permission_denied(&e) && self.sql == query::FULL => {
                warn!(
                    server = %self.name,
                    error = %e,
                    "probe role may not read the WAL position; timelines and replay lag are unknown, so two writable servers cannot be ordered (see docs/operations.md: Probe role and grants)"
                );
                self.sql = query::BASIC;
                query::run(client, self.sql).await
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests;
