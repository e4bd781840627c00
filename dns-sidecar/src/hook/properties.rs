//! Property test of the external record: random sequences of answer
//! changes, reloads that rename a server's target, restarts (with the state
//! file's records, and a confirmation possibly lost at the crash) and slow,
//! failing or hanging hooks, run through the real [`Reconciler`] against a
//! model of the external record. Invariants: one run at a time, sequence
//! numbers only grow (across restarts too), no run has OLD = NEW; and once
//! quiet (no more changes, hooks succeed), the external record and the
//! state file's record equal what DNS answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::reconcile::{Reconciler, Record, ToHooks};
use super::HookRun;
use crate::config::Hook;
use crate::decision::snapshot::HookedTarget;

const ALIASES: [&str; 2] = ["a.", "b."];
const SERVERS: [&str; 3] = ["x", "y", "z"];
const TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Op {
    /// DNS for alias `.0` answers server `.1` (None: SERVFAIL, no hook).
    Answer(usize, Option<usize>),
    /// A reload gives server `.0` a new `target` name.
    Rename(usize),
    /// The sidecar restarts; `.0`: a confirmation not yet persisted is lost.
    Restart(bool),
    /// Time passes (ms).
    Wait(u64),
}

/// How a hook run behaves: its duration (over [`TIMEOUT`]: killed), whether
/// it exits 0, and whether it wrote the external record (before failing or
/// being killed).
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    ms: u64,
    ok: bool,
    wrote: bool,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..ALIASES.len(), proptest::option::weighted(0.85, 0..SERVERS.len())).prop_map(|(a, s)| Op::Answer(a, s)),
        1 => (0..SERVERS.len()).prop_map(Op::Rename),
        1 => any::<bool>().prop_map(Op::Restart),
        3 => (0u64..3000).prop_map(Op::Wait),
    ]
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    (0u64..1500, prop::bool::weighted(0.6), any::<bool>()).prop_map(|(ms, ok, wrote)| Behaviour { ms, ok, wrote })
}

struct Running {
    run: HookRun,
    started: Instant,
    how: Behaviour,
}

struct World {
    now: Instant,
    /// What DNS answers, per alias (server index).
    dns: Vec<Option<usize>>,
    /// Each server's target name version (a rename bumps it).
    names: Vec<u32>,
    /// The external record, per alias (a target name).
    external: Vec<Option<String>>,
    /// The state file's records.
    file: BTreeMap<String, Record>,
    /// Successes reported, not yet persisted by the engine.
    unpersisted: Vec<(String, Record)>,
    rec: Reconciler,
    /// What the engine last told the runner, per alias.
    told: Vec<Option<HookedTarget>>,
    running: Option<Running>,
    behaviours: Vec<Behaviour>,
    next_behaviour: usize,
    /// Only successes from now on.
    quiet: bool,
    last_seq: u64,
    runs: usize,
}

impl World {
    fn new(behaviours: Vec<Behaviour>) -> World {
        World {
            now: Instant::now(),
            dns: vec![None; ALIASES.len()],
            names: vec![0; SERVERS.len()],
            external: vec![None; ALIASES.len()],
            file: BTreeMap::new(),
            unpersisted: Vec::new(),
            rec: Reconciler::new(1),
            told: vec![None; ALIASES.len()],
            running: None,
            behaviours,
            next_behaviour: 0,
            quiet: false,
            last_seq: 0,
            runs: 0,
        }
    }

    fn target(&self, s: usize) -> HookedTarget {
        HookedTarget {
            server: SERVERS[s].into(),
            target: format!("pg-{}-{}.test.", SERVERS[s], self.names[s]),
        }
    }

    /// The engine after a decision: tells the runner each changed answer.
    fn tell(&mut self) -> Result<(), TestCaseError> {
        for (a, name) in ALIASES.iter().enumerate() {
            let Some(s) = self.dns[a] else { continue };
            let new = self.target(s);
            if self.told[a].as_ref() == Some(&new) {
                continue;
            }
            self.told[a] = Some(new.clone());
            self.rec.apply(ToHooks::Want {
                alias: (*name).into(),
                hook: Hook {
                    argv: vec!["/bin/true".into()],
                    timeout: TIMEOUT,
                    env: vec![],
                },
                new,
                reason: "model".into(),
            });
        }
        self.advance_checked(self.now)
    }

    fn persist(&mut self) {
        for (a, t) in self.unpersisted.drain(..) {
            self.file.insert(a, t);
        }
    }

    fn alias(name: &str) -> usize {
        ALIASES.iter().position(|a| *a == name).unwrap()
    }

