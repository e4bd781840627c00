//! What to answer: the full (hickory-based) path. [`Answerer::plan`]
//! decides synchronously from the routes snapshot, the zones and the alias
//! targets' addresses (kept fresh in the background by [`super::targets`]);
//! it holds no forwarding state. For a name it does not own it only asks
//! the forwarding context it is given where the name would go and whether
//! the cache has its answer; waiting on the network is the forwarding
//! context's ([`super::complete`]), and nothing here waits on a probe. The
//! UDP workers ask it only for what the fast path ([`super::fast`], which
//! is generated from it) and the cache do not answer; TCP asks it for
//! everything.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::complete::merge_chased;
use super::forwarding::Forwarding;
use super::message::{self, check_wire, formerr_from_raw, must_drop, Transport};
use super::names::{canonical, wire_name, NameConversion};
use super::plan::{Chase, Pick, Plan, Request};
use super::reply::{Encoder, Reply};
use super::targets::{self, SharedTargets};
use super::zone::{cname, ZoneData};
use crate::config::Config;
use crate::metrics::{AliasServer, Metrics, QueryKind};
use crate::name::within;
use crate::routes::{AliasRoute, Member, RouteAnswer, Routes};

pub(crate) struct Answerer {
    zones: Vec<ZoneData>,
    /// Wire names of every possible CNAME target, converted once.
    targets: HashMap<String, Name>,
    /// What aliases answer; written by the engine.
    routes: Arc<ArcSwap<Routes>>,
    /// Target addresses kept fresh in the background.
    addresses: SharedTargets,
    encoder: Encoder,
    /// For the reader aliases' answers per server.
    metrics: Arc<Metrics>,
}

impl Answerer {
    /// The answerer for `config`, encoding with `encoder` (the forwarding
    /// context's: the RA bit says whether names are forwarded).
    pub(crate) fn new(
        config: &Config,
        encoder: Encoder,
        routes: Arc<ArcSwap<Routes>>,
        addresses: SharedTargets,
        metrics: Arc<Metrics>,
    ) -> Result<Answerer, NameConversion> {
        let zones = config
            .zones
            .iter()
            .map(|z| ZoneData::build(z, config))
            .collect::<Result<Vec<_>, _>>()?;
        let targets = config
            .servers
            .iter()
            .map(|s| Ok((s.target.as_str().to_string(), wire_name(s.target.as_str())?)))
            .collect::<Result<HashMap<_, _>, NameConversion>>()?;
        Ok(Answerer {
            zones,
            targets,
            routes,
            addresses,
            encoder,
            metrics,
        })
    }

    /// How this config's answers are encoded.
    pub(crate) fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The routes snapshot in force.
    pub(crate) fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// The target-address snapshot this answerer answers from.
    pub(crate) fn addresses(&self) -> Arc<targets::Targets> {
        self.addresses.load_full()
    }

    /// The process's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
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

