//! Fencing, as sequences of faults (see `fence.rs` for the rules).

use std::path::Path;
use std::time::{Duration, Instant};

use super::snapshot::{capture, restore};
use super::tests::{fail, following, primary, read_only_primary, standby, Sim, A, ALIAS, B};
use super::*;
use crate::control::Override;
use crate::observation::FailureKind;

const DOWN: FailureKind = FailureKind::Definite;

fn held(s: &Sim) -> Option<(ServerId, String)> {
    s.events.iter().find_map(|e| match e {
        Event::FenceHeld { server, reason, .. } => Some((*server, reason.clone())),
        _ => None,
    })
}

fn fenced(s: &Sim, server: ServerId) -> bool {
    s.state.aliases[ALIAS].fence(server).is_some()
}

/// The issue's sequence: B promoted while A runs, then B dies. The alias must
/// not go back to A, whose data diverged at the promote.
#[test]
fn split_brain_then_the_new_primary_dies() {
    for (policy, expected) in [("keep-last", Answer::Target(B)), ("servfail", Answer::NoTarget)] {
        let mut s = Sim::new("read-write", policy);
        assert_eq!(s.step(&[(A, primary(Some(1))), (B, standby())]), Answer::Target(A));
        assert_eq!(
            s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
            Answer::Target(B)
        );
        assert!(fenced(&s, A), "A lost the split brain");
        assert_eq!(s.state.aliases[ALIAS].timeline_floor, Some(2));
        assert_eq!(
            s.step(&[(A, primary(Some(1))), (B, fail(DOWN))]),
            expected,
            "{policy}: never back to A"
        );
        let (server, reason) = held(&s).expect("the fence holding is reported");
        assert_eq!(server, A);
        assert!(
            reason.contains("timeline 2") || reason.contains("split brain"),
            "{reason}"
        );
        for _ in 0..5 {
            assert_eq!(s.step(&[(A, primary(Some(1))), (B, fail(DOWN))]), expected);
            assert!(held(&s).is_none(), "reported once per episode");
        }
    }
}

#[test]
fn old_primary_restarted_writable_after_kill_and_promote() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    assert_eq!(
        s.step(&[(A, fail(DOWN)), (B, standby())]),
        Answer::Target(A),
        "keep-last"
    );
    assert_eq!(s.step(&[(A, fail(DOWN)), (B, primary(Some(2)))]), Answer::Target(B));
    assert!(s.changed().unwrap().2.contains("a is down"), "{:?}", s.changed());
    assert!(fenced(&s, A), "A was superseded");
    // A comes back as it was: writable, on timeline 1.
    for _ in 0..3 {
        assert_eq!(
            s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
            Answer::Target(B)
        );
    }
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, fail(DOWN))]),
        Answer::Target(B),
        "keep-last keeps the dead new primary"
    );
}

#[test]
fn without_timelines_the_fences_remember() {
    // WAL functions revoked: no timelines at all.
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(None)), (B, standby())]);
    s.step(&[(A, fail(DOWN)), (B, standby())]);
    assert_eq!(s.step(&[(A, fail(DOWN)), (B, primary(None))]), Answer::Target(B));
    assert!(fenced(&s, A));
    // A restarted writable: a split brain the sidecar cannot order by
    // timeline; the alias stays and A stays fenced.
    assert_eq!(s.step(&[(A, primary(None)), (B, primary(None))]), Answer::Target(B));
    assert_eq!(s.step(&[(A, primary(None)), (B, fail(DOWN))]), Answer::Target(B));
    assert_eq!(held(&s).map(|h| h.0), Some(A));
}

#[test]
fn without_timelines_a_split_brain_loser_is_fenced() {
    let mut s = Sim::new("read-write", "servfail");
    s.step(&[(A, primary(None)), (B, standby())]);
    assert_eq!(
        s.step(&[(A, primary(None)), (B, primary(None))]),
        Answer::Target(A),
        "current kept"
    );
    assert!(fenced(&s, B), "B was writable beside A: it lacks A's writes since");
    assert_eq!(
        s.step(&[(A, fail(DOWN)), (B, primary(None))]),
        Answer::NoTarget,
        "not to B"
    );
}

