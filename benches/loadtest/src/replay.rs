//! Mix d's names, and what the cache saves at the rates a pod asks.
//!
//! The workload: [`Workload::new`]`(n)` names under `zipf.test.`, asked with
//! Zipf-distributed popularity (exponent 1: the k-th most popular name is
//! asked 1/k as often as the first, the usual shape of DNS name
//! popularity). A fifth of the names do not exist (NXDOMAIN, kept for the
//! SOA MINIMUM of [`NEGATIVE_TTL`] s: a search list's misses, typos, names
//! of deleted resources). The others have TTLs spread as a pod sees them:
//! 10% 5 s (in-cluster names from CoreDNS), 20% 30 s and 20% 60 s (cloud
//! service and CDN names), 30% 300 s, 20% 1 h (ordinary zone records).
//! Popularity and TTL are independent (a name's TTL comes from a hash of
//! its rank).
//!
//! In the load test (mix d) dnsperf replays a sample of it as fast as it
//! can, so every TTL outlives the 10 s round and the upstream sees each name
//! about once. To see what the cache saves at a pod's pace, [`simulate`]
//! feeds the same workload, with Poisson arrivals at a given rate over an
//! hour, through dns-sidecar's own cache code on a manual clock (every miss
//! is answered as the upstream zone would, and kept): the share of queries
//! that still reach the upstream is the figure. It runs twice per rate:
//! with `[cache] prefetch` (the default: a popular entry hit in the last
//! tenth of its lifetime is refreshed in the background, here answered
//! [`REFRESH_RTT_MS`] later) and without, to show the hit rate each gives.

use std::time::Duration;

use dns_sidecar::config::CacheSettings;
use dns_sidecar::testing::question;
use dns_sidecar::testing::CacheMetrics;
use dns_sidecar::testing::{Cache, Found};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The zone of mix d in the upstream.
pub const ZONE: &str = "zipf.test.";
/// Its SOA MINIMUM: how long NXDOMAIN answers for it are kept.
pub const NEGATIVE_TTL: u32 = 30;

/// A small deterministic generator (splitmix64): the same trace every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct Workload {
    /// Per name (by popularity rank): its TTL, or `None` if it does not exist.
    pub ttls: Vec<Option<u32>>,
    /// Cumulative popularity.
    cdf: Vec<f64>,
}

impl Workload {
    pub fn new(n: usize) -> Workload {
        let n = n.max(1);
        let ttls = (0..n)
            .map(|i| match mix(i as u64 ^ 0x5EED) % 100 {
                0..=19 => None,
                20..=27 => Some(5),
                28..=43 => Some(30),
                44..=59 => Some(60),
                60..=83 => Some(300),
                _ => Some(3600),
            })
            .collect();
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / k as f64;
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Workload { ttls, cdf }
    }

    pub fn len(&self) -> usize {
        self.ttls.len()
    }

    pub fn name(&self, i: usize) -> String {
        format!("z{i}.{ZONE}")
    }

    /// A name's rank, drawn by popularity.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    /// dnsperf's input: `queries` names drawn by popularity.
    pub fn data(&self, queries: usize, seed: u64) -> String {
        let mut rng = Rng::new(seed);
        let mut s = String::with_capacity(queries * 20);
        for _ in 0..queries {
            s.push_str(&self.name(self.sample(&mut rng)));
            s.push_str(" A\n");
        }
        s
    }

    /// The upstream's answer to `query` for name `i` (as the zone file says).
    fn answer(&self, i: usize, query: &[u8]) -> Vec<u8> {
        let q = Message::from_vec(query).expect("our own query");
        let mut m = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
        m.metadata.recursion_desired = true;
        m.metadata.authoritative = true;
        m.queries = q.queries.clone();
        let name = Name::from_ascii(self.name(i)).expect("valid");
        match self.ttls[i] {
            Some(ttl) => m.answers.push(Record::from_rdata(
                name,
                ttl,
                RData::A(A::new(127, 4, (i / 256) as u8, i as u8)),
            )),
            None => {
                m.metadata.response_code = ResponseCode::NXDomain;
                let z = |s: &str| Name::from_ascii(s).expect("valid");
                let soa = SOA::new(
                    z(&format!("ns.{ZONE}")),
                    z(&format!("hostmaster.{ZONE}")),
                    1,
                    3600,
                    600,
                    86400,
                    NEGATIVE_TTL,
                );
                m.authorities.push(Record::from_rdata(z(ZONE), 300, RData::SOA(soa)));
            }
        }
        m.to_vec().expect("encodes")
    }
}

