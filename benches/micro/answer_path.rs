//! Micro-benchmarks of the answer path and the decision function, so
//! regressions show without the full load test:
//!
//! * `fast/alias_a`: parse an alias A query and produce the precomputed answer;
//! * `fast/spread_rotate_a`, `fast/spread_client_a`: the same for a reader
//!   alias rotating over two servers (weights 2:1), by query counter and by
//!   client address (issue 19: within 5% of `fast/alias_a`);
//! * `fast/nxdomain`: the same for a nonexistent name in the zone;
//! * `full/alias_a`, `full/nxdomain`: the hickory-based full path for the same;
//! * `decision/observe_2_servers`: one decision round for two observations;
//! * `forward/hit_no_zones`, `forward/hit_default_5_zones`,
//!   `forward/hit_zone_5_zones`: a UDP worker's cache hit for a forwarded
//!   name (classify, route to its zone's forwarder, answer from the cache)
//!   without `[[forward]]`, and with five forward zones for a name of the
//!   default and of a zone: what the routing adds to the default path;
//!   `forward/hit_unrouted_baseline` is the same hit without routing (the
//!   worker before `[[forward]]`).
//!
//! Run: `cargo bench -p dns-sidecar --bench answer_path`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use dns_sidecar::testing::Asker;
use dns_sidecar::testing::ServerId;
use dns_sidecar::testing::{decide, State};
use dns_sidecar::testing::{Observation, ServerState};
use dns_sidecar::testing::{Pick, Plan, Transport};

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.queries
        .push(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn answer_path(c: &mut Criterion) {
    let (config, handler, table) = dns_sidecar::testing::fixture::fixture();
    let alias = query("prod.db.test.");
    let nx = query("nope12345.db.test.");
    let mut out = vec![0u8; 4096];
    c.bench_function("fast/alias_a", |b| {
        b.iter(|| table.answer(std::hint::black_box(&alias), &mut out).unwrap())
    });
    let spread = query(dns_sidecar::testing::fixture::SPREAD);
    let mut seq = 0u64;
    c.bench_function("fast/spread_rotate_a", |b| {
        b.iter(|| {
            seq += 1;
            let asker = Asker { seq, client: None };
            table
                .answer_for(std::hint::black_box(&spread), &mut out, asker)
                .unwrap()
        })
    });
    let client = Some(std::net::IpAddr::from([10, 1, 2, 3]));
    c.bench_function("fast/spread_client_a", |b| {
        b.iter(|| {
            seq += 1;
            let asker = Asker { seq, client };
            table
                .answer_for(std::hint::black_box(&spread), &mut out, asker)
                .unwrap()
        })
    });
    c.bench_function("fast/nxdomain", |b| {
        b.iter(|| table.answer(std::hint::black_box(&nx), &mut out).unwrap())
    });
    c.bench_function("full/alias_a", |b| {
        b.iter(|| {
            matches!(
                handler.plan(std::hint::black_box(&alias), Transport::Udp, Pick::ANY),
                Plan::Reply(_)
            )
        })
    });
    c.bench_function("full/nxdomain", |b| {
        b.iter(|| {
            matches!(
                handler.plan(std::hint::black_box(&nx), Transport::Udp, Pick::ANY),
                Plan::Reply(_)
            )
        })
    });

    forward_hits(c);

    let now = Instant::now();
    let state = State::new(&config, now);
    let obs = |server, in_recovery| Observation {
        server,
        at: now,
        outcome: Ok(ServerState {
            in_recovery,
            read_only: in_recovery,
            timeline: Some(1),
            replay_lag_bytes: None,
            wal_lsn: None,
            received_lsn: None,
            received_timeline: None,
            fresh_connection: false,
        }),
        rtt: Some(Duration::from_micros(30)),
    };
    let round = [obs(ServerId::new(0), false), obs(ServerId::new(1), true)];
    let (state, _) = decide(&state, &round, &config, now);
    c.bench_function("decision/observe_2_servers", |b| {
        b.iter(|| decide(std::hint::black_box(&state), &round, &config, now))
    });
}

/// The upstream's answer to `q`: one A record, TTL 300.
fn answer_to(q: &[u8]) -> Vec<u8> {
    let req = Message::from_vec(q).unwrap();
    let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    m.queries = req.queries.clone();
    let name = req.queries[0].name.clone();
    m.answers
        .push(Record::from_rdata(name, 300, RData::A(A::new(10, 0, 0, 1))));
    m.to_vec().unwrap()
}

fn forward_hits(c: &mut Criterion) {
    use dns_sidecar::testing::fixture::{
        fixture_with, forwarded_from_cache, forwarded_from_cache_unrouted, keep, CONFIG,
    };
    let zones = (0..5)
        .map(|i| {
            format!(
                "[[forward]]\nzone = \"zone{i}.corp.example.com\"\nservers = [\"127.0.0.1:{}\"]\n",
                5310 + i
            )
        })
        .collect::<String>();
    let with_zones = format!("{CONFIG}{zones}");
    let mut out = vec![0u8; 4096];
    {
        let (_, handler, table) = fixture_with(CONFIG);
        let q = query("www.example.com.");
        keep(&handler, &q, &answer_to(&q));
        c.bench_function("forward/hit_unrouted_baseline", |b| {
            b.iter(|| forwarded_from_cache_unrouted(&table, &handler, std::hint::black_box(&q), &mut out).unwrap())
        });
    }
    for (label, text, name) in [
        ("forward/hit_no_zones", CONFIG, "www.example.com."),
        ("forward/hit_default_5_zones", with_zones.as_str(), "www.example.com."),
        (
            "forward/hit_zone_5_zones",
            with_zones.as_str(),
            "www.zone3.corp.example.com.",
        ),
    ] {
        let (_, handler, table) = fixture_with(text);
        let q = query(name);
        keep(&handler, &q, &answer_to(&q));
        assert!(
            forwarded_from_cache(&handler, &table, &q, &mut out).is_some(),
            "{label}: a hit"
        );
        c.bench_function(label, |b| {
            b.iter(|| forwarded_from_cache(&handler, &table, std::hint::black_box(&q), &mut out).unwrap())
        });
    }
}

criterion_group!(benches, answer_path);
criterion_main!(benches);