#[test]
fn a_frozen_primary_does_not_fence_its_promoted_replica() {
    // A frozen: its state is only remembered (damping), it is not seen
    // writable beside B, so B is its successor, not a split-brain loser.
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(None)), (B, standby())]);
    let timeout = || fail(FailureKind::Ambiguous);
    assert_eq!(
        s.step(&[(A, timeout()), (B, primary(None))]),
        Answer::Target(A),
        "damped"
    );
    assert!(!fenced(&s, B));
    assert_eq!(s.step(&[(A, timeout()), (B, primary(None))]), Answer::Target(A));
    assert_eq!(
        s.step(&[(A, timeout()), (B, primary(None))]),
        Answer::Target(B),
        "A down after fall"
    );
    assert!(fenced(&s, A));
    // With timelines the newer one wins at once, even while A is damped.
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    assert_eq!(s.step(&[(A, timeout()), (B, primary(Some(2)))]), Answer::Target(B));
}

#[test]
fn following_the_new_primary_lifts_the_fence_recovery_alone_does_not() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, fail(DOWN)), (B, primary(Some(2)))]);
    assert!(fenced(&s, A));
    // Issue 16: given standby.signal without pg_rewind, A is in recovery but
    // never streams (its history forked before its own position): no rebuild.
    for _ in 0..5 {
        s.step(&[(A, standby()), (B, primary(Some(2)))]);
        assert!(fenced(&s, A), "recovery alone is no rebuild");
    }
    // Receiving on another timeline than B's: another branch.
    s.step(&[(A, following(1)), (B, primary(Some(2)))]);
    assert!(fenced(&s, A), "receiving timeline 1, B is on 2");
    // Rebuilt as a standby of B (receives on B's timeline): the fence is lifted...
    s.step(&[(A, following(2)), (B, primary(Some(2)))]);
    assert!(!fenced(&s, A));
    assert!(s.events.iter().any(|e| matches!(e, Event::Unfenced { server: A, .. })));
    // ... and when B dies and A is promoted (timeline 3), the alias follows.
    assert_eq!(s.step(&[(A, standby()), (B, fail(DOWN))]), Answer::Target(B));
    assert_eq!(s.step(&[(A, primary(Some(3))), (B, fail(DOWN))]), Answer::Target(A));
}

/// Behaviour changed by issue 16: a newer timeline alone no longer lifts a
/// fence. An old primary restored without pg_rewind and promoted by mistake
/// reaches one too (timeline 3, having read B's history file), and must not
/// win over B, which holds the real data, nor raise the floor above it.
#[test]
fn a_newer_timeline_alone_does_not_lift_the_fence() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, fail(DOWN)), (B, primary(Some(2)))]);
    s.step(&[(A, standby()), (B, primary(Some(2)))]);
    for _ in 0..5 {
        assert_eq!(
            s.step(&[(A, primary(Some(3))), (B, primary(Some(2)))]),
            Answer::Target(B),
            "the fork on timeline 3 does not win"
        );
        assert!(fenced(&s, A));
    }
    assert_eq!(
        s.state.aliases[ALIAS].timeline_floor,
        Some(2),
        "a fenced server's timeline is no floor"
    );
    // B dies: nothing the alias may follow (keep-last keeps B).
    assert_eq!(s.step(&[(A, primary(Some(3))), (B, fail(DOWN))]), Answer::Target(B));
    assert!(fenced(&s, A));
}

