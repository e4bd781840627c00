//! Addresses of the CNAME targets, resolved through the upstream off the
//! query path.
//!
//! An alias answer for A or AAAA carries the target's records so that a stub
//! resolver gets an address in one answer. Resolving them per query would put
//! an upstream round trip on every alias answer; instead a background task
//! keeps every configured target's A and AAAA answers fresh (refreshed when
//! their TTL runs out, at most every 30 s, at least every second) and
//! publishes them as an immutable snapshot. When the upstream fails, the last
//! good answer is kept (stale, like a resolver's serve-stale) rather than
//! failing alias queries. A target the upstream never answered for is
//! remembered as such, so alias answers for it are SERVFAIL at once rather
//! than each waiting on the dead upstream; only before the first refresh
//! does an alias answer fall back to a per-query lookup.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use tokio::sync::watch;
use tracing::debug;

use super::forward::{ForwardError, Forwarder};
use super::forward_zones::ForwardZones;
use super::message::Transport;
use super::names::wire_name;
use crate::config::Config;

/// One cached upstream answer for (target, type).
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// NOERROR or NXDOMAIN; SERVFAIL when the target was never resolved
    /// because the upstream failed (retried every second).
    pub(crate) rcode: ResponseCode,
    /// The answer section as the upstream sent it (may hold a CNAME chain).
    pub(crate) answers: Vec<Record>,
    /// When it should be refreshed.
    pub(crate) refresh_at: Instant,
}

/// The snapshot: (lower-case target with dot, type) -> answer.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    pub(crate) entries: HashMap<(String, RecordType), Cached>,
}

pub(crate) type SharedTargets = Arc<ArcSwap<Targets>>;

const MAX_REFRESH: Duration = Duration::from_secs(30);
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The types kept fresh here; an alias answer of another type gets the
/// target's records from the cache of forwarded answers, or the upstream.
pub(super) const TYPES: [RecordType; 2] = [RecordType::A, RecordType::AAAA];

/// The query the sidecar sends upstream for `name`/`qtype`: RD, EDNS 1232
/// without DO, ID 0 (the forwarder puts a random one on the wire).
pub(super) fn query(name: &Name, qtype: RecordType) -> Result<Vec<u8>, ForwardError> {
    let mut q = Message::query();
    q.metadata.id = 0;
    q.metadata.recursion_desired = true;
    q.queries.push(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    q.set_edns(edns);
    q.to_vec().map_err(|_| ForwardError::NoUpstream)
}

/// Resolves `name`/`qtype` through `fwd` (retrying over TCP when truncated).
pub(crate) async fn resolve(fwd: &Forwarder, name: &Name, qtype: RecordType) -> Result<Message, ForwardError> {
    let bytes = query(name, qtype)?;
    // `Tcp` here means: retry over TCP if the UDP answer is truncated.
    let answer = fwd.forward(&bytes, Transport::Tcp).await?;
    Message::from_vec(&answer).map_err(|_| ForwardError::NoUpstream)
}

/// Keeps `targets` fresh for every target in the config in force (`config`,
/// replaced on reload) until shutdown.
pub(crate) async fn refresher(
    config: Arc<ArcSwap<Config>>,
    targets: SharedTargets,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let config = config.load_full();
        // Each target through its own zone's upstreams (`[[forward]]`).
        let zones = ForwardZones::new(&config, None);
        let mut next = MIN_REFRESH;
        if zones.any() {
            refresh_round(&config, &zones, &targets).await;
            next = targets
                .load()
                .entries
                .values()
                .map(|c| c.refresh_at.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(MIN_REFRESH)
                .clamp(Duration::from_millis(100), MIN_REFRESH);
        }
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

/// Resolves every target's entries that are due, and publishes a new
/// snapshot when anything changed.
async fn refresh_round(config: &Config, zones: &ForwardZones, targets: &SharedTargets) {
    let now = Instant::now();
    let current = targets.load_full();
    let mut fresh = HashMap::new();
    let mut changed = false;
    let mut names: Vec<&str> = config.servers.iter().map(|s| s.target.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        for qtype in TYPES {
            let key = (name.to_string(), qtype);
            match current.entries.get(&key) {
                Some(c) if c.refresh_at > now => {
                    fresh.insert(key, c.clone());
                    continue;
                }
                _ => {}
            }
            let Ok(wire) = wire_name(name) else { continue };
            let Some(route) = zones.route(&super::names::wire(name)) else {
                continue;
            };
            let result = resolve(zones.get(route), &wire, qtype).await;
            let (entry, new) = next_entry(result, current.entries.get(&key), now, name, qtype);
            fresh.insert(key, entry);
            changed |= new;
        }
    }
    if changed || fresh.len() != current.entries.len() {
        targets.store(Arc::new(Targets { entries: fresh }));
    }
}

/// The entry after a refresh that gave `result` (`last`: the entry before
/// it), and whether it is new.
fn next_entry(
    result: Result<Message, ForwardError>,
    last: Option<&Cached>,
    now: Instant,
    name: &str,
    qtype: RecordType,
) -> (Cached, bool) {
    match result {
        Ok(m) if matches!(m.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain) => {
            let ttl = m.answers.iter().map(|r| r.ttl).min().unwrap_or(5);
            let refresh = Duration::from_secs(ttl.into()).clamp(MIN_REFRESH, MAX_REFRESH);
            let entry = Cached {
                rcode: m.metadata.response_code,
                answers: m.answers,
                refresh_at: now + refresh,
            };
            (entry, true)
        }
        other => {
            debug!(target = name, ?qtype, result = ?other.map(|m| m.metadata.response_code), "refreshing a target's records failed; keeping the last answer");
            match last {
                Some(c) => (
                    Cached {
                        refresh_at: now + MIN_REFRESH,
                        ..c.clone()
                    },
                    false,
                ),
                // Never resolved: remember the failure, so alias
                // answers say SERVFAIL at once (from the fast
                // path) instead of each waiting on a dead upstream.
                None => (
                    Cached {
                        rcode: ResponseCode::ServFail,
                        answers: Vec::new(),
                        refresh_at: now + MIN_REFRESH,
                    },
                    true,
                ),
            }
        }
    }
}
