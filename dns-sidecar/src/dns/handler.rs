//! What to answer: the full (hickory-based) path. [`Handler::plan`] decides
//! synchronously from the routes snapshot and the zones; only forwarding and
//! resolving an alias target's addresses wait on the network, and they never
//! wait on a probe. The UDP workers ask it only for what the fast path
//! ([`super::fast`]) and the cache ([`super::cache`]) do not answer; TCP asks
//! it for everything.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::cache::{Cache, Found, MAX_ANSWER};
use super::forward::{ForwardError, Forwarder};
use super::forward_zones::{self, ForwardZones, RouteId};
use super::guard::Guard;
use super::message::{
    self, check_wire, echo_edns, encode, formerr_from_raw, limit_for, must_drop, response_to, truncated_raw, udp_limit,
    Transport, CLASSIC_UDP_LIMIT,
};
use super::names::{canonical, wire, wire_name, NameConversion};
use super::question::question;
use super::targets::{self, SharedTargets};
use super::zone::{cname, ZoneData};
use crate::config::{Cidr, Config, Limits};
use crate::metrics::{Limited, QueryKind};
use crate::name::within;
use crate::routes::RouteAnswer;
use crate::shared::Shared;

/// The handler in force; swapped whole on a config reload.
pub type SharedHandler = Arc<ArcSwap<Handler>>;

/// Bytes to send, and what kind of query they answer (for metrics).
pub struct Reply {
    pub bytes: Vec<u8>,
    pub kind: QueryKind,
}

impl Reply {
    /// The rcode in the answer's header (low 4 bits; enough for metrics).
    pub fn rcode(&self) -> u16 {
        self.bytes.get(3).map_or(0, |b| (b & 0x0F) as u16)
    }
}

/// The next step for one query.
pub enum Plan {
    /// Send this.
    Reply(Reply),
    /// Send nothing (not a query we may answer).
    Drop,
    /// Relay to the upstream resolvers.
    Forward(Request),
    /// Answer the alias's CNAME plus the target's records of the asked type.
    Chase(Chase),
}

/// A decoded query still to be relayed. Opaque outside `dns`, so that
/// hickory's message type does not leave the module.
pub struct Request(pub(super) Box<Message>);

/// An alias answer still waiting for its target's records. Opaque outside
/// `dns`, like [`Request`].
pub struct Chase {
    pub(super) req: Box<Message>,
    pub(super) resp: Box<Message>,
    pub(super) target: Name,
    pub(super) qtype: RecordType,
}

pub struct Handler {
    zones: Vec<ZoneData>,
    /// Wire names of every possible CNAME target, converted once.
    targets: HashMap<String, Name>,
    shared: Arc<Shared>,
    /// Target addresses kept fresh in the background.
    targets_cache: SharedTargets,
    /// The `[upstream]` default and the `[[forward]]` zones' forwarders.
    forward: ForwardZones,
    max_udp: u16,
    limits: Limits,
    allow: Vec<Cidr>,
    guard: Arc<Guard>,
    /// Forwarded answers (process-wide, kept across reloads).
    cache: Arc<Cache>,
}

impl Handler {
    /// The handler for `config`; `targets`, `guard` and `cache` are
    /// process-wide and outlive it (a reload builds a new handler on them).
    pub(crate) fn new(
        config: &Config,
        shared: Arc<Shared>,
        targets: SharedTargets,
        guard: Arc<Guard>,
        cache: Arc<Cache>,
    ) -> Result<Handler, NameConversion> {
        let zones = config
            .zones
            .iter()
            .map(|z| ZoneData::build(z, config))
            .collect::<Result<Vec<_>, _>>()?;
        let names = config
            .servers
            .iter()
            .map(|s| Ok((s.target.as_str().to_string(), wire_name(s.target.as_str())?)))
            .collect::<Result<HashMap<_, _>, NameConversion>>()?;
        let forward = ForwardZones::new(config, Some(&guard));
        Ok(Handler {
            zones,
            targets: names,
            shared,
            targets_cache: targets,
            forward,
            max_udp: config.dns.max_udp_payload,
            limits: config.limits.clone(),
            allow: config.dns.allow.clone(),
            guard,
            cache,
        })
    }

