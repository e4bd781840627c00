use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::control::{ControlError, Override};
use crate::observation::{FailureCause, FailureKind, ProbeFailure};

fn config(role: &str, policy: &str) -> Config {
    fixture::parse("t.toml", &config_text(role, policy))
}

/// Servers a and b, probes every 100 ms (fall 3, rise 2), and one alias
/// `prod.db.internal` over ["a", "b"] with `role` and `policy`; its table is
/// last, so lines appended to the text belong to it.
pub(super) fn config_text(role: &str, policy: &str) -> String {
    format!(
        r#"{}[[aliases]]
name = "prod.db.internal"
role = "{role}"
on_no_match = "{policy}"
servers = ["a", "b"]
"#,
        fixture::header(3, &["a", "b"])
    )
}

pub(super) const A: ServerId = ServerId::new(0);
pub(super) const B: ServerId = ServerId::new(1);
/// The test configs' first (usually only) alias.
pub(super) const ALIAS: AliasId = AliasId::new(0);

pub(super) fn primary(tl: Option<u32>) -> Result<ServerState, ProbeFailure> {
    Ok(ServerState {
        in_recovery: false,
        read_only: false,
        timeline: tl,
        replay_lag_bytes: None,
        wal_lsn: None,
        received_lsn: None,
        received_timeline: None,
        fresh_connection: false,
    })
}
pub(super) fn read_only_primary() -> Result<ServerState, ProbeFailure> {
    Ok(ServerState {
        in_recovery: false,
        read_only: true,
        timeline: Some(1),
        replay_lag_bytes: None,
        wal_lsn: None,
        received_lsn: None,
        received_timeline: None,
        fresh_connection: false,
    })
}
pub(super) fn standby() -> Result<ServerState, ProbeFailure> {
    Ok(ServerState {
        in_recovery: true,
        read_only: true,
        timeline: None,
        replay_lag_bytes: Some(0),
        wal_lsn: None,
        received_lsn: None,
        received_timeline: None,
        fresh_connection: false,
    })
}
/// A standby whose WAL receiver receives on timeline `tl` (what a probe
/// role with `pg_read_all_stats` sees): it follows a primary on `tl`.
pub(super) fn following(tl: u32) -> Result<ServerState, ProbeFailure> {
    let mut s = standby()?;
    s.received_timeline = Some(tl);
    Ok(s)
}
/// A failure of `kind`, with the cause such a failure typically has (the
/// decision looks at the kind only).
pub(super) fn fail(kind: FailureKind) -> Result<ServerState, ProbeFailure> {
    Err(ProbeFailure {
        kind,
        cause: match kind {
            FailureKind::Definite => FailureCause::Refused,
            FailureKind::Ambiguous => FailureCause::Timeout,
        },
        message: format!("{kind:?} failure"),
    })
}

/// Drives the decision with a simulated clock.
pub(super) struct Sim {
    pub config: Config,
    pub state: State,
    pub now: Instant,
    pub events: Vec<Event>,
}

impl Sim {
    pub(super) fn new(role: &str, policy: &str) -> Sim {
        Sim::with_config(config(role, policy))
    }
    pub(super) fn with_config(config: Config) -> Sim {
        let now = Instant::now();
        Sim {
            state: State::new(&config, now),
            config,
            now,
            events: Vec::new(),
        }
    }
    pub(super) fn step(&mut self, obs: &[(ServerId, Result<ServerState, ProbeFailure>)]) -> Answer {
        self.step_after(Duration::from_millis(100), obs)
    }
    /// A step `dt` after the last one (the incident cadence probes faster).
    pub(super) fn step_after(&mut self, dt: Duration, obs: &[(ServerId, Result<ServerState, ProbeFailure>)]) -> Answer {
        self.now += dt;
        let obs: Vec<Observation> = obs
            .iter()
            .map(|(s, o)| Observation {
                server: *s,
                at: self.now,
                outcome: o.clone(),
                rtt: None,
            })
            .collect();
        let (state, events) = decide(&self.state, &obs, &self.config, self.now);
        self.state = state;
        self.events = events;
        self.state.answer(&self.config, ALIAS)
    }
    pub(super) fn changed(&self) -> Option<(Option<ServerId>, ServerId, String)> {
        self.events.iter().find_map(|e| match e {
            Event::TargetChanged { old, new, reason, .. } => Some((*old, *new, reason.clone())),
            _ => None,
        })
    }
}

