//! A ready handler and fast table over a fixed config, with the alias
//! decided and its target's address cached: shared by the fast-path tests
//! and the micro-benchmarks so both measure and check the same thing.
//! Compiled only for tests and with the `testing` feature (see `mod.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::cache::Cache;
use super::fast::FastTable;
use super::guard::Guard;
use super::handler::Handler;
use super::targets::{Cached, Targets};
use crate::config::Config;
use crate::name::DnsName;
use crate::routes::{AliasRoute, RouteAnswer, Routes};
use crate::shared::Shared;

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
"#;

pub fn fixture() -> (Config, Handler, FastTable) {
    fixture_with(CONFIG)
}

/// [`fixture`] over `text`, which must have the fixture's zone, servers and
/// aliases (e.g. [`CONFIG`] with `[[forward]]` tables added).
pub fn fixture_with(text: &str) -> (Config, Handler, FastTable) {
    let config = Config::from_toml(Path::new("fixture.toml"), text).expect("the fixture config is valid");
    let shared = Arc::new(Shared::new(config.clone()));
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
    shared.routes.store(Arc::new(routes.clone()));
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
    let guard = Guard::new(shared.clone());
    // A manual clock: answers from the cache do not change between two calls.
    let cache = Arc::new(Cache::manual(&config.cache, shared.metrics.cache.clone()));
    cache.configure_from(&config);
    let handler = Handler::new(
        &config,
        shared,
        Arc::new(arc_swap::ArcSwap::from_pointee(targets)),
        guard,
        cache,
    )
    .expect("valid names");
    let table = FastTable::build(&handler, &routes);
    (config, handler, table)
}

/// What a UDP worker does with a query for a forwarded name before it
/// relays it: classify it, find its zone's forwarder and, when the zone is
/// cached, answer from the cache into `out` (for the micro-benchmarks; the
/// worker's own code is in `udp.rs`).
pub fn forwarded_from_cache(handler: &Handler, table: &FastTable, q: &[u8], out: &mut [u8]) -> Option<usize> {
    let super::fast::Fast::Forward(f) = table.classify(q, out) else {
        return None;
    };
    let route = super::admission::route(handler, q).ok()?;
    if !handler.forwarders().get(route).caches() {
        return None;
    }
    let cache = handler.cache();
    match cache.answer(q, &f, f.udp_limit, cache.now(), out) {
        super::cache::Found::Fresh(n) => Some(n),
        _ => None,
    }
}

/// Keeps `answer`, an upstream's answer to `q`, in `handler`'s cache, as the
/// forwarder does (for the micro-benchmarks).
pub fn keep(handler: &Handler, q: &[u8], answer: &[u8]) {
    handler.keep(q, answer);
}
