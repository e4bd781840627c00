//! Property tests: random sequences of faults, overrides, reloads and
//! restarts (the state saved and loaded through JSON, as the state file
//! does) against a model of a real cluster, checking the decision's
//! invariants after every step.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::snapshot::{capture, restore, Remembered};
use super::*;
use crate::control::Override;
use crate::observation::{FailureCause, FailureKind, ProbeFailure, ServerState};

const SERVERS: [&str; 3] = ["a", "b", "c"];
const ALIASES: [&str; 5] = [
    "rw.db.internal.",
    "pri.db.internal.",
    "ro.db.internal.",
    "lag.db.internal.",
    "lagt.db.internal.",
];
/// Alias 3's `max_lag` (bytes) and alias 4's `max_lag_time`.
const MAX_LAG: u64 = 1000;
const MAX_LAG_TIME: Duration = Duration::from_millis(500);
const RISE: u32 = 2;
const STEP: Duration = Duration::from_millis(100);

fn config(order: usize) -> Config {
    let lists = [["a", "b", "c"], ["c", "a", "b"]];
    let l = |i: usize| lists[(order + i) % 2].map(|s| format!("\"{s}\"")).join(", ");
    let text = format!(
        r#"{}[[aliases]]
name = "rw.db.internal"
role = "read-write"
on_no_match = "keep-last"
servers = [{}]
[[aliases]]
name = "pri.db.internal"
role = "primary"
on_no_match = "servfail"
servers = [{}]
[[aliases]]
name = "ro.db.internal"
role = "standby"
servers = [{}]
[[aliases]]
name = "lag.db.internal"
role = "prefer-standby"
on_no_match = "servfail"
servers = [{}]
max_lag = {MAX_LAG}
[[aliases]]
name = "lagt.db.internal"
role = "standby"
on_no_match = "servfail"
servers = [{}]
max_lag_time = "{}ms"
"#,
        fixture::header(3, &["a", "b", "c"]),
        l(0),
        l(1),
        l(0),
        l(1),
        l(0),
        MAX_LAG_TIME.as_millis()
    );
    fixture::parse("prop.toml", &text)
}

/// What a server really is (the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Primary { tl: u32, read_only: bool },
    Standby { tl: u32 },
    Down,
    Frozen,
}

#[derive(Debug, Clone)]
enum Op {
    /// A probe round; the mask says which servers' probes finish now.
    Probe(u8),
    Promote(usize),
    Kill(usize),
    /// A killed server starts again as it was (an old primary stays one).
    Restart(usize),
    Freeze(usize),
    Thaw(usize),
    ReadOnly(usize, bool),
    /// Rebuilt as a standby of the newest primary.
    Rebuild(usize),
    /// A killed server restored from its own data directory (recovery.signal,
    /// no primary_conninfo): in recovery, replaying only its own WAL; its
    /// promote (`Promote`) takes its own timeline + 1, whatever the others
    /// took (no shared archive), and its history forks from its own.
    Restore(usize),
    Pin(usize, usize),
    Unpin(usize),
    Drain(usize),
    Undrain(usize),
    Unfence(usize, Option<usize>),
    Reload,
    RestartSidecar,
    Wait,
    /// Every writable primary writes this many bytes of WAL.
    Write(u64),
    /// `pg_wal_replay_pause()` / `_resume()` on a server (effective while it
    /// is a standby).
    PauseReplay(usize),
    ResumeReplay(usize),
}

/// `forks`: include `Restore` (see `instances_started_at_different_times_agree`
/// for why an instance started later may disagree about a fork).
fn op(overrides: bool, forks: bool) -> impl Strategy<Value = Op> {
    let s = 0..3usize;
    let faults = prop_oneof![
        6 => (1u8..8).prop_map(Op::Probe),
        1 => s.clone().prop_map(Op::Promote),
        1 => s.clone().prop_map(Op::Kill),
        1 => s.clone().prop_map(Op::Restart),
        1 => s.clone().prop_map(Op::Freeze),
        1 => s.clone().prop_map(Op::Thaw),
        1 => (s.clone(), any::<bool>()).prop_map(|(s, b)| Op::ReadOnly(s, b)),
        1 => s.clone().prop_map(Op::Rebuild),
        1 => s.clone().prop_map(move |s| if forks { Op::Restore(s) } else { Op::Wait }),
        1 => Just(Op::Wait),
        2 => (100u64..2500).prop_map(Op::Write),
        1 => s.clone().prop_map(Op::PauseReplay),
        1 => s.clone().prop_map(Op::ResumeReplay),
    ];
    if !overrides {
        return faults.boxed();
    }
    let a = 0..ALIASES.len();
    prop_oneof![
        12 => faults,
        1 => (a.clone(), s.clone()).prop_map(|(a, s)| Op::Pin(a, s)),
        1 => a.clone().prop_map(Op::Unpin),
        1 => s.clone().prop_map(Op::Drain),
        1 => s.clone().prop_map(Op::Undrain),
        1 => (a.clone(), proptest::option::of(s.clone())).prop_map(|(a, s)| Op::Unfence(a, s)),
        1 => Just(Op::Reload),
        1 => Just(Op::RestartSidecar),
    ]
    .boxed()
}

