//! Which on-change hook runs next, as a pure state machine (no processes, no
//! clocks: the runner passes `now`), so that convergence of the external
//! record is property-tested (see `properties.rs`).
//!
//! Per alias it keeps the *record* (the last target whose hook succeeded,
//! and, while a run that did not succeed may have changed the external
//! record, the target it may have set: *unsure*), persisted in the state
//! file before every run starts and after every success, and the *wanted*
//! target (what DNS answers now, as the engine last said). A hook runs
//! exactly when the external record is not known to hold the wanted target:
//! so a change whose hook failed, was killed at shutdown or never started is
//! repeated (at the next start, or after a back-off), a reload that changes
//! what an alias answers (a server's `target` renamed included) runs one,
//! and a run with OLD equal to NEW never happens. One hook runs at a time,
//! and every run gets a sequence number larger than all before it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::HookRun;
use crate::config::Hook;
use crate::decision::snapshot::HookedTarget;

/// What the engine tells the hook runner.
#[derive(Debug, Clone)]
pub(crate) enum ToHooks {
    /// At start, before anything else: the records of the state file.
    Restored(Vec<(String, Record)>),
    /// Alias `alias` answers `new` (with this hook configured).
    Want {
        alias: String,
        hook: Hook,
        new: HookedTarget,
        reason: String,
    },
    /// Alias `alias` has no hook any more (or is gone): nothing more runs for it.
    Forget(String),
}

/// What is known of an alias's external record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// The last target whose hook succeeded.
    pub(crate) hooked: Option<HookedTarget>,
    /// A target a run that has not succeeded may have set since.
    pub(crate) unsure: Option<HookedTarget>,
}

impl Record {
    /// Whether the external record is known to hold `target`.
    fn holds(&self, target: &HookedTarget) -> bool {
        self.unsure.is_none() && self.hooked.as_ref().is_some_and(|h| h.target == target.target)
    }
}

/// An alias's record changed: the engine persists it (a run starts only
/// once the record saying it may change the external one is persisted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Confirmed {
    pub(crate) alias: String,
    pub(crate) record: Record,
}

/// The first wait after a failed run; it doubles per failure in a row, up
/// to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Slot {
    record: Record,
    want: Option<Wanted>,
    failures: u32,
    retry_at: Option<Instant>,
    /// When it last became due (order of service: oldest first).
    order: u64,
}

#[derive(Debug, Clone)]
struct Wanted {
    hook: Hook,
    new: HookedTarget,
    reason: String,
}

/// The run in progress.
#[derive(Debug)]
struct Running {
    alias: String,
    seq: u64,
    new: HookedTarget,
}

#[derive(Debug)]
pub(crate) struct Reconciler {
    slots: BTreeMap<String, Slot>,
    running: Option<Running>,
    last_seq: u64,
    order: u64,
}

impl Reconciler {
    /// `first_seq`: the sequence number of the first run (the runner takes
    /// it from the wall clock, so numbers also grow across restarts).
    pub(crate) fn new(first_seq: u64) -> Reconciler {
        Reconciler {
            slots: BTreeMap::new(),
            running: None,
            last_seq: first_seq.saturating_sub(1),
            order: 0,
        }
    }

    pub(crate) fn apply(&mut self, msg: ToHooks) {
        match msg {
            ToHooks::Restored(records) => {
                for (alias, r) in records {
                    self.slots.entry(alias).or_default().record = r;
                }
            }
            ToHooks::Want {
                alias,
                hook,
                new,
                reason,
            } => {
                self.order += 1;
                let order = self.order;
                let slot = self.slots.entry(alias).or_default();
                let (was_due, changed) = (
                    Self::due(slot),
                    slot.want.as_ref().is_none_or(|w| w.new.target != new.target),
                );
                if changed {
                    // A new target is worth a prompt run, whatever failed before.
                    slot.failures = 0;
                    slot.retry_at = None;
                }
                if !was_due {
                    // A change replacing one still waiting keeps its place.
                    slot.order = order;
                }
                slot.want = Some(Wanted { hook, new, reason });
            }
            ToHooks::Forget(alias) => {
                if let Some(slot) = self.slots.get_mut(&alias) {
                    slot.want = None;
                    slot.retry_at = None;
                }
            }
        }
    }