#[test]
fn pending_until_every_server_reported() {
    let mut s = Sim::new("read-write", "keep-last");
    assert_eq!(s.step(&[(A, primary(Some(1)))]), Answer::Pending);
    assert_eq!(s.step(&[(B, standby())]), Answer::Target(A));
    let (old, new, reason) = s.changed().unwrap();
    assert_eq!((old, new), (None, A));
    assert!(reason.contains("first decision"), "{reason}");
}

#[test]
fn first_round_closes_at_the_deadline_without_a_frozen_server() {
    let mut s = Sim::new("read-write", "keep-last");
    assert_eq!(s.step(&[(A, primary(Some(1)))]), Answer::Pending);
    for _ in 0..8 {
        assert_eq!(s.step(&[]), Answer::Pending);
    }
    assert_eq!(
        s.step(&[]),
        Answer::Target(A),
        "1s after start the first round is closed"
    );
    assert!(s.events.contains(&Event::FirstRound { missing: vec![B] }));
}

#[test]
fn nothing_matches_at_start_is_servfail_even_with_keep_last() {
    let mut s = Sim::new("read-write", "keep-last");
    assert_eq!(s.step(&[(A, standby()), (B, standby())]), Answer::NoTarget);
    assert!(s.events.iter().any(|e| matches!(e, Event::NoMatch { last: None, .. })));
}

#[test]
fn promote_while_old_primary_runs_newest_timeline_wins() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
        Answer::Target(B)
    );
    let (old, new, reason) = s.changed().unwrap();
    assert_eq!((old, new), (Some(A), B));
    assert!(reason.contains("newer timeline"), "{reason}");
    assert!(s.events.iter().any(|e| matches!(
        e,
        Event::SplitBrain {
            chosen: B,
            by_timeline: true,
            ..
        }
    )));
    // Stays, and the split brain is not reported again while it lasts.
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
        Answer::Target(B)
    );
    assert!(s.events.is_empty());
}

#[test]
fn split_brain_without_timelines_keeps_current() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, standby()), (B, primary(None))]);
    assert_eq!(s.step(&[(A, primary(None)), (B, primary(None))]), Answer::Target(B));
    assert!(s.changed().is_none());
    assert!(s.events.iter().any(|e| matches!(
        e,
        Event::SplitBrain {
            chosen: B,
            by_timeline: false,
            ..
        }
    )));
}

#[test]
fn split_brain_with_equal_timelines_keeps_current() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, standby()), (B, primary(Some(3)))]);
    assert_eq!(
        s.step(&[(A, primary(Some(3))), (B, primary(Some(3)))]),
        Answer::Target(B)
    );
}

#[test]
fn split_brain_at_start_without_timelines_picks_list_order() {
    let mut s = Sim::new("read-write", "keep-last");
    assert_eq!(s.step(&[(A, primary(None)), (B, primary(None))]), Answer::Target(A));
}

#[test]
fn read_only_primary_is_left_for_a_writable_one() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    assert_eq!(
        s.step(&[(A, read_only_primary()), (B, primary(Some(2)))]),
        Answer::Target(B)
    );
    let (_, _, reason) = s.changed().unwrap();
    assert!(reason.contains("no longer read-write"), "{reason}");
}

#[test]
fn none_writable_keeps_last_or_servfails() {
    for (policy, expected) in [("keep-last", Answer::Target(A)), ("servfail", Answer::NoTarget)] {
        let mut s = Sim::new("read-write", policy);
        s.step(&[(A, primary(Some(1))), (B, standby())]);
        assert_eq!(
            s.step(&[(A, read_only_primary()), (B, standby())]),
            expected,
            "{policy}"
        );
        assert!(
            s.events
                .iter()
                .any(|e| matches!(e, Event::NoMatch { last: Some(A), .. })),
            "{policy}"
        );
        // Logged once, not on every probe.
        assert_eq!(s.step(&[(A, read_only_primary()), (B, standby())]), expected);
        assert!(!s.events.iter().any(|e| matches!(e, Event::NoMatch { .. })));
        // Writable again: answered again.
        assert_eq!(s.step(&[(A, primary(Some(1))), (B, standby())]), Answer::Target(A));
    }
}

