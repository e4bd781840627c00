//! Probe passwords and tokens, kept fresh off the probe path.
//!
//! Every server's prober holds a [`Credential`]: a handle on the current
//! password of its source, read without waiting (an `ArcSwap`). One
//! background task per distinct source ([`Registry`]) fetches it and keeps it
//! fresh:
//! * `password_env`: fixed, no task;
//! * `password_file` ([`mod@file`]): read at start, again when the file changes
//!   and when the server refuses the password;
//! * `password_command` ([`command`]): run at start, every `password_refresh`
//!   and when the server refuses the password;
//! * `entra_identity` ([`imds`], [`workload`]): a Microsoft Entra ID token,
//!   fetched again ahead of its expiry ([`refresh_after`]).
//!
//! A refusal ([`Credential::refused`]) asks for a new value, at most once
//! every [`REFUSAL_GAP`]. A failed refresh keeps the current value until it
//! expires and is retried with a backoff ([`retry_after`]); the failures of
//! one episode are one WARN, and the recovery one INFO ([`Episode`]). The
//! value is never logged, never in `/status` and never given to hooks:
//! [`Secret`]'s `Debug` prints `***`, and errors describe, never quote.

pub(crate) mod command;
pub(crate) mod endpoint;
pub(crate) mod file;
mod http;
pub(crate) mod imds;
mod refresher;
pub(crate) mod token;
pub(crate) mod workload;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{watch, Notify};
use tracing::warn;

use crate::config::{PasswordSource, Secret};
use crate::metrics::CredentialResult;
use crate::supervise::Supervisor;
use refresher::{Fetcher, Refresher};

/// Least time between two fetches asked for by refusals.
pub(crate) const REFUSAL_GAP: Duration = Duration::from_secs(3);

/// How often a password file is checked for a change.
pub(crate) const FILE_POLL: Duration = Duration::from_secs(1);

/// Longest wait between two attempts of a failing refresh.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The current value of one source.
struct Current {
    secret: Secret,
    /// `None`: does not expire (a password).
    expires: Option<Instant>,
}

/// What a source's task shares with the probers.
struct Slot {
    /// For messages: `managed identity`, `password_file /run/...`.
    source: String,
    value: ArcSwapOption<Current>,
    /// Why the last fetch failed (cleared by a success).
    problem: ArcSwapOption<String>,
    refused: Notify,
    /// Wakes [`Credential::first_fetch`].
    updated: Notify,
}

/// A prober's handle on its password source. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Credential {
    slot: Arc<Slot>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({})", self.slot.source)
    }
}

impl Credential {
    fn new(source: &PasswordSource) -> Credential {
        Credential {
            slot: Arc::new(Slot {
                source: source.to_string(),
                value: ArcSwapOption::empty(),
                problem: ArcSwapOption::empty(),
                refused: Notify::new(),
                updated: Notify::new(),
            }),
        }
    }

    /// A handle without a refresher: `password_env`'s value, a password
    /// file read now; other sources have no value (used by probers built
    /// outside a [`Registry`], e.g. in tests).
    pub(crate) fn detached(source: &PasswordSource) -> Credential {
        let c = Credential::new(source);
        match source {
            PasswordSource::Env { value, .. } => c.set(value.clone(), None),
            PasswordSource::File(p) => match file::Watched::new(p.clone()).read() {
                Ok(s) => c.set(s, None),
                Err(e) => c.fail(e),
            },
            _ => c.fail("no refresher runs for this source".into()),
        }
        c
    }

    fn set(&self, secret: Secret, lifetime: Option<Duration>) {
        self.slot.value.store(Some(Arc::new(Current {
            secret,
            expires: lifetime.map(|l| Instant::now() + l),
        })));
        self.slot.problem.store(None);
        self.slot.updated.notify_waiters();
    }

    fn fail(&self, problem: String) {
        self.slot.problem.store(Some(Arc::new(problem)));
        self.slot.updated.notify_waiters();
    }

    /// Whether the first fetch is still under way (no value, no failure yet).
    fn pending(&self) -> bool {
        self.slot.value.load().is_none() && self.slot.problem.load().is_none()
    }

    /// Returns once the first fetch has ended, well or not. Only the
    /// first probe of a prober waits here (bounded by its deadline): it
    /// cannot log in before, and reporting "no token yet" would mark a
    /// healthy server down at every start.
    pub(crate) async fn first_fetch(&self) {
        loop {
            let updated = self.slot.updated.notified();
            if !self.pending() {
                return;
            }
            updated.await;
        }
    }

    /// The password to log in with now, or why there is none (never waits).
    pub(crate) fn current(&self) -> Result<Secret, String> {
        let problem = self.slot.problem.load_full();
        let source = &self.slot.source;
        match self.slot.value.load_full() {
            Some(c) if c.expires.is_none_or(|e| Instant::now() < e) => Ok(c.secret.clone()),
            Some(c) => {
                let ago = c.expires.map_or(0, |e| e.elapsed().as_secs());
                Err(match problem {
                    Some(p) => format!("the token from {source} expired {ago}s ago and refreshing it fails: {p}"),
                    None => format!("the token from {source} expired {ago}s ago; a new one is being fetched"),
                })
            }
            None => Err(match problem {
                Some(p) => format!("no password from {source}: {p}"),
                None => format!("no password from {source} yet (the first fetch is under way)"),
            }),
        }
    }

    /// The server refused the password: fetch a new one (rate-limited).
    pub(crate) fn refused(&self) {
        self.slot.refused.notify_one();
    }