/// The cluster: server 0 primary on timeline 1, the others its standbys.
#[derive(Debug, Clone)]
struct Cluster {
    truth: Vec<Truth>,
    before_down: Vec<Truth>,
    /// Promotes take `max + 1` (unique timelines) or `own + 1` (two
    /// standbys of one primary promoted both land on the same timeline).
    unique: bool,
    max_tl: u32,
    /// WAL functions revoked: no timelines (or WAL positions) observed.
    revoked: bool,
    /// WAL position: written (primaries) or replayed (standbys).
    lsn: [u64; 3],
    /// Replay paused (takes effect while a standby).
    paused: [bool; 3],
    /// The ground truth of histories: each server's place in a tree of
    /// histories (a promote starts a child of the promoted server's node;
    /// a rebuild copies the primary's node). `parents[n]` is `n`'s parent.
    node: [usize; 3],
    parents: Vec<Option<usize>>,
    /// Restored from its own WAL (`Restore`), until rebuilt: its history
    /// forks from its own node, not from anyone it might follow.
    forked: [bool; 3],
    /// In recovery from its own WAL only (replays nobody's).
    orphan: [bool; 3],
}

impl Cluster {
    fn new(unique: bool, revoked: bool) -> Cluster {
        let truth = vec![
            Truth::Primary {
                tl: 1,
                read_only: false,
            },
            Truth::Standby { tl: 1 },
            Truth::Standby { tl: 1 },
        ];
        Cluster {
            before_down: truth.clone(),
            truth,
            unique,
            max_tl: 1,
            revoked,
            lsn: [0; 3],
            paused: [false; 3],
            node: [0; 3],
            parents: vec![None],
            forked: [false; 3],
            orphan: [false; 3],
        }
    }

    /// Whether history `n` contains history `ancestor` (equal or descends).
    fn descends(&self, mut n: usize, ancestor: usize) -> bool {
        loop {
            if n == ancestor {
                return true;
            }
            match self.parents[n] {
                Some(p) => n = p,
                None => return false,
            }
        }
    }

    /// Applies a fault; returns false for ops that are not faults.
    fn apply(&mut self, op: &Op) -> bool {
        match *op {
            Op::Promote(s) => {
                if let Truth::Standby { tl } = self.truth[s] {
                    let tl = if self.unique && !self.orphan[s] {
                        self.max_tl + 1
                    } else {
                        tl + 1
                    };
                    self.max_tl = self.max_tl.max(tl);
                    self.truth[s] = Truth::Primary { tl, read_only: false };
                    self.parents.push(Some(self.node[s]));
                    self.node[s] = self.parents.len() - 1;
                    self.orphan[s] = false;
                }
            }
            Op::Kill(s) if self.truth[s] != Truth::Down => {
                self.before_down[s] = self.truth[s];
                self.truth[s] = Truth::Down;
            }
            Op::Restart(s) if self.truth[s] == Truth::Down => self.truth[s] = self.before_down[s],
            Op::Freeze(s) if self.truth[s] != Truth::Down => {
                self.before_down[s] = self.truth[s];
                self.truth[s] = Truth::Frozen;
            }
            Op::Thaw(s) if self.truth[s] == Truth::Frozen => self.truth[s] = self.before_down[s],
            Op::ReadOnly(s, ro) => {
                if let Truth::Primary { tl, .. } = self.truth[s] {
                    self.truth[s] = Truth::Primary { tl, read_only: ro };
                }
            }
            Op::Rebuild(s) => {
                let newest = (0..3).filter(|&x| x != s).filter_map(|x| match self.truth[x] {
                    Truth::Primary { tl, .. } => Some((tl, self.lsn[x], x)),
                    _ => None,
                });
                if let Some((tl, _, from)) = newest.max() {
                    // Only from the newest lineage (rebuilding towards an
                    // older one would discard newer writes on purpose).
                    let own = match self.truth[s] {
                        Truth::Primary { tl, .. } | Truth::Standby { tl } => tl,
                        _ => 0,
                    };
                    if tl >= own || !self.unique {
                        self.truth[s] = Truth::Standby { tl };
                        // A fresh base backup (or pg_rewind) from there.
                        self.lsn[s] = self.newest_primary_lsn().unwrap_or(self.lsn[s]);
                        self.paused[s] = false;
                        self.node[s] = self.node[from];
                        self.forked[s] = false;
                        self.orphan[s] = false;
                    }
                }
            }
            Op::Write(n) => {
                for s in 0..3 {
                    if let Truth::Primary { read_only: false, .. } = self.truth[s] {
                        self.lsn[s] += n;
                    }
                }
            }
            // Once per server until rebuilt: a fork restored again would take
            // a newer timeline than its successor's, which timelines alone
            // cannot tell from a rebuilt, promoted server (see fence.rs).
            Op::Restore(s) if self.truth[s] == Truth::Down && !self.forked[s] => {
                // (Killed while frozen: what it was before is not recorded.)
                if let Truth::Primary { tl, .. } | Truth::Standby { tl } = self.before_down[s] {
                    self.truth[s] = Truth::Standby { tl };
                    self.forked[s] = true;
                    self.orphan[s] = true;
                }
            }
            Op::PauseReplay(s) => self.paused[s] = true,
            Op::ResumeReplay(s) => self.paused[s] = false,
            Op::Kill(_) | Op::Restart(_) | Op::Freeze(_) | Op::Thaw(_) | Op::Restore(_) | Op::Probe(_) | Op::Wait => {}
            _ => return false,
        }
        // Running standbys that replay catch up with the newest primary.
        if let Some(newest) = self.newest_primary_lsn() {
            for s in 0..3 {
                if matches!(self.truth[s], Truth::Standby { .. }) && !self.paused[s] && !self.orphan[s] {
                    self.lsn[s] = self.lsn[s].max(newest);
                }
            }
        }
        true
    }

