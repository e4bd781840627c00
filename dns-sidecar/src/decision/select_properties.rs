//! Properties of reader aliases that spread or prefer the nearest server
//! (issue 19): the set never holds a server that does not match, the choice
//! is a function of its input, weights hold over a cycle, a client keeps
//! its server when another one leaves (rendezvous hashing), and jitter
//! within the margin never flips the nearest choice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::config::{Prefer, Spread};
use crate::name::DnsName;
use crate::observation::{FailureCause, FailureKind, ProbeFailure};
use crate::routes::{Asker, RouteAnswer, Routes, SpreadRoute};

const ALIAS: AliasId = AliasId::new(0);
const MIB: u64 = 1 << 20;

/// Servers a (the primary), b, c, d; one standby alias over all four with
/// `spread`, `prefer` and a lag limit of 1 MiB, answering SERVFAIL when
/// nothing matches (so every answer must match).
fn config(spread: &str, prefer: &str, weights: &str) -> Config {
    let text = format!(
        r#"{}[[aliases]]
name = "ro.db.internal"
role = "standby"
on_no_match = "servfail"
servers = ["a", "b", "c", "d"]
max_lag = "1MiB"
spread = "{spread}"
prefer = "{prefer}"
{weights}
"#,
        fixture::header(2, &["a", "b", "c", "d"])
    );
    fixture::parse("t.toml", &text)
}

fn state(in_recovery: bool, wal: u64) -> ServerState {
    ServerState {
        in_recovery,
        read_only: in_recovery,
        timeline: (!in_recovery).then_some(1),
        replay_lag_bytes: in_recovery.then_some(0),
        wal_lsn: Some(wal),
        received_lsn: in_recovery.then_some(wal),
        received_timeline: None,
        fresh_connection: false,
    }
}

/// Server `server` (its position in the config) probed at `at`.
fn obs(server: usize, at: Instant, outcome: Result<ServerState, ProbeFailure>, rtt: Duration) -> Observation {
    Observation {
        server: ServerId::new(server),
        at,
        outcome,
        rtt: Some(rtt),
    }
}

fn failure(definite: bool) -> Result<ServerState, ProbeFailure> {
    Err(ProbeFailure {
        kind: if definite {
            FailureKind::Definite
        } else {
            FailureKind::Ambiguous
        },
        cause: FailureCause::Timeout,
        message: "no answer".into(),
    })
}

/// What one server does at one step.
#[derive(Debug, Clone)]
enum Probe {
    /// Answers: the standbys this far behind the primary (bytes), this RTT (µs).
    Ok {
        behind: u64,
        rtt_us: u64,
    },
    Fails {
        definite: bool,
    },
}

fn probe() -> impl Strategy<Value = Probe> {
    prop_oneof![
        4 => (0..2 * MIB, 100u64..20_000).prop_map(|(behind, rtt_us)| Probe::Ok { behind, rtt_us }),
        1 => any::<bool>().prop_map(|definite| Probe::Fails { definite }),
    ]
}

/// A step: each server's probe, and whether to toggle a drain of one.
type Step = (Vec<Probe>, Option<usize>);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(probe(), 4),
            proptest::option::weighted(0.1, 0usize..4),
        ),
        1..40,
    )
}

fn policy() -> impl Strategy<Value = (&'static str, &'static str, &'static str)> {
    (
        prop_oneof![Just("first"), Just("rotate"), Just("client")],
        prop_oneof![Just("order"), Just("nearest")],
        prop_oneof![Just(""), Just("weights = { b = 3, c = 0 }")],
    )
        .prop_filter("weights need a set", |(s, _, w)| *s != "first" || w.is_empty())
}