#[test]
fn ambiguous_failures_are_damped_definite_ones_are_not() {
    // Timeouts (fall = 3): A keeps its last known state, so a writable B
    // whose timeline cannot be compared (a newer timeline would win the split
    // brain at once) is not chosen yet.
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(None)), (B, standby())]);
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Ambiguous)), (B, primary(None))]),
        Answer::Target(A)
    );
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Ambiguous)), (B, primary(None))]),
        Answer::Target(A)
    );
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Ambiguous)), (B, primary(None))]),
        Answer::Target(B),
        "third timeout: down"
    );
    assert!(s.changed().unwrap().2.contains("a is down"));

    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Definite)), (B, primary(Some(2)))]),
        Answer::Target(B),
        "refused: at once"
    );
}

#[test]
fn a_recovered_server_needs_rise_good_probes() {
    let mut s = Sim::new("standby", "servfail");
    s.step(&[(A, primary(Some(1))), (B, fail(FailureKind::Definite))]);
    assert_eq!(s.state.answer(&s.config, ALIAS), Answer::NoTarget);
    assert_eq!(
        s.step(&[(B, standby())]),
        Answer::NoTarget,
        "one good probe is not enough after being down"
    );
    assert_eq!(s.step(&[(B, standby())]), Answer::Target(B));
}

#[test]
fn standby_alias_points_at_the_replica() {
    let mut s = Sim::new("standby", "keep-last");
    assert_eq!(s.step(&[(A, primary(Some(1))), (B, standby())]), Answer::Target(B));
}

#[test]
fn prefer_standby_falls_back_and_returns() {
    let mut s = Sim::new("prefer-standby", "keep-last");
    assert_eq!(s.step(&[(A, primary(Some(1))), (B, standby())]), Answer::Target(B));
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, fail(FailureKind::Definite))]),
        Answer::Target(A)
    );
    assert_eq!(s.step(&[(B, standby())]), Answer::Target(A), "damped: one good probe");
    assert_eq!(s.step(&[(B, standby())]), Answer::Target(B), "back to the standby");
}

#[test]
fn primary_role_accepts_a_read_only_primary() {
    let mut s = Sim::new("primary", "keep-last");
    assert_eq!(s.step(&[(A, read_only_primary()), (B, standby())]), Answer::Target(A));
    let mut s = Sim::new("read-only", "keep-last");
    assert_eq!(s.step(&[(A, primary(Some(1))), (B, standby())]), Answer::Target(B));
}

#[test]
fn same_observations_same_answer() {
    let run = || {
        let mut s = Sim::new("read-write", "keep-last");
        s.step(&[(A, primary(None)), (B, primary(None))])
    };
    assert_eq!(run(), run());
}

fn pin(alias: &str, server: &str) -> Override {
    Override::Pin {
        alias: alias.into(),
        server: server.into(),
    }
}

impl Sim {
    pub(super) fn apply(&mut self, op: Override) -> Result<String, ControlError> {
        let (state, events, summary) = apply_override(&self.state, &self.config, &op, self.now)?;
        self.state = state;
        self.events = events;
        Ok(summary)
    }
    pub(super) fn answer(&self) -> Answer {
        self.state.answer(&self.config, ALIAS)
    }
}

#[test]
fn a_pin_wins_over_probes_until_undone() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    let summary = s.apply(pin("PROD.db.internal", "b")).unwrap();
    assert!(summary.contains("pinned to b"), "{summary}");
    assert_eq!(s.answer(), Answer::Target(B), "at once, without waiting for a probe");
    assert!(s.changed().unwrap().2.contains("pinned"));
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, fail(FailureKind::Definite))]),
        Answer::Target(B),
        "even while down"
    );
    s.apply(Override::Unpin {
        alias: "prod.db.internal.".into(),
    })
    .unwrap();
    assert_eq!(s.answer(), Answer::Target(A));
}

