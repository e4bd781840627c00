//! Reader aliases with a lag limit (see `lag.rs` for the rules).

use std::path::Path;
use std::time::{Duration, Instant};

use super::lag::{self, WalHistory};
use super::tests::{fail, Sim, A, ALIAS, B};
use super::*;
use crate::control::Override;
use crate::observation::{FailureKind, ProbeFailure};

const C: ServerId = ServerId::new(2);
const MIB: u64 = 1 << 20;

/// The decision tests' config (servers a and b, rise 2, one alias over
/// ["a", "b"]) with the lag lines; with `three`, server c too, listed second.
fn config(role: &str, policy: &str, limit: &str, three: bool) -> Config {
    let mut text = format!("{}{limit}\n", super::tests::config_text(role, policy));
    if three {
        text = text.replace("servers = [\"a\", \"b\"]", "servers = [\"a\", \"c\", \"b\"]");
        text.push_str("[servers.c]\ntarget = \"pg-c.test\"\n");
    }
    Config::from_toml(Path::new("lag.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

fn sim(role: &str, policy: &str, limit: &str) -> Sim {
    Sim::with_config(config(role, policy, limit, false))
}

/// A writable primary on timeline `tl` writing at `lsn`.
fn writer(tl: u32, lsn: u64) -> Result<ServerState, ProbeFailure> {
    Ok(ServerState {
        in_recovery: false,
        read_only: false,
        timeline: Some(tl),
        replay_lag_bytes: None,
        wal_lsn: Some(lsn),
        received_lsn: None,
        received_timeline: None,
        fresh_connection: false,
    })
}

/// A standby that has replayed up to `lsn`.
fn replayed(lsn: u64) -> Result<ServerState, ProbeFailure> {
    Ok(ServerState {
        in_recovery: true,
        read_only: true,
        timeline: None,
        replay_lag_bytes: Some(0),
        wal_lsn: Some(lsn),
        received_lsn: None,
        received_timeline: None,
        fresh_connection: false,
    })
}

fn exceeded(s: &Sim) -> Option<(ServerId, String)> {
    s.events.iter().find_map(|e| match e {
        Event::LagExceeded { server, reason, .. } => Some((*server, reason.clone())),
        _ => None,
    })
}

fn recovered(s: &Sim) -> Option<(ServerId, String)> {
    s.events.iter().find_map(|e| match e {
        Event::LagRecovered { server, reason, .. } => Some((*server, reason.clone())),
        _ => None,
    })
}

#[test]
fn prefer_standby_falls_back_to_the_writer_and_returns_after_rise() {
    let mut s = sim("prefer-standby", "keep-last", "max_lag = \"1MiB\"");
    assert_eq!(
        s.step(&[(A, writer(1, 10 * MIB)), (B, replayed(10 * MIB - 4096))]),
        Answer::Target(B),
        "4 KiB behind: within"
    );
    assert!(exceeded(&s).is_none());

    // Replay stops while the primary writes on.
    assert_eq!(
        s.step(&[(A, writer(1, 12 * MIB)), (B, replayed(10 * MIB - 4096))]),
        Answer::Target(A),
        "2 MiB behind: the writer"
    );
    let (server, reason) = exceeded(&s).expect("the episode is reported");
    assert_eq!(server, B);
    assert!(reason.contains("2.0 MiB behind a (max_lag 1.0 MiB)"), "{reason}");
    let (_, _, why) = s.changed().expect("moved");
    assert!(
        why.contains("b is too far behind the primary: 2.0 MiB behind a"),
        "{why}"
    );
    assert_eq!(s.state.aliases[ALIAS].lagging.len(), 1);
    for _ in 0..3 {
        assert_eq!(
            s.step(&[(A, writer(1, 13 * MIB)), (B, replayed(10 * MIB))]),
            Answer::Target(A)
        );
        assert!(exceeded(&s).is_none(), "once per episode");
    }

    // Caught up: back after `rise` (2) good probes of the standby, not before.
    assert_eq!(
        s.step(&[(A, writer(1, 13 * MIB)), (B, replayed(13 * MIB))]),
        Answer::Target(A),
        "one good probe"
    );
    assert_eq!(
        s.step(&[(A, writer(1, 13 * MIB))]),
        Answer::Target(A),
        "a probe of the primary does not count"
    );
    assert_eq!(
        s.step(&[(B, replayed(13 * MIB))]),
        Answer::Target(B),
        "second good probe: back"
    );
    let (server, reason) = recovered(&s).expect("reported");
    assert_eq!(server, B);
    assert!(reason.contains("after 2 good probe(s)"), "{reason}");
    assert!(s.state.aliases[ALIAS].lagging.is_empty());
}

#[test]
fn a_relapse_during_rise_starts_the_count_again() {
    let mut s = sim("prefer-standby", "keep-last", "max_lag = \"1MiB\"");
    s.step(&[(A, writer(1, MIB)), (B, replayed(MIB))]);
    assert_eq!(
        s.step(&[(A, writer(1, 5 * MIB)), (B, replayed(MIB))]),
        Answer::Target(A)
    );
    assert_eq!(
        s.step(&[(A, writer(1, 5 * MIB)), (B, replayed(5 * MIB))]),
        Answer::Target(A),
        "1 good"
    );
    // The primary jumps ahead before the second good probe: over again.
    assert_eq!(s.step(&[(A, writer(1, 9 * MIB))]), Answer::Target(A));
    assert_eq!(
        s.step(&[(B, replayed(9 * MIB))]),
        Answer::Target(A),
        "1 good again, not 2"
    );
    assert_eq!(s.step(&[(B, replayed(9 * MIB))]), Answer::Target(B));
}

#[test]
fn standby_role_follows_on_no_match() {
    for (policy, expected) in [("servfail", Answer::NoTarget), ("keep-last", Answer::Target(B))] {
        let mut s = sim("standby", policy, "max_lag = \"1MiB\"");
        assert_eq!(s.step(&[(A, writer(1, MIB)), (B, replayed(MIB))]), Answer::Target(B));
        assert_eq!(
            s.step(&[(A, writer(1, 3 * MIB)), (B, replayed(MIB))]),
            expected,
            "{policy}"
        );
        assert!(
            s.events
                .iter()
                .any(|e| matches!(e, Event::NoMatch { last: Some(B), .. })),
            "{policy}: {:?}",
            s.events
        );
    }
}

#[test]
fn read_only_role_keeps_read_only_primaries_and_drops_lagging_standbys() {
    let mut s = sim("read-only", "servfail", "max_lag = \"1MiB\"");
    let ro_primary = Ok(ServerState {
        in_recovery: false,
        read_only: true,
        timeline: Some(1),
        replay_lag_bytes: None,
        wal_lsn: Some(8 * MIB),
        received_lsn: None,
        received_timeline: None,
        fresh_connection: false,
    });
    assert_eq!(
        s.step(&[(A, ro_primary.clone()), (B, replayed(8 * MIB))]),
        Answer::Target(A),
        "both match: list order"
    );
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Definite)), (B, replayed(8 * MIB))]),
        Answer::Target(B),
        "the standby, within the limit"
    );
    let mut s = sim("read-only", "servfail", "max_lag = \"1MiB\"");
    let ahead = Ok(ServerState {
        wal_lsn: Some(16 * MIB),
        ..ro_primary.clone().unwrap()
    });
    assert_eq!(
        s.step(&[(A, ahead), (B, replayed(8 * MIB))]),
        Answer::Target(A),
        "the read-only primary has no lag"
    );
    assert_eq!(
        s.state.aliases[ALIAS]
            .lagging
            .iter()
            .map(|l| l.server)
            .collect::<Vec<_>>(),
        [B]
    );
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Definite)), (B, replayed(8 * MIB))]),
        Answer::NoTarget,
        "never the lagging standby"
    );
}