/// The cluster was turned around while the sidecar did not look (A rebuilt
/// and promoted, timeline 3): A's newer timeline *and* B following it lift
/// the fence.
#[test]
fn a_newer_timeline_followed_by_the_alias_server_lifts_the_fence() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, fail(DOWN)), (B, primary(Some(2)))]);
    assert_eq!(
        s.step(&[(A, primary(Some(3))), (B, following(3))]),
        Answer::Target(B),
        "keep-last; A needs rise"
    );
    assert!(!fenced(&s, A), "B follows A on timeline 3");
    assert_eq!(s.step(&[(A, primary(Some(3))), (B, following(3))]), Answer::Target(A));
}

#[test]
fn an_older_timeline_is_never_answered_while_a_newer_one_was_seen() {
    // A fresh instance: B promoted but read-only (not writable), A writable
    // on the old timeline. A read-write alias must not answer A.
    let mut s = Sim::new("read-write", "keep-last");
    let b_read_only = || {
        Ok(ServerState {
            timeline: Some(2),
            ..read_only_primary().unwrap()
        })
    };
    assert_eq!(s.step(&[(A, primary(Some(1))), (B, b_read_only())]), Answer::NoTarget);
    // The current target falls below the floor: not kept, even by keep-last.
    let mut s = Sim::new("read-write", "keep-last");
    assert_eq!(s.step(&[(A, primary(Some(1))), (B, standby())]), Answer::Target(A));
    assert_eq!(s.step(&[(A, primary(Some(1))), (B, b_read_only())]), Answer::NoTarget);
    // A primary-role alias takes the read-only primary on the newer timeline.
    let mut s = Sim::new("primary", "keep-last");
    assert_eq!(s.step(&[(A, primary(Some(1))), (B, b_read_only())]), Answer::Target(B));
}

#[test]
fn a_drain_does_not_send_the_alias_back_to_the_old_primary() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]);
    s.apply(Override::Drain { server: "b".into() }).unwrap();
    assert_eq!(s.answer(), Answer::NoTarget);
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
        Answer::NoTarget
    );
}

#[test]
fn a_pin_overrides_fences() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]);
    s.apply(Override::Pin {
        alias: "prod.db.internal".into(),
        server: "a".into(),
    })
    .unwrap();
    assert_eq!(s.answer(), Answer::Target(A));
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
        Answer::Target(A)
    );
    s.apply(Override::Unpin {
        alias: "prod.db.internal".into(),
    })
    .unwrap();
    assert_eq!(
        s.answer(),
        Answer::Target(B),
        "the fences and floor still stand after the pin"
    );
}

#[test]
fn unfence_after_the_cluster_was_recreated() {
    let mut s = Sim::new("read-write", "servfail");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, primary(Some(4))), (B, standby())]);
    // Rebuilt from scratch: timelines restart at 1.
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, standby())]),
        Answer::NoTarget,
        "timeline 1 < 4"
    );
    let summary = s
        .apply(Override::Unfence {
            alias: "prod.db.internal".into(),
            server: Some("a".into()),
        })
        .unwrap();
    assert!(summary.contains("lowered from 4 to 1"), "{summary}");
    assert_eq!(s.answer(), Answer::Target(A));
    // Unfencing the whole alias lifts fences too.
    let mut s = Sim::new("read-write", "servfail");
    s.step(&[(A, primary(None)), (B, standby())]);
    s.step(&[(A, primary(None)), (B, primary(None))]);
    s.step(&[(A, fail(DOWN)), (B, primary(None))]);
    assert_eq!(s.answer(), Answer::NoTarget);
    let summary = s
        .apply(Override::Unfence {
            alias: "prod.db.internal".into(),
            server: None,
        })
        .unwrap();
    assert!(summary.contains("fences lifted (b)"), "{summary}");
    assert_eq!(s.answer(), Answer::Target(B));
    assert!(s.events.iter().any(|e| matches!(e, Event::Unfenced { server: B, .. })));
}

