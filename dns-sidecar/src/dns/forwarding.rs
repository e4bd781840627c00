//! The per-config forwarding context: everything a query that leaves the
//! sidecar needs, and nothing an authoritative answer does. Built with each
//! handler (config load and reload) around the process-wide cache and guard,
//! and passed explicitly to the paths that forward: the UDP relays, TCP,
//! the runtime's slow path, prefetch and the health checks.
//!
//! It holds the forwarders by zone (`[[forward]]`, else `[upstream]`), the
//! cache of forwarded answers (the one way the DNS side reaches it), the
//! guard and the limits and allow list it enforces. Completing a plan that
//! waits on an upstream (relaying, chasing an alias target) is in
//! [`super::complete`].

use std::sync::Arc;

use hickory_proto::op::Message;
use hickory_proto::rr::Name;

use super::cache::{Cache, Found, MAX_ANSWER};
use super::forward::ForwardError;
use super::forward_zones::{self, ForwardZones, RouteId};
use super::guard::Guard;
use super::message::Transport;
use super::names::{canonical, wire};
use super::question::question;
use super::reply::{Encoder, Reply};
use crate::config::{Cidr, Config, Limits};
use crate::metrics::{Metrics, QueryKind, UpstreamLabel};

pub(crate) struct Forwarding {
    /// The `[upstream]` default and the `[[forward]]` zones' forwarders.
    zones: ForwardZones,
    /// Forwarded answers (process-wide, kept across reloads).
    cache: Arc<Cache>,
    /// The process-wide counters and limiters.
    guard: Arc<Guard>,
    limits: Limits,
    allow: Vec<Cidr>,
    encoder: Encoder,
    metrics: Arc<Metrics>,
}

impl Forwarding {
    /// The context for `config`; `cache` and `guard` are process-wide and
    /// outlive it.
    pub(crate) fn new(config: &Config, cache: Arc<Cache>, guard: Arc<Guard>, metrics: Arc<Metrics>) -> Forwarding {
        let zones = ForwardZones::new(config, Some(&guard));
        let encoder = Encoder::new(config.dns.max_udp_payload, zones.any());
        Forwarding {
            zones,
            cache,
            guard,
            limits: config.limits.clone(),
            allow: config.dns.allow.clone(),
            encoder,
            metrics,
        }
    }

    /// How this config's answers are encoded.
    pub(crate) fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The cache of forwarded answers.
    pub(crate) fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The limits in force with this config.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The allow list in force (see [`super::admission::allows`]).
    pub(crate) fn allow(&self) -> &[Cidr] {
        &self.allow
    }

    /// The process-wide counters and limiters.
    pub(crate) fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// Every forwarder, and the table that picks one per name.
    pub(crate) fn zones(&self) -> &ForwardZones {
        &self.zones
    }

    /// Whether any name is forwarded at all (`[upstream]`, or a
    /// `[[forward]]` zone): else every name outside our zones is REFUSED,
    /// and the fast table needs no refusal template.
    pub(crate) fn forwards(&self) -> bool {
        self.zones.any()
    }

    /// Which forwarder query `raw` goes to (its zone's, else `[upstream]`'s;
    /// `None`: neither, the query is REFUSED). Reads the name as sent; a
    /// compressed question name (never sent by real clients) is decoded.
    #[inline]
    pub(crate) fn route(&self, raw: &[u8]) -> Option<RouteId> {
        match forward_zones::qname(raw) {
            Some(name) => self.zones.route(name),
            None => {
                let m = Message::from_vec(raw).ok()?;
                self.route_name(&m.queries.first()?.name)
            }
        }
    }

    /// [`Forwarding::route`] for a decoded name.
    pub(crate) fn route_name(&self, name: &Name) -> Option<RouteId> {
        self.zones.route(&wire(&canonical(name)))
    }

    /// Whether answers to `raw` may be kept in, and answered from, the
    /// cache: its zone's `cache` (`[[forward]] cache = false`: never). The
    /// one place the full path asks; the relays and UDP workers ask the
    /// forwarder of the route they hold.
    fn caches(&self, raw: &[u8]) -> bool {
        self.route(raw).is_none_or(|r| self.zones.get(r).caches())
    }

