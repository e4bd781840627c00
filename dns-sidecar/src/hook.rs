//! On-change hooks: a command run when an alias changes target, e.g. to keep
//! an Azure Private DNS CNAME in step.
//!
//! * The external record converges on what DNS answers: the last target
//!   whose hook succeeded is the alias's *record* (kept in the state file),
//!   and a hook runs whenever DNS answers something else, at start, after a
//!   change, after a reload (a server's `target` renamed included); a failed
//!   run is repeated after a back-off while DNS still differs (see
//!   [`reconcile`]). OLD is always the record, never equal to NEW.
//! * One hook runs at a time. Changes that arrive while one runs are kept,
//!   one per alias: only the latest target waits, because the hook's job is
//!   to converge the external record, and running stale updates in between
//!   only delays that.
//! * Every run carries a sequence number (`DNS_SIDECAR_SEQ`) larger than
//!   any before it, also across restarts (it starts from the wall clock in
//!   microseconds), so the external side can refuse a stale write.
//! * The command starts with a cleared environment: only the
//!   `DNS_SIDECAR_*` variables below and those listed in `on_change_env`
//!   (default `PATH`, `HOME`), so the probe password and the admin token
//!   never reach it.
//! * It runs in its own process group. When it exits, at its timeout and at
//!   shutdown the whole group is killed (SIGKILL to the group) and the
//!   process reaped before anything else runs, so a child it started (`az`,
//!   `curl`) can never finish a stale update after a newer run.
//! * A failure is logged and counted, and never delays DNS answers or
//!   decisions.

#[cfg(test)]
mod properties;
pub(crate) mod reconcile;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::Hook;
use crate::metrics::ResultLabel;
use crate::shared::Shared;
use reconcile::{Confirmed, Reconciler, ToHooks};

/// One hook invocation. The command sees these in its environment as
/// `DNS_SIDECAR_ALIAS`, `DNS_SIDECAR_SEQ`, `DNS_SIDECAR_OLD_SERVER`,
/// `DNS_SIDECAR_OLD_TARGET` (both empty when no hook of this alias ever
/// succeeded), `DNS_SIDECAR_NEW_SERVER`, `DNS_SIDECAR_NEW_TARGET` and
/// `DNS_SIDECAR_REASON`.
#[derive(Debug, Clone)]
pub(crate) struct HookRun {
    pub(crate) hook: Hook,
    /// Larger than every run's before it.
    pub(crate) seq: u64,
    pub(crate) alias: String,
    pub(crate) old_server: Option<String>,
    pub(crate) old_target: Option<String>,
    pub(crate) new_server: String,
    pub(crate) new_target: String,
    pub(crate) reason: String,
}

/// Runs hooks as the engine's messages on `rx` require, until `shutdown`.
/// Every change of a record goes to the engine on `confirmed` (it persists
/// it; before a run starts, the runner waits for that). At `shutdown`
/// the run in progress is killed with its process group and reaped. The
/// channel is drained continuously (also while a hook runs), so the engine
/// never finds it full.
pub(crate) async fn runner(
    mut rx: mpsc::Receiver<ToHooks>,
    confirmed: mpsc::Sender<(Confirmed, Option<oneshot::Sender<()>>)>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let micros = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let mut rec = Reconciler::new(micros);
    let mut open = true;
    loop {
        if let Some((run, record)) = rec.next(Instant::now()) {
            // The state file says the external record may change before it
            // does, so that a crash in between repeats the run at start.
            let (ack, persisted) = oneshot::channel();
            if confirmed.send((record, Some(ack))).await.is_ok() {
                let _ = tokio::time::timeout(PERSIST_WAIT, persisted).await;
            }
            let result = execute(&run, &mut rx, &mut rec, &mut open, &shutdown).await;
            report(&run, &result, &shared);
            if let Some(c) = rec.finished(run.seq, result.is_ok(), Instant::now()) {
                // The engine drains this channel; it is gone only at shutdown.
                let _ = confirmed.send((c, None)).await;
            }
            if *shutdown.borrow() {
                return;
            }
            continue;
        }
        if !open {
            return;
        }
        let retry = rec.next_retry();
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => rec.apply(msg),
                None => open = false,
            },
            _ = sleep_until(retry) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

/// Runs one hook to its end, applying the engine's messages meanwhile
/// (`open` turns false when the channel closes).
async fn execute(
    run: &HookRun,
    rx: &mut mpsc::Receiver<ToHooks>,
    rec: &mut Reconciler,
    open: &mut bool,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), HookError> {
    info!(
        alias = run.alias.as_str(),
        seq = run.seq,
        old = run.old_target.as_deref().unwrap_or("-"),
        new = run.new_target.as_str(),
        reason = run.reason.as_str(),
        "on_change hook started"
    );
    let work = run_one(run, shutdown.clone());
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            msg = rx.recv(), if *open => match msg {
                Some(msg) => rec.apply(msg),
                None => *open = false,
            },
        }
    }
}