#[test]
fn unfence_names_real_aliases_and_candidates() {
    let mut s = Sim::new("read-write", "keep-last");
    let e = s
        .apply(Override::Unfence {
            alias: "x.db.internal".into(),
            server: None,
        })
        .unwrap_err();
    assert!(matches!(e, crate::control::ControlError::UnknownAlias(_)));
    let summary = s
        .apply(Override::Unfence {
            alias: "prod.db.internal".into(),
            server: Some("a".into()),
        })
        .unwrap();
    assert!(summary.contains("was not fenced"), "{summary}");
}

/// A restart with the state file: the restored state keeps the alias off A
/// even when the first round closes before B reports.
#[test]
fn restart_mid_failover_remembers_fences_and_the_floor() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]);
    let t0 = s.now;
    let unix = |t: Instant| 1000.0 + t.duration_since(t0).as_secs_f64();
    let remembered = capture(&s.state, &s.config, unix);
    // Through JSON, as the state file stores it.
    let remembered = serde_json::from_str(&serde_json::to_string(&remembered).unwrap()).unwrap();
    let start = s.now + Duration::from_secs(60);
    let (state, notes) = restore(&s.config, &remembered, start, |u| {
        t0 + Duration::from_secs_f64(u - 1000.0)
    });
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(state.aliases[ALIAS].fences, s.state.aliases[ALIAS].fences);
    assert_eq!(state.aliases[ALIAS].timeline_floor, Some(2));
    assert_eq!(state.aliases[ALIAS].target, Some(B));
    s.state = state;
    s.now = start;
    assert_eq!(
        s.step(&[(A, primary(Some(1)))]),
        Answer::Pending,
        "never an answer before the first round"
    );
    for _ in 0..20 {
        assert_ne!(s.step(&[(A, primary(Some(1)))]), Answer::Target(A));
    }
    assert!(s.state.first_round_done);
    assert_eq!(
        s.answer(),
        Answer::Target(B),
        "keep-last keeps B, which has not reported"
    );
    // B reports as a writable primary: answered again.
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
        Answer::Target(B)
    );
}

#[test]
fn restore_skips_what_the_config_no_longer_has() {
    let s = Sim::new("read-write", "keep-last");
    let mut r = super::snapshot::Remembered {
        drained: vec!["a".into(), "gone".into()],
        ..Default::default()
    };
    r.aliases.insert("old.db.internal.".into(), Default::default());
    r.aliases.insert(
        "prod.db.internal.".into(),
        super::snapshot::RememberedAlias {
            target: Some("zz".into()),
            pinned: Some("b".into()),
            ..Default::default()
        },
    );
    let (state, notes) = restore(&s.config, &r, s.now, |_| s.now);
    assert!(state.drained[A]);
    assert_eq!(state.pins[ALIAS], Some(B));
    assert_eq!(state.aliases[ALIAS].target, None);
    assert_eq!(notes.len(), 3, "{notes:?}");
}

#[test]
fn a_reload_keeps_fences_floors_and_health() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]);
    let text = r#"
[dns]
listen = ["127.0.0.1:5353"]
[[zones]]
name = "db.internal"
[probe]
user = "probe"
sslmode = "require"
[servers.a]
target = "pg-a.test"
port = 6000
[servers.b]
target = "pg-b.test"
port = 6001
[[aliases]]
name = "prod.db.internal"
servers = ["b", "a"]
[[aliases]]
name = "new.db.internal"
servers = ["a", "b"]
"#;
    let new = Config::from_toml(Path::new("t.toml"), text).unwrap();
    let next = reconfigure(&s.state, &s.config, &new);
    assert_eq!(next.aliases[ALIAS].fences, s.state.aliases[ALIAS].fences);
    assert_eq!(next.aliases[ALIAS].timeline_floor, Some(2));
    assert_eq!(
        next.aliases[AliasId::new(1)].timeline_floor,
        Some(2),
        "a new alias starts with what is known"
    );
    assert!(
        next.servers[A].up && next.servers[B].up,
        "settings changed: health kept until the new probers report"
    );
    let (next, _) = decide(&next, &[], &new, s.now);
    assert_eq!(next.answer(&new, ALIAS), Answer::Target(B));
    assert_eq!(
        next.answer(&new, AliasId::new(1)),
        Answer::Target(B),
        "the new alias does not pick the older timeline"
    );
}

