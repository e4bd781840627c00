//! Reader aliases with a lag limit: a standby further behind the primary
//! than the alias's `max_lag` (bytes) or `max_lag_time` does not match.
//!
//! **Against what.** A standby's lag is measured against the newest primary
//! position the decision knows among its *peers*, the servers that share an
//! alias with it (so one sidecar can serve several clusters): a peer that is
//! not in recovery, on the newest timeline, with the highest WAL position
//! (`pg_current_wal_lsn()`) of its last good probe. A primary that goes down
//! stays the reference with its last position, so during an outage a standby
//! that replayed everything the primary had when last seen counts as current.
//! Comparing against the standby's own received position instead would miss
//! a standby that has stopped receiving (a broken network, a slot problem).
//!
//! * **Bytes**: the reference position minus the standby's replay position
//!   (`pg_last_wal_replay_lsn()`), 0 when the standby is ahead.
//! * **Time**: how long ago the reference primary was last seen at or before
//!   the position the standby has replayed, from the primary positions the
//!   probes saw ([`WalHistory`]): zero while the standby has replayed what
//!   the primary had at its last probe, however long the primary has been
//!   idle (unlike `now() - pg_last_xact_replay_timestamp()`, which grows
//!   whenever nothing is written), and growing with the clock while the
//!   standby is stuck behind.
//!
//! Both probes are at most one probe interval old (or one incident interval;
//! longer only while a probe is failing), so the byte figure is off by at
//! most the WAL written, or replayed, in one interval; the time figure is low
//! by at most one interval (the primary may have written since its last
//! probe) and high by at most about two (the primary crossed the standby's
//! position somewhere between two of its probes, and the standby may have
//! replayed more since its own), or by 1/32 of `max_lag_time`, the spacing of
//! the kept positions, when that is larger.
//!
//! A lag that cannot be measured (no primary position known among the
//! peers, WAL functions revoked) does not qualify: the alias never serves a
//! standby of unknown staleness. Until the first probe round is complete
//! (a primary may not have reported yet), and just after start or a failover
//! for the time (it needs a second probe of the primary to place a standby
//! that trails it), the standby waits, without an episode.
//!
//! **Episodes.** A standby seen over the limit is kept off at once, and only
//! qualifies again after `rise` good probes of it in a row within the limit
//! (no flapping at the edge). Each episode is one event each way.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{truth, State};
use crate::config::{Config, MaxLag, ServerId};

/// Recent WAL positions of a primary: `(when last seen at it, position)`,
/// oldest first, positions increasing. Entries are at least 1/32 of the
/// window apart (but the newest), and one entry older than the window is
/// kept, so a standby behind every entry is known to be more than the window
/// behind. Bounded: at most 35 entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WalHistory(VecDeque<(Instant, u64)>);

impl WalHistory {
    /// The primary was at `lsn` at `at`. `window` is the longest
    /// `max_lag_time` configured.
    pub(crate) fn record(&mut self, at: Instant, lsn: u64, window: Duration) {
        match self.0.back_mut() {
            // Went backwards: another lineage (a server rebuilt and promoted);
            // what was kept says nothing about it.
            Some(&mut (_, last)) if lsn < last => {
                self.0.clear();
                self.0.push_back((at, lsn));
            }
            Some(last) if lsn == last.1 => last.0 = last.0.max(at),
            _ => {
                // The newest entry is replaced while it is too close to the
                // one before: what is lost (the primary was at or below its
                // position at its time) is then answered by the older entry,
                // i.e. with more lag, by less than the spacing.
                let n = self.0.len();
                if n >= 2 && self.0[n - 1].0.saturating_duration_since(self.0[n - 2].0) < window / 32 {
                    self.0.pop_back();
                }
                self.0.push_back((at, lsn));
            }
        }
        while self.0.len() > 2 && at.saturating_duration_since(self.0[1].0) > window {
            self.0.pop_front();
        }
    }

    /// How long before `now` the primary was last seen at or before
    /// `replayed`: `Ok(Duration::ZERO)` when `replayed` is at or past the
    /// newest position; `Err(d)` when it is behind every entry (more than `d`
    /// behind); `None` when nothing was recorded.
    pub(crate) fn behind(&self, replayed: u64, now: Instant) -> Option<Result<Duration, Duration>> {
        let &(_, newest) = self.0.back()?;
        if replayed >= newest {
            return Some(Ok(Duration::ZERO));
        }
        Some(match self.0.iter().rev().find(|&&(_, lsn)| lsn <= replayed) {
            Some(&(at, _)) => Ok(now.saturating_duration_since(at)),
            None => Err(now.saturating_duration_since(self.0[0].0)),
        })
    }

    /// Samples kept (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// How far a standby is behind its primary, as far as the probes tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lag {
    /// The primary it is measured against (`None`: no primary position known).
    pub(crate) primary: Option<ServerId>,
    /// WAL bytes behind (`None`: unknown).
    pub(crate) bytes: Option<u64>,
    /// Time behind: `Ok(exactly)`, `Err(more than)`; `None`: unknown (no
    /// history of the primary's positions, e.g. no `max_lag_time` anywhere).
    pub(crate) time: Option<Result<Duration, Duration>>,
}

/// A standby an alias keeps off for its lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lagging {
    pub(crate) server: ServerId,
    /// Good probes in a row within the limit since it was last over it.
    pub(crate) good: u32,
    /// When the first of those `good` probes was seen: `rise` is judged in
    /// time as well as in probes (see `decision::damping`).
    pub(crate) good_since: Option<Instant>,
    pub(crate) since: Instant,
    /// Why, as last measured: e.g. `20.0 MiB behind east (max_lag 16.0 MiB)`.
    pub(crate) reason: String,
    /// Not measurable yet (the time needs a second probe of the primary):
    /// no episode was reported, and the first measurement within the limit
    /// lets it in without `rise`.
    pub(crate) pending: bool,
}

