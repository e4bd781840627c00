//! `dns-sidecar run`: the long-running service with its signals.
//!
//! SIGHUP re-reads the config file, validates all of it, and swaps it in
//! (an invalid file is rejected with the reason logged, and the old config
//! keeps serving); SIGTERM and SIGINT stop gracefully.
//!
//! A long-lived task that dies (see `crate::supervise`) stops the service
//! too, and `run` returns [`DaemonError::Died`]: the binary then exits with
//! [`EXIT_TASK_DIED`] so that systemd (`Restart=on-failure`) or the kubelet
//! restarts the process.

use std::path::Path;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

use crate::config::{Config, ConfigError};
use crate::supervise::Death;
use crate::{start, Listeners, RunError};

/// The exit status after a task died. (0: stopped by a signal; 1: could not
/// start; 2: invalid config.)
pub const EXIT_TASK_DIED: i32 = 3;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("{0}; the process stopped")]
    Died(Death),
}

/// Loads `path`, serves until SIGTERM/SIGINT, reloading on SIGHUP.
pub async fn run(path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(path)?;
    let listeners = Listeners::bind(&config)?;
    let mut running = start(config, listeners)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let died = loop {
        tokio::select! {
            _ = hup.recv() => {
                info!(path = %path.display(), "SIGHUP: reloading the configuration");
                let result = match Config::load(path) {
                    Ok(c) => running.reload(c).await,
                    Err(e) => {
                        running.shared.metrics.reloads.get_or_create(&crate::metrics::ResultLabel { result: "rejected".into() }).inc();
                        Err(e.into())
                    }
                };
                if let Err(e) = result {
                    error!(error = %e, "configuration reload rejected; the previous configuration keeps serving");
                }
            }
            _ = term.recv() => break None,
            _ = int.recv() => break None,
            d = running.died() => break Some(d),
        }
    };
    match &died {
        None => info!("stopping"),
        Some(d) => {
            error!(task = d.task.as_str(), error = %d, "stopping after a task died; exiting with status {EXIT_TASK_DIED}")
        }
    }
    running.stop().await;
    died.map_or(Ok(()), |d| Err(DaemonError::Died(d)))
}
