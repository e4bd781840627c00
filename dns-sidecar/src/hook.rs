//! On-change hooks: a command run when an alias changes target, e.g. to keep
//! an Azure Private DNS CNAME in step. Hooks run one at a time, in the order
//! of the changes (so the last change's hook runs last), each under its
//! timeout; a failure is logged and counted, never retried, and never delays
//! DNS answers or decisions.

use std::process::Stdio;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{error, info};

use crate::config::Hook;
use crate::metrics::ResultLabel;
use crate::shared::Shared;

/// One hook invocation. The command sees these in its environment as
/// `DNS_SIDECAR_ALIAS`, `DNS_SIDECAR_OLD_SERVER`, `DNS_SIDECAR_OLD_TARGET`
/// (empty on the first decision), `DNS_SIDECAR_NEW_SERVER`,
/// `DNS_SIDECAR_NEW_TARGET` and `DNS_SIDECAR_REASON`.
#[derive(Debug, Clone)]
pub struct HookRun {
    pub hook: Hook,
    pub alias: String,
    pub old_server: Option<String>,
    pub old_target: Option<String>,
    pub new_server: String,
    pub new_target: String,
    pub reason: String,
}

/// Runs hooks from `rx` until the channel closes.
pub async fn runner(mut rx: mpsc::Receiver<HookRun>, shared: Arc<Shared>) {
    while let Some(run) = rx.recv().await {
        let result = run_one(&run).await;
        let label = match &result {
            Ok(()) => "ok",
            Err(HookError::Timeout(_)) => "timeout",
            Err(_) => "failed",
        };
        shared.metrics.hook_runs.get_or_create(&ResultLabel { result: label.into() }).inc();
        match result {
            Ok(()) => info!(alias = run.alias.as_str(), new = run.new_server.as_str(), "on_change hook succeeded"),
            Err(e) => error!(alias = run.alias.as_str(), new = run.new_server.as_str(), error = %e, "on_change hook failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("killed after its timeout of {0:?}")]
    Timeout(std::time::Duration),
    #[error("exited with {status}; stderr: {stderr}")]
    Failed { status: std::process::ExitStatus, stderr: String },
    #[error("waiting for it failed: {0}")]
    Wait(#[source] std::io::Error),
}

async fn run_one(run: &HookRun) -> Result<(), HookError> {
    let argv = &run.hook.argv;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("DNS_SIDECAR_ALIAS", run.alias.trim_end_matches('.'))
        .env("DNS_SIDECAR_OLD_SERVER", run.old_server.as_deref().unwrap_or(""))
        .env("DNS_SIDECAR_OLD_TARGET", run.old_target.as_deref().unwrap_or("").trim_end_matches('.'))
        .env("DNS_SIDECAR_NEW_SERVER", &run.new_server)
        .env("DNS_SIDECAR_NEW_TARGET", run.new_target.trim_end_matches('.'))
        .env("DNS_SIDECAR_REASON", &run.reason)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| HookError::Spawn { program: argv[0].clone(), source })?;
    let out = match tokio::time::timeout(run.hook.timeout, child.wait_with_output()).await {
        Err(_) => return Err(HookError::Timeout(run.hook.timeout)),
        Ok(r) => r.map_err(HookError::Wait)?,
    };
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr.chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect();
        Err(HookError::Failed { status: out.status, stderr: tail.trim().to_string() })
    }
}
