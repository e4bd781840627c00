//! `[probe]`'s timing: how often and how long servers are probed (the
//! connection settings it gives every server are in [`super::servers`]).

use std::time::Duration;

use toml::Spanned;

use super::ctx::Ctx;
use super::human;
use crate::config::raw::RawProbe;
use crate::config::{ConfigError, HumanDuration, ProbeTiming};

pub(super) fn check(cx: &Ctx<'_>, p: &RawProbe) -> Result<ProbeTiming, ConfigError> {
    let d = ProbeTiming::default();
    let duration =
        |v: &Option<Spanned<HumanDuration>>, default: Duration| v.as_ref().map_or(default, |v| v.get_ref().0);
    let span = |v: &Option<Spanned<HumanDuration>>| v.as_ref().map(|v| v.span());
    let probe = ProbeTiming {
        interval: duration(&p.interval, d.interval),
        incident_interval: duration(&p.incident_interval, d.incident_interval),
        deadline: duration(&p.deadline, d.deadline),
        fresh_connection_interval: p.fresh_connection_interval.map_or(d.fresh_connection_interval, |v| v.0),
        fall: positive(cx, p.fall.as_ref(), "fall", d.fall)?,
        rise: positive(cx, p.rise.as_ref(), "rise", d.rise)?,
    };
    if probe.interval < Duration::from_millis(10) {
        return cx.err(
            span(&p.interval),
            format!("`probe.interval` of {} is too short", human(probe.interval)),
            "use 10ms or more; 100ms follows a promote within ~150ms",
        );
    }
    if probe.deadline < Duration::from_millis(10) {
        return cx.err(
            span(&p.deadline),
            format!("`probe.deadline` of {} is too short", human(probe.deadline)),
            "a fresh TLS probe needs a few round trips; use e.g. \"1s\"",
        );
    }
    if probe.incident_interval < Duration::from_millis(1) {
        return cx.err(
            span(&p.incident_interval),
            format!(
                "`probe.incident_interval` of {} is too short",
                human(probe.incident_interval)
            ),
            "use 1ms or more; the default 10ms sees a promote within ~10ms",
        );
    }
    if probe.incident_interval > probe.interval {
        // Without an explicit incident_interval the default (10ms) can only
        // exceed an interval that is itself too short, which was rejected above.
        return cx.err(
            span(&p.incident_interval).or(span(&p.interval)),
            format!(
                "`probe.incident_interval` ({}) is longer than `probe.interval` ({})",
                human(probe.incident_interval),
                human(probe.interval)
            ),
            "it is the faster cadence used during an incident: make it at most `interval`, e.g. incident_interval = \"10ms\"",
        );
    }
    Ok(probe)
}

fn positive(cx: &Ctx<'_>, v: Option<&Spanned<u32>>, key: &str, default: u32) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) if *v.get_ref() >= 1 => Ok(*v.get_ref()),
        Some(v) => cx.err(
            Some(v.span()),
            format!("`probe.{key}` must be at least 1"),
            format!("{key} = {default} is the default"),
        ),
    }
}
