//! The background task of one password source: how the source is fetched
//! ([`Fetcher`]) and the loop that fetches it on schedule, after a failure's
//! backoff, on a changed file or on a refusal ([`Refresher`]).

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{
    command, endpoint, file, imds, refresh_after, retry_after, workload, Credential, Episode, RateLimit, FILE_POLL,
    MAX_RETRY,
};
use crate::config::{EntraIdentity, PasswordSource, Secret};

/// How a source is fetched.
pub(super) enum Fetcher {
    File(file::Watched),
    Command {
        argv: Vec<String>,
        refresh: Duration,
    },
    Imds(endpoint::Imds),
    Workload(endpoint::Workload),
    /// The environment the source needs is missing (checked again at every attempt).
    Entra(EntraIdentity, Option<String>),
}

impl Fetcher {
    pub(super) fn new(source: &PasswordSource) -> Fetcher {
        match source {
            PasswordSource::File(p) => Fetcher::File(file::Watched::new(p.clone())),
            PasswordSource::Command { argv, refresh } => Fetcher::Command {
                argv: argv.clone(),
                refresh: *refresh,
            },
            PasswordSource::Entra { identity, client_id } => Fetcher::Entra(*identity, client_id.clone()),
            PasswordSource::Env { .. } => unreachable!("password_env needs no fetcher"),
        }
    }

    /// One fetch: the value and its lifetime (`None`: does not expire).
    async fn fetch(&mut self) -> Result<(Secret, Option<Duration>), String> {
        if let Fetcher::Entra(identity, client_id) = self {
            *self = match identity {
                EntraIdentity::ManagedIdentity => Fetcher::Imds(endpoint::Imds::from_env(client_id.clone())?),
                EntraIdentity::WorkloadIdentity => Fetcher::Workload(endpoint::Workload::from_env(client_id.clone())?),
            };
        }
        match self {
            Fetcher::File(w) => w.read().map(|s| (s, None)),
            Fetcher::Command { argv, .. } => command::run(argv, command::TIMEOUT).await.map(|s| (s, None)),
            Fetcher::Imds(i) => imds::fetch(i).await.map(|t| (t.secret, Some(t.lifetime))),
            Fetcher::Workload(w) => workload::fetch(w).await.map(|t| (t.secret, Some(t.lifetime))),
            Fetcher::Entra(..) => unreachable!("replaced above"),
        }
    }

    /// When to fetch again after a success.
    fn next_after(&self, lifetime: Option<Duration>) -> Duration {
        match (self, lifetime) {
            (_, Some(l)) => refresh_after(l),
            (Fetcher::File(_), None) => FILE_POLL,
            (Fetcher::Command { refresh, .. }, None) => *refresh,
            (_, None) => MAX_RETRY,
        }
    }
}

/// The refresh loop of one source.
pub(super) struct Refresher {
    pub(super) cred: Credential,
    pub(super) fetcher: Fetcher,
    pub(super) kind: &'static str,
    pub(super) episode: Episode,
    pub(super) limit: RateLimit,
    pub(super) ok: Counter,
    pub(super) failed: Counter,
}

impl Refresher {
    /// Fetches at `due` and then as the source's schedule, a failure's
    /// backoff, a changed file or a refusal say, until `stop`.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>, mut due: Instant) {
        loop {
            let refused = tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => false,
                _ = self.cred.slot.refused.notified() => true,
                _ = crate::shutdown::stopped(&mut stop) => return,
            };
            let now = Instant::now();
            if refused {
                if let Err(not_before) = self.limit.allow(now) {
                    debug!(source = %self.cred.slot.source, "password refused; fetching again once the rate limit allows");
                    due = due.min(not_before);
                    continue;
                }
            } else {
                if let Fetcher::File(w) = &self.fetcher {
                    if self.episode.failures() == 0 && !w.changed() {
                        due = now + FILE_POLL;
                        continue;
                    }
                }
                self.limit.note(now);
            }
            due = Instant::now() + self.attempt().await;
        }
    }

    /// One fetch, stored or reported; the time until the next.
    async fn attempt(&mut self) -> Duration {
        let source = self.cred.slot.source.clone();
        match self.fetcher.fetch().await {
            Ok((secret, lifetime)) => {
                self.ok.inc();
                self.cred.set(secret, lifetime);
                if let Some(n) = self.episode.succeeded() {
                    info!(source = %source, failures = n, "credential refresh recovered");
                }
                debug!(source = %source, kind = self.kind, lifetime = ?lifetime, "credential refreshed");
                self.fetcher.next_after(lifetime)
            }
            Err(e) => {
                self.failed.inc();
                self.cred.fail(e.clone());
                let remaining = self
                    .cred
                    .slot
                    .value
                    .load()
                    .as_ref()
                    .and_then(|c| c.expires)
                    .map(|x| x.saturating_duration_since(Instant::now()));
                if self.episode.failed() {
                    warn!(
                        source = %source,
                        error = %e,
                        "credential refresh failed; the probes keep the current password until it expires, retrying"
                    );
                } else {
                    debug!(source = %source, error = %e, failures = self.episode.failures(), "credential refresh failed again");
                }
                retry_after(self.episode.failures(), remaining)
            }
        }
    }
}