/// Runs `steps` through `decide()`, checking after each one that every
/// server answered matches: up, a standby, within the lag limit (as the lag
/// rules judge it), not drained, not diverged; and that something is
/// answered whenever some candidate matches.
fn run(config: &Config, steps: &[Step]) -> Result<State, TestCaseError> {
    let t0 = Instant::now();
    let mut st = State::new(config, t0);
    let primary_wal = 64 * MIB;
    for (n, (probes, drain)) in steps.iter().enumerate() {
        let now = t0 + Duration::from_millis(100 * (n as u64 + 1));
        if let Some(d) = drain {
            let d = ServerId::new(*d);
            st.drained[d] = !st.drained[d];
        }
        let o: Vec<Observation> = probes
            .iter()
            .enumerate()
            .map(|(s, p)| match p {
                Probe::Ok { behind, rtt_us } => {
                    let outcome = if s == 0 {
                        Ok(state(false, primary_wal))
                    } else {
                        Ok(state(true, primary_wal - behind))
                    };
                    obs(s, now, outcome, Duration::from_micros(*rtt_us))
                }
                Probe::Fails { definite } => obs(s, now, failure(*definite), Duration::ZERO),
            })
            .collect();
        let (next, _) = decide(&st, &o, config, now);
        // Deterministic: the same input gives the same state.
        prop_assert_eq!(&decide(&st, &o, config, now).0, &next);
        st = next;
        let a = &st.aliases[ALIAS];
        let matches = |s: ServerId| {
            let h = &st.servers[s];
            h.up && h.last_state.as_ref().is_some_and(|x| x.in_recovery)
                && !st.drained[s]
                && !a.lagging.iter().any(|l| l.server == s)
                && truth::diverged(&st, config, s).is_none()
        };
        let set = st.answer_set(config, ALIAS);
        for (s, _) in &set {
            prop_assert!(
                matches(*s),
                "step {}: {} answered but does not match: {:?}",
                n,
                s.index(),
                st
            );
        }
        if st.first_round_done && (0..4).map(ServerId::new).any(matches) {
            prop_assert!(
                !set.is_empty(),
                "step {}: a candidate matches but nothing is answered",
                n
            );
        }
        if config.aliases[ALIAS].spread.is_set() && !set.is_empty() {
            // The whole set: every matching candidate, or (nearest) the near
            // ones among them.
            let all: Vec<ServerId> = (0..4).map(ServerId::new).filter(|&s| matches(s)).collect();
            if config.aliases[ALIAS].prefer == Prefer::Order {
                prop_assert_eq!(set.iter().map(|(s, _)| *s).collect::<Vec<_>>(), all);
            }
        }
    }
    Ok(st)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_set_only_ever_holds_matching_servers((spread, prefer, weights) in policy(), steps in steps()) {
        let config = config(spread, prefer, weights);
        let st = run(&config, &steps)?;
        // The routes snapshot answers exactly the set, and chooses alike
        // for the same asker.
        let routes = Routes::from_state(&config, &st);
        prop_assert_eq!(&routes, &Routes::from_state(&config, &st));
        if let Some(RouteAnswer::Spread(r)) = routes.get("ro.db.internal.").map(|r| &r.answer) {
            let set = st.answer_set(&config, ALIAS);
            prop_assert_eq!(r.members.len(), set.len());
            for seq in 0..20 {
                let asker = Asker { seq, client: Some(IpAddr::from([10, 0, 0, seq as u8])) };
                let k = r.pick(asker);
                prop_assert!(k < r.members.len());
                prop_assert_eq!(k, r.pick(asker));
            }
        }
    }

    /// Smooth weighted round robin: over any window of one cycle (the sum
    /// of the weights) each member is answered exactly its weight's times;
    /// weight 0 never while another has a weight.
    #[test]
    fn rotation_respects_weights_over_a_cycle(weights in proptest::collection::vec(0u32..8, 1..6), start in any::<u32>()) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let r = spread_route(Spread::Rotate, &weights);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0u32; weights.len()];
        for seq in u64::from(start)..u64::from(start) + u64::from(total) {
            counts[r.pick(Asker { seq, client: None })] += 1;
        }
        prop_assert_eq!(counts, weights);
    }

    /// Rendezvous hashing: when a member leaves the set, only the clients
    /// it answered move; every other client keeps its server.
    #[test]
    fn a_client_keeps_its_server_when_another_leaves(
        weights in proptest::collection::vec(1u32..5, 2..6),
        leaving in any::<prop::sample::Index>(),
        clients in proptest::collection::vec(any::<[u8; 16]>(), 1..50),
    ) {
        let before = spread_route(Spread::Client, &weights);
        let gone = leaving.index(weights.len());
        let mut kept = before.members.clone();
        kept.remove(gone);
        let members = kept.iter().map(|m| (m.server.clone(), m.target.clone(), m.weight)).collect();
        let after = SpreadRoute::new(Spread::Client, members);
        for c in clients {
            let ip = if c[0] % 2 == 0 { IpAddr::from([c[1], c[2], c[3], c[4]]) } else { IpAddr::from(c) };
            let asker = Asker { seq: u64::from(c[5]), client: Some(ip) };
            let was = &before.members[before.pick(asker)].server;
            let now = &after.members[after.pick(asker)].server;
            if *was != before.members[gone].server {
                prop_assert_eq!(was, now, "{} moved", ip);
            }
            // The counter plays no part: one client, one server.
            prop_assert_eq!(before.pick(asker), before.pick(Asker { seq: asker.seq + 1, ..asker }));
        }
    }

    /// Jitter within the margin (each RTT within 5% above its server's
    /// base) never flips the nearest choice: a `first` alias keeps its
    /// first choice, and in a `rotate` alias no server enters and leaves
    /// the near group again (or leaves and re-enters).
    #[test]
    fn jitter_within_the_margin_never_flips_nearest(
        bases in proptest::collection::vec(200u64..50_000, 3),
        jitter in proptest::collection::vec(proptest::collection::vec(0u64..=50, 3), 2..30),
        spread in prop_oneof![Just("first"), Just("rotate")],
    ) {
        let config = config(spread, "nearest", "");
        let t0 = Instant::now();
        let mut st = State::new(&config, t0);
        let mut first: Option<ServerId> = None;
        let mut flips: BTreeMap<ServerId, u32> = BTreeMap::new();
        let mut prev: Option<BTreeSet<ServerId>> = None;
        for (n, j) in jitter.iter().enumerate() {
            let now = t0 + Duration::from_millis(100 * (n as u64 + 1));
            let mut o = vec![obs(0, now, Ok(state(false, 64 * MIB)), Duration::from_millis(1))];
            for s in 1..4 {
                // base * (1 + j/1000), j <= 50: at most 5% above the base.
                let rtt = Duration::from_micros(bases[s - 1] * (1000 + j[s - 1]) / 1000);
                o.push(obs(s, now, Ok(state(true, 64 * MIB)), rtt));
            }
            st = decide(&st, &o, &config, now).0;
            let set: BTreeSet<ServerId> = st.answer_set(&config, ALIAS).into_iter().map(|(s, _)| s).collect();
            prop_assert!(!set.is_empty());
            if spread == "first" {
                let t = st.aliases[ALIAS].target;
                prop_assert!(first.is_none() || first == t, "step {}: {:?} -> {:?}", n, first, t);
                first = t;
            } else if let Some(p) = &prev {
                for s in p.symmetric_difference(&set) {
                    *flips.entry(*s).or_default() += 1;
                    prop_assert!(flips[s] <= 1, "step {}: server {} flipped twice: {:?}", n, s.index(), flips);
                }
            }
            prev = Some(set);
        }
    }

    /// And the margin is not everything: a server nearer than the others
    /// by more than the leave margin is the lead and the only member.
    #[test]
    fn a_clearly_nearer_server_is_preferred(
        near in 200u64..20_000,
        which in 1usize..4,
        spread in prop_oneof![Just("first"), Just("rotate"), Just("client")],
    ) {
        let config = config(spread, "nearest", "");
        let t0 = Instant::now();
        let mut st = State::new(&config, t0);
        for n in 0..3u64 {
            let now = t0 + Duration::from_millis(100 * (n + 1));
            let mut o = vec![obs(0, now, Ok(state(false, 64 * MIB)), Duration::from_millis(1))];
            for s in 1..4 {
                let us = if s == which { near } else { near * 2 + 5_000 };
                o.push(obs(s, now, Ok(state(true, 64 * MIB)), Duration::from_micros(us)));
            }
            st = decide(&st, &o, &config, now).0;
        }
        prop_assert_eq!(st.aliases[ALIAS].target, Some(ServerId::new(which)));
        prop_assert_eq!(st.answer_set(&config, ALIAS), vec![(ServerId::new(which), 1)]);
    }
}