/// Three servers: A primary, B and C its standbys. B is promoted (timeline
/// 2) and C keeps following A. B dies; C is promoted later and lands on
/// timeline 2 as well, a fork that lacks B's writes.
#[test]
fn a_standby_promoted_later_onto_the_same_timeline_is_a_fork() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    assert_eq!(s.step(&[(A, fail(DOWN)), (B, primary(Some(2)))]), Answer::Target(B));
    // "A" now plays C: rebuilt? No: a standby of the old lineage, promoted
    // (it does not follow B, so the fence stays: issue 16).
    s.step(&[(A, standby()), (B, primary(Some(2)))]);
    assert_eq!(s.step(&[(A, standby()), (B, fail(DOWN))]), Answer::Target(B));
    assert_eq!(
        s.step(&[(A, primary(Some(2))), (B, fail(DOWN))]),
        Answer::Target(B),
        "not to the fork"
    );
    assert!(matches!(
        s.state.aliases[ALIAS].fence(A).map(|f| f.reason),
        Some(FenceReason::SameTimeline { holder: B })
    ));
    assert!(
        s.events.iter().any(|e| matches!(e, Event::FenceHeld { server: A, .. })),
        "{:?}",
        s.events
    );
    // A newer timeline alone is no rebuild (issue 16): an operator decides.
    assert_eq!(s.step(&[(A, primary(Some(3))), (B, fail(DOWN))]), Answer::Target(B));
    assert!(fenced(&s, A));
}

/// The fork of issue 15: A primary on timeline 1, B its standby. B is
/// promoted (timeline 2) and A stops; A is then restored from its own data
/// directory (recovery.signal, no primary_conninfo), replays its own WAL and
/// promotes itself onto timeline 2 as well: B's timeline *number* with A's
/// history. `b_alive` says whether B still runs when the fork appears;
/// `recovery_seen` whether a probe catches the fork's short recovery.
fn fork(b_alive: bool, recovery_seen: bool) -> Sim {
    let mut s = Sim::new("read-write", "keep-last");
    assert_eq!(s.step(&[(A, primary(Some(1))), (B, standby())]), Answer::Target(A));
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
        Answer::Target(B)
    );
    assert_eq!(s.step(&[(A, fail(DOWN)), (B, primary(Some(2)))]), Answer::Target(B));
    assert!(fenced(&s, A), "A lost the split brain on timeline 1");
    let b = move || if b_alive { primary(Some(2)) } else { fail(DOWN) };
    if !b_alive {
        assert_eq!(
            s.step(&[(A, fail(DOWN)), (B, b())]),
            Answer::Target(B),
            "keep-last keeps the dead B; nothing matches"
        );
    }
    if recovery_seen {
        assert_eq!(s.step(&[(A, standby()), (B, b())]), Answer::Target(B));
        assert!(fenced(&s, A), "recovery alone (issue 16): the fork does not follow B");
    }
    // The fork promotes itself onto timeline 2.
    for step in 0..6 {
        assert_eq!(
            s.step(&[(A, primary(Some(2))), (B, b())]),
            Answer::Target(B),
            "step {step}: never the fork"
        );
        assert!(fenced(&s, A), "step {step}: the fork stays fenced");
    }
    s
}

#[test]
fn a_fork_never_seen_in_recovery_while_the_new_primary_is_dead() {
    // The code review's path: A's old fence (timeline 1) meets A on timeline
    // 2, which alone would read as "promoted again since it was fenced", and
    // nothing else matches. Timeline 2 is B's: rule 4 keeps the fence.
    let s = fork(false, false);
    assert!(
        !s.events.iter().any(|e| matches!(e, Event::Unfenced { server: A, .. })),
        "never lifted, not even for one decision: {:?}",
        s.events
    );
    assert_eq!(
        held(&s),
        None,
        "the hold was reported at the fork's first writable probe"
    );
}