    /// The source, for messages (`managed identity`).
    pub(crate) fn source(&self) -> &str {
        &self.slot.source
    }

    /// Why the last refresh failed, if it did.
    pub(crate) fn problem(&self) -> Option<String> {
        self.slot.problem.load_full().map(|p| (*p).clone())
    }
}

/// When to refresh a token that lives `lifetime`: at 2/3 of its life or 5
/// minutes before it expires, whichever comes first, but not before half
/// of its life (a short-lived token would otherwise be fetched
/// continuously), and not more often than every 500 ms.
pub(crate) fn refresh_after(lifetime: Duration) -> Duration {
    let two_thirds = lifetime * 2 / 3;
    let early = lifetime.saturating_sub(Duration::from_secs(300));
    two_thirds.min(early).max(lifetime / 2).max(Duration::from_millis(500))
}

/// How long to wait after the `failures`-th failure in a row: 1 s doubling
/// up to 30 s, but, while the current token still has `remaining` life,
/// at most a third of it (at least 200 ms), so a short outage is bridged
/// before the token expires.
pub(crate) fn retry_after(failures: u32, remaining: Option<Duration>) -> Duration {
    let exp = Duration::from_secs(1 << failures.saturating_sub(1).min(5)).min(MAX_RETRY);
    match remaining {
        Some(r) if !r.is_zero() => exp.min((r / 3).max(Duration::from_millis(200))),
        _ => exp,
    }
}

/// At most one attempt per `gap`.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    gap: Duration,
    last: Option<Instant>,
}

impl RateLimit {
    pub(crate) fn new(gap: Duration) -> RateLimit {
        RateLimit { gap, last: None }
    }

    /// Records an attempt at `now`.
    pub(crate) fn note(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// `Ok` (and recorded) if an attempt may start at `now`, else the
    /// instant from which it may.
    pub(crate) fn allow(&mut self, now: Instant) -> Result<(), Instant> {
        match self.last {
            Some(l) if now < l + self.gap => Err(l + self.gap),
            _ => {
                self.last = Some(now);
                Ok(())
            }
        }
    }
}

/// Failures in a row: the first of an episode is reported (WARN), the
/// others are not, and the success that ends it is (INFO).
#[derive(Debug, Default)]
pub(crate) struct Episode {
    failures: u32,
}

impl Episode {
    /// A failure; whether it starts an episode.
    pub(crate) fn failed(&mut self) -> bool {
        self.failures += 1;
        self.failures == 1
    }

    /// A success; the number of failures of the episode it ends, if any.
    pub(crate) fn succeeded(&mut self) -> Option<u32> {
        let n = std::mem::take(&mut self.failures);
        (n > 0).then_some(n)
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

struct Running {
    cred: Credential,
    stop: watch::Sender<bool>,
}

/// One refresher task per distinct source, shared by the servers that use it.
pub(crate) struct Registry {
    running: HashMap<PasswordSource, Running>,
    supervisor: Supervisor,
    metrics: Family<CredentialResult, Counter>,
}

impl Registry {
    pub(crate) fn new(supervisor: Supervisor, metrics: Family<CredentialResult, Counter>) -> Registry {
        Registry {
            running: HashMap::new(),
            supervisor,
            metrics,
        }
    }

    /// The handle on `source`, starting its refresher if none runs.
    pub(crate) fn get(&mut self, source: &PasswordSource) -> Credential {
        if let PasswordSource::Env { .. } = source {
            return Credential::detached(source);
        }
        if let Some(r) = self.running.get(source) {
            return r.cred.clone();
        }
        let cred = Credential::new(source);
        let kind = source.kind();
        let counter = |result: &str| {
            self.metrics
                .get_or_create(&CredentialResult {
                    source: kind.to_string(),
                    result: result.to_string(),
                })
                .clone()
        };
        let mut refresher = Refresher {
            cred: cred.clone(),
            fetcher: Fetcher::new(source),
            kind,
            episode: Episode::default(),
            limit: RateLimit::new(REFUSAL_GAP),
            ok: counter("ok"),
            failed: counter("error"),
        };
        let now = Instant::now();
        let mut due = now;
        if let Fetcher::File(w) = &mut refresher.fetcher {
            // Synchronously, so the first probe has it (a local file).
            refresher.limit.note(now);
            match w.read() {
                Ok(s) => {
                    refresher.ok.inc();
                    cred.set(s, None);
                    due = now + FILE_POLL;
                }
                Err(e) => {
                    refresher.failed.inc();
                    refresher.episode.failed();
                    warn!(source = %cred.slot.source, error = %e, "credential refresh failed; retrying");
                    cred.fail(e);
                    due = now + retry_after(1, None);
                }
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(self.supervisor.watch_stoppable(
            format!("credential refresher ({})", cred.slot.source),
            Some(stop_rx.clone()),
            refresher.run(stop_rx, due),
        ));
        self.running.insert(
            source.clone(),
            Running {
                cred: cred.clone(),
                stop,
            },
        );
        cred
    }

    /// Stops the refreshers of sources not in `used`.
    pub(crate) fn retain<'a>(&mut self, used: impl IntoIterator<Item = &'a PasswordSource>) {
        let used: Vec<&PasswordSource> = used.into_iter().collect();
        self.running.retain(|s, r| {
            let keep = used.contains(&s);
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
    }

    /// Stops every refresher.
    pub(crate) fn stop_all(&mut self) {
        self.retain([]);
    }
}

#[cfg(test)]
mod tests;
