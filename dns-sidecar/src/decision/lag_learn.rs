//! What the probes teach the lag limits (see [`super::lag`]): the
//! primaries' recent positions, and each standby's lag episode, started at
//! once and ended after `rise` good probes within the limit.

use std::time::Instant;

use super::lag::{check, describe, measure, window, Lag, Lagging, Verdict, WalHistory};
use super::{damping, truth, Event, State};
use crate::config::{AliasId, Config, ServerId};
use crate::observation::Observation;

/// Records primary positions, then starts and ends lag episodes: a standby
/// over its alias's limit is kept off at once; it qualifies again after
/// `rise` good probes of it in a row within the limit.
pub(super) fn learn(
    state: &mut State,
    observations: &[Observation],
    config: &Config,
    now: Instant,
    round_done: bool,
    events: &mut Vec<Event>,
) {
    record_positions(state, observations, config);
    for (i, alias) in config.enumerate_aliases() {
        if !alias.max_lag.is_set() {
            continue;
        }
        for &s in &alias.servers {
            let Some(lag) = measure(state, config, s, now) else {
                // Not a standby (promoted, or never seen): lag does not apply.
                state.aliases[i].lagging.retain(|l| l.server != s);
                continue;
            };
            let diverged = truth::diverged(state, config, s);
            let verdict = match check(&lag, &alias.max_lag, config) {
                _ if diverged.is_some() => Verdict::Over(format!("diverged: {}", diverged.unwrap_or_default())),
                // Before the first round a primary may simply not have
                // reported yet: wait, without an episode.
                Verdict::Over(reason) if lag.primary.is_none() && !round_done => Verdict::NotYet(reason),
                v => v,
            };
            let episode = Episode {
                alias: i,
                server: s,
                now,
                probed: observations.iter().any(|o| o.server == s && o.outcome.is_ok()),
            };
            episode.step(&mut state.aliases[i].lagging, verdict, &lag, config, events);
        }
    }
}

/// Each primary's recent WAL positions (when some alias has a `max_lag_time`).
fn record_positions(state: &mut State, observations: &[Observation], config: &Config) {
    let Some(window) = window(config) else {
        return;
    };
    for o in observations {
        if let Ok(s) = &o.outcome {
            match s.wal_lsn.filter(|_| !s.in_recovery) {
                Some(lsn) => state.servers[o.server].wal.record(o.at, lsn, window),
                None => state.servers[o.server].wal = WalHistory::default(),
            }
        }
    }
}

/// One standby of one alias with a lag limit, at one decision.
struct Episode {
    alias: AliasId,
    server: ServerId,
    now: Instant,
    /// Whether it was probed good in this decision's observations.
    probed: bool,
}

impl Episode {
    /// Starts, goes on with or ends the standby's lag episode (`lagging` is
    /// the alias's list, sorted by server) by `verdict`.
    fn step(self, lagging: &mut Vec<Lagging>, verdict: Verdict, lag: &Lag, config: &Config, events: &mut Vec<Event>) {
        let (i, s, now) = (self.alias, self.server, self.now);
        let at = lagging.iter().position(|l| l.server == s);
        match (verdict, at) {
            (Verdict::Over(reason), None) => {
                events.push(Event::LagExceeded {
                    alias: i,
                    server: s,
                    reason: reason.clone(),
                });
                self.start(lagging, reason, false);
            }
            (Verdict::Over(reason), Some(at)) => {
                let l = &mut lagging[at];
                if l.pending {
                    events.push(Event::LagExceeded {
                        alias: i,
                        server: s,
                        reason: reason.clone(),
                    });
                    l.pending = false;
                }
                l.good = 0;
                l.good_since = None;
                l.reason = reason;
            }
            (Verdict::NotYet(reason), None) => self.start(lagging, reason, true),
            // Still kept off (an episode is not ended by not knowing).
            (Verdict::NotYet(_), Some(_)) => {}
            (Verdict::Within, Some(at)) if lagging[at].pending => {
                lagging.remove(at);
            }
            (Verdict::Within, Some(at)) if self.probed => {
                let l = &mut lagging[at];
                l.good += 1;
                let since = *l.good_since.get_or_insert(now);
                if damping::lasted(l.good, config.probe.rise, Some(since), now, config) {
                    let l = lagging.remove(at);
                    let within = describe(lag, config);
                    events.push(Event::LagRecovered {
                        alias: i,
                        server: s,
                        reason: format!("{within} after {} good probe(s) in a row (was: {})", l.good, l.reason),
                    });
                }
            }
            (Verdict::Within, _) => {}
        }
    }

    /// Keeps the standby off from now (`pending`: only until its primary
    /// reports, without an episode yet).
    fn start(&self, lagging: &mut Vec<Lagging>, reason: String, pending: bool) {
        let at = lagging.partition_point(|l| l.server < self.server);
        lagging.insert(
            at,
            Lagging {
                server: self.server,
                good: 0,
                good_since: None,
                since: self.now,
                reason,
                pending,
            },
        );
    }
}