/// A standby's lag against an alias's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Within,
    /// Not measurable yet; see [`Lagging::pending`].
    NotYet(String),
    /// Over the limit, or not measurable at all; why.
    Over(String),
}

/// The longest `max_lag_time` of any alias: how long primary positions are kept.
pub(crate) fn window(config: &Config) -> Option<Duration> {
    config.aliases.iter().filter_map(|a| a.max_lag.time).max()
}

/// The primary `server` is measured against: the current primary of a
/// writer alias that has it among its candidates (see
/// [`super::truth::current_primary`]); with no writer alias, among the
/// servers that share an alias with it, one not in recovery whose last good
/// probe gave a WAL position; the newest timeline wins, then the highest
/// position.
pub(crate) fn reference(state: &State, config: &Config, server: ServerId) -> Option<ServerId> {
    if truth::has_writer(config, server) {
        return truth::current_primary(state, config, server).filter(|&p| {
            state.servers[p]
                .last_state
                .as_ref()
                .is_some_and(|st| st.wal_lsn.is_some())
        });
    }
    config
        .aliases
        .iter()
        .filter(|a| a.servers.contains(&server))
        .flat_map(|a| a.servers.iter().copied())
        .filter(|&p| p != server)
        .filter_map(|p| {
            let st = state.servers[p].last_state.as_ref().filter(|st| !st.in_recovery)?;
            Some((st.timeline.unwrap_or(0), st.wal_lsn?, p))
        })
        .max_by_key(|&(tl, lsn, p)| (tl, lsn, std::cmp::Reverse(p)))
        .map(|(_, _, p)| p)
}

/// How far `server` is behind its primary; `None` unless its last good probe
/// saw it in recovery. A diverged standby (see [`super::truth::diverged`])
/// has no lag: positions on another branch are not comparable.
pub(crate) fn measure(state: &State, config: &Config, server: ServerId, now: Instant) -> Option<Lag> {
    let st = state.servers[server].last_state.as_ref().filter(|st| st.in_recovery)?;
    let primary = reference(state, config, server);
    if truth::diverged(state, config, server).is_some() {
        return Some(Lag {
            primary,
            bytes: None,
            time: None,
        });
    }
    let (bytes, time) = match (primary, st.wal_lsn) {
        (Some(p), Some(replayed)) => {
            let p_lsn = state.servers[p]
                .last_state
                .as_ref()
                .and_then(|s| s.wal_lsn)
                .unwrap_or(0);
            (
                Some(p_lsn.saturating_sub(replayed)),
                state.servers[p].wal.behind(replayed, now),
            )
        }
        _ => (None, None),
    };
    Some(Lag { primary, bytes, time })
}

/// Whether `lag` is within `limit`, and if not, why (for logs and `/status`).
pub(crate) fn check(lag: &Lag, limit: &MaxLag, config: &Config) -> Verdict {
    let of = |p: Option<ServerId>| p.map_or("the primary", |p| config.servers[p].id.as_str());
    if let Some(max) = limit.bytes {
        match lag.bytes {
            None => return Verdict::Over(unknown(lag, config)),
            Some(b) if b > max => {
                return Verdict::Over(format!(
                    "{} behind {} (max_lag {})",
                    bytes(b),
                    of(lag.primary),
                    bytes(max)
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(max) = limit.time {
        if lag.bytes.is_none() {
            return Verdict::Over(unknown(lag, config));
        }
        let not_yet = || {
            Verdict::NotYet(format!(
                "not measured yet: {} has not been probed at a position the standby has replayed",
                of(lag.primary)
            ))
        };
        match lag.time {
            Some(Ok(t)) if t > max => {
                return Verdict::Over(format!(
                    "{} behind {} (max_lag_time {})",
                    secs(t),
                    of(lag.primary),
                    secs(max)
                ))
            }
            Some(Ok(_)) => {}
            Some(Err(more)) if more >= max => {
                return Verdict::Over(format!(
                    "more than {} behind {} (max_lag_time {})",
                    secs(more),
                    of(lag.primary),
                    secs(max)
                ))
            }
            Some(Err(_)) => return not_yet(),
            // No positions kept for the primary yet (a limit added by a
            // reload), but the standby has replayed its last one.
            None if lag.bytes == Some(0) => {}
            None => return not_yet(),
        }
    }
    Verdict::Within
}

fn unknown(lag: &Lag, config: &Config) -> String {
    match lag.primary {
        None => {
            "its lag cannot be measured: no server it shares an alias with has reported a primary's WAL position".into()
        }
        Some(p) => format!(
            "its lag behind {} cannot be measured yet (no WAL position of it reported, or none recorded for the time)",
            config.servers[p].id
        ),
    }
}

/// `12.0 KiB / 0.3s behind east` (the parts that are known).
pub(crate) fn describe(lag: &Lag, config: &Config) -> String {
    let mut parts = Vec::new();
    if let Some(b) = lag.bytes {
        parts.push(bytes(b));
    }
    match lag.time {
        Some(Ok(t)) => parts.push(secs(t)),
        Some(Err(t)) => parts.push(format!("more than {}", secs(t))),
        None => {}
    }
    let of = lag.primary.map_or("the primary", |p| config.servers[p].id.as_str());
    if parts.is_empty() {
        format!("lag behind {of} unknown")
    } else {
        format!("{} behind {of}", parts.join(" / "))
    }
}

/// A byte count for people: `512 B`, `12.0 KiB`, `16.0 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
