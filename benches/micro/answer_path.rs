//! Micro-benchmarks of the answer path and the decision function, so
//! regressions show without the full load test:
//!
//! * `fast/alias_a`: parse an alias A query and produce the precomputed answer;
//! * `fast/nxdomain`: the same for a nonexistent name in the zone;
//! * `full/alias_a`, `full/nxdomain`: the hickory-based full path for the same;
//! * `decision/observe_2_servers`: one decision round for two observations.
//!
//! Run: `cargo bench -p dns-sidecar --bench answer_path`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use dns_sidecar::config::Config;
use dns_sidecar::decision::{decide, State};
use dns_sidecar::dns::fast::FastTable;
use dns_sidecar::dns::targets::{Cached, Targets};
use dns_sidecar::dns::{Handler, Plan, Transport};
use dns_sidecar::name::DnsName;
use dns_sidecar::observation::{Observation, ServerState};
use dns_sidecar::routes::{AliasRoute, RouteAnswer, Routes};
use dns_sidecar::shared::Shared;

const CONFIG: &str = r#"
[dns]
listen = ["127.0.0.1:5353"]
[upstream]
servers = ["127.0.0.1:5300"]
[[zones]]
name = "db.test"
[probe]
user = "probe"
sslmode = "disable"
[servers.a]
target = "pg-a.test"
[servers.b]
target = "pg-b.test"
[[aliases]]
name = "prod.db.test"
servers = ["a", "b"]
"#;

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.queries.push(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn setup() -> (Config, Handler, FastTable) {
    let config = Config::from_toml(Path::new("bench.toml"), CONFIG).unwrap();
    let shared = Arc::new(Shared::new(config.clone()));
    let mut routes = Routes::default();
    routes.aliases.insert("prod.db.test.".into(), AliasRoute { ttl: 5, answer: RouteAnswer::Cname(DnsName::parse("pg-a.test").unwrap()) });
    shared.routes.store(Arc::new(routes.clone()));
    let mut targets = Targets::default();
    let a = Record::from_rdata(Name::from_ascii("pg-a.test.").unwrap(), 30, RData::A(A::new(127, 0, 0, 2)));
    targets.entries.insert(
        ("pg-a.test.".into(), RecordType::A),
        Cached { rcode: ResponseCode::NoError, answers: vec![a], refresh_at: Instant::now() + Duration::from_secs(3600) },
    );
    let handler = Handler::new(&config, shared, Arc::new(arc_swap::ArcSwap::from_pointee(targets))).unwrap();
    let table = FastTable::build(&handler, &routes);
    (config, handler, table)
}

fn answer_path(c: &mut Criterion) {
    let (config, handler, table) = setup();
    let alias = query("prod.db.test.");
    let nx = query("nope12345.db.test.");
    let mut out = vec![0u8; 4096];
    c.bench_function("fast/alias_a", |b| b.iter(|| table.answer(std::hint::black_box(&alias), &mut out).unwrap()));
    c.bench_function("fast/nxdomain", |b| b.iter(|| table.answer(std::hint::black_box(&nx), &mut out).unwrap()));
    c.bench_function("full/alias_a", |b| b.iter(|| matches!(handler.plan(std::hint::black_box(&alias), Transport::Udp), Plan::Reply(_))));
    c.bench_function("full/nxdomain", |b| b.iter(|| matches!(handler.plan(std::hint::black_box(&nx), Transport::Udp), Plan::Reply(_))));

    let now = Instant::now();
    let state = State::new(&config, now);
    let obs = |server, in_recovery| Observation {
        server,
        at: now,
        latency: Duration::from_micros(30),
        outcome: Ok(ServerState { in_recovery, read_only: in_recovery, timeline: Some(1), replay_lag_bytes: None, fresh_connection: false }),
    };
    let round = [obs(0, false), obs(1, true)];
    let (state, _) = decide(&state, &round, &config, now);
    c.bench_function("decision/observe_2_servers", |b| b.iter(|| decide(std::hint::black_box(&state), &round, &config, now)));
}

criterion_group!(benches, answer_path);
criterion_main!(benches);