    /// The WAL position of the running primary on the newest timeline.
    fn newest_primary_lsn(&self) -> Option<u64> {
        (0..3)
            .filter_map(|x| match self.truth[x] {
                Truth::Primary { tl, .. } => Some((tl, self.lsn[x])),
                _ => None,
            })
            .max()
            .map(|(_, lsn)| lsn)
    }

    fn observe(&self, s: usize, at: Instant) -> Observation {
        let outcome = match self.truth[s] {
            Truth::Primary { tl, read_only } => Ok(ServerState {
                in_recovery: false,
                read_only,
                timeline: (!self.revoked).then_some(tl),
                replay_lag_bytes: None,
                wal_lsn: (!self.revoked).then_some(self.lsn[s]),
                received_lsn: None,
                received_timeline: None,
                fresh_connection: false,
            }),
            Truth::Standby { .. } => Ok(ServerState {
                in_recovery: true,
                read_only: true,
                timeline: None,
                replay_lag_bytes: Some(0),
                wal_lsn: (!self.revoked).then_some(self.lsn[s]),
                // Streaming from the newest primary unless restored from its
                // own WAL (no receiver): received up to where it writes.
                received_lsn: (!self.revoked && !self.orphan[s])
                    .then(|| self.newest_primary_lsn().unwrap_or(0).max(self.lsn[s])),
                received_timeline: None,
                fresh_connection: false,
            }),
            Truth::Down => Err(ProbeFailure {
                kind: FailureKind::Definite,
                cause: FailureCause::Refused,
                message: "refused".into(),
            }),
            Truth::Frozen => Err(ProbeFailure {
                kind: FailureKind::Ambiguous,
                cause: FailureCause::Timeout,
                message: "timeout".into(),
            }),
        };
        Observation {
            server: sid(s),
            at,
            outcome,
            rtt: None,
        }
    }
}

/// One sidecar instance driven through a sequence.
struct Instance {
    config: Config,
    order: usize,
    state: State,
    now: Instant,
    epoch: Instant,
}

impl Instance {
    fn new(now: Instant) -> Instance {
        let config = config(0);
        Instance {
            state: State::new(&config, now),
            config,
            order: 0,
            now,
            epoch: now,
        }
    }

    fn tick(&mut self) {
        self.now += STEP;
    }

    fn decide(&mut self, obs: &[Observation]) {
        let (s, _) = decide(&self.state, obs, &self.config, self.now);
        self.state = s;
    }

    fn apply(&mut self, op: &Override) {
        match apply_override(&self.state, &self.config, op, self.now) {
            Ok((s, _, _)) => self.state = s,
            Err(e) => panic!("{op:?}: {e}"),
        }
    }

    fn reload(&mut self) {
        self.order ^= 1;
        let new = config(self.order);
        self.state = reconfigure(&self.state, &self.config, &new);
        self.config = new;
        self.decide(&[]);
    }

    /// Saved to JSON and loaded into a fresh process.
    fn restart(&mut self) {
        let unix = |t: Instant| t.duration_since(self.epoch).as_secs_f64();
        let json = serde_json::to_string(&capture(&self.state, &self.config, unix)).unwrap();
        let remembered: Remembered = serde_json::from_str(&json).unwrap();
        let epoch = self.epoch;
        let (state, notes) = restore(&self.config, &remembered, self.now, |u| {
            epoch + Duration::from_secs_f64(u)
        });
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            capture(&state, &self.config, unix)
                .aliases
                .iter()
                .map(|(k, v)| (k.clone(), v.fences.len()))
                .collect::<Vec<_>>(),
            capture(&self.state, &self.config, unix)
                .aliases
                .iter()
                .map(|(k, v)| (k.clone(), v.fences.len()))
                .collect::<Vec<_>>()
        );
        self.state = state;
    }

    /// Answers by alias name (positions are stable here, but be explicit).
    fn answers(&self) -> Vec<Answer> {
        ALIASES
            .iter()
            .map(|n| {
                let i = self.config.aliases.iter().position(|a| a.name.as_str() == *n).unwrap();
                self.state.answer(&self.config, aid(i))
            })
            .collect()
    }
}

/// What the checker knows independently of the decision's internals.
#[derive(Default, Clone)]
struct Oracle {
    pins: [Option<usize>; ALIASES.len()],
    drained: [bool; 3],
    /// Writer aliases: newest timeline observed on a candidate since the
    /// last unfence.
    max_seen: [Option<u32>; 3],
    /// Writer aliases: the last server answered by the decision (unpinned).
    last: [Option<usize>; 3],
    /// Writer aliases: servers left behind, with their timeline then.
    left: [BTreeMap<usize, Option<u32>>; 3],
    /// Writer aliases: every server ever left (or lost a split brain, or
    /// seen as a primary on the answered server's timeline, drained or not)
    /// since an operator last unfenced it. Only the others' timelines count for
    /// `max_seen` (issue 16: a fenced server's timeline is no truth, and the
    /// decision lifts a fence on evidence the oracle does not track exactly).
    ever_left: [std::collections::BTreeSet<usize>; 3],
    /// Writer aliases: the timeline of the last server answered, when known.
    last_tl: [Option<u32>; 3],
    /// Writer aliases: an operator unfenced since the last move.
    unfenced: [bool; 3],
    /// Writer aliases: the history (the cluster's ground truth) the alias was
    /// seen to follow, and its timeline then: its answered server's when last
    /// probed as a primary while answered; forgotten when an operator
    /// unfences.
    followed: [Option<(usize, u32)>; 3],
    /// Writer aliases: servers restored from their own WAL (`Op::Restore`)
    /// while the alias followed another server (the alias's own server
    /// restored continues the alias's history, as a point-in-time recovery).
    forks: [[bool; 3]; 3],
    /// When a fork promoted itself: it is judged once probed since.
    fork_promoted: [Option<Instant>; 3],
    /// Since the (re)start: servers that reported, and when it started.
    reported: [bool; 3],
    started: Option<Instant>,
    /// Lag aliases, since the (re)start: each server's last good observation,
    last_obs: [Option<ServerState>; 3],
    /// the positions it was seen at as a primary (since it was last seen in
    /// recovery or its position went back),
    primary_positions: [Vec<(Instant, u64)>; 3],
    /// and, for alias 3 (`max_lag`), where each standby stands.
    lag: [LagState; 3],
}

