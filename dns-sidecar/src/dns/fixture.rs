//! A ready handler and fast table over a fixed config, with the alias
//! decided and its target's address cached: shared by the fast-path tests
//! and the micro-benchmarks so both measure and check the same thing.
//! Compiled only for tests and with the `testing` feature (see `mod.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::cache::Cache;
use super::fast::FastTable;
use super::guard::Guard;
use super::handler::{Handler, ProcessWide};
use super::targets::{Cached, Targets};
use crate::config::{Config, Spread};
use crate::metrics::Metrics;
use crate::name::DnsName;
use crate::routes::{AliasRoute, RouteAnswer, Routes, SpreadRoute};

/// Zone `db.test.`; `prod.db.test.` -> `pg-a.test.` (A 127.0.0.2, no AAAA);
/// `ro.eu.db.test.` answers SERVFAIL (nothing matches).
pub const CONFIG: &str = r#"
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
[[aliases]]
name = "ro.eu.db.test"
servers = ["a"]
[[aliases]]
name = "spread.db.test"
role = "standby"
servers = ["a", "b"]
spread = "rotate"
weights = { a = 2 }
"#;

/// The fixture's spreading alias: `pg-a.test.` (weight 2, A 127.0.0.2) and
/// `pg-b.test.` (weight 1, A 127.0.0.3), rotating.
pub const SPREAD: &str = "spread.db.test.";

pub fn fixture() -> (Config, Handler, FastTable) {
    fixture_with(CONFIG)
}

/// [`fixture`] over `text`, which must have the fixture's zone, servers and
/// aliases (e.g. [`CONFIG`] with `[[forward]]` tables added).
pub fn fixture_with(text: &str) -> (Config, Handler, FastTable) {
    let config = Config::from_toml(Path::new("fixture.toml"), text).expect("the fixture config is valid");
    let metrics = Arc::new(Metrics::new());
    metrics.prepare(&config);
    let routes = routes();
    // A manual clock: answers from the cache do not change between two calls.
    let cache = Arc::new(Cache::manual(&config.cache, metrics.cache.clone()));
    cache.configure_from(&config);
    let on = ProcessWide {
        guard: Guard::new(metrics.clone()),
        metrics,
        routes: Arc::new(ArcSwap::from_pointee(routes.clone())),
        addresses: Arc::new(ArcSwap::from_pointee(addresses())),
        cache,
    };
    let handler = Handler::new(&config, &on).expect("valid names");
    let table = FastTable::build(&handler, &routes);
    (config, handler, table)
}

/// The aliases decided: `prod` to `pg-a`, `ro.eu` SERVFAIL, [`SPREAD`]
/// over both.
fn routes() -> Routes {
    let mut routes = Routes::default();
    let target = DnsName::parse("pg-a.test").expect("valid name");
    routes.aliases.insert(
        "prod.db.test.".into(),
        AliasRoute {
            ttl: 5,
            answer: RouteAnswer::Cname(target),
        },
    );
    routes.aliases.insert(
        "ro.eu.db.test.".into(),
        AliasRoute {
            ttl: 5,
            answer: RouteAnswer::Servfail,
        },
    );
    let members = vec![
        ("a".to_string(), DnsName::parse("pg-a.test").expect("valid name"), 2),
        ("b".to_string(), DnsName::parse("pg-b.test").expect("valid name"), 1),
    ];
    routes.aliases.insert(
        SPREAD.into(),
        AliasRoute {
            ttl: 5,
            answer: RouteAnswer::Spread(SpreadRoute::new(Spread::Rotate, members)),
        },
    );
    routes
}

/// The targets' addresses: `pg-a` A 127.0.0.2 and no AAAA, `pg-b` A
/// 127.0.0.3 and no AAAA, fresh for an hour.
fn addresses() -> Targets {
    let mut targets = Targets::default();
    let a = Record::from_rdata(
        Name::from_ascii("pg-a.test.").expect("valid name"),
        30,
        RData::A(A::new(127, 0, 0, 2)),
    );
    let later = Instant::now() + Duration::from_secs(3600);
    targets.entries.insert(
        ("pg-a.test.".into(), RecordType::A),
        Cached {
            rcode: ResponseCode::NoError,
            answers: vec![a],
            refresh_at: later,
        },
    );
    targets.entries.insert(
        ("pg-a.test.".into(), RecordType::AAAA),
        Cached {
            rcode: ResponseCode::NoError,
            answers: vec![],
            refresh_at: later,
        },
    );
    for (name, addr) in [("pg-b.test.", Some(A::new(127, 0, 0, 3))), ("pg-b.test.", None)] {
        let qtype = if addr.is_some() {
            RecordType::A
        } else {
            RecordType::AAAA
        };
        let answers = addr
            .map(|a| Record::from_rdata(Name::from_ascii(name).expect("valid name"), 30, RData::A(a)))
            .into_iter()
            .collect();
        targets.entries.insert(
            (name.into(), qtype),
            Cached {
                rcode: ResponseCode::NoError,
                answers,
                refresh_at: later,
            },
        );
    }
    targets
}

/// What a UDP worker does with a query for a forwarded name before it
/// relays it: classify it, find its zone's forwarder and, when the zone is
/// cached, answer from the cache into `out` (for the micro-benchmarks; the
/// worker's own code is in `udp.rs`).
pub fn forwarded_from_cache(handler: &Handler, table: &FastTable, q: &[u8], out: &mut [u8]) -> Option<usize> {
    let super::fast::Fast::Forward(f) = table.classify(q, out, crate::routes::Asker::NONE) else {
        return None;
    };
    let fwd = handler.forwarding();
    let route = super::admission::route(fwd, q).ok()?;
    if !fwd.zones().get(route).caches() {
        return None;
    }
    let cache = fwd.cache();
    match cache.answer(q, &f, f.udp_limit, cache.now(), out) {
        super::cache::Found::Fresh(n) => Some(n),
        _ => None,
    }
}

/// [`forwarded_from_cache`] without finding the zone (what a worker did
/// before `[[forward]]`): the baseline of what routing adds.
pub fn forwarded_from_cache_unrouted(table: &FastTable, handler: &Handler, q: &[u8], out: &mut [u8]) -> Option<usize> {
    let super::fast::Fast::Forward(f) = table.classify(q, out, crate::routes::Asker::NONE) else {
        return None;
    };
    let cache = handler.forwarding().cache();
    match cache.answer(q, &f, f.udp_limit, cache.now(), out) {
        super::cache::Found::Fresh(n) => Some(n),
        _ => None,
    }
}

/// Keeps `answer`, an upstream's answer to `q`, in `handler`'s cache, as the
/// forwarder does (for the micro-benchmarks).
pub fn keep(handler: &Handler, q: &[u8], answer: &[u8]) {
    handler.forwarding().keep(q, answer);
}