/// How long a simulated refresh takes to come back (an upstream round
/// trip, generous for a resolver in the same cluster or VNet).
pub const REFRESH_RTT_MS: u64 = 5;

/// What a simulated hour (or `seconds`) at `rate` queries/s cost.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    pub rate: f64,
    pub seconds: u64,
    /// Whether `[cache] prefetch` was on.
    pub prefetch: bool,
    pub queries: u64,
    /// Queries answered from the cache (fresh).
    pub hits: u64,
    /// Refreshes sent by prefetch.
    pub refreshes: u64,
    /// Queries the cache could not answer plus the refreshes: what reached
    /// the upstream.
    pub upstream: u64,
    /// Entries at the end.
    pub entries: usize,
}

impl Replay {
    /// Share of the queries that did not reach the upstream.
    pub fn saved(&self) -> f64 {
        if self.queries == 0 {
            return f64::NAN;
        }
        1.0 - self.upstream as f64 / self.queries as f64
    }

    /// Share of the queries answered from the cache.
    pub fn hit_rate(&self) -> f64 {
        if self.queries == 0 {
            return f64::NAN;
        }
        self.hits as f64 / self.queries as f64
    }
}

/// Feeds `w` through dns-sidecar's cache (default `[cache]` settings, with
/// or without `prefetch`) with Poisson arrivals at `rate` per second for
/// `seconds`, on a manual clock. A refresh offered by the cache is answered
/// as the zone would, [`REFRESH_RTT_MS`] later.
pub fn simulate(w: &Workload, rate: f64, seconds: u64, seed: u64, prefetch: bool) -> Replay {
    let settings = CacheSettings {
        prefetch,
        ..CacheSettings::default()
    };
    let cache = Cache::manual(&settings, CacheMetrics::default());
    let mut refreshes = cache.prefetch_queue().take().expect("a new cache");
    // (when it lands, ms; the name's rank), in order of landing.
    let mut pending: std::collections::VecDeque<(u64, usize)> = Default::default();
    let rank: std::collections::HashMap<Vec<u8>, usize> = (0..w.len())
        .map(|i| (w.name(i).to_ascii_lowercase().into_bytes(), i))
        .collect();
    let queries: Vec<Vec<u8>> = (0..w.len())
        .map(|i| {
            let mut m = Message::query();
            m.metadata.id = 1;
            m.metadata.recursion_desired = true;
            m.queries
                .push(Query::query(Name::from_ascii(w.name(i)).expect("valid"), RecordType::A));
            m.to_vec().expect("encodes")
        })
        .collect();
    let mut rng = Rng::new(seed);
    let mut out = vec![0u8; 4096];
    let (mut t, mut now_ms) = (0.0f64, 0u64);
    let mut r = Replay {
        rate,
        seconds,
        prefetch,
        queries: 0,
        hits: 0,
        refreshes: 0,
        upstream: 0,
        entries: 0,
    };
    loop {
        t += -(1.0 - rng.unit()).ln() / rate;
        if t >= seconds as f64 {
            break;
        }
        let ms = (t * 1000.0) as u64;
        // Refreshes that came back before this query, kept when they landed.
        while pending.front().is_some_and(|&(at, _)| at <= ms) {
            let (at, i) = pending.pop_front().expect("checked");
            let q = &queries[i];
            let qn = question(q, 1232).expect("an ordinary query");
            cache.insert(q, &qn, &w.answer(i, q), at);
        }
        cache.advance(Duration::from_millis(ms - now_ms));
        now_ms = ms;
        let i = w.sample(&mut rng);
        let q = &queries[i];
        let qn = question(q, 1232).expect("an ordinary query");
        r.queries += 1;
        let found = cache.answer(q, &qn, 4096, cache.now(), &mut out);
        while let Some(due) = refreshes.try_next() {
            let name = Message::from_vec(&due).expect("our own query").queries[0]
                .name
                .to_ascii()
                .to_ascii_lowercase();
            pending.push_back((ms + REFRESH_RTT_MS, rank[name.as_bytes()]));
            r.refreshes += 1;
            r.upstream += 1;
        }
        if let Found::Fresh(_) = found {
            r.hits += 1;
            continue;
        }
        r.upstream += 1;
        cache.insert(q, &qn, &w.answer(i, q), cache.now());
    }
    r.entries = cache.len();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_zipf_with_the_stated_ttls() {
        let w = Workload::new(3000);
        let nx = w.ttls.iter().filter(|t| t.is_none()).count() as f64 / 3000.0;
        assert!((0.17..0.23).contains(&nx), "{nx}");
        let mut rng = Rng::new(7);
        let mut counts = vec![0u32; 3000];
        for _ in 0..200_000 {
            counts[w.sample(&mut rng)] += 1;
        }
        // Rank 1 about twice rank 2 and ten times rank 10.
        let r = |a: usize, b: usize| counts[a] as f64 / counts[b] as f64;
        assert!(
            (1.8..2.2).contains(&r(0, 1)) && (8.0..12.0).contains(&r(0, 9)),
            "{:?}",
            &counts[..10]
        );
        assert_eq!(w.data(3, 1).lines().count(), 3);
        assert!(w.data(1, 1).ends_with(".zipf.test. A\n"));
    }

    #[test]
    fn the_replay_asks_upstream_once_per_name_and_ttl() {
        let w = Workload::new(50);
        // Two minutes at 50 q/s: every name is asked, and each is asked
        // upstream at least once and at most once per TTL.
        let r = simulate(&w, 50.0, 120, 3, false);
        assert!(r.queries > 5000, "{r:?}");
        let most: u64 = w
            .ttls
            .iter()
            .map(|t| 120 / u64::from(t.unwrap_or(NEGATIVE_TTL)) + 1)
            .sum();
        assert!(r.upstream >= 40 && r.upstream <= most, "{r:?} (at most {most})");
        assert!(r.saved() > 0.9, "{r:?}");
        // Faster is cheaper per query.
        assert!(simulate(&w, 5.0, 120, 3, false).saved() < r.saved());
        assert_eq!(
            r.hits + r.upstream,
            r.queries,
            "without prefetch every miss goes upstream"
        );
    }

    /// The report's table alone, without the load test:
    /// `cargo test --release -p loadtest replay_hour -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints the simulated hour (a few seconds in release mode)"]
    fn replay_hour() {
        let w = Workload::new(3000);
        println!("| queries/s | prefetch | queries | hit rate | refreshes | upstream | saved |");
        for rate in [1.0, 10.0, 100.0, 1000.0] {
            for prefetch in [false, true] {
                let r = simulate(&w, rate, 3600, 42, prefetch);
                println!(
                    "| {rate} | {} | {} | {:.2}% | {} | {} | {:.1}% |",
                    if prefetch { "on" } else { "off" },
                    r.queries,
                    100.0 * r.hit_rate(),
                    r.refreshes,
                    r.upstream,
                    100.0 * r.saved()
                );
            }
        }
    }

    #[test]
    fn prefetch_raises_the_hit_rate_for_a_few_more_upstream_queries() {
        let w = Workload::new(300);
        let off = simulate(&w, 100.0, 600, 5, false);
        let on = simulate(&w, 100.0, 600, 5, true);
        assert_eq!(off.refreshes, 0);
        assert!(on.refreshes > 0, "{on:?}");
        assert!(on.hit_rate() > off.hit_rate(), "{on:?} vs {off:?}");
        assert_eq!(on.upstream, on.queries - on.hits + on.refreshes);
        // A refresh replaces a miss it prevents, mostly: not many more
        // upstream queries in all.
        assert!((on.upstream as f64) < off.upstream as f64 * 1.5, "{on:?} vs {off:?}");
    }
}
