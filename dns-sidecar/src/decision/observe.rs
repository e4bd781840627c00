//! A probe's result applied to its server's health: up, down and the
//! damping between (see [`super::damping`]); one event per episode.

use super::{damping, Event, ServerHealth};
use crate::config::Config;
use crate::observation::{FailureKind, Observation};

/// Applies one probe's result to its server's health.
pub(super) fn observe(h: &mut ServerHealth, o: &Observation, config: &Config, events: &mut Vec<Event>) {
    let first = !h.reported;
    h.reported = true;
    match &o.outcome {
        Ok(s) => {
            if h.consecutive_ok == 0 {
                h.run_since = Some(o.at);
            }
            h.consecutive_ok += 1;
            h.consecutive_fail = 0;
            // The WAL receiver received more since the last good probe: it
            // streams (evidence that lifts a fence; see `fence`, rule 5).
            let before = h
                .last_state
                .as_ref()
                .filter(|p| p.in_recovery)
                .and_then(|p| p.received_lsn);
            h.receiving = s.in_recovery && matches!((before, s.received_lsn), (Some(b), Some(n)) if n > b);
            h.last_state = Some(s.clone());
            if let Some(rtt) = o.rtt {
                h.rtt.push(rtt);
            }
            h.last_success = Some(o.at);
            h.last_error = None;
            let rose = damping::lasted(h.consecutive_ok, config.probe.rise, h.run_since, o.at, config);
            if !h.up && (first || rose) {
                h.up = true;
                let down_for = h.down_since.take().map(|t| o.at.saturating_duration_since(t));
                events.push(Event::ServerUp {
                    server: o.server,
                    state: s.describe(),
                    down_for,
                });
            }
        }
        Err(f) => {
            if h.consecutive_fail == 0 {
                h.run_since = Some(o.at);
            }
            h.consecutive_ok = 0;
            h.consecutive_fail += 1;
            h.receiving = false;
            h.last_error = Some(f.message.clone());
            let was_up = h.up;
            let fell = damping::lasted(h.consecutive_fail, config.probe.fall, h.run_since, o.at, config);
            if f.kind == FailureKind::Definite || fell {
                h.up = false;
                h.rtt.clear();
            }
            // Once per episode: the failure that leaves the server not up
            // (damped failures of a server that is up are not an episode yet).
            if !h.up && h.down_since.is_none() {
                h.down_since = Some(o.at);
                events.push(Event::ServerDown {
                    server: o.server,
                    error: f.message.clone(),
                    was_up,
                });
            }
        }
    }
}
