//! The immutable snapshot the DNS handler reads.
//!
//! The engine builds a new [`Routes`] after each decision that changes an
//! answer and publishes it through `ArcSwap`; the query path does one atomic
//! load and one hash lookup, and never locks, waits on a probe, or talks to
//! PostgreSQL. Aliases are keyed by canonical name (not by position), so a
//! snapshot and a DNS handler built from different config generations during
//! a reload still agree on what each name means.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::{Config, Spread};
use crate::decision::{Answer, AnswerKind, State};
use crate::name::DnsName;

/// What every alias answers right now, by canonical name (`prod.db.internal.`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Routes {
    pub(crate) aliases: HashMap<String, AliasRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AliasRoute {
    pub(crate) ttl: u32,
    pub(crate) answer: RouteAnswer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteAnswer {
    /// The first probe round has not finished: SERVFAIL rather than a guess.
    Pending,
    /// CNAME to this name.
    Cname(DnsName),
    /// No server matches and the policy says SERVFAIL.
    Servfail,
    /// A CNAME to one member of a spreading reader alias's set, chosen per
    /// query ([`SpreadRoute::pick`]).
    Spread(SpreadRoute),
}

impl RouteAnswer {
    /// The kind of this answer, labelled as the decision's
    /// ([`Answer::kind`]): a spreading alias's member is a CNAME too.
    pub(crate) fn kind(&self) -> AnswerKind {
        match self {
            RouteAnswer::Pending => AnswerKind::Pending,
            RouteAnswer::Cname(_) | RouteAnswer::Spread(_) => AnswerKind::Cname,
            RouteAnswer::Servfail => AnswerKind::Servfail,
        }
    }
}

/// One member of a spreading alias's set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The server's id.
    pub(crate) server: String,
    pub(crate) target: DnsName,
    /// As configured; 0 answers only while no member has a weight.
    pub(crate) weight: u32,
    /// The member's rendezvous hashing seed (from its target name, so that
    /// every sidecar sends a client to the same server).
    seed: u64,
}

/// A spreading reader alias's set and how each query chooses among it. One
/// place for the policy: the full path and the fast path both call
/// [`SpreadRoute::pick`], so they choose alike for the same query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpreadRoute {
    pub(crate) spread: Spread,
    /// In the set's order (nearest first with `prefer = "nearest"`).
    pub(crate) members: Vec<Member>,
    /// `rotate`: member indexes in smooth weighted round-robin order, one
    /// cycle (as many entries as the weights add up to).
    schedule: Vec<u16>,
}

/// Who asks, for [`SpreadRoute::pick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asker {
    /// The query's number on its worker (any counter that advances per query).
    pub seq: u64,
    /// The client's address (`None`: unknown, hashed as one client).
    pub client: Option<IpAddr>,
}

impl Asker {
    /// An unknown client's first query (the fixture's, the fuzz targets' and
    /// the benches' asker).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) const NONE: Asker = Asker { seq: 0, client: None };
}

impl SpreadRoute {
    /// `members` (each with its configured weight), answered by `spread`.
    pub(crate) fn new(spread: Spread, members: Vec<(String, DnsName, u32)>) -> SpreadRoute {
        let members: Vec<Member> = members
            .into_iter()
            .map(|(server, target, weight)| Member {
                seed: fnv1a(target.as_str().as_bytes()),
                server,
                target,
                weight,
            })
            .collect();
        let weights = effective_weights(&members);
        SpreadRoute {
            schedule: smooth_schedule(&weights),
            spread,
            members,
        }
    }

    /// The member answering `asker`: `rotate` by `seq` along the schedule,
    /// `client` by weighted rendezvous hashing of the client's address
    /// (IPv4 /32, IPv6 /64). No allocation, no lock, no shared write.
    pub(crate) fn pick(&self, asker: Asker) -> usize {
        match self.spread {
            Spread::Rotate | Spread::First => match self.schedule.len() {
                0 => 0,
                n => self.schedule[(asker.seq % n as u64) as usize] as usize,
            },
            Spread::Client => {
                let key = client_key(asker.client);
                let mut best = (0usize, f64::NEG_INFINITY);
                let all_zero = self.members.iter().all(|m| m.weight == 0);
                for (k, m) in self.members.iter().enumerate() {
                    let w = if all_zero { 1 } else { m.weight };
                    if w == 0 {
                        continue;
                    }
                    // Weighted rendezvous: w / -ln(u), u uniform in (0, 1).
                    let h = mix(key ^ m.seed);
                    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                    let score = f64::from(w) / -u.ln();
                    if score > best.1 {
                        best = (k, score);
                    }
                }
                best.0
            }
        }
    }
}

/// The weights a rotation uses: as configured, or 1 each when every member
/// has weight 0 (backups, answered alike when they are all that is left).
fn effective_weights(members: &[Member]) -> Vec<u32> {
    if members.iter().all(|m| m.weight == 0) {
        vec![1; members.len()]
    } else {
        members.iter().map(|m| m.weight).collect()
    }
}

/// Smooth weighted round robin (nginx's): over one cycle each member comes
/// up as often as its weight, interleaved rather than in runs.
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let (k, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(k, &c)| (c, std::cmp::Reverse(k)))
            .expect("a set has members");
        current[k] -= total;
        out.push(k as u16);
    }
    out
}

/// A client's hashing key: its IPv4 address, or its IPv6 /64.
fn client_key(client: Option<IpAddr>) -> u64 {
    match client {
        None => 0,
        Some(IpAddr::V4(a)) => u64::from(u32::from(a)) | 1 << 63,
        Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4)) | 1 << 63,
            None => (u128::from(a) >> 64) as u64,
        },
    }
}

/// splitmix64's finalizer: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a: a stable hash of a member's name, the same in every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Routes {
    /// Every alias pending: what is served before the first round.
    pub(crate) fn pending(config: &Config) -> Routes {
        let aliases = config
            .aliases
            .iter()
            .map(|a| {
                (
                    a.name.as_str().to_string(),
                    AliasRoute {
                        ttl: a.ttl,
                        answer: RouteAnswer::Pending,
                    },
                )
            })
            .collect();
        Routes { aliases }
    }

    /// The snapshot for a decision state.
    pub(crate) fn from_state(config: &Config, state: &State) -> Routes {
        let aliases = config
            .enumerate_aliases()
            .map(|(i, a)| {
                let answer = match state.answer(config, i) {
                    Answer::Pending => RouteAnswer::Pending,
                    Answer::Target(_) if a.spread.is_set() => {
                        let members = (state.answer_set(config, i).into_iter())
                            .map(|(s, w)| (config.servers[s].id.clone(), config.servers[s].target.clone(), w))
                            .collect();
                        RouteAnswer::Spread(SpreadRoute::new(a.spread, members))
                    }
                    Answer::Target(s) => RouteAnswer::Cname(config.servers[s].target.clone()),
                    Answer::NoTarget => RouteAnswer::Servfail,
                };
                (a.name.as_str().to_string(), AliasRoute { ttl: a.ttl, answer })
            })
            .collect();
        Routes { aliases }
    }

    /// The answer for `name` (canonical form).
    pub(crate) fn get(&self, name: &str) -> Option<&AliasRoute> {
        self.aliases.get(name)
    }
}