/// Counts and logs how a run ended.
fn report(run: &HookRun, result: &Result<(), HookError>, shared: &Shared) {
    let label = match result {
        Ok(()) => Some("ok"),
        Err(HookError::Timeout(_)) => Some("timeout"),
        // Neither a success nor the hook's failure.
        Err(HookError::Stopped) => None,
        Err(_) => Some("failed"),
    };
    if let Some(label) = label {
        shared
            .metrics
            .hook_runs
            .get_or_create(&ResultLabel { result: label.into() })
            .inc();
    }
    match result {
        Ok(()) => info!(
            alias = run.alias.as_str(),
            seq = run.seq,
            new = run.new_server.as_str(),
            "on_change hook succeeded"
        ),
        Err(HookError::Stopped) => {
            warn!(
                alias = run.alias.as_str(),
                seq = run.seq,
                new = run.new_server.as_str(),
                "on_change hook killed with its process group at shutdown; it runs again at the next start"
            )
        }
        Err(e) => {
            error!(alias = run.alias.as_str(), seq = run.seq, new = run.new_server.as_str(), error = %e, "on_change hook failed")
        }
    }
}

/// How long a run waits for the engine to persist that it may change the
/// external record (a hung disk must not stop hooks for good).
const PERSIST_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
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
    #[error("killed (with its process group) at shutdown")]
    Stopped,
}

/// The variables of our environment that `patterns` lets through
/// (exact names, or `PREFIX*`).
pub(crate) fn passed_env(patterns: &[String]) -> Vec<(String, String)> {
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

async fn run_one(run: &HookRun, mut shutdown: watch::Receiver<bool>) -> Result<(), HookError> {
    let mut cmd = command(run);
    if *shutdown.borrow() {
        return Err(HookError::Stopped);
    }
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        program: run.hook.argv[0].clone(),
        source,
    })?;
    // Kills the group however this function ends (dropped included).
    let group = Group(child.id());
    let mut stderr = child.stderr.take();
    let collect = collect_stderr(stderr.as_mut());
    let waited = tokio::select! {
        w = tokio::time::timeout(run.hook.timeout, async { tokio::join!(child.wait(), collect) }) => w.map_err(|_| HookError::Timeout(run.hook.timeout)),
        _ = crate::shutdown::stopped(&mut shutdown) => Err(HookError::Stopped),
    };
    // Whatever happened, nothing of the group may outlive this run; then
    // the process is reaped before the next run can start.
    group.kill();
    let (status, err) = match waited {
        Err(e) => {
            let _ = child.wait().await;
            return Err(e);
        }
        Ok((status, err)) => (status.map_err(HookError::Wait)?, err),
    };
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            status,
            stderr: stderr_tail(&err),
        })
    }
}