#[test]
fn a_fork_seen_in_recovery_while_the_new_primary_is_dead() {
    let s = fork(false, true);
    assert!(matches!(
        s.state.aliases[ALIAS].fence(A).map(|f| f.reason),
        Some(FenceReason::SameTimeline { holder: B })
    ));
}

#[test]
fn a_fork_never_seen_in_recovery_while_the_new_primary_is_alive() {
    fork(true, false);
}

#[test]
fn a_fork_seen_in_recovery_while_the_new_primary_is_alive() {
    let s = fork(true, true);
    assert!(matches!(
        s.state.aliases[ALIAS].fence(A).map(|f| f.reason),
        Some(FenceReason::SameTimeline { holder: B })
    ));
}

/// B alive but its latest probe timed out (damped) when the fork first shows
/// up writable: not a split brain B won (rule 3 does not fence), so only rule
/// 4 keeps the alias off A; then B dies.
#[test]
fn a_fork_beside_a_damped_new_primary_then_the_new_primary_dies() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    s.step(&[(A, fail(DOWN)), (B, primary(Some(2)))]);
    assert!(fenced(&s, A), "superseded on timeline 1");
    assert_eq!(
        s.step(&[(A, primary(Some(2))), (B, fail(FailureKind::Ambiguous))]),
        Answer::Target(B)
    );
    assert!(fenced(&s, A));
    for _ in 0..5 {
        assert_eq!(s.step(&[(A, primary(Some(2))), (B, fail(DOWN))]), Answer::Target(B));
    }
    // Rebuilt from B (B back for a while) and promoted later: a legitimate successor.
    s.step(&[(A, following(2)), (B, primary(Some(2)))]);
    assert!(!fenced(&s, A));
    s.step(&[(A, following(2)), (B, fail(DOWN))]);
    assert_eq!(s.step(&[(A, primary(Some(3))), (B, fail(DOWN))]), Answer::Target(A));
}

/// The paths where the fork is already *up* at its first probe on timeline 2,
/// so `rise` does not give rule 4 a probe's time to fence it again after the
/// "promoted again" lift: before rule 4 took precedence, the alias moved to
/// the fork (and then fenced B as the server it left).
fn fork_up_at_once(s: &mut Sim, b_alive: bool) {
    let b = move || if b_alive { primary(Some(2)) } else { fail(DOWN) };
    for step in 0..6 {
        assert_eq!(
            s.step(&[(A, primary(Some(2))), (B, b())]),
            Answer::Target(B),
            "step {step}: never the fork"
        );
        assert!(matches!(
            s.state.aliases[ALIAS].fence(A).map(|f| (f.reason, f.timeline)),
            Some((FenceReason::SameTimeline { holder: B }, Some(2)))
        ));
        assert!(!fenced(s, B));
    }
    let summary = s.state.candidates_summary(&s.config, ALIAS);
    assert!(
        summary.contains("a writable, timeline 2, fenced (it became writable on timeline 2, which b already holds"),
        "{summary}"
    );
}

/// A kept running after the failover (fenced on timeline 1), then stopped,
/// restored and promoted between two probes: the probe's kept connection
/// broke and its retry on a new connection found the fork, so no failure was
/// ever reported.
#[test]
fn a_fork_made_between_two_probes_is_never_answered() {
    for b_alive in [false, true] {
        let mut s = Sim::new("read-write", "keep-last");
        s.step(&[(A, primary(Some(1))), (B, standby())]);
        s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]);
        if !b_alive {
            assert_eq!(s.step(&[(A, primary(Some(1))), (B, fail(DOWN))]), Answer::Target(B));
        }
        assert!(s.state.servers[A].up && fenced(&s, A));
        fork_up_at_once(&mut s, b_alive);
    }
}

