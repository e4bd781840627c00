//! Cache prefetch (`[cache] prefetch`) against a real upstream whose answer
//! has a 2-second TTL: a client asking steadily keeps getting answers from
//! the cache across the TTL boundaries, because the sidecar refreshes the
//! entry in the background shortly before it expires; without prefetch it
//! misses at every boundary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

use crate::abuse::metric;
use crate::support::raw;
use crate::support::sidecar::Sidecar;
use crate::support::upstream::Upstream;

const NAME: &str = "hot.prefetch.test.";
/// The upstream's TTL for [`NAME`]: short, so that a few seconds cross
/// several boundaries.
const TTL: u32 = 2;

fn config(upstream: SocketAddr, cache: &str) -> String {
    format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{upstream}\"]\ntimeout = \"500ms\"\n\
        [limits]\nforward_rate = 0\n[[zones]]\nname = \"db.test\"\n[cache]\n{cache}"
    )
}

/// Asks [`NAME`] every 50 ms for `secs` seconds; the last octet of every
/// address answered, in order. Changes the upstream's address to .2 at
/// half time.
fn ask_steadily(s: &Sidecar, up: &Upstream, secs: f64) -> Vec<u8> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut changed = false;
    while start.elapsed().as_secs_f64() < secs {
        if !changed && start.elapsed().as_secs_f64() > secs / 2.0 {
            up.a(NAME, TTL, [10, 9, 0, 2]);
            changed = true;
        }
        let a = raw::exchange(s.dns, &raw::query(NAME, RecordType::A), Duration::from_secs(2)).expect("an answer");
        let m = Message::from_vec(&a).unwrap();
        let last = m.answers.iter().find_map(|r| match &r.data {
            RData::A(a) => Some(a.0.octets()[3]),
            _ => None,
        });
        seen.push(last.expect("an address"));
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

#[test]
fn a_steadily_asked_name_is_refreshed_before_it_expires_and_never_misses() {
    let up = Upstream::start();
    up.a(NAME, TTL, [10, 9, 0, 1]);
    let s = Sidecar::start(&config(up.addr, "prefetch = true\n")).unwrap();
    // 7 s: three TTL boundaries after the first answer.
    let seen = ask_steadily(&s, &up, 7.0);
    let misses = metric(&s, "cache_misses_total");
    let prefetches = metric(&s, "cache_prefetches_total");
    let upstream = up.count(NAME, RecordType::A);
    // The first query misses; after that every one is a hit, because each
    // entry was refreshed before it expired (one miss of slack for a
    // refresh delayed on a loaded machine).
    assert!(
        misses <= 2.0,
        "{misses} misses; {prefetches} prefetches, {upstream} upstream queries"
    );
    assert!(
        prefetches >= 2.0,
        "one refresh per boundary crossed: {prefetches} (misses {misses})"
    );
    assert_eq!(
        upstream as f64,
        misses + prefetches,
        "the upstream saw the misses and the refreshes, nothing else"
    );
    assert_eq!(metric(&s, "cache_prefetches_dropped_total"), 0.0);
    assert!(
        metric(&s, "cache_hits_total") >= seen.len() as f64 - 2.0,
        "{} answers",
        seen.len()
    );
    // The refreshes fetched the upstream's new answer: the change at half
    // time reached the client within about a TTL, without a miss.
    assert_eq!(seen[0], 1);
    assert_eq!(*seen.last().unwrap(), 2, "{seen:?}");
}

#[test]
fn without_prefetch_the_same_client_misses_at_every_ttl_boundary() {
    let up = Upstream::start();
    up.a(NAME, TTL, [10, 9, 0, 1]);
    let s = Sidecar::start(&config(up.addr, "prefetch = false\n")).unwrap();
    let seen = ask_steadily(&s, &up, 7.0);
    let misses = metric(&s, "cache_misses_total");
    assert!(misses >= 3.0, "a miss at the start and at each boundary: {misses}");
    assert_eq!(metric(&s, "cache_prefetches_total"), 0.0);
    assert_eq!(up.count(NAME, RecordType::A) as f64, misses);
    assert_eq!(*seen.last().unwrap(), 2, "{seen:?}");
}

#[test]
fn refreshes_go_to_the_names_forward_zone_and_a_zone_that_keeps_nothing_refreshes_nothing() {
    let default = Upstream::start();
    let corp = Upstream::start();
    let kept = "hot.corp.test.";
    let uncached = "hot.live.test.";
    corp.a(kept, TTL, [10, 8, 0, 1]);
    corp.a(uncached, TTL, [10, 8, 0, 2]);
    let zones = format!(
        "[[forward]]\nzone = \"corp.test\"\nservers = [\"{}\"]\n[[forward]]\nzone = \"live.test\"\nservers = \
        [\"{}\"]\ncache = false\n",
        corp.addr, corp.addr
    );
    let text = config(default.addr, "prefetch = true\n").replace("[cache]\n", &format!("{zones}[cache]\n"));
    let s = Sidecar::start(&text).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(4500) {
        for name in [kept, uncached] {
            let a = raw::exchange(s.dns, &raw::query(name, RecordType::A), Duration::from_secs(2)).expect("an answer");
            assert_eq!(Message::from_vec(&a).unwrap().answers.len(), 1, "{name}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let prefetches = metric(&s, "cache_prefetches_total");
    assert!(prefetches >= 1.0, "{prefetches}");
    assert_eq!(default.total(), 0, "nothing went to [upstream]");
    // The kept name: its misses (the first, with a miss of slack on a
    // loaded machine) and its refreshes, all at the zone's upstream.
    let misses = metric(&s, "cache_misses_total");
    assert!(misses <= 2.0, "{misses}");
    assert_eq!(corp.count(kept, RecordType::A) as f64, misses + prefetches);
    // cache = false: never kept, so every query was relayed (not counted as
    // a miss either: the cache is not asked) and none refreshed.
    let asked = corp.count(uncached, RecordType::A);
    assert!(asked >= 40, "{asked}: relayed each time");
}