/// A standby against alias 3's byte limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum LagState {
    #[default]
    Fine,
    /// Unknown before the first round: kept off, back at the first good measure.
    Waiting,
    /// Over the limit (or unmeasurable): kept off, back after `RISE` good probes.
    Over { good: u32 },
}

/// The product's id of the model's server `s` (the model numbers servers
/// and aliases by position, as the config does).
fn sid(s: usize) -> ServerId {
    ServerId::new(s)
}

/// The product's id of the model's alias `a`.
fn aid(a: usize) -> AliasId {
    AliasId::new(a)
}

fn writer(alias: usize) -> bool {
    alias < 2
}

impl Oracle {
    /// `round`: every observation of this probe round (the decision sees
    /// them all before it judges fences).
    fn observed(&mut self, o: &Observation, round: &[Observation]) {
        self.reported[o.server.index()] = true;
        let Ok(s) = &o.outcome else { return };
        // A server as last seen: this round's good probe, or the one before.
        let latest = |x: usize| {
            (round.iter().rev())
                .find(|r| r.server.index() == x && r.outcome.is_ok())
                .and_then(|r| r.outcome.as_ref().ok())
                .or(self.last_obs[x].as_ref())
        };
        let streaming = |st: &ServerState| st.in_recovery && st.received_lsn.is_some();
        for a in 0..3 {
            if !writer(a) {
                continue;
            }
            // Issue 16: lifted by evidence of a rebuild, never by recovery or
            // a newer timeline alone. In recovery and streaming (the model's
            // ground truth of following; the decision needs more evidence),
            // or on a newer timeline that the server the alias left it for
            // now streams from.
            let followed = || {
                self.last[a]
                    .filter(|&l| l != o.server.index())
                    .and_then(latest)
                    .is_some_and(streaming)
            };
            let lifted = match self.left[a].get(&o.server.index()) {
                Some(_) if s.in_recovery => streaming(s),
                Some(Some(then)) => s.timeline.is_some_and(|now| now > *then) && followed(),
                _ => false,
            };
            if lifted {
                self.left[a].remove(&o.server.index());
            }
            // Only a server never left raises what "newest" means.
            if let Some(tl) = s
                .timeline
                .filter(|_| !s.in_recovery && !self.ever_left[a].contains(&o.server.index()))
            {
                self.max_seen[a] = Some(self.max_seen[a].map_or(tl, |m| m.max(tl)));
            }
        }
    }

    /// The primary a standby's lag is measured against: the writer alias's
    /// own choice (issue 16: never another writable server), at its last
    /// good observation's position.
    fn reference(&self, inst: &Instance, s: usize) -> Option<(usize, u64)> {
        let p = truth::current_primary(&inst.state, &inst.config, sid(s))?.index();
        Some((p, self.last_obs[p].as_ref().filter(|o| !o.in_recovery)?.wal_lsn?))
    }

    /// Learns from a decision step's observations (none for overrides and
    /// reloads): positions, and alias 3's episodes (over the byte limit, or
    /// unmeasurable: kept off; back after `RISE` good probes within it).
    fn lag_step(&mut self, inst: &Instance, obs: &[Observation], first_round_done: bool) {
        for o in obs {
            let Ok(st) = &o.outcome else { continue };
            let pos = &mut self.primary_positions[o.server.index()];
            match st.wal_lsn.filter(|_| !st.in_recovery) {
                Some(lsn) => {
                    if pos.last().is_some_and(|&(_, l)| lsn < l) {
                        pos.clear();
                    }
                    pos.push((o.at, lsn));
                }
                None => pos.clear(),
            }
            self.last_obs[o.server.index()] = Some(st.clone());
        }
        for s in 0..3 {
            let Some(replayed) = self.last_obs[s].as_ref().filter(|o| o.in_recovery).map(|o| o.wal_lsn) else {
                self.lag[s] = LagState::Fine;
                continue;
            };
            let reference = self.reference(inst, s);
            let diverged = truth::diverged(&inst.state, &inst.config, sid(s)).is_some();
            let over = match (reference, replayed) {
                _ if diverged => true,
                (Some((_, p)), Some(r)) => p.saturating_sub(r) > MAX_LAG,
                _ => true,
            };
            // Waiting (no episode) is only for a primary that has not
            // reported yet; a diverged standby starts an episode at once,
            // even before the first round (e.g. a fence restored from the
            // state file), and needs `RISE` good probes after it lifts.
            let waiting = reference.is_none() && !first_round_done && !diverged;
            let probed = obs.iter().any(|o| o.server.index() == s && o.outcome.is_ok());
            self.lag[s] = match (self.lag[s], over) {
                (LagState::Fine, true) if waiting => LagState::Waiting,
                (LagState::Waiting, true) if waiting => LagState::Waiting,
                (_, true) => LagState::Over { good: 0 },
                (LagState::Over { good }, false) if probed && good + 1 >= RISE => LagState::Fine,
                (LagState::Over { good }, false) if probed => LagState::Over { good: good + 1 },
                (LagState::Waiting, false) => LagState::Fine,
                (state, false) => state,
            };
        }
    }