    /// The cache of forwarded answers.
    pub(crate) fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// A forwarded query answered from the cache (fresh, or stale while the
    /// upstream is known to fail); counts a hit, a stale answer or a miss.
    fn cached(&self, raw: &[u8], transport: Transport) -> Option<Reply> {
        if !self.cache.enabled() {
            return None;
        }
        let m = self.cache.metrics();
        let Some(qn) = question(raw, self.max_udp) else {
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
        let qn = question(raw, self.max_udp)?;
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
        if let Some(qn) = question(raw, self.max_udp) {
            self.cache.insert(raw, &qn, answer, self.cache.now());
        }
    }

    /// The limits in force with this handler's config.
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

    /// An immediate answer with `code` for a query we decided not to forward
    /// (a limit, every upstream out of use).
    pub(crate) fn refuse(&self, req: &Message, code: ResponseCode, transport: Transport) -> Option<Reply> {
        self.reply_bytes(req, code, transport, QueryKind::Forwarded)
            .map(|bytes| Reply {
                bytes,
                kind: QueryKind::Forwarded,
            })
    }

    /// TC answer (header, question, OPT) for a query whose upstream answer
    /// was too big to relay over UDP: the client retries over TCP.
    pub(crate) fn truncated(&self, raw: &[u8]) -> Option<Vec<u8>> {
        if let Some(qn) = question(raw, self.max_udp) {
            let mut out = [0u8; CLASSIC_UDP_LIMIT];
            let n = truncated_raw(raw, &qn, &mut out)?;
            return Some(out[..n].to_vec());
        }
        self.truncated_decoded(raw)
    }

    /// [`Handler::truncated`] through hickory, for the queries
    /// [`question`] declines (EDNS options it leaves to the full path).
    fn truncated_decoded(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let req = Message::from_vec(raw).ok()?;
        let mut resp = response_to(&req, ResponseCode::NoError, true);
        resp.metadata.truncation = true;
        echo_edns(&req, &mut resp, self.max_udp);
        resp.to_vec().ok()
    }

    /// Largest UDP answer the client of `raw` takes
    /// ([`message::client_udp_limit`]).
    pub(crate) fn udp_limit_of(&self, raw: &[u8]) -> usize {
        match question(raw, self.max_udp) {
            Some(qn) => qn.udp_limit,
            None => Message::from_vec(raw).map_or(CLASSIC_UDP_LIMIT, |m| udp_limit(&m, self.max_udp)),
        }
    }

    /// The target-address snapshot this handler answers from.
    pub(crate) fn targets_snapshot(&self) -> Arc<targets::Targets> {
        self.targets_cache.load_full()
    }

    /// A forwarder, when any name is forwarded (`[upstream]`'s, else the
    /// first `[[forward]]` zone's). Which one a query goes to is
    /// [`Handler::route`]'s.
    pub(crate) fn forwarder(&self) -> Option<&Forwarder> {
        self.forward.all().next()
    }

    /// Every forwarder, and the table that picks one per name.
    pub(crate) fn forwarders(&self) -> &ForwardZones {
        &self.forward
    }

    /// Whether any name is forwarded (the RA bit of our answers).
    fn recurses(&self) -> bool {
        self.forward.any()
    }

    /// Which forwarder query `raw` goes to (its zone's, else `[upstream]`'s;
    /// `None`: neither, the query is REFUSED). Reads the name as sent; a
    /// compressed question name (never sent by real clients) is decoded.
    #[inline]
    pub(crate) fn route(&self, raw: &[u8]) -> Option<RouteId> {
        match forward_zones::qname(raw) {
            Some(name) => self.forward.route(name),
            None => {
                let m = Message::from_vec(raw).ok()?;
                self.route_name(&m.queries.first()?.name)
            }
        }
    }

    /// [`Handler::route`] for a decoded name.
    fn route_name(&self, name: &Name) -> Option<RouteId> {
        self.forward.route(&wire(&canonical(name)))
    }

    /// Whether answers to `raw` may be kept in, and answered from, the
    /// cache: its zone's `cache` (`[[forward]] cache = false`: never). The
    /// one place the handler asks; the relays and UDP workers ask the
    /// forwarder of the route they hold.
    fn caches(&self, raw: &[u8]) -> bool {
        self.route(raw).is_none_or(|r| self.forward.get(r).caches())
    }

    /// SERVFAIL for a query whose forwarding failed.
    pub(crate) fn servfail(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let req = Message::from_vec(raw).ok()?;
        self.reply_bytes(&req, ResponseCode::ServFail, Transport::Udp, QueryKind::Forwarded)
    }

    /// Largest UDP answer for EDNS clients.
    pub(crate) fn max_udp(&self) -> u16 {
        self.max_udp
    }

    /// The zone apexes (canonical text).
    pub(crate) fn zone_apexes(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| z.apex_text.as_str())
    }

