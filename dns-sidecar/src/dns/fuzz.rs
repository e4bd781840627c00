//! Fuzz targets as plain functions, so the same checks run in two places:
//!
//! * `cargo test` (the `fuzz_*` tests below): the stored corpus in
//!   `fuzz/corpus/<target>/`, then a few seconds of mutated inputs
//!   (`DNS_SIDECAR_FUZZ_SECS`, default 3) on the stable toolchain;
//! * `cargo +nightly fuzz run dns` / `config` in `fuzz/` (libFuzzer,
//!   coverage-guided), for hours on demand; see `fuzz/README.md`.
//!
//! Each target panics when a property fails:
//! * [`Target::datagram`]: nothing panics; a datagram gets at most one
//!   answer, decided once (the worker turns a [`Plan`] into exactly one of
//!   reply, drop, relay or runtime job); the fast path answers only what the
//!   full path answers, with the same bytes, from the precomputed table and
//!   from the cache of forwarded answers (warmed with fresh, negative,
//!   SERVFAIL and stale entries, on a clock that does not move), and stale
//!   answers alike; every answer carries the query's ID with QR set, and
//!   fits the transport's size.
//! * [`config`]: config parsing and validation return errors, never panic.
//!
//! Compiled only for tests and with the `testing` feature (the fuzz crate
//! enables it).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::Message;

use super::admission::Denied;
use super::cache::Found;
use super::fast::FastTable;
use super::handler::Handler;
use super::message::{check_wire, Transport, CLASSIC_UDP_LIMIT};
use super::plan::{Pick, Plan, Request};
use super::question::question;
use crate::config::Config;

/// The fixture handler and its fast table (see [`super::fixture`]).
pub struct Target {
    handler: Handler,
    table: FastTable,
    /// Datagrams answered from the cache (so a run shows it reached it).
    /// Atomic so that a `Target` can live in the fuzz crate's `static`.
    pub cached: AtomicUsize,
}

impl Default for Target {
    fn default() -> Self {
        Self::new()
    }
}

impl Target {
    pub fn new() -> Target {
        let (_, handler, table) = super::fixture::fixture();
        warm(&handler);
        Target {
            handler,
            table,
            cached: Default::default(),
        }
    }