    /// Lag aliases: alias 3 never answers a standby in a byte episode and
    /// always answers a standby when one qualifies; alias 4 never answers a
    /// standby that lacks a position its primary was seen at more than
    /// `MAX_LAG_TIME` ago.
    fn check_lag(&self, inst: &Instance, a: usize, ans: &Answer) -> Result<(), TestCaseError> {
        let standby = |s: usize| self.last_obs[s].as_ref().is_some_and(|o| o.in_recovery);
        let target = match ans {
            Answer::Target(s) => Some(s.index()),
            Answer::Pending | Answer::NoTarget => None,
        };
        match (a, target) {
            (3, Some(s)) if standby(s) => {
                prop_assert_eq!(
                    self.lag[s],
                    LagState::Fine,
                    "alias 3 answers standby {} while it is kept off for lag",
                    s
                );
            }
            (3, _) => {
                let qualifies = (0..3).find(|&s| {
                    standby(s)
                        && self.lag[s] == LagState::Fine
                        && inst.state.servers[sid(s)].up
                        && !inst.state.drained[sid(s)]
                        && truth::diverged(&inst.state, &inst.config, sid(s)).is_none()
                });
                if let Some(q) = qualifies {
                    prop_assert!(
                        matches!(ans, Answer::Target(x) if standby(x.index())),
                        "alias 3 answers {:?} while standby {} qualifies",
                        ans,
                        q
                    );
                }
            }
            (4, Some(s)) => {
                let replayed = self.last_obs[s].as_ref().and_then(|o| o.wal_lsn);
                let (Some(r), Some((p, _))) = (replayed, self.reference(inst, s)) else {
                    return Err(TestCaseError::fail(format!(
                        "alias 4 answers {s}, whose lag cannot be measured"
                    )));
                };
                for &(t, lsn) in self.primary_positions[p].iter().filter(|&&(_, lsn)| lsn > r) {
                    let ago = inst.now.duration_since(t);
                    prop_assert!(
                        ago <= MAX_LAG_TIME,
                        "alias 4 answers {} (replayed {}), which lacks position {} that {} had {:?} ago",
                        s,
                        r,
                        lsn,
                        p,
                        ago
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reader aliases obey the writers' truth (issue 16): never a server a
    /// writer alias left behind and that was not seen rebuilt since; a
    /// primary only when it is the writer alias's own choice.
    fn check_reader(&self, inst: &Instance, a: usize, s: usize) -> Result<(), TestCaseError> {
        for w in (0..3).filter(|&w| writer(w)) {
            prop_assert!(
                !self.left[w].contains_key(&s),
                "reader alias {} answers {}, which writer alias {} left (left: {:?})",
                a,
                s,
                w,
                self.left[w]
            );
        }
        let in_recovery = inst.state.servers[sid(s)]
            .last_state
            .as_ref()
            .is_some_and(|st| st.in_recovery);
        // (`keep-last` may keep a server that stopped matching its role.)
        if !in_recovery && inst.state.aliases[aid(a)].matched {
            let chosen = |w: usize| {
                inst.state.aliases[aid(w)]
                    .decided
                    .filter(|_| inst.state.aliases[aid(w)].matched)
            };
            prop_assert!(
                (0..3).any(|w| writer(w) && chosen(w) == Some(sid(s))),
                "reader alias {} falls back to {}, no writer alias's own choice ({:?}, {:?})",
                a,
                s,
                chosen(0),
                chosen(1)
            );
        }
        Ok(())
    }

    fn unfence(&mut self, a: usize, server: Option<usize>, state: &State) {
        self.unfenced[a] = true;
        self.followed[a] = None;
        match server {
            None => {
                self.left[a].clear();
                self.ever_left[a].clear();
                self.max_seen[a] = None;
            }
            Some(s) => {
                self.left[a].remove(&s);
                self.ever_left[a].remove(&s);
                let tl = state.servers[sid(s)]
                    .last_state
                    .as_ref()
                    .filter(|x| !x.in_recovery)
                    .and_then(|x| x.timeline);
                if let (Some(t), Some(m)) = (tl, self.max_seen[a]) {
                    self.max_seen[a] = Some(m.min(t));
                }
            }
        }
    }

    /// Checks every invariant against `answers`, then learns from them.
    fn check(
        &mut self,
        inst: &Instance,
        cluster: &Cluster,
        answers: &[Answer],
        deadline: Duration,
    ) -> Result<(), TestCaseError> {
        let first_round =
            self.reported.iter().all(|r| *r) || self.started.is_some_and(|t| inst.now.duration_since(t) >= deadline);
        for (a, ans) in answers.iter().enumerate() {
            if let Some(p) = self.pins[a] {
                prop_assert_eq!(ans, &Answer::Target(sid(p)), "a pin is always honoured (alias {})", a);
                continue;
            }
            if !first_round {
                prop_assert_eq!(ans, &Answer::Pending, "no answer before the first round (alias {})", a);
                continue;
            }
            if let Answer::Target(s) = *ans {
                let s = s.index();
                prop_assert!(!self.drained[s], "drained server {} answered by alias {}", s, a);
            }
            self.check_lag(inst, a, ans)?;
            let Answer::Target(s) = *ans else { continue };
            let s = s.index();
            if !writer(a) {
                self.check_reader(inst, a, s)?;
                continue;
            }
            // The ground truth: a server restored from its own WAL is never
            // answered as a primary (promoted) once the alias followed a
            // history it lacks, on that history's timeline or an older one
            // (rules 1 and 4). Not checked: a fork on a newer timeline
            // number (after rebuilds towards forks, or restored twice), which
            // numbers cannot tell from a rebuilt, promoted server; and
            // without timelines (revoked), where a fork seen in recovery
            // looks like a rebuilt standby (fence.rs, "Limits").
            let h = &inst.state.servers[sid(s)];
            let seen = self.fork_promoted[s].is_some_and(|t| h.last_success.is_some_and(|l| l > t));
            let fork_tl = match cluster.truth[s] {
                Truth::Primary { tl, .. } if self.forks[a][s] && cluster.forked[s] && seen => Some(tl),
                _ => None,
            };
            if let (Some(tl), false, Some((f, ftl))) = (fork_tl, cluster.revoked, self.followed[a]) {
                prop_assert!(
                    tl > ftl || cluster.descends(cluster.node[s], f),
                    "alias {} answers {}, a fork (history {}, timeline {}) of a history the alias did not follow (it \
                    followed {} on timeline {}; histories: {:?})",
                    a,
                    s,
                    cluster.node[s],
                    tl,
                    f,
                    ftl,
                    cluster.parents
                );
            }
            let observed = h
                .last_state
                .as_ref()
                .filter(|st| !st.in_recovery)
                .and_then(|st| st.timeline);
            if let (true, Some(t)) = (h.last_success == Some(inst.now), observed) {
                self.followed[a] = Some((cluster.node[s], t));
            }
            let tl = inst.state.servers[sid(s)]
                .last_state
                .as_ref()
                .filter(|x| !x.in_recovery)
                .and_then(|x| x.timeline);
            if let (Some(t), Some(m)) = (tl, self.max_seen[a]) {
                prop_assert!(
                    t >= m,
                    "alias {} answers {} on timeline {} after timeline {} was seen",
                    a,
                    s,
                    t,
                    m
                );
            }
            prop_assert!(
                !self.left[a].contains_key(&s),
                "alias {} went back to {}, which it left (left: {:?})",
                a,
                s,
                self.left[a]
            );
            // Servers writable beside the answered one lost a split brain
            // (when both were just seen, not merely remembered).
            let role_ok = |x: usize| {
                let h = &inst.state.servers[sid(x)];
                h.up && h.consecutive_fail == 0
                    && h.last_state
                        .as_ref()
                        .is_some_and(|st| if a == 0 { st.writable() } else { !st.in_recovery })
            };
            if role_ok(s) && !inst.state.drained[sid(s)] {
                for x in (0..3).filter(|&x| x != s && role_ok(x) && !inst.state.drained[sid(x)]) {
                    let tl_then = inst.state.servers[sid(x)]
                        .last_state
                        .as_ref()
                        .and_then(|st| st.timeline);
                    self.left[a].entry(x).or_insert(tl_then);
                    self.ever_left[a].insert(x);
                }
            }
            // Another server up as a primary on the answered server's very
            // timeline is a fork (a promote always starts a newer timeline
            // than the one it continues; rule 4), drained or not: a drained
            // server is never a candidate, so it loses no split brain above,
            // but it is no less a fork. Like any fenced server's, its later
            // timelines are no truth (issue 16): promoted again while drained
            // and never seen following the answered server, it may as well be
            // that fork promoted by mistake as a rebuilt standby, so it bars
            // nobody (`max_seen`), and the alias never moves to it, undrained
            // or not, until it is seen rebuilt (`left`).
            if let Some(t) = tl {
                for x in (0..3).filter(|&x| x != s) {
                    let h = &inst.state.servers[sid(x)];
                    let st = h.last_state.as_ref().filter(|st| h.up && !st.in_recovery);
                    if st.is_some_and(|st| st.timeline == Some(t)) {
                        self.left[a].entry(x).or_insert(Some(t));
                        self.ever_left[a].insert(x);
                    }
                }
            }
            if let (Some(_), Some(then), Some(now), false) =
                (self.last[a].filter(|&p| p != s), self.last_tl[a], tl, self.unfenced[a])
            {
                prop_assert!(
                    now > then,
                    "alias {} moved to {} on timeline {}, not newer than {} of the server it left",
                    a,
                    s,
                    now,
                    then
                );
            }
            if self.last[a] != Some(s) {
                self.unfenced[a] = false;
            }
            if tl.is_some() {
                self.last_tl[a] = tl;
            }
            if let Some(prev) = self.last[a].filter(|&p| p != s) {
                let tl_then = inst.state.servers[sid(prev)]
                    .last_state
                    .as_ref()
                    .filter(|x| !x.in_recovery)
                    .and_then(|x| x.timeline);
                // Left while already seen in recovery and streaming (from
                // the newest primary: rebuilt), it is not left behind: the
                // alias may go back to it once promoted (issue 16's lift,
                // before the move). Its timelines still count for nothing
                // (`ever_left`): the decision asks for more evidence of
                // following than the model's streaming.
                let rebuilt = (inst.state.servers[sid(prev)].last_state.as_ref())
                    .is_some_and(|x| x.in_recovery && x.received_lsn.is_some());
                if !rebuilt {
                    self.left[a].insert(prev, tl_then);
                }
                self.ever_left[a].insert(prev);
            }
            self.last[a] = Some(s);
        }
        Ok(())
    }
}

/// Runs a sequence; returns every step's answers.
fn run(ops: &[Op], unique: bool, revoked: bool) -> Result<Vec<Vec<Answer>>, TestCaseError> {
    let mut cluster = Cluster::new(unique, revoked);
    let mut inst = Instance::new(Instant::now());
    let deadline = inst.config.probe.deadline;
    let mut oracle = Oracle {
        started: Some(inst.now),
        ..Oracle::default()
    };
    let mut all = Vec::new();
    for op in ops {
        inst.tick();
        let orphan = cluster.orphan;
        if cluster.apply(op) {
            match *op {
                Op::Restore(s) if cluster.orphan[s] && !orphan[s] => {
                    for a in (0..3).filter(|&a| writer(a)) {
                        oracle.forks[a][s] = oracle.last[a] != Some(s);
                    }
                }
                Op::Promote(s) if orphan[s] && !cluster.orphan[s] => oracle.fork_promoted[s] = Some(inst.now),
                _ => {}
            }
            let obs: Vec<Observation> = match op {
                Op::Probe(mask) => (0..3)
                    .filter(|s| mask & (1 << s) != 0)
                    .map(|s| cluster.observe(s, inst.now))
                    .collect(),
                _ => Vec::new(),
            };
            for o in &obs {
                oracle.observed(o, &obs);
            }
            let done = inst.state.first_round_done;
            inst.decide(&obs);
            oracle.lag_step(&inst, &obs, done);
        } else {
            let done = inst.state.first_round_done;
            let alias = |a: usize| ALIASES[a].to_string();
            let server = |s: usize| SERVERS[s].to_string();
            match *op {
                Op::Pin(a, s) => {
                    inst.apply(&Override::Pin {
                        alias: alias(a),
                        server: server(s),
                    });
                    oracle.pins[a] = Some(s);
                }
                Op::Unpin(a) => {
                    inst.apply(&Override::Unpin { alias: alias(a) });
                    oracle.pins[a] = None;
                }
                Op::Drain(s) => {
                    inst.apply(&Override::Drain { server: server(s) });
                    oracle.drained[s] = true;
                }
                Op::Undrain(s) => {
                    inst.apply(&Override::Undrain { server: server(s) });
                    oracle.drained[s] = false;
                }
                Op::Unfence(a, s) => {
                    if writer(a) {
                        oracle.unfence(a, s, &inst.state);
                    }
                    inst.apply(&Override::Unfence {
                        alias: alias(a),
                        server: s.map(server),
                    });
                }
                Op::Reload => inst.reload(),
                Op::RestartSidecar => {
                    inst.restart();
                    oracle.reported = [false; 3];
                    oracle.started = Some(inst.now);
                    // Server health, positions and lag episodes are re-learned.
                    (oracle.last_obs, oracle.primary_positions, oracle.lag) = Default::default();
                }
                _ => unreachable!(),
            }
            oracle.lag_step(&inst, &[], done && !matches!(op, Op::RestartSidecar));
        }
        let answers = inst.answers();
        oracle.check(&inst, &cluster, &answers, deadline)?;
        all.push(answers);
    }
    Ok(all)
}

/// Probe rounds, each finishing the probes of a random set of servers (none
/// at all is a fault nobody saw).
fn rounds(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec((1u8..8).prop_map(Op::Probe), n)
}

/// Issue 15's fork: A (server 0) primary, B and C its standbys. B is promoted
/// (timeline 2); A is killed (before or after the promote); B is killed
/// before the fork appears, or stays alive (and may die later); A is
/// restored from its own WAL and promotes itself onto its own timeline + 1,
/// B's timeline number with A's history. Probe rounds of random reach
/// between every step (so the fork's recovery, or A's death, may go unseen),
/// and a few other ops (a sidecar restart, a reload, writes, B frozen...)
/// at random places.
fn fork_sequence() -> impl Strategy<Value = Vec<Op>> {
    let noise = prop_oneof![
        3 => (1u8..8).prop_map(Op::Probe),
        2 => Just(Op::RestartSidecar),
        1 => Just(Op::Reload),
        1 => Just(Op::Wait),
        1 => (100u64..2500).prop_map(Op::Write),
        1 => Just(Op::Freeze(1)),
        1 => Just(Op::Thaw(1)),
    ];
    (
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (rounds(0..3), rounds(0..3), rounds(0..3), rounds(0..3)),
        (rounds(0..3), rounds(1..6), rounds(0..3), rounds(1..6)),
        proptest::collection::vec((any::<prop::sample::Index>(), noise), 0..5),
    )
        .prop_map(
            |((kill_first, b_dead, b_dies_later), (p1, p2, p3, p4), (p5, p6, p7, p8), noise)| {
                let mut ops = vec![Op::Probe(7), Op::Probe(7), Op::Probe(7)];
                if kill_first {
                    ops.push(Op::Kill(0));
                    ops.extend(p1);
                }
                ops.push(Op::Promote(1));
                ops.extend(p2);
                if !kill_first {
                    ops.push(Op::Kill(0));
                    ops.extend(p3);
                }
                if b_dead {
                    ops.push(Op::Kill(1));
                    ops.extend(p4);
                }
                ops.push(Op::Restore(0));
                ops.extend(p5);
                ops.push(Op::Promote(0));
                ops.extend(p6);
                if !b_dead && b_dies_later {
                    ops.push(Op::Kill(1));
                    ops.extend(p7);
                }
                ops.extend(p8);
                for (at, op) in noise {
                    let at = at.index(ops.len() + 1).max(3);
                    ops.insert(at.min(ops.len()), op);
                }
                ops
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, max_shrink_iters: 4000, ..ProptestConfig::default() })]

    /// Safety invariants over faults, overrides, reloads and restarts, with
    /// and without timelines; and the same inputs give the same answers.
    #[test]
    fn invariants_hold_over_random_sequences(
        ops in proptest::collection::vec(op(true, true), 1..160),
        unique in any::<bool>(),
        revoked in prop::bool::weighted(0.25),
    ) {
        let first = run(&ops, unique, revoked)?;
        let second = run(&ops, unique, revoked)?;
        prop_assert_eq!(first, second, "the same inputs must give the same answers");
    }

    /// The fork is never answered (the ground-truth check in `Oracle::check`),
    /// nor any other invariant broken, in issue 15's fork sequences.
    #[test]
    fn a_fork_restored_from_its_own_wal_is_never_answered(ops in fork_sequence(), unique in any::<bool>()) {
        run(&ops, unique, false)?;
    }

    /// Two instances started at different times agree once they have seen
    /// the same, stable picture: every server reporting, no frozen server,
    /// and one writable server on the newest timeline ever seen. Without
    /// forks: an instance that saw a fork being made fences it, one started
    /// later without the state file cannot tell it from a new primary. The
    /// same for a server the first instance saw as a primary and that was
    /// then rebuilt and promoted again while no probe saw it in recovery:
    /// that instance may have fenced it (left it, or it lost a split brain),
    /// and a newer timeline alone lifts no fence (issue 16: a fork promoted
    /// by mistake reaches one too), so it keeps the server it has or answers
    /// none; one that never saw the old primary takes the newest timeline.
    #[test]
    fn instances_started_at_different_times_agree(
        ops in proptest::collection::vec(op(false, false), 1..160),
        late in 0usize..120,
    ) {
        let mut cluster = Cluster::new(true, false);
        let start = Instant::now();
        let mut one = Instance::new(start);
        let mut two: Option<Instance> = None;
        let mut stable = 0u32;
        let mut max_seen = 1;
        // Seen as a primary by the first instance; then rebuilt, and promoted,
        // with no probe seeing it in recovery since (see above).
        let (mut seen_primary, mut rebuilt_unseen, mut promoted_unseen) = ([false; 3], [false; 3], [false; 3]);
        for (step, op) in ops.iter().enumerate() {
            one.tick();
            if let Some(t) = two.as_mut() { t.tick() }
            if step == late {
                two = Some(Instance { now: one.now, ..Instance::new(one.now) });
            }
            let before = cluster.truth.clone();
            cluster.apply(op);
            match *op {
                Op::Rebuild(s) if seen_primary[s] && matches!(cluster.truth[s], Truth::Standby { .. }) => {
                    rebuilt_unseen[s] = true;
                }
                Op::Promote(s) if rebuilt_unseen[s] && matches!(before[s], Truth::Standby { .. }) => {
                    promoted_unseen[s] = true;
                }
                _ => {}
            }
            let obs: Vec<Observation> = match op {
                Op::Probe(mask) => (0..3).filter(|s| mask & (1 << s) != 0).map(|s| cluster.observe(s, one.now)).collect(),
                _ => Vec::new(),
            };
            for o in &obs {
                match &o.outcome {
                    Ok(st) if st.in_recovery => (rebuilt_unseen[o.server.index()], promoted_unseen[o.server.index()]) = (false, false),
                    Ok(_) => seen_primary[o.server.index()] = true,
                    Err(_) => {}
                }
            }
            let full = matches!(op, Op::Probe(7)) && !cluster.truth.contains(&Truth::Frozen);
            // Anything but a full, clean probe round starts the count again.
            stable = if full { stable + 1 } else { 0 };
            for o in &obs {
                if let Ok(ServerState { in_recovery: false, timeline: Some(t), .. }) = &o.outcome {
                    max_seen = max_seen.max(*t);
                }
            }
            one.decide(&obs);
            let Some(two) = two.as_mut() else { continue };
            two.decide(&obs);
            if stable < 3 || !one.state.first_round_done || !two.state.first_round_done {
                continue;
            }
            // alias 0: read-write; alias 1: primary.
            for (alias, ok) in [(0usize, true), (1usize, false)] {
                let newest: Vec<usize> = (0..3).filter(|&s| match cluster.truth[s] {
                    Truth::Primary { tl, read_only } => tl == max_seen && (!ok || !read_only),
                    _ => false,
                }).collect();
                let on_newest = (0..3).filter(|&s| matches!(cluster.truth[s], Truth::Primary { tl, .. } if tl == max_seen)).count();
                if newest.len() == 1 && on_newest == 1 && !promoted_unseen[newest[0]] {
                    let expected = Answer::Target(sid(newest[0]));
                    prop_assert_eq!(&one.answers()[alias], &expected, "instance started first, alias {}", alias);
                    prop_assert_eq!(&two.answers()[alias], &expected, "instance started at step {}, alias \
                        {}", late, alias);
                }
            }
        }
    }
}