#[test]
fn a_lagging_standby_is_never_the_fallback() {
    // Only the lagging standby and a primary that is down: nothing qualifies.
    let mut s = sim("prefer-standby", "servfail", "max_lag = \"1MiB\"");
    s.step(&[(A, writer(1, MIB)), (B, replayed(MIB))]);
    assert_eq!(
        s.step(&[(A, writer(1, 4 * MIB)), (B, replayed(MIB))]),
        Answer::Target(A)
    );
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Definite)), (B, replayed(MIB))]),
        Answer::NoTarget,
        "not the lagging standby"
    );
}

#[test]
fn a_primary_that_went_down_stays_the_reference_with_its_last_position() {
    let mut s = sim("standby", "servfail", "max_lag = \"1MiB\"");
    s.step(&[(A, writer(1, 4 * MIB)), (B, replayed(4 * MIB))]);
    // The primary dies; the standby has replayed what it had: current.
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Definite)), (B, replayed(4 * MIB))]),
        Answer::Target(B)
    );
    let lag = lag::measure(&s.state, &s.config, B, s.now).unwrap();
    assert_eq!((lag.primary, lag.bytes), (Some(A), Some(0)));
    // A standby that had not replayed it is behind the last known position.
    let mut s = sim("standby", "servfail", "max_lag = \"1MiB\"");
    s.step(&[(A, writer(1, MIB)), (B, replayed(MIB))]);
    s.step(&[(A, writer(1, 4 * MIB)), (B, replayed(4 * MIB))]);
    s.step(&[(A, writer(1, 9 * MIB)), (B, fail(FailureKind::Ambiguous))]);
    assert_eq!(
        s.step(&[(A, fail(FailureKind::Definite)), (B, replayed(5 * MIB))]),
        Answer::NoTarget,
        "4 MiB behind the last position seen"
    );
}