    /// A forwarded query answered from the cache (fresh, or stale while the
    /// upstream is known to fail); counts a hit, a stale answer or a miss.
    pub(crate) fn cached(&self, raw: &[u8], transport: Transport) -> Option<Reply> {
        if !self.cache.enabled() {
            return None;
        }
        let m = self.cache.metrics();
        let Some(qn) = question(raw, self.encoder.max_udp()) else {
            m.misses.inc();
            return None;
        };
        let mut out = [0u8; MAX_ANSWER];
        let limit = if transport == Transport::Udp {
            qn.udp_limit
        } else {
            usize::MAX
        };
        let (n, counter) = match self.cache.answer(raw, &qn, limit, self.cache.now(), &mut out) {
            Found::Fresh(n) => (n, &m.hits),
            Found::Stale(n) => (n, &m.stale),
            Found::Miss | Found::Off => {
                m.misses.inc();
                return None;
            }
        };
        counter.inc();
        Some(Reply {
            bytes: out[..n].to_vec(),
            kind: QueryKind::Forwarded,
        })
    }

    /// The upstream failed for `raw`: a stale answer from the cache (RFC
    /// 8767), if it has one; counted.
    pub(crate) fn stale(&self, raw: &[u8], transport: Transport) -> Option<Reply> {
        if !self.caches(raw) {
            return None;
        }
        let qn = question(raw, self.encoder.max_udp())?;
        let mut out = [0u8; MAX_ANSWER];
        let limit = if transport == Transport::Udp {
            qn.udp_limit
        } else {
            usize::MAX
        };
        let m = self.cache.metrics();
        let n = match self.cache.stale(raw, &qn, limit, self.cache.now(), &mut out) {
            Found::Stale(n) => {
                m.stale.inc();
                n
            }
            Found::Fresh(n) => {
                m.hits.inc();
                n
            }
            Found::Miss | Found::Off => return None,
        };
        Some(Reply {
            bytes: out[..n].to_vec(),
            kind: QueryKind::Forwarded,
        })
    }

    /// Keeps the upstream's `answer` to `raw` in the cache, if it may be kept.
    pub(crate) fn keep(&self, raw: &[u8], answer: &[u8]) {
        if !self.caches(raw) {
            return;
        }
        if let Some(qn) = question(raw, self.encoder.max_udp()) {
            self.cache.insert(raw, &qn, answer, self.cache.now());
        }
    }

    /// The cache's answer to `query` (an alias target's question, as
    /// [`super::targets::query`] writes it), fresh or stale while the
    /// upstream is known to fail; a hit counts, and a miss too when
    /// `count_miss`.
    pub(crate) fn chased_from_cache(&self, query: &[u8], count_miss: bool) -> Option<Message> {
        if !self.caches(query) {
            return None;
        }
        let qn = question(query, self.encoder.max_udp())?;
        let m = self.cache.metrics();
        let mut out = [0u8; MAX_ANSWER];
        let n = match self.cache.answer(query, &qn, usize::MAX, self.cache.now(), &mut out) {
            Found::Fresh(n) => {
                m.hits.inc();
                n
            }
            Found::Stale(n) => {
                m.stale.inc();
                n
            }
            Found::Miss => {
                if count_miss {
                    m.misses.inc();
                }
                return None;
            }
            Found::Off => return None,
        };
        Message::from_vec(&out[..n]).ok()
    }

    /// Counts a failure of an upstream of forward zone `zone`.
    pub(crate) fn count_upstream_error(&self, zone: &str, e: &ForwardError) {
        let (upstream, kind) = match e {
            ForwardError::Timeout { addr, .. } => (addr.to_string(), "timeout"),
            ForwardError::Io { addr, .. } => (addr.to_string(), "error"),
            ForwardError::NoUpstream | ForwardError::AllDown | ForwardError::TooBig => return,
        };
        self.metrics
            .upstream_errors
            .get_or_create(&UpstreamLabel {
                upstream,
                zone: zone.into(),
                kind: kind.into(),
            })
            .inc();
    }
}