#[test]
fn a_drained_server_is_never_chosen() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.apply(Override::Drain { server: "a".into() }).unwrap();
    assert_eq!(s.answer(), Answer::NoTarget, "keep-last does not keep a drained server");
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
        Answer::Target(B)
    );
    assert!(s.changed().unwrap().2.contains("drained"), "{:?}", s.changed());
    s.apply(Override::Undrain { server: "a".into() }).unwrap();
    assert_eq!(s.answer(), Answer::Target(B), "undraining does not move the alias back");
}

#[test]
fn overrides_name_real_aliases_and_candidates() {
    let mut s = Sim::new("read-write", "keep-last");
    assert_eq!(
        s.apply(pin("nope.db.internal", "a")),
        Err(ControlError::UnknownAlias("nope.db.internal".into()))
    );
    assert_eq!(
        s.apply(pin("prod.db.internal", "c")),
        Err(ControlError::UnknownServer("c".into()))
    );
    assert_eq!(
        s.apply(Override::Drain { server: "zz".into() }),
        Err(ControlError::UnknownServer("zz".into()))
    );
}

#[test]
fn reconfigure_keeps_unchanged_servers_and_targets() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.apply(Override::Drain { server: "b".into() }).unwrap();
    // The new config lists b before a, drops nothing, and changes b's port.
    let text = r#"
[dns]
listen = ["127.0.0.1:5353"]
[[zones]]
name = "db.internal"
[probe]
user = "probe"
sslmode = "require"
[servers.b]
target = "pg-b.test"
port = 6543
[servers.a]
target = "pg-a.test"
[[aliases]]
name = "other.db.internal"
servers = ["b"]
[[aliases]]
name = "prod.db.internal"
servers = ["b", "a"]
"#;
    let new = Config::from_toml(Path::new("t.toml"), text).unwrap();
    // Servers are sorted by id in the config, so a stays 0 and b stays 1; the
    // aliases swap places.
    let next = reconfigure(&s.state, &s.config, &new);
    assert!(next.first_round_done);
    assert!(next.servers[A].up, "a is unchanged: keeps its health");
    assert!(
        next.servers[B].up,
        "b changed: keeps its health until its new prober reports"
    );
    assert!(next.drained[B], "drains follow the server id");
    assert_eq!(next.aliases[AliasId::new(1)].target, Some(A), "prod keeps its target");
    assert_eq!(next.aliases[ALIAS].target, None, "the new alias starts without one");
    let (next, _) = decide(&next, &[], &new, s.now);
    assert_eq!(next.answer(&new, AliasId::new(1)), Answer::Target(A));
}

fn downs(s: &Sim) -> Vec<(ServerId, bool)> {
    s.events
        .iter()
        .filter_map(|e| {
            if let Event::ServerDown { server, was_up, .. } = e {
                Some((*server, *was_up))
            } else {
                None
            }
        })
        .collect()
}