    /// Whether alias `slot` needs a run (its external record is not known to
    /// hold what DNS answers).
    fn due(slot: &Slot) -> bool {
        slot.want.as_ref().is_some_and(|w| !slot.record.holds(&w.new))
    }

    /// The next run to start at `now`, if one is due and none is running,
    /// with the alias's record as it must be persisted before the run starts.
    pub(crate) fn next(&mut self, now: Instant) -> Option<(HookRun, Confirmed)> {
        if self.running.is_some() {
            return None;
        }
        let (alias, slot) = self
            .slots
            .iter()
            .filter(|(_, s)| Self::due(s) && s.retry_at.is_none_or(|t| t <= now))
            .min_by_key(|(_, s)| s.order)?;
        let w = slot.want.clone()?;
        let r = &slot.record;
        // OLD: the best knowledge of what the external record holds, never NEW.
        let old = match &r.unsure {
            Some(u) if u.target != w.new.target => Some(u),
            _ => r.hooked.as_ref().filter(|h| h.target != w.new.target),
        }
        .cloned();
        // Once it started, the external record is either what it was or NEW.
        // (Both equal only in a file edited by hand: then unsure stays set.)
        let unsure = match &old {
            Some(o) if r.hooked.as_ref().is_some_and(|h| h.target == w.new.target) => Some(o.clone()),
            _ => Some(w.new.clone()),
        };
        let record = Record {
            hooked: r.hooked.clone(),
            unsure,
        };
        let alias = alias.clone();
        self.slots.get_mut(&alias)?.record = record.clone();
        self.last_seq += 1;
        let run = HookRun {
            hook: w.hook,
            seq: self.last_seq,
            alias: alias.clone(),
            old_server: old.as_ref().map(|r| r.server.clone()),
            old_target: old.map(|r| r.target),
            new_server: w.new.server.clone(),
            new_target: w.new.target.clone(),
            reason: w.reason,
        };
        self.running = Some(Running {
            alias: alias.clone(),
            seq: run.seq,
            new: w.new,
        });
        Some((run, Confirmed { alias, record }))
    }

    /// Run `seq` ended (`ok`: the hook succeeded). Returns the new record to
    /// persist on success.
    pub(crate) fn finished(&mut self, seq: u64, ok: bool, now: Instant) -> Option<Confirmed> {
        let run = self.running.take_if(|r| r.seq == seq)?;
        let slot = self.slots.entry(run.alias.clone()).or_default();
        if ok {
            slot.record = Record {
                hooked: Some(run.new),
                unsure: None,
            };
            slot.failures = 0;
            slot.retry_at = None;
            return Some(Confirmed {
                alias: run.alias,
                record: slot.record.clone(),
            });
        }
        // Retried only while it is still what DNS answers; a newer target
        // got a prompt run of its own in `apply`.
        if slot.want.as_ref().is_some_and(|w| w.new.target == run.new.target) {
            slot.failures = slot.failures.saturating_add(1);
            slot.retry_at = Some(now + backoff(slot.failures));
        }
        None
    }

    /// When a run waiting for its back-off becomes due (the earliest).
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| Self::due(s))
            .filter_map(|s| s.retry_at)
            .min()
    }

    /// The aliases whose record differs from what DNS answers (for tests).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|(_, s)| Self::due(s))
            .map(|(a, _)| a.as_str())
            .collect()
    }
}