#[test]
fn unknown_lag_does_not_qualify() {
    // The primary never reports: the first round closes at the deadline.
    // Before the first round the primary may just not have reported yet:
    // the standby waits, and nothing is reported.
    let mut s = sim("prefer-standby", "servfail", "max_lag = \"1MiB\"");
    for _ in 0..9 {
        assert_eq!(s.step(&[(B, replayed(MIB))]), Answer::Pending);
        assert!(exceeded(&s).is_none());
    }
    assert_eq!(
        s.step(&[(B, replayed(MIB))]),
        Answer::NoTarget,
        "a standby of unknown staleness is not served"
    );
    // After it, still no primary: an episode, reported.
    assert_eq!(s.step(&[(B, replayed(MIB))]), Answer::NoTarget);
    assert!(
        exceeded(&s).unwrap().1.contains("cannot be measured"),
        "{:?}",
        exceeded(&s)
    );
    // The primary appears: measured, within; back after rise.
    assert_eq!(s.step(&[(A, writer(1, MIB)), (B, replayed(MIB))]), Answer::Target(A));
    assert_eq!(s.step(&[(A, writer(1, MIB)), (B, replayed(MIB))]), Answer::Target(B));

    // WAL functions revoked: no positions at all.
    let mut s = sim("standby", "servfail", "max_lag = \"1MiB\"");
    let basic = |in_recovery: bool| {
        Ok(ServerState {
            in_recovery,
            read_only: in_recovery,
            timeline: None,
            replay_lag_bytes: None,
            wal_lsn: None,
            received_lsn: None,
            received_timeline: None,
            fresh_connection: false,
        })
    };
    assert_eq!(s.step(&[(A, basic(false)), (B, basic(true))]), Answer::NoTarget);
    // Without a limit the same standby is served.
    let mut s = sim("standby", "servfail", "");
    assert_eq!(s.step(&[(A, basic(false)), (B, basic(true))]), Answer::Target(B));
}

#[test]
fn the_newest_timeline_is_the_reference() {
    // a: an old primary still writing on timeline 1 (further along, diverged);
    // c: the promoted one on timeline 2; b follows c.
    let mut s = Sim::with_config(config("standby", "servfail", "max_lag = \"1MiB\"", true));
    assert_eq!(
        s.step(&[
            (A, writer(1, 50 * MIB)),
            (B, replayed(20 * MIB - 100)),
            (C, writer(2, 20 * MIB))
        ]),
        Answer::Target(B)
    );
    let lag = lag::measure(&s.state, &s.config, B, s.now).unwrap();
    assert_eq!((lag.primary, lag.bytes), (Some(C), Some(100)));
}

#[test]
fn lag_is_measured_within_the_servers_that_share_an_alias() {
    // Two clusters in one sidecar: a + b, and c + d. c is far ahead of b.
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
[servers.b]
target = "pg-b.test"
[servers.c]
target = "pg-c.test"
[servers.d]
target = "pg-d.test"
[[aliases]]
name = "one.db.internal"
role = "standby"
servers = ["b"]
max_lag = "1MiB"
[[aliases]]
name = "one-rw.db.internal"
servers = ["a", "b"]
[[aliases]]
name = "two.db.internal"
role = "prefer-standby"
servers = ["d", "c"]
"#;
    let mut s = Sim::with_config(Config::from_toml(Path::new("two.toml"), text).unwrap());
    s.step(&[
        (ServerId::new(0), writer(1, 5 * MIB)),
        (ServerId::new(1), replayed(5 * MIB)),
        (ServerId::new(2), writer(1, 900 * MIB)),
        (ServerId::new(3), replayed(900 * MIB)),
    ]);
    let lag = lag::measure(&s.state, &s.config, B, s.now).unwrap();
    assert_eq!(
        (lag.primary, lag.bytes),
        (Some(A), Some(0)),
        "b is measured against a (they share one-rw), not c"
    );
    assert_eq!(s.state.answer(&s.config, ALIAS), Answer::Target(B));
}