fn ups(s: &Sim) -> Vec<(ServerId, Option<Duration>)> {
    s.events
        .iter()
        .filter_map(|e| {
            if let Event::ServerUp { server, down_for, .. } = e {
                Some((*server, *down_for))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn a_server_never_up_is_reported_down_once_with_its_reason() {
    // A wrong sslrootcert: every probe of b fails with a TLS error (ambiguous).
    let mut s = Sim::new("read-write", "keep-last");
    let tls = || {
        Err(ProbeFailure {
            kind: FailureKind::Ambiguous,
            cause: FailureCause::Tls,
            message: "TLS: certificate verify failed".into(),
        })
    };
    s.step(&[(A, primary(Some(1))), (B, tls())]);
    assert_eq!(downs(&s), [(B, false)], "{:?}", s.events);
    assert!(s
        .events
        .iter()
        .any(|e| matches!(e, Event::ServerDown { error, .. } if error.contains("certificate verify failed"))));
    assert_eq!(ups(&s), [(A, None)]);
    // Never again while the episode lasts, however many probes fail.
    for _ in 0..20 {
        s.step(&[(A, primary(Some(1))), (B, tls())]);
        assert!(downs(&s).is_empty(), "{:?}", s.events);
    }
    // Fixed: up after `rise` good probes, with how long it was down.
    s.step(&[(B, standby())]);
    assert!(ups(&s).is_empty(), "rise = 2");
    s.step(&[(B, standby())]);
    assert_eq!(ups(&s), [(B, Some(Duration::from_millis(2200)))]);
}

#[test]
fn a_later_failure_is_one_episode_from_fall_to_rise() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    // Damped: fewer than `fall` timeouts are no episode.
    s.step(&[(B, fail(FailureKind::Ambiguous))]);
    s.step(&[(B, fail(FailureKind::Ambiguous))]);
    assert!(downs(&s).is_empty());
    s.step(&[(B, fail(FailureKind::Ambiguous))]);
    assert_eq!(downs(&s), [(B, true)]);
    // A good probe and another failure within the episode: still one episode.
    s.step(&[(B, standby())]);
    s.step(&[(B, fail(FailureKind::Definite))]);
    assert!(downs(&s).is_empty() && ups(&s).is_empty(), "{:?}", s.events);
    s.step(&[(B, standby())]);
    s.step(&[(B, standby())]);
    assert_eq!(ups(&s), [(B, Some(Duration::from_millis(400)))]);
    // A definite failure starts the next episode at once.
    s.step(&[(A, fail(FailureKind::Definite))]);
    assert_eq!(downs(&s), [(A, true)]);
}

#[test]
fn servfail_reasons_say_why() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    let (st, _, _) = apply_override(&s.state, &s.config, &Override::Drain { server: "a".into() }, s.now).unwrap();
    assert_eq!(st.answer(&s.config, ALIAS), Answer::NoTarget);
    let why = st.servfail_reason(&s.config, ALIAS);
    assert!(
        why.starts_with("a was drained by an operator; candidates: a drained; b standby"),
        "{why}"
    );
    let mut s = Sim::new("read-write", "servfail");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, fail(FailureKind::Definite))]);
    let why = s.state.servfail_reason(&s.config, ALIAS);
    assert!(
        why.contains("on_no_match = \"servfail\"")
            && why.contains("a down (Definite failure)")
            && why.contains("b standby"),
        "{why}"
    );
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, standby()), (B, standby())]);
    assert!(s
        .state
        .servfail_reason(&s.config, ALIAS)
        .contains("keep-last has nothing to keep"));
}

/// Issue 16: damping is time, not probe count. With `interval` 100 ms and
/// `fall` 3, the incident cadence's three timeouts within 36 ms do not take
/// the server down; the run must last (fall - 1) x interval less half an
/// interval (150 ms from its first failure). `rise` likewise.
#[test]
fn damping_is_time_not_probe_count() {
    let ms = Duration::from_millis;
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(None)), (B, standby())]);
    let timeout = || fail(FailureKind::Ambiguous);
    // First failure at the usual cadence, then every 12 ms (incident cadence).
    assert_eq!(s.step(&[(A, timeout())]), Answer::Target(A));
    for _ in 0..11 {
        assert_eq!(s.step_after(ms(12), &[(A, timeout())]), Answer::Target(A));
        assert!(
            s.state.servers[A].up,
            "{} failures within {:?}",
            s.state.servers[A].consecutive_fail,
            ms(132)
        );
    }
    assert!(s.state.servers[A].consecutive_fail >= 3);
    // 144 ms after the first failure: still up; 150 ms: down.
    assert_eq!(s.step_after(ms(12), &[(A, timeout())]), Answer::Target(A));
    assert!(s.state.servers[A].up);
    s.step_after(ms(6), &[(A, timeout())]);
    assert!(!s.state.servers[A].up, "the run lasted 150 ms");
    // Back: two good probes 10 ms apart are not `rise` = 2 yet; 50 ms after
    // the first good one they are.
    s.step_after(ms(10), &[(A, primary(None))]);
    s.step_after(ms(10), &[(A, primary(None))]);
    assert!(!s.state.servers[A].up, "rise is time as well");
    s.step_after(ms(20), &[(A, primary(None))]);
    assert!(!s.state.servers[A].up, "30 ms after the first good probe");
    s.step_after(ms(20), &[(A, primary(None))]);
    assert!(s.state.servers[A].up, "50 ms after the first good probe");
    // At the configured cadence nothing changed: three timeouts 100 ms apart.
    for (n, up) in [(1, true), (2, true), (3, false)] {
        s.step(&[(A, timeout())]);
        assert_eq!(s.state.servers[A].up, up, "after {n} timeouts");
    }
}
