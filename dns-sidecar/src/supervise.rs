//! Supervision of the long-lived tasks and threads: the engine, every
//! prober, the hook runner, the targets refresher, the DNS listeners (UDP
//! worker and relay threads, TCP accept loops, upstream health checks) and
//! the admin listener.
//!
//! Each of them runs for the life of the process, so one that ends or panics
//! while nobody asked it to stop is a broken process: an engine that died
//! leaves every alias frozen (or pending) while the listeners still answer.
//! Restarting a task in place would hide the bug and could restart it into
//! the same state, so the policy is the service manager's: the death is
//! logged at ERROR naming the task, `/healthz` fails from that moment (see
//! [`Health`]), and [`crate::Running::died`] resolves so the binary stops and
//! exits non-zero for systemd or the kubelet to restart it.
//!
//! A task's end is intentional when one of its stop signals is `true`: the
//! process-wide one, or a prober's own (a reload stops and restarts
//! probers). Tasks cancelled by an abort are dropped, never reported.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, watch};
use tracing::error;

/// A long-lived task or thread that ended while the process was not stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// Which task, e.g. `engine`, `prober a`, `dns-udp-0 thread`.
    pub task: String,
    pub(crate) cause: Cause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cause {
    /// It returned although nothing asked it to stop.
    Ended,
    /// It panicked, with the panic's message.
    Panicked(String),
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            Cause::Ended => write!(f, "task `{}` ended unexpectedly", self.task),
            Cause::Panicked(msg) => write!(f, "task `{}` panicked: {msg}", self.task),
        }
    }
}

/// What `/healthz` reports: healthy until the first task death, or while
/// stopping. Read by the admin listener, written by the supervisor.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// The first death, or the first panic after it (see [`Health::fail`]).
    failed: Mutex<Option<Death>>,
    stopping: std::sync::atomic::AtomicBool,
}

impl Health {
    /// `Err(reason)` once a task died or the process is stopping.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(why) = &*self.failed.lock().unwrap_or_else(PoisonError::into_inner) {
            return Err(format!("failing: {why}; the process is exiting"));
        }
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("stopping".into());
        }
        Ok(())
    }

    /// Keeps the first death, except that a panic replaces an end: a task
    /// that panics drops its channels, and the tasks on their other side
    /// may end (and be reported) first, but the panic is the cause.
    fn fail(&self, death: &Death) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed
            .as_ref()
            .is_none_or(|f| f.cause == Cause::Ended && death.cause != Cause::Ended)
        {
            *failed = Some(death.clone());
        }
    }

    /// The death `/healthz` names, if any.
    pub(crate) fn death(&self) -> Option<Death> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Marks the process as going down (a graceful stop).
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Hands out supervised wrappers; cheap to clone. Deaths go to the receiver
/// returned by [`Supervisor::new`].
#[derive(Clone)]
pub struct Supervisor {
    deaths: mpsc::UnboundedSender<Death>,
    stop: watch::Receiver<bool>,
    health: Arc<Health>,
}

impl Supervisor {
    /// `stop` is the process-wide stop signal; `health` is failed at the
    /// first death.
    pub(crate) fn new(
        stop: watch::Receiver<bool>,
        health: Arc<Health>,
    ) -> (Supervisor, mpsc::UnboundedReceiver<Death>) {
        let (deaths, rx) = mpsc::unbounded_channel();
        (Supervisor { deaths, stop, health }, rx)
    }

    /// Whether the process-wide stop was requested.
    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Wraps a long-lived task: its end or panic while not stopping is
    /// reported. Spawn the result where the task would have been spawned.
    pub fn watch<F>(&self, task: impl Into<String>, fut: F) -> Watched<F>
    where
        F: Future<Output = ()>,
    {
        self.watch_stoppable(task, None, fut)
    }

    /// Like [`Supervisor::watch`] for a task that also has a stop signal of
    /// its own (a prober stopped by a reload): its end after that signal is
    /// not a death.
    pub(crate) fn watch_stoppable<F>(
        &self,
        task: impl Into<String>,
        own: Option<watch::Receiver<bool>>,
        fut: F,
    ) -> Watched<F>
    where
        F: Future<Output = ()>,
    {
        Watched {
            task: task.into(),
            inner: Some(Box::pin(fut)),
            own,
            sup: self.clone(),
        }
    }

    /// Reports that `task` ended; ignored (a normal end) when stopping or
    /// when `own_stop` says it was asked to stop. A panic during a stop is
    /// still logged.
    pub(crate) fn report(&self, task: &str, cause: Cause, own_stop: Option<&watch::Receiver<bool>>) {
        let asked = self.stopping() || own_stop.is_some_and(|s| *s.borrow());
        let death = Death {
            task: task.to_string(),
            cause,
        };
        if asked {
            if let Cause::Panicked(_) = death.cause {
                error!(task, error = %death, "a task panicked while stopping");
            }
            return;
        }
        error!(task, error = %death, "a long-lived task died; the process stops and exits non-zero so that it is restarted");
        self.health.fail(&death);
        let _ = self.deaths.send(death);
    }