#[test]
fn time_lag_grows_while_replay_is_stuck_and_stays_zero_on_an_idle_primary() {
    let mut s = sim("prefer-standby", "keep-last", "max_lag_time = \"1s\"");
    // Both idle and caught up, for much longer than the limit: no lag.
    for _ in 0..40 {
        assert_eq!(s.step(&[(A, writer(1, MIB)), (B, replayed(MIB))]), Answer::Target(B));
    }
    let lag = lag::measure(&s.state, &s.config, B, s.now).unwrap();
    assert_eq!(lag.time, Some(Ok(Duration::ZERO)));
    assert!(exceeded(&s).is_none());

    // One write, which the standby never replays; then the primary is idle
    // again. The standby lacks data written at that moment: its lag grows
    // with the clock, idle primary or not.
    let mut steps = 0;
    while s.step(&[(A, writer(1, MIB + 100)), (B, replayed(MIB))]) == Answer::Target(B) {
        steps += 1;
        assert!(steps < 20, "never left the stuck standby");
    }
    assert!((9..=11).contains(&steps), "left after ~1 s (10 probes): {steps}");
    let (_, reason) = exceeded(&s).unwrap();
    assert!(reason.contains("behind a (max_lag_time 1.0s)"), "{reason}");
    // Replays it: lag 0 again, back after rise.
    assert_eq!(
        s.step(&[(A, writer(1, MIB + 100)), (B, replayed(MIB + 100))]),
        Answer::Target(A)
    );
    assert_eq!(
        s.step(&[(A, writer(1, MIB + 100)), (B, replayed(MIB + 100))]),
        Answer::Target(B)
    );
}

#[test]
fn time_lag_under_steady_writes_is_about_a_probe_interval() {
    let mut s = sim("standby", "servfail", "max_lag_time = \"500ms\"");
    // The primary writes 1 MiB per probe; the standby trails it by 300 KiB
    // (a fraction of a probe interval's writes). At the first probe nothing
    // places it yet: it waits (no episode); at the second it is measured.
    assert_eq!(
        s.step(&[(A, writer(1, MIB)), (B, replayed(MIB - 300 * 1024))]),
        Answer::NoTarget
    );
    assert!(exceeded(&s).is_none(), "not an episode: {:?}", s.events);
    assert!(s.state.aliases[ALIAS].lagging[0].pending);
    for i in 2..60u64 {
        assert_eq!(
            s.step(&[(A, writer(1, i * MIB)), (B, replayed(i * MIB - 300 * 1024))]),
            Answer::Target(B),
            "step {i}"
        );
    }
    let t = lag::measure(&s.state, &s.config, B, s.now)
        .unwrap()
        .time
        .unwrap()
        .unwrap();
    assert!(t <= Duration::from_millis(200), "{t:?}");
    // Replay stops: out within the limit plus the measurement's error.
    let stuck = 59 * MIB;
    let mut steps = 0;
    for i in 60..80u64 {
        steps += 1;
        if s.step(&[(A, writer(1, i * MIB)), (B, replayed(stuck))]) == Answer::NoTarget {
            break;
        }
    }
    assert!((4..=7).contains(&steps), "{steps} probes");
}

#[test]
fn wal_history_is_bounded_and_conservative() {
    let t0 = Instant::now();
    let window = Duration::from_secs(5);
    let mut h = WalHistory::default();
    // A busy primary probed every 10 ms for 60 s.
    for i in 0..6000u64 {
        h.record(t0 + Duration::from_millis(10 * i), 1000 * i, window);
        assert!(h.len() <= 35, "{} entries at {i}", h.len());
    }
    let now = t0 + Duration::from_millis(10 * 5999);
    assert_eq!(h.behind(1000 * 5999, now), Some(Ok(Duration::ZERO)));
    // 2 s behind: found within the spacing (5 s / 32 = 156 ms), never less.
    let two = h.behind(1000 * (5999 - 200), now).unwrap().unwrap();
    assert!(
        two >= Duration::from_secs(2) && two <= Duration::from_millis(2000 + 160),
        "{two:?}"
    );
    // Behind everything kept: more than the window.
    assert!(
        matches!(h.behind(0, now), Some(Err(d)) if d > window),
        "{:?}",
        h.behind(0, now)
    );
    // A lower position: another lineage; start over.
    h.record(now + Duration::from_millis(10), 5, window);
    assert_eq!(h.len(), 1);
    assert_eq!(WalHistory::default().behind(1, now), None);
}