/// `rise = 1`: a server back from down is up at its first good probe.
#[test]
fn a_fork_is_never_answered_with_rise_1() {
    for b_alive in [false, true] {
        let text = super::tests::config_text("read-write", "keep-last").replace("rise = 2", "rise = 1");
        let mut s = Sim::with_config(Config::from_toml(Path::new("t.toml"), &text).unwrap());
        s.step(&[(A, primary(Some(1))), (B, standby())]);
        s.step(&[(A, fail(DOWN)), (B, primary(Some(2)))]);
        if !b_alive {
            s.step(&[(A, fail(DOWN)), (B, fail(DOWN))]);
        }
        fork_up_at_once(&mut s, b_alive);
    }
}

/// The sidecar restarts (state file) while the fork is made: its first probe
/// of A makes A up at once, and A is writable on timeline 2.
#[test]
fn a_fork_first_seen_after_a_sidecar_restart_is_never_answered() {
    for b_alive in [false, true] {
        let mut s = Sim::new("read-write", "keep-last");
        s.step(&[(A, primary(Some(1))), (B, standby())]);
        s.step(&[(A, fail(DOWN)), (B, primary(Some(2)))]);
        let t0 = s.now;
        let unix = |t: Instant| 1000.0 + t.duration_since(t0).as_secs_f64();
        let json = serde_json::to_string(&capture(&s.state, &s.config, unix)).unwrap();
        let start = s.now + Duration::from_secs(30);
        let (state, notes) = restore(&s.config, &serde_json::from_str(&json).unwrap(), start, |u| {
            t0 + Duration::from_secs_f64(u - 1000.0)
        });
        assert!(notes.is_empty(), "{notes:?}");
        s.state = state;
        s.now = start;
        fork_up_at_once(&mut s, b_alive);
    }
}

/// Two standbys of one primary both promoted (two forks on timeline 2), one
/// of them drained when the alias first chose: it was probed before the
/// alias had a server on timeline 2 and never lost a split brain (drained
/// servers are not candidates), yet it is a fork of the alias's server.
/// Found by the property test (a move to a server on the timeline it left).
#[test]
fn a_fork_drained_when_the_alias_chose_is_not_answered_once_undrained() {
    let mut s = Sim::new("read-write", "servfail");
    s.apply(Override::Drain { server: "b".into() }).unwrap();
    assert_eq!(s.step(&[(B, primary(Some(2)))]), Answer::Pending);
    assert_eq!(s.step(&[(A, primary(Some(2)))]), Answer::Target(A));
    s.apply(Override::Drain { server: "a".into() }).unwrap();
    s.apply(Override::Undrain { server: "b".into() }).unwrap();
    assert_eq!(s.answer(), Answer::NoTarget, "not to b, a fork of a");
    assert_eq!(
        s.step(&[(A, primary(Some(2))), (B, primary(Some(2)))]),
        Answer::NoTarget
    );
    assert!(matches!(
        s.state.aliases[ALIAS].fence(B).map(|f| (f.reason, f.timeline)),
        Some((FenceReason::SameTimeline { holder: A }, Some(2)))
    ));
}

/// Issue 16, item 6: a frozen primary (its probes time out, damping still
/// remembers it writable) and the standby promoted meanwhile are not a split
/// brain: no event, and the old primary's fence is "superseded".
#[test]
fn a_frozen_primary_failover_is_not_a_split_brain() {
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, primary(Some(1))), (B, standby())]);
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Ambiguous)), (B, primary(Some(2)))]),
        Answer::Target(B)
    );
    assert!(s.state.servers[A].up, "still remembered through damping");
    assert!(
        !s.events.iter().any(|e| matches!(e, Event::SplitBrain { .. })),
        "{:?}",
        s.events
    );
    assert!(matches!(
        s.state.aliases[ALIAS].fence(A).map(|f| f.reason),
        Some(FenceReason::Superseded { by: B })
    ));
    assert!(s.state.aliases[ALIAS].split_brain.is_empty());
    let (_, _, reason) = s.changed().unwrap();
    assert!(reason.contains("not a split brain"), "{reason}");
    // Thawed while still writable on timeline 1: now two live writers.
    assert_eq!(
        s.step(&[(A, primary(Some(1))), (B, primary(Some(2)))]),
        Answer::Target(B)
    );
    assert!(s.events.iter().any(|e| matches!(e, Event::SplitBrain { .. })));
}