    /// The running hook ends at `at`: it is done, failed, timed out or (at
    /// shutdown, `killed`) stopped.
    fn end_run(&mut self, at: Instant, killed: bool) -> Result<(), TestCaseError> {
        let Running { run, how, .. } = self.running.take().unwrap();
        let in_time = how.ms <= TIMEOUT.as_millis() as u64;
        let ok = how.ok && in_time && !killed;
        if ok || how.wrote {
            self.external[Self::alias(&run.alias)] = Some(run.new_target.clone());
        }
        if killed {
            return Ok(());
        }
        if let Some(c) = self.rec.finished(run.seq, ok, at) {
            prop_assert!(ok);
            prop_assert_eq!(
                c.record.hooked.as_ref().map(|h| h.target.as_str()),
                Some(run.new_target.as_str())
            );
            self.unpersisted.push((c.alias, c.record));
        }
        Ok(())
    }

    /// Runs hooks until `to`.
    fn advance_checked(&mut self, to: Instant) -> Result<(), TestCaseError> {
        loop {
            if let Some(r) = &self.running {
                prop_assert!(self.rec.next(self.now).is_none(), "a second run while one runs");
                let end = r.started + Duration::from_millis(r.how.ms).min(TIMEOUT);
                if end > to {
                    break;
                }
                self.now = self.now.max(end);
                self.end_run(end, false)?;
                continue;
            }
            if let Some((run, persist)) = self.rec.next(self.now) {
                // Written (and waited for) before the run starts.
                self.persist();
                let known = self.file.get(&run.alias).cloned().unwrap_or_default();
                prop_assert!(
                    known.unsure.is_some() || known.hooked.as_ref().is_none_or(|h| h.target != run.new_target),
                    "a needless run: the record already holds {}",
                    run.new_target
                );
                self.file.insert(persist.alias, persist.record);
                prop_assert!(run.seq > self.last_seq, "seq {} after {}", run.seq, self.last_seq);
                prop_assert_ne!(run.old_target.as_deref(), Some(run.new_target.as_str()), "OLD = NEW");
                self.last_seq = run.seq;
                self.runs += 1;
                let how = if self.quiet {
                    Behaviour {
                        ms: 10,
                        ok: true,
                        wrote: true,
                    }
                } else {
                    let b = self.behaviours[self.next_behaviour % self.behaviours.len()];
                    self.next_behaviour += 1;
                    b
                };
                self.running = Some(Running {
                    run,
                    started: self.now,
                    how,
                });
                continue;
            }
            match self.rec.next_retry() {
                Some(t) if t <= to => self.now = self.now.max(t),
                _ => break,
            }
        }
        self.now = self.now.max(to);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Answer(a, s) => {
                self.dns[a] = s;
                self.tell()?;
            }
            Op::Rename(s) => {
                self.names[s] += 1;
                self.tell()?;
            }
            Op::Restart(lose) => {
                if self.running.is_some() {
                    // Killed with its group: it wrote or not, but never later.
                    self.end_run(self.now, true)?;
                }
                if lose {
                    self.unpersisted.clear();
                }
                self.persist();
                // The wall clock moved on: the next process's numbers are larger.
                self.rec = Reconciler::new(self.last_seq + 1);
                self.rec.apply(ToHooks::Restored(
                    self.file.iter().map(|(a, t)| (a.clone(), t.clone())).collect(),
                ));
                self.told = vec![None; ALIASES.len()];
                self.tell()?;
            }
            Op::Wait(ms) => {
                self.persist();
                self.advance_checked(self.now + Duration::from_millis(ms))?;
                self.persist();
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn once_quiet_the_external_record_equals_what_dns_answers(
        ops in prop::collection::vec(op(), 1..40),
        behaviours in prop::collection::vec(behaviour(), 1..8),
    ) {
        let mut w = World::new(behaviours);
        for op in &ops {
            w.step(op)?;
        }
        // Quiet: no more changes; hooks succeed from the next run on (the
        // one running keeps its behaviour). Past every back-off.
        w.quiet = true;
        for _ in 0..5 {
            w.step(&Op::Wait(crate::hook::reconcile::MAX_BACKOFF.as_millis() as u64 + 2000))?;
        }
        for (a, name) in ALIASES.iter().enumerate() {
            let Some(s) = w.dns[a] else {
                // Never answered since the last restart's first answer, or
                // SERVFAIL now: nothing to converge on (the record keeps the
                // last target answered).
                continue;
            };
            let want = w.target(s).target;
            prop_assert_eq!(w.external[a].as_deref(), Some(want.as_str()), "external record of {}", name);
            let file = w.file.get(*name).cloned().unwrap_or_default();
            prop_assert_eq!(file.hooked.map(|t| t.target), Some(want), "state file record of {}", name);
            prop_assert_eq!(file.unsure, None);
            prop_assert!(w.rec.pending().is_empty());
        }
    }
}