    /// The names a zone's own records use (SOA, NS) and its empty non-terminals.
    pub(crate) fn zone_names(&self, apex: &str) -> Option<(Vec<String>, Vec<String>)> {
        let z = self.zones.iter().find(|z| z.apex_text == apex)?;
        Some((z.own_names.clone(), z.empty_non_terminals.clone()))
    }

    /// Finishes a plan that may need the network.
    pub(crate) async fn complete(&self, plan: Plan, raw: &[u8], transport: Transport) -> Option<Reply> {
        match plan {
            Plan::Reply(r) => Some(r),
            Plan::Drop => None,
            Plan::Forward(Request(req)) => self.forward(&req, raw, transport).await.map(|bytes| Reply {
                bytes,
                kind: QueryKind::Forwarded,
            }),
            Plan::Chase(Chase {
                req,
                resp,
                target,
                qtype,
            }) => self
                .chase(&req, *resp, target, qtype, transport)
                .await
                .map(|bytes| Reply {
                    bytes,
                    kind: QueryKind::Alias,
                }),
        }
    }

    /// Counts an answer sent (query path: atomics only).
    pub(crate) fn count(&self, reply: &Reply, seconds: f64) {
        self.shared.metrics.answered(reply.kind, reply.rcode());
        self.shared.metrics.latency(reply.kind, seconds);
    }