    /// Reports a finished std thread by its join result (the panic payload
    /// when it panicked).
    pub(crate) fn report_thread(&self, task: &str, joined: std::thread::Result<()>) {
        let cause = match joined {
            Ok(()) => Cause::Ended,
            Err(payload) => Cause::Panicked(panic_message(payload.as_ref())),
        };
        self.report(task, cause, None);
    }
}

/// The text of a panic payload (`panic!` gives `&str` or `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".into()
    }
}

/// A supervised task; see [`Supervisor::watch`]. A panic inside it is
/// caught, reported, and ends the task (instead of being swallowed by the
/// runtime's join handle, which nobody reads while the task should run).
pub struct Watched<F> {
    task: String,
    inner: Option<Pin<Box<F>>>,
    own: Option<watch::Receiver<bool>>,
    sup: Supervisor,
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // `Watched` is `Unpin`: the inner future is boxed.
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(());
        };
        let cause = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(())) => Cause::Ended,
            Err(payload) => Cause::Panicked(panic_message(payload.as_ref())),
        };
        // Reported before the task's state is dropped, so a task that ends
        // because this one dropped its channel is reported second.
        this.sup.report(&this.task, cause, this.own.as_ref());
        this.inner = None;
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn supervisor() -> (
        Supervisor,
        mpsc::UnboundedReceiver<Death>,
        watch::Sender<bool>,
        Arc<Health>,
    ) {
        let (stop, stop_rx) = watch::channel(false);
        let health = Arc::new(Health::default());
        let (sup, deaths) = Supervisor::new(stop_rx, health.clone());
        (sup, deaths, stop, health)
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_by_name_and_fails_health() {
        let (sup, mut deaths, _stop, health) = supervisor();
        assert_eq!(health.check(), Ok(()));
        tokio::spawn(sup.watch("engine", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("boom at start-up");
        }));
        let d = tokio::time::timeout(Duration::from_secs(5), deaths.recv())
            .await
            .expect("reported")
            .unwrap();
        assert_eq!(d.task, "engine");
        assert_eq!(d.cause, Cause::Panicked("boom at start-up".into()));
        let why = health.check().unwrap_err();
        assert!(why.contains("engine") && why.contains("boom at start-up"), "{why}");
    }

    #[tokio::test]
    async fn a_task_that_returns_unasked_is_a_death_but_not_after_a_stop() {
        let (sup, mut deaths, _stop, health) = supervisor();
        tokio::spawn(sup.watch("hook runner", async {}));
        let d = deaths.recv().await.unwrap();
        assert_eq!((d.task.as_str(), d.cause), ("hook runner", Cause::Ended));
        assert!(health.check().is_err());
        // After the process-wide stop, ends (even panics) are not deaths.
        let (sup, mut deaths, stop, health) = supervisor();
        stop.send(true).unwrap();
        tokio::spawn(sup.watch("engine", async {})).await.unwrap();
        tokio::spawn(sup.watch("admin", async { panic!("late") }))
            .await
            .unwrap();
        assert_eq!(health.check(), Ok(()), "health is not failed by a stop");
        assert!(deaths.try_recv().is_err(), "nothing reported while stopping");
    }

    #[tokio::test]
    async fn a_prober_stopped_by_its_own_signal_is_not_a_death() {
        let (sup, mut deaths, _stop, health) = supervisor();
        let (own, own_rx) = watch::channel(false);
        let mut rx = own_rx.clone();
        let task = tokio::spawn(sup.watch_stoppable("prober a", Some(own_rx), async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        own.send(true).unwrap();
        task.await.unwrap();
        assert!(deaths.try_recv().is_err());
        assert_eq!(health.check(), Ok(()));
        // The same prober ending on its own is one.
        let (_own, own_rx) = watch::channel(false);
        tokio::spawn(sup.watch_stoppable("prober b", Some(own_rx), async {}));
        assert_eq!(deaths.recv().await.unwrap().task, "prober b");
    }

    #[test]
    fn health_names_the_panic_rather_than_the_ends_it_caused() {
        let (sup, _deaths, _stop, health) = supervisor();
        sup.report("prober a", Cause::Ended, None);
        sup.report("engine", Cause::Panicked("bad since".into()), None);
        sup.report("hook runner", Cause::Ended, None);
        sup.report("admin listener", Cause::Panicked("later".into()), None);
        assert_eq!(health.death().unwrap().task, "engine");
        assert!(health.check().unwrap_err().contains("engine"));
    }

    #[tokio::test]
    async fn an_aborted_task_is_not_reported() {
        let (sup, mut deaths, _stop, _) = supervisor();
        let t = tokio::spawn(sup.watch("engine", std::future::pending()));
        t.abort();
        assert!(t.await.unwrap_err().is_cancelled());
        assert!(deaths.try_recv().is_err());
    }

    #[test]
    fn a_panicking_thread_is_reported_with_its_message() {
        let (sup, mut deaths, _stop, _) = supervisor();
        let t = std::thread::spawn(|| panic!("worker {} failed", 3));
        sup.report_thread("dns-udp-0 thread", t.join());
        let d = deaths.try_recv().unwrap();
        assert_eq!(d.cause, Cause::Panicked("worker 3 failed".into()));
        assert_eq!(d.to_string(), "task `dns-udp-0 thread` panicked: worker 3 failed");
    }
}