#[test]
fn a_pin_ignores_lag_and_a_reload_keeps_or_drops_the_episode() {
    let mut s = sim("prefer-standby", "keep-last", "max_lag = \"1MiB\"");
    s.step(&[(A, writer(1, MIB)), (B, replayed(MIB))]);
    assert_eq!(
        s.step(&[(A, writer(1, 5 * MIB)), (B, replayed(MIB))]),
        Answer::Target(A)
    );
    s.apply(Override::Pin {
        alias: "prod.db.internal".into(),
        server: "b".into(),
    })
    .unwrap();
    assert_eq!(s.answer(), Answer::Target(B), "the operator knows best");
    s.apply(Override::Unpin {
        alias: "prod.db.internal".into(),
    })
    .unwrap();
    assert_eq!(s.answer(), Answer::Target(A));

    let same = config("prefer-standby", "keep-last", "max_lag = \"2MiB\"", false);
    let next = reconfigure(&s.state, &s.config, &same);
    assert_eq!(
        next.aliases[ALIAS].lagging.len(),
        1,
        "still kept off until it is back within the limit"
    );
    let none = config("prefer-standby", "keep-last", "", false);
    let next = reconfigure(&s.state, &s.config, &none);
    assert!(next.aliases[ALIAS].lagging.is_empty(), "no limit any more");
    let (next, _) = decide(&next, &[], &none, s.now);
    assert_eq!(next.answer(&none, ALIAS), Answer::Target(B), "back to the standby");
}

#[test]
fn bytes_for_people() {
    assert_eq!(lag::bytes(512), "512 B");
    assert_eq!(lag::bytes(12 * 1024), "12.0 KiB");
    assert_eq!(lag::bytes(16 * MIB + MIB / 2), "16.5 MiB");
    assert_eq!(lag::bytes(3 << 30), "3.0 GiB");
}

#[test]
fn a_standby_probed_before_the_primary_at_start_is_not_an_episode() {
    let mut s = sim("prefer-standby", "keep-last", "max_lag = \"1MiB\"");
    assert_eq!(s.step(&[(B, replayed(MIB))]), Answer::Pending);
    assert_eq!(
        s.step(&[(A, writer(1, MIB))]),
        Answer::Target(B),
        "measured at once, no rise needed"
    );
    assert!(exceeded(&s).is_none() && recovered(&s).is_none(), "{:?}", s.events);
}

/// `prod` (read-write) and `ro` (prefer-standby, 1 MiB) over a and b.
fn prod_and_ro() -> Sim {
    let text = format!(
        "{}[[aliases]]\nname = \"ro.db.internal\"\nrole = \"prefer-standby\"\nservers = [\"b\", \"a\"]\nmax_lag = \"1MiB\"\n",
        super::tests::config_text("read-write", "keep-last")
    );
    Sim::with_config(Config::from_toml(Path::new("ro.toml"), &text).unwrap_or_else(|e| panic!("{e}")))
}

fn ro(s: &Sim) -> Answer {
    s.state.answer(&s.config, AliasId::new(1))
}