    /// Decides without waiting.
    pub fn plan(&self, raw: &[u8], transport: Transport) -> Plan {
        if must_drop(raw) {
            return Plan::Drop;
        }
        if let Err(e) = check_wire(raw) {
            tracing::debug!(error = ?e, "malformed query");
            return Plan::Reply(Reply {
                bytes: formerr_from_raw(raw),
                kind: QueryKind::Other,
            });
        }
        let req = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "malformed query");
                return Plan::Reply(Reply {
                    bytes: formerr_from_raw(raw),
                    kind: QueryKind::Other,
                });
            }
        };
        if !message::is_query(&req) {
            return self.reply(&req, ResponseCode::NotImp, transport);
        }
        if req.queries.len() != 1 {
            return self.reply(&req, ResponseCode::FormErr, transport);
        }
        if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return self.reply(&req, ResponseCode::BADVERS, transport);
        }
        let q = &req.queries[0];
        if q.query_class != DNSClass::IN {
            return self.reply(&req, ResponseCode::Refused, transport);
        }
        let qname = canonical(&q.name);
        let Some(zone) = self
            .zones
            .iter()
            .filter(|z| within(&qname, &z.apex_text))
            .max_by_key(|z| z.apex_text.len())
        else {
            let Some(route) = self.route(raw) else {
                return self.reply(&req, ResponseCode::Refused, transport);
            };
            let cached = match self.forward.get(route).caches() {
                true => self.cached(raw, transport),
                false => None,
            };
            return match cached {
                Some(r) => Plan::Reply(r),
                None => Plan::Forward(Request(Box::new(req))),
            };
        };
        let routes = self.shared.routes.load();
        if let Some(route) = routes.get(&qname) {
            return self.alias(req, &route.answer, route.ttl, transport);
        }
        let mut resp = response_to(&req, ResponseCode::NoError, self.recurses());
        resp.metadata.authoritative = true;
        let qtype = q.query_type;
        if qname == zone.apex_text {
            match qtype {
                RecordType::SOA => resp.answers.push(zone.soa.clone()),
                RecordType::NS => resp.answers.extend(zone.ns.iter().cloned()),
                RecordType::ANY => {
                    resp.answers.push(zone.soa.clone());
                    resp.answers.extend(zone.ns.iter().cloned());
                }
                _ => resp.authorities.push(zone.negative_soa()),
            }
        } else {
            if !zone.empty_non_terminals.contains(&qname) {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            resp.authorities.push(zone.negative_soa());
        }
        self.finish(&req, resp, transport, QueryKind::Authoritative)
    }

    fn alias(&self, req: Message, answer: &RouteAnswer, ttl: u32, transport: Transport) -> Plan {
        let target = match answer {
            // A target added by a reload whose handler is not swapped in yet
            // is converted on the spot.
            RouteAnswer::Cname(t) => self
                .targets
                .get(t.as_str())
                .cloned()
                .or_else(|| wire_name(t.as_str()).ok()),
            RouteAnswer::Pending | RouteAnswer::Servfail => None,
        };
        let Some(target) = target else {
            return self.reply_kind(&req, ResponseCode::ServFail, transport, QueryKind::Alias);
        };
        let q = &req.queries[0];
        let mut resp = response_to(&req, ResponseCode::NoError, self.recurses());
        resp.metadata.authoritative = true;
        resp.answers.push(cname(&q.name, &target, ttl));
        let qtype = q.query_type;
        // RD=0 (a resolver iterating, not asking us to recurse): our own
        // data only, as an authoritative server answers; the target's
        // records would be an answer the upstream gives with recursion.
        if matches!(qtype, RecordType::CNAME | RecordType::ANY)
            || !req.metadata.recursion_desired
            || self.in_own_zone(&target)
            || self.route_name(&target).is_none()
        {
            return self.finish(&req, resp, transport, QueryKind::Alias);
        }
        if let RouteAnswer::Cname(t) = answer {
            if let Some(c) = self.targets_cache.load().entries.get(&(t.as_str().to_string(), qtype)) {
                if c.rcode == ResponseCode::ServFail {
                    return self.reply_kind(&req, ResponseCode::ServFail, transport, QueryKind::Alias);
                }
                resp.metadata.response_code = c.rcode;
                resp.answers.extend(c.answers.iter().cloned());
                return self.finish(&req, resp, transport, QueryKind::Alias);
            }
        }
        // Other types from the cache of forwarded answers, without waiting.
        // Not A and AAAA: the fast table is precomputed from this function,
        // and must hold only answers that do not age (the background
        // snapshot's); theirs come from the cache in `chase`.
        if !targets::TYPES.contains(&qtype) {
            if let Ok(query) = targets::query(&target, qtype) {
                if let Some(a) = self.chased_from_cache(&query, false) {
                    merge_chased(&mut resp, Some(a));
                    return self.finish(&req, resp, transport, QueryKind::Alias);
                }
            }
        }
        Plan::Chase(Chase {
            target,
            qtype,
            req: Box::new(req),
            resp: Box::new(resp),
        })
    }

    fn in_own_zone(&self, name: &Name) -> bool {
        let n = canonical(name);
        self.zones.iter().any(|z| within(&n, &z.apex_text))
    }

    /// Relays a query to the upstreams; SERVFAIL when none answers.
    async fn forward(&self, req: &Message, raw: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let fwd = self.forward.get(self.route(raw)?);
        // Every upstream out of use: a stale answer at once beats a trial
        // (the admission policy, as the relays apply it).
        if fwd.all_down() {
            if let Some(r) = self.stale(raw, transport) {
                self.guard.refused(Limited::UpstreamDown);
                return Some(r.bytes);
            }
        }
        match fwd.forward(raw, transport).await {
            Ok(answer) => {
                // The upstream could not answer (SERVFAIL, REFUSED): a stale
                // answer is better (RFC 8767).
                if super::admission::stale_instead(answer[3]) {
                    if let Some(r) = self.stale(raw, transport) {
                        return Some(r.bytes);
                    }
                }
                self.keep(raw, &answer);
                // Larger than the client takes over UDP: TC, it retries over TCP.
                if transport == Transport::Udp && answer.len() > self.udp_limit_of(raw) {
                    return self.truncated(raw);
                }
                Some(answer)
            }
            Err(ForwardError::TooBig) => self.truncated(raw),
            Err(e) => {
                if matches!(e, ForwardError::AllDown) {
                    self.guard.refused(Limited::UpstreamDown);
                }
                tracing::debug!(error = %e, zone = fwd.zone(), "forwarding failed");
                self.count_upstream_error(fwd.zone(), &e);
                if let Some(r) = self.stale(raw, transport) {
                    return Some(r.bytes);
                }
                let servfail = self.reply_bytes(req, ResponseCode::ServFail, transport, QueryKind::Forwarded)?;
                if matches!(e, ForwardError::Timeout { .. }) {
                    super::admission::remember_timeout(self, raw, &servfail);
                }
                Some(servfail)
            }
        }
    }

    /// Adds the target's records of type `qtype` (resolved upstream) to an
    /// alias answer, so a stub resolver gets an address in one answer.
    async fn chase(
        &self,
        req: &Message,
        mut resp: Message,
        target: Name,
        qtype: RecordType,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let answer = match targets::query(&target, qtype) {
            Ok(query) => match self.chased_from_cache(&query, true) {
                Some(a) => Some(a),
                // The target's own zone's upstreams.
                None => match self.route(&query) {
                    Some(r) => self.chase_upstream(self.forward.get(r), &query).await,
                    None => None,
                },
            },
            Err(_) => None,
        };
        merge_chased(&mut resp, answer);
        match self.finish(req, resp, transport, QueryKind::Alias) {
            Plan::Reply(r) => Some(r.bytes),
            _ => None,
        }
    }

    /// The cache's answer to `query` (the target's question, as
    /// [`targets::query`] writes it), fresh or stale while the upstream is
    /// known to fail; a hit counts, and a miss too when `count_miss`.
    fn chased_from_cache(&self, query: &[u8], count_miss: bool) -> Option<Message> {
        if !self.caches(query) {
            return None;
        }
        let qn = question(query, self.max_udp)?;
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

    /// Asks the upstream `query` (the target's question) and keeps its
    /// answer in the cache by the same rules as a forwarded answer; when
    /// the upstream fails, a stale answer from the cache if there is one.
    async fn chase_upstream(&self, fwd: &Forwarder, query: &[u8]) -> Option<Message> {
        let stale = || {
            self.stale(query, Transport::Tcp)
                .and_then(|r| Message::from_vec(&r.bytes).ok())
        };
        match fwd.forward(query, Transport::Tcp).await {
            Ok(answer) => {
                if matches!(answer[3] & 0x0F, 2 | 5) {
                    if let Some(s) = stale() {
                        return Some(s);
                    }
                }
                self.keep(query, &answer);
                Message::from_vec(&answer).ok()
            }
            Err(e) => {
                self.count_upstream_error(fwd.zone(), &e);
                stale()
            }
        }
    }

    /// Counts a failure of an upstream of forward zone `zone`.
    pub(super) fn count_upstream_error(&self, zone: &str, e: &ForwardError) {
        use crate::metrics::UpstreamLabel;
        let (upstream, kind) = match e {
            ForwardError::Timeout { addr, .. } => (addr.to_string(), "timeout"),
            ForwardError::Io { addr, .. } => (addr.to_string(), "error"),
            ForwardError::NoUpstream | ForwardError::AllDown | ForwardError::TooBig => return,
        };
        self.shared
            .metrics
            .upstream_errors
            .get_or_create(&UpstreamLabel {
                upstream,
                zone: zone.into(),
                kind: kind.into(),
            })
            .inc();
    }

    fn reply(&self, req: &Message, code: ResponseCode, transport: Transport) -> Plan {
        self.reply_kind(req, code, transport, QueryKind::Other)
    }

    fn reply_kind(&self, req: &Message, code: ResponseCode, transport: Transport, kind: QueryKind) -> Plan {
        self.reply_bytes(req, code, transport, kind)
            .map_or(Plan::Drop, |bytes| Plan::Reply(Reply { bytes, kind }))
    }

    fn reply_bytes(&self, req: &Message, code: ResponseCode, transport: Transport, kind: QueryKind) -> Option<Vec<u8>> {
        let resp = response_to(req, code, self.recurses());
        match self.finish(req, resp, transport, kind) {
            Plan::Reply(r) => Some(r.bytes),
            _ => None,
        }
    }

    fn finish(&self, req: &Message, mut resp: Message, transport: Transport, kind: QueryKind) -> Plan {
        echo_edns(req, &mut resp, self.max_udp);
        encode(&resp, limit_for(transport, req, self.max_udp))
            .map_or(Plan::Drop, |bytes| Plan::Reply(Reply { bytes, kind }))
    }
}