    /// Runs one datagram through the fast path and the full path (UDP and TCP).
    pub fn datagram(&self, data: &[u8]) {
        let _ = check_wire(data);
        let mut out = vec![0u8; 4096];
        let fast = self.table.answer(data, &mut out);
        let full = self.handler.plan(data, Transport::Udp, Pick::ANY);
        if let Some((n, _)) = fast {
            match &full {
                Plan::Reply(r) => assert_eq!(r.bytes, out[..n], "fast and full path answers differ for {data:02x?}"),
                _ => panic!("the fast path answered a datagram the full path does not answer directly: {data:02x?}"),
            }
        }
        if let Some(f) = self.table.forwardable(data) {
            assert!(fast.is_none(), "answered and forwardable: {data:02x?}");
            let cache = self.handler.forwarding().cache();
            if let Found::Fresh(n) | Found::Stale(n) = cache.answer(data, &f, f.udp_limit, cache.now(), &mut out) {
                let Plan::Reply(r) = &full else {
                    panic!("answered from the cache, but the full path does not answer directly: {data:02x?}")
                };
                assert_eq!(
                    r.bytes,
                    out[..n],
                    "fast and full answers from the cache differ for {data:02x?}"
                );
                assert!(
                    Message::from_vec(&r.bytes).is_ok(),
                    "an answer from the cache does not decode: {data:02x?}"
                );
                check_reply(
                    data,
                    &r.bytes,
                    Some(self.handler.forwarding().encoder().max_udp() as usize),
                );
                self.cached.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let Plan::Forward(Request(req)) = &full else {
                panic!("the fast path would forward what the full path does not: {data:02x?}")
            };
            // The upstream failed: a stale answer (or SERVFAIL) alike from both.
            let stale = match cache.stale(data, &f, f.udp_limit, cache.now(), &mut out) {
                Found::Fresh(n) | Found::Stale(n) => Some(out[..n].to_vec()),
                _ => None,
            };
            if let Some(stale) = stale {
                let full =
                    super::admission::refusal(self.handler.forwarding(), req, data, Denied::InFlight, Transport::Udp)
                        .map(|r| r.bytes);
                assert_eq!(
                    full.as_ref(),
                    Some(&stale),
                    "fast and full stale answers differ for {data:02x?}"
                );
                check_reply(
                    data,
                    &stale,
                    Some(self.handler.forwarding().encoder().max_udp() as usize),
                );
            }
            for (rcode, code) in [
                (2, hickory_proto::op::ResponseCode::ServFail),
                (5, hickory_proto::op::ResponseCode::Refused),
            ] {
                let n = self.table.refuse(data, &f, rcode, &mut out);
                let full = self
                    .handler
                    .forwarding()
                    .encoder()
                    .refuse(req, code, Transport::Udp)
                    .map(|r| r.bytes);
                assert_eq!(
                    n.map(|n| out[..n].to_vec()),
                    full,
                    "fast and full refusals differ for {data:02x?}"
                );
            }
        }
        if let Plan::Reply(r) = &full {
            check_reply(
                data,
                &r.bytes,
                Some(self.handler.forwarding().encoder().max_udp() as usize),
            );
        }
        if let Plan::Reply(r) = self.handler.plan(data, Transport::Tcp, Pick::ANY) {
            check_reply(data, &r.bytes, None);
        }
    }
}

fn check_reply(query: &[u8], reply: &[u8], udp_max: Option<usize>) {
    assert!(reply.len() >= 12, "an answer shorter than a header for {query:02x?}");
    assert_eq!(reply[..2], query[..2], "an answer with another ID for {query:02x?}");
    assert_ne!(reply[2] & 0x80, 0, "an answer without QR for {query:02x?}");
    if let Some(max) = udp_max {
        assert!(
            reply.len() <= max.max(CLASSIC_UDP_LIMIT),
            "a UDP answer of {} bytes for {query:02x?}",
            reply.len()
        );
    }
}

/// Names the fuzz harness keeps in the cache (see [`warm`]).
pub const CACHED: [&str; 5] = [
    "www.example.com.",
    "gone.example.com.",
    "chain.example.net.",
    "broken.example.org.",
    "old.example.com.",
];

/// Fills `handler`'s cache as upstream answers would: for each EDNS
/// variant and CD, `www.example.com.` A (two records) and AAAA (NODATA with
/// an SOA), `gone.example.com.` NXDOMAIN, `chain.example.net.` a CNAME chain,
/// `broken.example.org.` SERVFAIL, and `old.example.com.` expired (only
/// stale answers), then moves the clock 2 s on.
pub fn warm(handler: &Handler) {
    use hickory_proto::op::{Edns, MessageType, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let n = |s: &str| Name::from_ascii(s).expect("valid");
    let soa = |z: &str| {
        Record::from_rdata(
            n(z),
            600,
            RData::SOA(SOA::new(
                n(&format!("ns.{z}")),
                n(&format!("hostmaster.{z}")),
                1,
                3600,
                600,
                86400,
                300,
            )),
        )
    };
    /// Name, type, the upstream's rcode, answer and authority sections.
    type Upstream<'a> = (&'a str, RecordType, ResponseCode, Vec<Record>, Vec<Record>);
    let cases: Vec<Upstream> = vec![
        (
            "www.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            vec![
                Record::from_rdata(n("www.example.com."), 300, RData::A(A::new(192, 0, 2, 1))),
                Record::from_rdata(n("www.example.com."), 300, RData::A(A::new(192, 0, 2, 2))),
            ],
            vec![],
        ),
        (
            "www.example.com.",
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![],
            vec![soa("example.com.")],
        ),
        (
            "gone.example.com.",
            RecordType::A,
            ResponseCode::NXDomain,
            vec![],
            vec![soa("example.com.")],
        ),
        (
            "chain.example.net.",
            RecordType::A,
            ResponseCode::NoError,
            vec![
                Record::from_rdata(
                    n("chain.example.net."),
                    3600,
                    RData::CNAME(CNAME(n("edge.example.net."))),
                ),
                Record::from_rdata(
                    n("edge.example.net."),
                    60,
                    RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                ),
                Record::from_rdata(n("edge.example.net."), 60, RData::A(A::new(192, 0, 2, 3))),
            ],
            vec![],
        ),
        (
            "broken.example.org.",
            RecordType::A,
            ResponseCode::ServFail,
            vec![],
            vec![],
        ),
        (
            "old.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            vec![Record::from_rdata(
                n("old.example.com."),
                1,
                RData::A(A::new(192, 0, 2, 4)),
            )],
            vec![],
        ),
    ];
    let cache = handler.forwarding().cache();
    for (name, qtype, rcode, answers, authority) in cases {
        for edns in 0..3 {
            for cd in [false, true] {
                let mut q = Message::query();
                q.metadata.id = 0x4242;
                q.metadata.recursion_desired = true;
                q.metadata.checking_disabled = cd;
                q.queries.push(Query::query(n(name), qtype));
                let mut a = Message::new(0x4242, MessageType::Response, q.metadata.op_code);
                a.metadata.recursion_desired = true;
                a.metadata.recursion_available = true;
                a.metadata.checking_disabled = cd;
                a.metadata.response_code = rcode;
                a.queries = q.queries.clone();
                a.answers = answers.clone();
                a.authorities = authority.clone();
                if edns > 0 {
                    let mut e = Edns::new();
                    e.set_max_payload(1232);
                    e.set_dnssec_ok(edns == 2);
                    q.set_edns(e.clone());
                    e.set_max_payload(4096);
                    a.set_edns(e);
                }
                let (Ok(q), Ok(a)) = (q.to_vec(), a.to_vec()) else {
                    continue;
                };
                if let Some(qn) = question(&q, handler.forwarding().encoder().max_udp()) {
                    cache.insert(&q, &qn, &a, cache.now());
                }
            }
        }
    }
    cache.advance(std::time::Duration::from_secs(2));
}

/// Parses `data` as a config file: errors are fine, panics are not.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml(Path::new("fuzz.toml"), text);
    }
}