fn spread_route(spread: Spread, weights: &[u32]) -> SpreadRoute {
    let members = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let id = format!("s{i}");
            (id.clone(), DnsName::parse(&format!("{id}.test")).unwrap(), w)
        })
        .collect();
    SpreadRoute::new(spread, members)
}

/// Clients spread by weight: 3000 clients over weights 1:2:3 land within a
/// few percent of their shares (the hash is fixed, so this is exact).
#[test]
fn clients_spread_by_weight() {
    let r = spread_route(Spread::Client, &[1, 2, 3]);
    let mut counts = [0u32; 3];
    for i in 0..3000u32 {
        let ip = IpAddr::from((0x0a00_0000 + i * 7).to_be_bytes());
        counts[r.pick(Asker {
            seq: 0,
            client: Some(ip),
        })] += 1;
    }
    for (k, want) in [500, 1000, 1500].into_iter().enumerate() {
        assert!(counts[k].abs_diff(want) < 120, "{counts:?}");
    }
    // One IPv6 /64: one server for every address in it.
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let pick = |ip| {
        r.pick(Asker {
            seq: 0,
            client: Some(ip),
        })
    };
    assert_eq!(pick(a), pick(b));
}

/// The median and the margins, as the README states them.
#[test]
fn median_window_and_margins() {
    let mut w = select::RttWindow::default();
    assert_eq!(w.median(), None);
    for ms in [9, 1, 5, 7, 3, 100] {
        w.push(Duration::from_millis(ms));
    }
    // The last five: 1, 5, 7, 3, 100.
    assert_eq!(w.median(), Some(Duration::from_millis(5)));
    let ms = Duration::from_millis;
    assert!(select::ENTER.admits(ms(10), ms(12)), "2 ms over 10 ms: within");
    assert!(!select::ENTER.admits(ms(10), ms(13)), "25% over 10 ms: out");
    assert!(select::ENTER.admits(ms(1), ms(3)), "2 ms at least");
    assert!(!select::ENTER.admits(ms(1), ms(3) + Duration::from_micros(1)));
    assert!(select::LEAVE.admits(ms(10), ms(15)) && !select::LEAVE.admits(ms(10), ms(16)));
}