/// The wait before retrying after `failures` failed runs in a row.
pub(crate) fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> Hook {
        Hook {
            argv: vec!["/bin/true".into()],
            timeout: Duration::from_secs(1),
            env: vec![],
        }
    }

    fn t(server: &str) -> HookedTarget {
        HookedTarget {
            server: server.into(),
            target: format!("pg-{server}.test."),
        }
    }

    fn want(alias: &str, server: &str) -> ToHooks {
        ToHooks::Want {
            alias: alias.into(),
            hook: hook(),
            new: t(server),
            reason: "r".into(),
        }
    }

    #[test]
    fn runs_only_when_the_record_differs_and_repeats_failures_after_a_backoff() {
        let now = Instant::now();
        let mut r = Reconciler::new(100);
        r.apply(ToHooks::Restored(vec![(
            "a.".into(),
            Record {
                hooked: Some(t("x")),
                unsure: None,
            },
        )]));
        r.apply(want("a.", "x"));
        assert!(
            r.next(now).is_none(),
            "the record already holds it: no run with OLD = NEW"
        );
        r.apply(want("a.", "y"));
        let (run, persist) = r.next(now).unwrap();
        assert_eq!(
            (run.seq, run.old_server.as_deref(), run.new_server.as_str()),
            (100, Some("x"), "y")
        );
        assert_eq!(
            persist.record,
            Record {
                hooked: Some(t("x")),
                unsure: Some(t("y"))
            },
            "persisted before it starts: it may set y"
        );
        assert!(r.next(now).is_none(), "one at a time");
        assert_eq!(r.finished(run.seq, false, now), None);
        assert!(r.next(now).is_none(), "not before its back-off");
        assert_eq!(r.next_retry(), Some(now + FIRST_BACKOFF));
        let (run, _) = r.next(now + FIRST_BACKOFF).unwrap();
        assert_eq!(run.seq, 101);
        assert_eq!(
            r.finished(run.seq, true, now),
            Some(Confirmed {
                alias: "a.".into(),
                record: Record {
                    hooked: Some(t("y")),
                    unsure: None
                }
            })
        );
        assert!(r.next(now + MAX_BACKOFF).is_none() && r.pending().is_empty());
    }

    #[test]
    fn a_change_back_while_running_needs_another_run_and_a_renamed_target_one_too() {
        let now = Instant::now();
        let mut r = Reconciler::new(1);
        r.apply(want("a.", "x"));
        let (run, _) = r.next(now).unwrap();
        assert_eq!(run.old_target, None);
        r.apply(want("a.", "y"));
        r.apply(want("a.", "x"));
        r.finished(run.seq, true, now).unwrap();
        assert!(r.next(now).is_none(), "x -> y -> x while x ran: the record holds x");
        // A reload renames x's target: same server, another DNS name.
        r.apply(ToHooks::Want {
            alias: "a.".into(),
            hook: hook(),
            new: HookedTarget {
                server: "x".into(),
                target: "pg-x2.test.".into(),
            },
            reason: "reload".into(),
        });
        let (run, _) = r.next(now).unwrap();
        assert_eq!(
            (run.old_target.as_deref(), run.new_target.as_str()),
            (Some("pg-x.test."), "pg-x2.test.")
        );
    }

    #[test]
    fn a_failed_run_leaves_the_record_unsure_so_changing_back_runs_again() {
        let now = Instant::now();
        let mut r = Reconciler::new(1);
        r.apply(want("a.", "x"));
        let (run, _) = r.next(now).unwrap();
        r.finished(run.seq, true, now).unwrap();
        r.apply(want("a.", "y"));
        let (run, _) = r.next(now).unwrap();
        // It failed, but may have set y before failing.
        assert_eq!(r.finished(run.seq, false, now), None);
        r.apply(want("a.", "x"));
        let (run, persist) = r.next(now).expect("x is not known to be there any more");
        assert_eq!(
            (run.old_server.as_deref(), run.new_server.as_str()),
            (Some("y"), "x"),
            "OLD is what it may hold, never NEW"
        );
        assert_eq!(persist.record.unsure, Some(t("y")));
        r.finished(run.seq, true, now).unwrap();
        assert!(r.pending().is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