/// Issue 16's repro: `ro` moved to the primary while the standby's replay
/// was paused; the standby is promoted while the old primary keeps running.
/// `prod` moves and fences the old one, and `ro` follows `prod`'s choice at
/// the same probe, never the fenced old primary.
#[test]
fn a_reader_leaves_an_old_primary_the_writer_fenced() {
    let mut s = prod_and_ro();
    s.step(&[(A, writer(1, 10 * MIB)), (B, replayed(10 * MIB))]);
    assert_eq!(ro(&s), Answer::Target(B));
    // Replay paused: b falls behind; ro falls back to the writer's choice.
    s.step(&[(A, writer(1, 20 * MIB)), (B, replayed(10 * MIB))]);
    assert_eq!(ro(&s), Answer::Target(A));
    // b promoted (timeline 2) while a keeps running on timeline 1.
    assert_eq!(
        s.step(&[(A, writer(1, 21 * MIB)), (B, writer(2, 10 * MIB + 4096))]),
        Answer::Target(B)
    );
    assert_eq!(ro(&s), Answer::Target(B), "the writer alias's own choice, at once");
    let why = truth::diverged(&s.state, &s.config, A).expect("a diverged");
    assert!(why.contains("fenced by prod.db.internal"), "{why}");
    for _ in 0..5 {
        s.step(&[(A, writer(1, 22 * MIB)), (B, writer(2, 11 * MIB))]);
        assert_eq!(ro(&s), Answer::Target(B));
    }
    // The old primary restarted as a standby without pg_rewind: in recovery,
    // never streaming (its receiver stuck), replayed past b's position.
    for _ in 0..5 {
        s.step(&[(A, replayed(22 * MIB)), (B, writer(2, 12 * MIB))]);
        assert_eq!(ro(&s), Answer::Target(B), "a diverged standby is no reader candidate");
        let lag = lag::measure(&s.state, &s.config, A, s.now).unwrap();
        assert_eq!((lag.primary, lag.bytes), (Some(B), None), "no lag across branches");
    }
    assert!(s.state.aliases[AliasId::new(1)]
        .lagging
        .iter()
        .any(|l| l.server == A && l.reason.contains("diverged")));
}

/// A standby whose WAL receiver receives on another timeline than the
/// current primary's (visible with `pg_read_all_stats`) is diverged, even
/// replayed past the primary's position: never lag 0.
#[test]
fn a_standby_on_another_timeline_is_diverged_not_current() {
    let on = |tl: u32, lsn: u64| {
        let mut st = replayed(lsn).unwrap();
        st.received_timeline = Some(tl);
        st.received_lsn = Some(lsn);
        Ok(st)
    };
    let mut s = prod_and_ro();
    s.step(&[(A, writer(2, 10 * MIB)), (B, on(2, 10 * MIB))]);
    assert_eq!(ro(&s), Answer::Target(B), "on the primary's timeline: current");
    s.step(&[(A, writer(2, 10 * MIB)), (B, on(1, 30 * MIB))]);
    let why = truth::diverged(&s.state, &s.config, B).expect("b diverged");
    assert!(why.contains("timeline 1"), "{why}");
    assert_eq!(lag::measure(&s.state, &s.config, B, s.now).unwrap().bytes, None);
    assert_eq!(ro(&s), Answer::Target(A), "the writer's choice, not the other branch");
}

/// Without a lag limit too: a `standby` alias never answers an old primary
/// the writer fenced that is in recovery without following the new primary
/// (standby.signal without pg_rewind), and takes it once it follows.
#[test]
fn a_standby_alias_without_a_limit_never_answers_a_fenced_server() {
    let text = format!(
        "{}[[aliases]]\nname = \"sb.db.internal\"\nrole = \"standby\"\non_no_match = \"servfail\"\nservers = [\"a\", \"b\"]\n",
        super::tests::config_text("read-write", "keep-last")
    );
    let mut s = Sim::with_config(Config::from_toml(Path::new("sb.toml"), &text).unwrap_or_else(|e| panic!("{e}")));
    s.step(&[(A, writer(1, 10 * MIB)), (B, replayed(10 * MIB))]);
    assert_eq!(s.state.answer(&s.config, AliasId::new(1)), Answer::Target(B));
    s.step(&[(A, fail(FailureKind::Definite)), (B, writer(2, 10 * MIB + 4096))]);
    for _ in 0..5 {
        s.step(&[(A, replayed(12 * MIB)), (B, writer(2, 11 * MIB))]);
        assert_eq!(
            s.state.answer(&s.config, AliasId::new(1)),
            Answer::NoTarget,
            "a is diverged"
        );
    }
    // Rebuilt: its receiver streams from b and it replays b's position.
    let mut st = replayed(11 * MIB).unwrap();
    st.received_lsn = Some(11 * MIB);
    s.step(&[(A, Ok(st.clone())), (B, writer(2, 11 * MIB))]);
    assert!(truth::diverged(&s.state, &s.config, A).is_none());
    s.step(&[(A, Ok(st)), (B, writer(2, 11 * MIB))]);
    assert_eq!(s.state.answer(&s.config, AliasId::new(1)), Answer::Target(A));
}