/// `/status` says why each candidate is out of a rotating set.
#[test]
fn excluded_candidates_say_why() {
    let config = config("rotate", "order", "");
    let t0 = Instant::now();
    let mut st = State::new(&config, t0);
    let ms = Duration::from_millis(1);
    for n in 1..=3u64 {
        let now = t0 + Duration::from_millis(100 * n);
        let c = if n == 3 {
            failure(true)
        } else {
            Ok(state(true, 64 * MIB))
        };
        let o = vec![
            obs(0, now, Ok(state(false, 64 * MIB)), ms),
            obs(1, now, Ok(state(true, 64 * MIB)), ms),
            obs(2, now, c, ms),
            obs(3, now, Ok(state(true, 61 * MIB)), ms),
        ];
        st = decide(&st, &o, &config, now).0;
    }
    let s = ServerId::new;
    assert_eq!(st.answer_set(&config, ALIAS), vec![(s(1), 1)]);
    let why: BTreeMap<ServerId, String> = select::excluded(&st, &config, ALIAS, &[s(1)]).into_iter().collect();
    assert!(why[&s(0)].starts_with("not standby (writable"), "{why:?}");
    assert!(why[&s(2)].starts_with("down (no answer"), "{why:?}");
    assert!(why[&s(3)].starts_with("lagging: 3.0 MiB behind a"), "{why:?}");
    st.drained[ServerId::new(1)] = true;
    let why: BTreeMap<ServerId, String> = select::excluded(&st, &config, ALIAS, &[]).into_iter().collect();
    assert_eq!(why[&s(1)], "drained by an operator");
}

/// A reload keeps a spreading alias's set by server (ids move), without
/// a server the new config dropped.
#[test]
fn a_reload_remaps_the_set() {
    let old = config("rotate", "order", "");
    let t0 = Instant::now();
    let mut st = State::new(&old, t0);
    let ms = Duration::from_millis(1);
    let o: Vec<Observation> = (0..4).map(|s| obs(s, t0, Ok(state(s > 0, 64 * MIB)), ms)).collect();
    st = decide(&st, &o, &old, t0).0;
    assert_eq!(st.aliases[ALIAS].set, [1, 2, 3].map(ServerId::new));
    let text = r#"
[dns]
listen = ["127.0.0.1:5353"]
[[zones]]
name = "db.internal"
[probe]
user = "probe"
sslmode = "require"
[servers.d]
target = "pg-d.test"
[servers.a]
target = "pg-a.test"
[servers.b]
target = "pg-b.test"
[[aliases]]
name = "ro.db.internal"
role = "standby"
servers = ["d", "a", "b"]
spread = "rotate"
"#;
    let new = Config::from_toml(Path::new("t.toml"), text).unwrap();
    let next = reconfigure(&st, &old, &new);
    let id = |s: ServerId| new.servers[s].id.as_str();
    let set: Vec<&str> = next.aliases[ALIAS].set.iter().map(|&s| id(s)).collect();
    assert_eq!(set, ["b", "d"], "the old set's order, by server");
    let answered: BTreeSet<&str> = next.answer_set(&new, ALIAS).iter().map(|&(s, _)| id(s)).collect();
    assert_eq!(answered, BTreeSet::from(["b", "d"]));
}