/// Small structure-aware mutations for the stable-toolchain run: byte
/// flips, DNS-meaningful bytes (pointers, OPT, lengths) written at random
/// places, truncation, duplication, splicing with another input.
pub fn mutate(input: &[u8], other: &[u8], rng: &mut impl rand::RngExt) -> Vec<u8> {
    const INTERESTING: [u8; 12] = [0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xC0, 0xFF, 0x29, 0x0C, 0x0E];
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..7) {
            0 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
            }
            2 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v.truncate(i);
            }
            3 => {
                let i = rng.random_range(0..=v.len());
                let b = rng.random::<u8>();
                v.insert(i, b);
            }
            4 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                let j = rng.random_range(i..=v.len().min(i + 16));
                let chunk = v[i..j].to_vec();
                let at = rng.random_range(0..=v.len());
                v.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let i = rng.random_range(0..other.len());
                let cut = rng.random_range(0..=v.len());
                v.truncate(cut);
                v.extend_from_slice(&other[i..]);
            }
            _ if v.len() >= 12 => {
                // A section count.
                let i = 4 + 2 * rng.random_range(0..4);
                v[i + 1] = rng.random_range(0..4);
            }
            _ => {}
        }
    }
    v
}

/// Seeds for the DNS target: ordinary queries of every shape the fast path
/// knows, and the malformed ones from the field (pointer loops, overlong
/// EDNS options).
pub fn dns_seeds() -> Vec<Vec<u8>> {
    use hickory_proto::op::{Edns, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut seeds = Vec::new();
    let cached = CACHED
        .iter()
        .flat_map(|n| [n.to_string(), n.to_uppercase(), n.replacen('e', "E", 2)]);
    let names: Vec<String> = [
        "prod.db.test.",
        "PROD.db.test.",
        "nope.db.test.",
        "db.test.",
        "ro.eu.db.test.",
        "eu.db.test.",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(cached)
    .collect();
    for name in &names {
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::CNAME,
            RecordType::ANY,
            RecordType::SOA,
            RecordType::TXT,
        ] {
            for edns in 0..5 {
                let mut m = Message::query();
                m.metadata.id = 0x4242;
                m.metadata.recursion_desired = true;
                m.metadata.checking_disabled = edns == 4;
                m.queries.push(Query::query(Name::from_ascii(name).expect("valid"), t));
                if edns > 0 {
                    let mut e = Edns::new();
                    e.set_max_payload(if edns == 3 { 512 } else { 1232 });
                    e.set_dnssec_ok(edns == 2);
                    if edns == 3 {
                        // A client cookie: ignored by the cache's key.
                        e.options_mut()
                            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(10, vec![7; 8]));
                    }
                    m.set_edns(e);
                }
                if let Ok(b) = m.to_vec() {
                    seeds.push(b);
                }
            }
        }
    }
    let hdr = |ar: u8| vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, ar];
    let mut loop_q = hdr(0);
    loop_q.extend_from_slice(&[0xC0, 0x0E, 0xC0, 0x0C, 0, 1, 0, 1]);
    seeds.push(loop_q);
    let mut long_opt = hdr(1);
    long_opt.extend_from_slice(
        b"\x04nope\x02db\x04test\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x64",
    );
    seeds.push(long_opt);
    seeds
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rand::{RngExt, SeedableRng};

    use super::*;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if let Ok(b) = std::fs::read(e.path()) {
                    out.push(b);
                }
            }
        }
        out
    }

    fn budget() -> Duration {
        let secs = std::env::var("DNS_SIDECAR_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0);
        Duration::from_secs_f64(secs)
    }

    fn run(seeds: Vec<Vec<u8>>, mut f: impl FnMut(&[u8])) -> usize {
        for s in &seeds {
            f(s);
        }
        let seed: u64 = std::env::var("DNS_SIDECAR_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!(
            "fuzz: {} seeds, mutating for {:?} (DNS_SIDECAR_FUZZ_SEED={seed})",
            seeds.len(),
            budget()
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < budget() {
            let a = &seeds[rng.random_range(0..seeds.len())];
            let b = &seeds[rng.random_range(0..seeds.len())];
            let mut input = mutate(a, b, &mut rng);
            for _ in 0..rng.random_range(0..3) {
                input = mutate(&input, b, &mut rng);
            }
            f(&input);
            n += 1;
        }
        n
    }

    #[test]
    fn fuzz_dns_datagrams() {
        let t = Target::new();
        let mut seeds = dns_seeds();
        seeds.extend(corpus("dns"));
        let n = run(seeds, |d| t.datagram(d));
        assert!(n > 0);
        assert!(
            t.cached.load(Ordering::Relaxed) > 100,
            "only {} datagrams were answered from the cache",
            t.cached.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn fuzz_config_parsing() {
        let mut seeds: Vec<Vec<u8>> = corpus("config");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            seeds.push(std::fs::read(e.path()).unwrap());
        }
        seeds.push(super::super::fixture::CONFIG.as_bytes().to_vec());
        let n = run(seeds, config);
        assert!(n > 0);
    }
}