/// Adds the upstream's answer for an alias's target (its rcode, NOERROR or
/// NXDOMAIN, and its answer records) to the alias answer `resp`; no answer,
/// or any other rcode, makes it SERVFAIL.
fn merge_chased(resp: &mut Message, answer: Option<Message>) {
    match answer {
        Some(a) if matches!(a.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain) => {
            resp.metadata.response_code = a.metadata.response_code;
            resp.answers.extend(a.answers);
        }
        _ => resp.metadata.response_code = ResponseCode::ServFail,
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, MessageType, Query};
    use hickory_proto::rr::rdata::{SOA, TXT};
    use hickory_proto::rr::{RData, Record};

    use super::*;

    fn query(name: &str, qtype: RecordType, rd: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x7777;
        m.metadata.recursion_desired = rd;
        m.queries.push(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
        m.to_vec().unwrap()
    }

    /// The upstream's answer to `q` with `answers` and `authorities`.
    fn upstream(q: &[u8], answers: Vec<Record>, authorities: Vec<Record>) -> Vec<u8> {
        let req = Message::from_vec(q).unwrap();
        let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.queries = req.queries.clone();
        m.answers = answers;
        m.authorities = authorities;
        m.set_edns(Edns::new());
        m.to_vec().unwrap()
    }

    fn reply(p: Plan) -> Option<Message> {
        match p {
            Plan::Reply(r) => Some(Message::from_vec(&r.bytes).unwrap()),
            _ => None,
        }
    }

    #[test]
    fn alias_chases_of_other_types_are_answered_from_the_cache() {
        let (_, h, _) = super::super::fixture::fixture();
        let target = Name::from_ascii("pg-a.test.").unwrap();
        let txt = query("prod.db.test.", RecordType::TXT, true);
        assert!(
            matches!(h.plan(&txt, Transport::Udp), Plan::Chase(_)),
            "nothing cached yet: the upstream is asked"
        );
        // What `chase` keeps: the upstream's answer to the target's question.
        let tq = targets::query(&target, RecordType::TXT).unwrap();
        let record = Record::from_rdata(target.clone(), 60, RData::TXT(TXT::new(vec!["hello".into()])));
        h.keep(&tq, &upstream(&tq, vec![record], vec![]));
        let m = reply(h.plan(&txt, Transport::Udp)).expect("answered without waiting");
        assert_eq!(m.answers.len(), 2, "CNAME + the target's TXT: {m:?}");
        assert_eq!(m.answers[1].record_type(), RecordType::TXT);
        assert_eq!(m.metadata.id, 0x7777);
        // NODATA with an SOA is kept too (negative, RFC 2308).
        let mx = query("prod.db.test.", RecordType::MX, true);
        let tq = targets::query(&target, RecordType::MX).unwrap();
        let soa = SOA::new(target.clone(), target.clone(), 1, 60, 60, 60, 30);
        h.keep(
            &tq,
            &upstream(
                &tq,
                vec![],
                vec![Record::from_rdata(target.clone(), 60, RData::SOA(soa))],
            ),
        );
        let m = reply(h.plan(&mx, Transport::Udp)).expect("answered from the negative entry");
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 1));
        // The entry is keyed by the target's question (name, type, class,
        // EDNS, DO, CD), as a client's query for the target would be: that
        // client gets the same upstream answer; another target does not.
        let same = query("PG-A.test.", RecordType::TXT, true);
        let m = reply(h.plan(&same, Transport::Udp)).expect("the same question");
        assert_eq!(m.answers.len(), 1);
        let other = query("pg-b.test.", RecordType::TXT, true);
        assert!(matches!(h.plan(&other, Transport::Udp), Plan::Forward(_)));
    }

    #[test]
    fn rd0_alias_queries_get_the_cname_only() {
        let (_, h, _) = super::super::fixture::fixture();
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
            let m = reply(h.plan(&query("prod.db.test.", qtype, false), Transport::Udp)).expect("no upstream");
            assert_eq!(m.answers.len(), 1, "{qtype:?}: {m:?}");
            assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
            assert!(!m.metadata.recursion_desired && m.metadata.authoritative);
        }
        let m = reply(h.plan(&query("prod.db.test.", RecordType::A, true), Transport::Udp)).unwrap();
        assert_eq!(m.answers.len(), 2, "RD=1: CNAME + address");
    }

    #[test]
    fn udp_answers_over_the_clients_limit_are_truncated() {
        let (_, h, _) = super::super::fixture::fixture();
        let q = query("big.example.com.", RecordType::TXT, true);
        assert_eq!(h.udp_limit_of(&q), 1232);
        let mut plain = q.clone();
        plain[11] = 0;
        plain.truncate(plain.len() - 11);
        assert_eq!(h.udp_limit_of(&plain), 512);
        let tc = Message::from_vec(&h.truncated(&q).unwrap()).unwrap();
        assert!(tc.metadata.truncation && tc.answers.is_empty());
        assert_eq!(tc.edns.map(|e| e.max_payload()), Some(h.max_udp()));
        // A query the raw reader declines (client subnet) gets the same.
        let mut ecs = Message::from_vec(&q).unwrap();
        let mut e = Edns::new();
        e.set_max_payload(4096);
        e.options_mut()
            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                8,
                vec![0, 1, 24, 0, 10, 0, 0],
            ));
        ecs.set_edns(e);
        let ecs = ecs.to_vec().unwrap();
        assert!(question(&ecs, 1232).is_none());
        assert_eq!(h.udp_limit_of(&ecs), 1232, "its EDNS size, capped by ours");
        assert!(
            Message::from_vec(&h.truncated(&ecs).unwrap())
                .unwrap()
                .metadata
                .truncation
        );
    }
}
