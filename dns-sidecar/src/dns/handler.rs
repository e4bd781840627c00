//! The DNS side's state for one config, swapped whole on a reload: the
//! pure [`Answerer`] (zones, aliases, targets' addresses: what a query's
//! answer is) and the [`Forwarding`] context (forwarders by zone, the
//! cache, the guard, limits: what a query that leaves the sidecar needs).
//! The two are kept apart so that each path takes what it uses: the fast
//! table is generated from the answerer, the relays and TCP complete plans
//! through the forwarding context.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::answerer::Answerer;
use super::cache::Cache;
use super::forwarding::Forwarding;
use super::guard::Guard;
use super::message::Transport;
use super::names::NameConversion;
use super::plan::{Pick, Plan};
use super::targets::SharedTargets;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::routes::Routes;

/// The handler in force; swapped whole on a config reload.
pub(crate) type SharedHandler = Arc<ArcSwap<Handler>>;

/// What the DNS side keeps across reloads, and every handler is built on.
pub(crate) struct ProcessWide {
    pub(crate) metrics: Arc<Metrics>,
    /// What aliases answer; written by the engine.
    pub(crate) routes: Arc<ArcSwap<Routes>>,
    /// Target addresses, kept fresh by [`super::targets::refresher`].
    pub(crate) addresses: SharedTargets,
    /// The counters and limiters (memory, in flight, rate, health).
    pub(crate) guard: Arc<Guard>,
    /// Forwarded answers.
    pub(crate) cache: Arc<Cache>,
}

pub struct Handler {
    answerer: Answerer,
    /// Shared with the queries still waiting on an upstream (the relays'
    /// pending entries, the slow path's jobs): they finish by the config
    /// they were admitted under.
    forwarding: Arc<Forwarding>,
}

impl Handler {
    /// The handler for `config`, on the process-wide parts `on`.
    pub(crate) fn new(config: &Config, on: &ProcessWide) -> Result<Handler, NameConversion> {
        let forwarding = Forwarding::new(config, on.cache.clone(), on.guard.clone(), on.metrics.clone());
        let answerer = Answerer::new(
            config,
            *forwarding.encoder(),
            on.routes.clone(),
            on.addresses.clone(),
            on.metrics.clone(),
        )?;
        Ok(Handler {
            answerer,
            forwarding: Arc::new(forwarding),
        })
    }

    /// What a query's answer is.
    pub(crate) fn answerer(&self) -> &Answerer {
        &self.answerer
    }

    /// Where a forwarded query goes, and what it may use on the way.
    pub(crate) fn forwarding(&self) -> &Arc<Forwarding> {
        &self.forwarding
    }

    /// Decides without waiting; `pick` chooses a spreading alias's member
    /// (a query's asker, counted per server; or member `k`, not counted).
    /// What waits on the network is completed by
    /// [`Forwarding::complete`].
    pub fn plan(&self, raw: &[u8], transport: Transport, pick: Pick) -> Plan {
        self.answerer.plan(raw, transport, pick, &self.forwarding)
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, MessageType, Query};
    use hickory_proto::rr::rdata::{SOA, TXT};
    use hickory_proto::rr::{RData, Record};

    use super::super::plan::Pick;
    use super::super::question::question;
    use super::super::targets;
    use super::*;
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

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
            matches!(h.plan(&txt, Transport::Udp, Pick::ANY), Plan::Chase(_)),
            "nothing cached yet: the upstream is asked"
        );
        // What `chase` keeps: the upstream's answer to the target's question.
        let tq = targets::query(&target, RecordType::TXT).unwrap();
        let record = Record::from_rdata(target.clone(), 60, RData::TXT(TXT::new(vec!["hello".into()])));
        h.forwarding().keep(&tq, &upstream(&tq, vec![record], vec![]));
        let m = reply(h.plan(&txt, Transport::Udp, Pick::ANY)).expect("answered without waiting");
        assert_eq!(m.answers.len(), 2, "CNAME + the target's TXT: {m:?}");
        assert_eq!(m.answers[1].record_type(), RecordType::TXT);
        assert_eq!(m.metadata.id, 0x7777);
        // NODATA with an SOA is kept too (negative, RFC 2308).
        let mx = query("prod.db.test.", RecordType::MX, true);
        let tq = targets::query(&target, RecordType::MX).unwrap();
        let soa = SOA::new(target.clone(), target.clone(), 1, 60, 60, 60, 30);
        h.forwarding().keep(
            &tq,
            &upstream(
                &tq,
                vec![],
                vec![Record::from_rdata(target.clone(), 60, RData::SOA(soa))],
            ),
        );
        let m = reply(h.plan(&mx, Transport::Udp, Pick::ANY)).expect("answered from the negative entry");
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 1));
        // The entry is keyed by the target's question (name, type, class,
        // EDNS, DO, CD), as a client's query for the target would be: that
        // client gets the same upstream answer; another target does not.
        let same = query("PG-A.test.", RecordType::TXT, true);
        let m = reply(h.plan(&same, Transport::Udp, Pick::ANY)).expect("the same question");
        assert_eq!(m.answers.len(), 1);
        let other = query("pg-b.test.", RecordType::TXT, true);
        assert!(matches!(h.plan(&other, Transport::Udp, Pick::ANY), Plan::Forward(_)));
    }

    #[test]
    fn rd0_alias_queries_get_the_cname_only() {
        let (_, h, _) = super::super::fixture::fixture();
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
            let m =
                reply(h.plan(&query("prod.db.test.", qtype, false), Transport::Udp, Pick::ANY)).expect("no upstream");
            assert_eq!(m.answers.len(), 1, "{qtype:?}: {m:?}");
            assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
            assert!(!m.metadata.recursion_desired && m.metadata.authoritative);
        }
        let m = reply(h.plan(&query("prod.db.test.", RecordType::A, true), Transport::Udp, Pick::ANY)).unwrap();
        assert_eq!(m.answers.len(), 2, "RD=1: CNAME + address");
    }

    #[test]
    fn udp_answers_over_the_clients_limit_are_truncated() {
        let (_, h, _) = super::super::fixture::fixture();
        let q = query("big.example.com.", RecordType::TXT, true);
        assert_eq!(h.forwarding().encoder().udp_limit_of(&q), 1232);
        let mut plain = q.clone();
        plain[11] = 0;
        plain.truncate(plain.len() - 11);
        assert_eq!(h.forwarding().encoder().udp_limit_of(&plain), 512);
        let tc = Message::from_vec(&h.forwarding().encoder().truncated(&q).unwrap()).unwrap();
        assert!(tc.metadata.truncation && tc.answers.is_empty());
        assert_eq!(
            tc.edns.map(|e| e.max_payload()),
            Some(h.forwarding().encoder().max_udp())
        );
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
        assert_eq!(
            h.forwarding().encoder().udp_limit_of(&ecs),
            1232,
            "its EDNS size, capped by ours"
        );
        assert!(
            Message::from_vec(&h.forwarding().encoder().truncated(&ecs).unwrap())
                .unwrap()
                .metadata
                .truncation
        );
    }
}