/// Issue 16, item 2, without `pg_read_all_stats` (no receiver timeline): a
/// WAL receiver that receives (its position advances) or has caught up with
/// the alias's server is evidence of a rebuild; one stuck where it asked to
/// start is not.
#[test]
fn a_receiver_that_streams_lifts_the_fence_one_that_is_stuck_does_not() {
    let at = |in_recovery: bool, tl: Option<u32>, lsn: u64, received: Option<u64>| {
        let mut st = if in_recovery { standby() } else { primary(tl) }.unwrap();
        st.wal_lsn = Some(lsn);
        st.received_lsn = received;
        Ok(st)
    };
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, at(false, Some(1), 100, None)), (B, at(true, None, 100, Some(100)))]);
    s.step(&[(A, fail(DOWN)), (B, at(false, Some(2), 200, None))]);
    assert!(fenced(&s, A));
    // standby.signal without pg_rewind: replayed past the fork, its receiver
    // stuck at the segment it asked for.
    for lsn in [300, 400, 500] {
        s.step(&[(A, at(true, None, 4096, Some(0))), (B, at(false, Some(2), lsn, None))]);
        assert!(fenced(&s, A), "stuck receiver: no rebuild");
    }
    // Rebuilt: streams from B (its received position advances)...
    s.step(&[(A, at(true, None, 500, Some(500))), (B, at(false, Some(2), 700, None))]);
    assert!(!fenced(&s, A), "received more since its last probe");

    // ... or, its receiver started, has replayed exactly B's position (an
    // idle B; the receiver asks for the start of its segment and stays there).
    let mut s = Sim::new("read-write", "keep-last");
    s.step(&[(A, at(false, Some(1), 100, None)), (B, at(true, None, 100, Some(100)))]);
    s.step(&[(A, fail(DOWN)), (B, at(false, Some(2), 200, None))]);
    s.step(&[(A, at(true, None, 200, Some(0))), (B, at(false, Some(2), 200, None))]);
    assert!(!fenced(&s, A), "caught up with B");
}

/// A switchover and back, the old primary probed once in between: A is seen
/// rebuilt as B's standby (keep-last keeps A) before B is seen promoted, so
/// the alias leaves A already knowing A follows B, and no fence is taken.
/// When A is promoted again (timeline 3) before its next probe in recovery,
/// the alias follows it; B, left on timeline 2, is below the floor. In
/// recovery without following B (never streams), A is fenced as before and
/// its newer timeline alone wins nothing (issue 16).
#[test]
fn a_server_left_while_already_following_the_new_primary_is_not_fenced() {
    for (a_seen, rebuilt) in [(following(2), true), (standby(), false)] {
        let mut s = Sim::new("read-write", "keep-last");
        assert_eq!(s.step(&[(A, primary(Some(1))), (B, standby())]), Answer::Target(A));
        assert_eq!(s.step(&[(A, a_seen)]), Answer::Target(A), "keep-last");
        assert_eq!(s.step(&[(B, primary(Some(2)))]), Answer::Target(B));
        assert_eq!(fenced(&s, A), !rebuilt, "rebuilt: {rebuilt}");
        let expected = if rebuilt { Answer::Target(A) } else { Answer::Target(B) };
        assert_eq!(
            s.step(&[(A, primary(Some(3))), (B, primary(Some(2)))]),
            expected,
            "rebuilt: {rebuilt}"
        );
    }
}
