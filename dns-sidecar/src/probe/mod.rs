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

mod query;
pub mod supervisor;
pub mod tls;

use std::time::{Duration, Instant};

use postgres_native_tls::MakeTlsConnector;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tracing::{debug, warn};

use std::sync::Arc;

use crate::config::{ProbeTiming, Server};
use crate::observation::{FailureKind, Observation, ProbeFailure, ServerState, Tagged};

pub use tls::TlsSetupError;

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

/// Probes one server until `shutdown` flips to true.
pub struct Prober {
    name: Arc<str>,
    pg: tokio_postgres::Config,
    tls: MakeTlsConnector,
    timing: ProbeTiming,
    kept: Option<Kept>,
    last_fresh: Option<Instant>,
    sql: &'static str,
}

impl Prober {
    pub fn new(server: &Server, timing: ProbeTiming) -> Result<Prober, TlsSetupError> {
        let c = &server.conn;
        let (tls, mode) = tls::connector(c)?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&c.host).port(c.port).user(&c.user).dbname(&c.dbname).application_name(&c.application_name).ssl_mode(mode);
        if let Some(addr) = c.hostaddr {
            pg.hostaddr(addr);
        }
        if let Some(p) = &c.password {
            pg.password(p.expose());
        }
        Ok(Prober { name: Arc::from(server.id.as_str()), pg, tls, timing, kept: None, last_fresh: None, sql: query::FULL })
    }

    /// The probe loop. Observations go to `tx`; stops when `shutdown` is true
    /// or the receiver is gone.
    pub async fn run(mut self, tx: mpsc::Sender<Tagged>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.timing.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = crate::shutdown::stopped(&mut shutdown) => break,
            }
            let started = Instant::now();
            let outcome = tokio::select! {
                r = tokio::time::timeout(self.timing.deadline, self.probe_once()) => r,
                _ = crate::shutdown::stopped(&mut shutdown) => break,
            };
            let outcome = match outcome {
                Ok(Ok(state)) => Ok(state),
                Ok(Err(e)) => {
                    self.reset();
                    Err(query::classify(&e))
                }
                Err(_) => {
                    self.reset();
                    Err(ProbeFailure {
                        kind: FailureKind::Ambiguous,
                        message: format!("no answer within the probe deadline of {:?}", self.timing.deadline),
                    })
                }
            };
            if let Err(f) = &outcome {
                debug!(server = %self.name, error = %f.message, "probe failed");
            }
            let obs = Observation { server: 0, at: Instant::now(), latency: started.elapsed(), outcome };
            if tx.send(Tagged { server: self.name.clone(), obs }).await.is_err() {
                break;
            }
        }
        if let Some(k) = self.kept.take() {
            k.close().await;
        }
    }

    /// Drops the connection at once (it may belong to a frozen server).
    fn reset(&mut self) {
        if let Some(k) = self.kept.take() {
            k.driver.abort();
        }
    }

    async fn probe_once(&mut self) -> Result<ServerState, tokio_postgres::Error> {
        let fresh = self.kept.is_none() || self.last_fresh.is_none_or(|t| t.elapsed() >= self.timing.fresh_connection_interval);
        if fresh {
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
        }
        let client = &self.kept.as_ref().expect("connected above").client;
        let result = match query::run(client, self.sql).await {
            Err(e) if query::is_permission_denied(&e) && self.sql == query::FULL => {
                warn!(server = %self.name, error = %e, "probe role may not read the WAL position; timelines and replay lag are unknown, so two writable servers cannot be ordered (see README: probe grants)");
                self.sql = query::BASIC;
                query::run(client, self.sql).await
            }
            r => r,
        };
        result.map(|mut s| {
            s.fresh_connection = fresh;
            s
        })
    }
}