/// The hook's command: its argv, the cleared environment with only the
/// variables it may see, in its own process group.
fn command(run: &HookRun) -> tokio::process::Command {
    let argv = &run.hook.argv;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(passed_env(&run.hook.env))
        .env("DNS_SIDECAR_ALIAS", run.alias.trim_end_matches('.'))
        .env("DNS_SIDECAR_SEQ", run.seq.to_string())
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
        // Its own process group (pgid = its pid), so the timeout and the
        // shutdown can kill everything it started.
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Reads the hook's stderr to its end, keeping the last [`STDERR_KEEP`] bytes.
async fn collect_stderr(stderr: Option<&mut tokio::process::ChildStderr>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(s) = stderr {
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
}

/// The last 500 characters of a failed hook's stderr, for its error.
fn stderr_tail(err: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(err);
    let tail: String = stderr
        .chars()
        .rev()
        .take(500)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    tail.trim().to_string()
}

/// A hook's process group (its pgid is the hook's pid), killed with
/// SIGKILL when asked and again when dropped.
struct Group(Option<u32>);

impl Group {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            // SAFETY: plain syscall; a group that no longer exists gives ESRCH.
            unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::reconcile::ToHooks;
    use super::*;
    use crate::decision::snapshot::HookedTarget;

    fn want(alias: &str, new: &str) -> ToHooks {
        ToHooks::Want {
            alias: alias.into(),
            hook: Hook {
                argv: vec!["/bin/true".into()],
                timeout: std::time::Duration::from_secs(1),
                env: vec![],
            },
            new: target(new),
            reason: "r".into(),
        }
    }

    fn target(server: &str) -> HookedTarget {
        HookedTarget {
            server: server.into(),
            target: format!("{server}.test."),
        }
    }

    #[test]
    fn piled_up_changes_keep_the_latest_per_alias() {
        let now = Instant::now();
        let mut q = Reconciler::new(1);
        q.apply(ToHooks::Restored(vec![(
            "a.".into(),
            reconcile::Record {
                hooked: Some(target("x")),
                unsure: None,
            },
        )]));
        q.apply(want("a.", "y"));
        q.apply(want("b.", "x"));
        q.apply(want("a.", "z"));
        q.apply(want("a.", "w"));
        assert_eq!(q.pending().len(), 2);
        let (first, _) = q.next(now).unwrap();
        assert_eq!(
            (
                first.alias.as_str(),
                first.old_server.as_deref(),
                first.new_server.as_str()
            ),
            ("a.", Some("x"), "w")
        );
        q.finished(first.seq, true, now).unwrap();
        let (second, _) = q.next(now).unwrap();
        assert_eq!(second.alias, "b.");
        assert!(second.seq > first.seq);
        q.finished(second.seq, true, now).unwrap();
        assert!(q.next(now).is_none());
    }

    fn shell(script: String, seq: u64) -> HookRun {
        HookRun {
            hook: Hook {
                argv: vec!["/bin/sh".into(), "-c".into(), script],
                timeout: std::time::Duration::from_secs(30),
                env: vec!["PATH".into()],
            },
            seq,
            alias: "a.".into(),
            old_server: None,
            old_target: None,
            new_server: "x".into(),
            new_target: "x.test.".into(),
            reason: "r".into(),
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("dns-sidecar-hook-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A hook that exits 0 but left a child to write later: the child dies
    /// with the group when the hook exits, so it never writes after a newer run.
    #[tokio::test]
    async fn a_child_left_behind_by_a_finished_hook_never_writes() {
        let d = scratch("finished");
        let late = d.join("late");
        let script = format!("(sleep 1; echo late > {}) 2>/dev/null & exit 0", late.display());
        let (_stop, rx) = watch::channel(false);
        run_one(&shell(script, 1), rx).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert!(!late.exists(), "the child wrote after its hook ended");
    }

    /// At shutdown the running hook and its children are killed and reaped
    /// at once; the run reports `Stopped` and the seq reaches the command.
    #[tokio::test]
    async fn shutdown_kills_the_running_hook_with_its_group() {
        let d = scratch("shutdown");
        let (pid, seq) = (d.join("pid"), d.join("seq"));
        let script = format!(
            "echo $DNS_SIDECAR_SEQ > {}; sleep 300 & echo $! > {}; wait",
            seq.display(),
            pid.display()
        );
        let (stop, rx) = watch::channel(false);
        let run = shell(script, 42);
        let work = tokio::spawn(async move { run_one(&run, rx).await });
        let started = Instant::now();
        let child: u32 = loop {
            if let Some(p) = std::fs::read_to_string(&pid).ok().and_then(|t| t.trim().parse().ok()) {
                break p;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the hook did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        stop.send(true).unwrap();
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), work)
            .await
            .expect("stopped promptly")
            .unwrap();
        assert!(matches!(result, Err(HookError::Stopped)), "{result:?}");
        assert_eq!(std::fs::read_to_string(&seq).unwrap(), "42\n");
        let gone = |p: u32| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| {
                s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        };
        let t = Instant::now();
        while !gone(child) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "the hook's child survived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn only_listed_variables_pass() {
        std::env::set_var("DNS_SIDECAR_HOOKTEST_SECRET", "s");
        std::env::set_var("HOOKTEST_PASS_ME", "p");
        let env = passed_env(&["HOOKTEST_PASS*".into(), "NO_SUCH_VAR_HERE".into()]);
        assert_eq!(env, vec![("HOOKTEST_PASS_ME".to_string(), "p".to_string())]);
    }
}
