//! On-change hooks: a command run when an alias changes target, e.g. to keep
//! an Azure Private DNS CNAME in step.
//!
//! * One hook runs at a time. Changes that arrive while one runs are kept,
//!   one per alias: a newer change of the same alias replaces the waiting
//!   one (its old target stays the one the last run set), because the hook's
//!   job is to converge the external record on the latest target, and running
//!   stale updates in between only delays that (or, with a slow command,
//!   finishes a stale update after a newer one).
//! * The command starts with a cleared environment: only the
//!   `DNS_SIDECAR_*` variables below and those listed in `on_change_env`
//!   (default `PATH`, `HOME`), so the probe password and the admin token
//!   never reach it.
//! * It runs in its own process group. At its timeout the whole group is
//!   killed (SIGKILL), so a child it started (`az`, `curl`) cannot finish a
//!   stale update later; the process is always reaped.
//! * A failure is logged and counted, never retried, and never delays DNS
//!   answers or decisions.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
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

/// Changes waiting for their hook, at most one per alias, oldest first.
#[derive(Debug, Default)]
pub struct Queue {
    waiting: VecDeque<HookRun>,
}

impl Queue {
    /// Adds a change; a waiting change of the same alias is replaced by it,
    /// keeping the waiting one's old target (what the external record holds).
    pub fn push(&mut self, run: HookRun) {
        if let Some(w) = self.waiting.iter_mut().find(|w| w.alias == run.alias) {
            info!(
                alias = run.alias.as_str(),
                skipped = w.new_server.as_str(),
                latest = run.new_server.as_str(),
                "on_change hook: a newer change replaces one still waiting"
            );
            let (old_server, old_target) = (w.old_server.take(), w.old_target.take());
            *w = HookRun {
                old_server,
                old_target,
                ..run
            };
        } else {
            self.waiting.push_back(run);
        }
    }

    pub fn pop(&mut self) -> Option<HookRun> {
        self.waiting.pop_front()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Runs hooks from `rx` until the channel closes. The channel is drained
/// continuously (also while a hook runs), so the engine never finds it full.
pub async fn runner(mut rx: mpsc::Receiver<HookRun>, shared: Arc<Shared>) {
    let mut queue = Queue::default();
    let mut open = true;
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(run) => queue.push(run),
                None => return,
            }
        }
        let Some(run) = queue.pop() else { continue };
        let work = run_one(&run);
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                next = rx.recv(), if open => match next {
                    Some(next) => queue.push(next),
                    None => open = false,
                },
            }
        };
        let label = match &result {
            Ok(()) => "ok",
            Err(HookError::Timeout(_)) => "timeout",
            Err(_) => "failed",
        };
        shared
            .metrics
            .hook_runs
            .get_or_create(&ResultLabel { result: label.into() })
            .inc();
        match result {
            Ok(()) => info!(
                alias = run.alias.as_str(),
                new = run.new_server.as_str(),
                "on_change hook succeeded"
            ),
            Err(e) => {
                error!(alias = run.alias.as_str(), new = run.new_server.as_str(), error = %e, "on_change hook failed")
            }
        }
        if !open && queue.is_empty() {
            return;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("killed (with its process group) after its timeout of {0:?}")]
    Timeout(std::time::Duration),
    #[error("exited with {status}; stderr: {stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("waiting for it failed: {0}")]
    Wait(#[source] std::io::Error),
}

/// The variables of our environment that `patterns` lets through
/// (exact names, or `PREFIX*`).
pub fn passed_env(patterns: &[String]) -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => k.starts_with(prefix),
                None => k == p,
            })
        })
        .collect()
}

/// Most stderr kept from a failed hook (its tail is logged).
const STDERR_KEEP: usize = 16 * 1024;

async fn run_one(run: &HookRun) -> Result<(), HookError> {
    let argv = &run.hook.argv;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(passed_env(&run.hook.env))
        .env("DNS_SIDECAR_ALIAS", run.alias.trim_end_matches('.'))
        .env("DNS_SIDECAR_OLD_SERVER", run.old_server.as_deref().unwrap_or(""))
        .env(
            "DNS_SIDECAR_OLD_TARGET",
            run.old_target.as_deref().unwrap_or("").trim_end_matches('.'),
        )
        .env("DNS_SIDECAR_NEW_SERVER", &run.new_server)
        .env("DNS_SIDECAR_NEW_TARGET", run.new_target.trim_end_matches('.'))
        .env("DNS_SIDECAR_REASON", &run.reason)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group (pgid = its pid), so the timeout can kill
        // everything it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    let pgid = child.id();
    let mut stderr = child.stderr.take();
    let collect = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > STDERR_KEEP {
                    buf.drain(..buf.len() - STDERR_KEEP);
                }
            }
        }
        buf
    };
    let waited = tokio::time::timeout(run.hook.timeout, async { tokio::join!(child.wait(), collect) }).await;
    // Whatever happened, nothing of the group may outlive this run.
    if let Some(pgid) = pgid {
        // SAFETY: plain syscall; a group that no longer exists gives ESRCH.
        unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
    }
    let (status, err) = match waited {
        Err(_) => {
            let _ = child.wait().await;
            return Err(HookError::Timeout(run.hook.timeout));
        }
        Ok((status, err)) => (status.map_err(HookError::Wait)?, err),
    };
    if status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&err);
        let tail: String = stderr
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(HookError::Failed {
            status,
            stderr: tail.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(alias: &str, old: Option<&str>, new: &str) -> HookRun {
        HookRun {
            hook: Hook {
                argv: vec!["/bin/true".into()],
                timeout: std::time::Duration::from_secs(1),
                env: vec![],
            },
            alias: alias.into(),
            old_server: old.map(Into::into),
            old_target: old.map(|o| format!("{o}.test.")),
            new_server: new.into(),
            new_target: format!("{new}.test."),
            reason: "r".into(),
        }
    }

    #[test]
    fn piled_up_changes_keep_the_latest_per_alias() {
        let mut q = Queue::default();
        q.push(run("a.", Some("x"), "y"));
        q.push(run("b.", None, "x"));
        q.push(run("a.", Some("y"), "z"));
        q.push(run("a.", Some("z"), "w"));
        assert_eq!(q.len(), 2);
        let first = q.pop().unwrap();
        assert_eq!(
            (
                first.alias.as_str(),
                first.old_server.as_deref(),
                first.new_server.as_str()
            ),
            ("a.", Some("x"), "w")
        );
        assert_eq!(q.pop().unwrap().alias, "b.");
        assert!(q.pop().is_none());
    }

    #[test]
    fn only_listed_variables_pass() {
        std::env::set_var("DNS_SIDECAR_HOOKTEST_SECRET", "s");
        std::env::set_var("HOOKTEST_PASS_ME", "p");
        let env = passed_env(&["HOOKTEST_PASS*".into(), "NO_SUCH_VAR_HERE".into()]);
        assert_eq!(env, vec![("HOOKTEST_PASS_ME".to_string(), "p".to_string())]);
    }
}