    /// Decides without waiting. `pick` says which member of a spreading
    /// alias's set answers; `fwd` where a name we do not own goes, and
    /// what the cache holds for it.
    pub(crate) fn plan(&self, raw: &[u8], transport: Transport, pick: Pick, fwd: &Forwarding) -> Plan {
        let req = match self.decode(raw, transport) {
            Ok(req) => req,
            Err(plan) => return plan,
        };
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
            return outside(req, raw, transport, fwd);
        };
        let routes = self.routes.load();
        if let Some(route) = routes.get(&qname) {
            return self.alias(req, &qname, route, transport, pick, fwd);
        }
        self.authoritative(req, &qname, zone, transport)
    }

    /// The query decoded, when it is one we answer from our data or
    /// forward: else what to do with it (drop, FORMERR, NOTIMP, BADVERS).
    fn decode(&self, raw: &[u8], transport: Transport) -> Result<Message, Plan> {
        if must_drop(raw) {
            return Err(Plan::Drop);
        }
        if let Err(e) = check_wire(raw) {
            tracing::debug!(error = ?e, "malformed query");
            return Err(formerr(raw));
        }
        let req = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "malformed query");
                return Err(formerr(raw));
            }
        };
        if !message::is_query(&req) {
            return Err(self.reply(&req, ResponseCode::NotImp, transport));
        }
        if req.queries.len() != 1 {
            return Err(self.reply(&req, ResponseCode::FormErr, transport));
        }
        if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Err(self.reply(&req, ResponseCode::BADVERS, transport));
        }
        Ok(req)
    }

    /// A name of `zone` that is no alias: the apex's SOA and NS, else
    /// NODATA or NXDOMAIN with the zone's SOA.
    fn authoritative(&self, req: Message, qname: &str, zone: &ZoneData, transport: Transport) -> Plan {
        let mut resp = self.encoder.response(&req, ResponseCode::NoError);
        resp.metadata.authoritative = true;
        let qtype = req.queries[0].query_type;
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
            if !zone.empty_non_terminals.iter().any(|n| n == qname) {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            resp.authorities.push(zone.negative_soa());
        }
        self.finish(&req, resp, transport, QueryKind::Authoritative)
    }

    /// An alias's answer: its CNAME (a spreading alias's member `pick`
    /// chooses), with the target's records when the query recurses.
    fn alias(
        &self,
        req: Message,
        qname: &str,
        route: &AliasRoute,
        transport: Transport,
        pick: Pick,
        fwd: &Forwarding,
    ) -> Plan {
        let (answer, ttl) = (&route.answer, route.ttl);
        // A spreading alias: the member this query gets, as one CNAME.
        let answer = match self.member(qname, answer, pick) {
            Some(m) => &RouteAnswer::Cname(m.target.clone()),
            None => answer,
        };
        let target = match answer {
            // A target added by a reload whose handler is not swapped in yet
            // is converted on the spot.
            RouteAnswer::Cname(t) => self
                .targets
                .get(t.as_str())
                .cloned()
                .or_else(|| wire_name(t.as_str()).ok()),
            RouteAnswer::Pending | RouteAnswer::Servfail | RouteAnswer::Spread(_) => None,
        };
        let Some(target) = target else {
            return self.reply_kind(&req, ResponseCode::ServFail, transport, QueryKind::Alias);
        };
        let q = &req.queries[0];
        let mut resp = self.encoder.response(&req, ResponseCode::NoError);
        resp.metadata.authoritative = true;
        resp.answers.push(cname(&q.name, &target, ttl));
        let qtype = q.query_type;
        // RD=0 (a resolver iterating, not asking us to recurse): our own
        // data only, as an authoritative server answers; the target's
        // records would be an answer the upstream gives with recursion.
        if matches!(qtype, RecordType::CNAME | RecordType::ANY)
            || !req.metadata.recursion_desired
            || self.in_own_zone(&target)
            || fwd.route_name(&target).is_none()
        {
            return self.finish(&req, resp, transport, QueryKind::Alias);
        }
        self.with_target_records(req, resp, answer, target, transport, fwd)
    }

    /// The member of a spreading alias's set that `pick` chooses (counted
    /// per server when a query asked); `None` for any other alias.
    fn member<'a>(&self, qname: &str, answer: &'a RouteAnswer, pick: Pick) -> Option<&'a Member> {
        match (answer, pick) {
            (RouteAnswer::Spread(r), Pick::Member(k)) => r.members.get(k),
            (RouteAnswer::Spread(r), Pick::Asked(asker)) => {
                let m = r.members.get(r.pick(asker));
                if let Some(m) = m {
                    self.metrics
                        .reader
                        .answers
                        .get_or_create(&AliasServer {
                            alias: qname.to_string(),
                            server: m.server.clone(),
                        })
                        .inc();
                }
                m
            }
            _ => None,
        }
    }

    /// An alias answer `resp` (its CNAME to `target`) completed with the
    /// target's records of the asked type: from the background snapshot,
    /// or the cache; else a [`Plan::Chase`] that waits on the upstream.
    fn with_target_records(
        &self,
        req: Message,
        mut resp: Message,
        answer: &RouteAnswer,
        target: Name,
        transport: Transport,
        fwd: &Forwarding,
    ) -> Plan {
        let qtype = req.queries[0].query_type;
        if let RouteAnswer::Cname(t) = answer {
            if let Some(c) = self.addresses.load().entries.get(&(t.as_str().to_string(), qtype)) {
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
                if let Some(a) = fwd.chased_from_cache(&query, false) {
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

    fn reply(&self, req: &Message, code: ResponseCode, transport: Transport) -> Plan {
        self.reply_kind(req, code, transport, QueryKind::Other)
    }

    fn reply_kind(&self, req: &Message, code: ResponseCode, transport: Transport, kind: QueryKind) -> Plan {
        self.encoder
            .reply(req, code, transport, kind)
            .map_or(Plan::Drop, Plan::Reply)
    }

    fn finish(&self, req: &Message, resp: Message, transport: Transport, kind: QueryKind) -> Plan {
        self.encoder
            .finish(req, resp, transport, kind)
            .map_or(Plan::Drop, Plan::Reply)
    }
}

/// A name outside every zone: REFUSED when nothing forwards it, else the
/// cache's answer (a zone with `cache = false`: never), else forwarded.
fn outside(req: Message, raw: &[u8], transport: Transport, fwd: &Forwarding) -> Plan {
    let Some(route) = fwd.route(raw) else {
        return fwd
            .encoder()
            .reply(&req, ResponseCode::Refused, transport, QueryKind::Other)
            .map_or(Plan::Drop, Plan::Reply);
    };
    let cached = match fwd.zones().get(route).caches() {
        true => fwd.cached(raw, transport),
        false => None,
    };
    match cached {
        Some(r) => Plan::Reply(r),
        None => Plan::Forward(Request(Box::new(req))),
    }
}

/// FORMERR for a query that does not parse, from its raw header.
fn formerr(raw: &[u8]) -> Plan {
    Plan::Reply(Reply {
        bytes: formerr_from_raw(raw),
        kind: QueryKind::Other,
    })
}
