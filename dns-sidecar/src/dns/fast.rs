//! The fast path: answers for the common queries, precomputed.
//!
//! For each routes/targets snapshot, [`FastTable::build`] asks the full
//! handler (the hickory-based path, [`Handler::plan`]) for the complete answer
//! to a synthetic query per alias and type (A, AAAA, CNAME, ANY), per RD and per EDNS
//! variant (none, EDNS, EDNS with DO), and for a NXDOMAIN in each zone. At
//! query time [`FastTable::classify`] checks that the query is ordinary, looks
//! the name up without allocating, copies the stored answer and patches the
//! ID, RD and CD (and, for NXDOMAIN, the question and the compression
//! pointers into it). Anything unusual (upper-case letters, which change
//! hickory's name compression; other types or classes; EDNS versions other
//! than 0; TC/Z/RA bits; trailing data; answers that would not fit) returns
//! `None` and goes through the full path. Because the stored bytes come from
//! the full path itself, both paths give byte-identical answers; a test checks
//! that over a table of queries.

use std::collections::HashMap;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

use super::handler::Handler;
use super::message::{Transport, HEADER_LEN};
use super::names::{wire, wire_name, within_any};
use super::plan::{Pick, Plan};
use super::question::{question, Question};
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;

use crate::metrics::{AliasServer, QueryKind};
use crate::name::within;
use crate::routes::{Asker, RouteAnswer, Routes, SpreadRoute};

const TYPES: [RecordType; 4] = [RecordType::A, RecordType::AAAA, RecordType::CNAME, RecordType::ANY];

/// Answers by RD (0, 1), then for no EDNS, EDNS without DO, EDNS with DO.
/// RD matters: an RD=0 alias query gets the CNAME only (see
/// [`Handler::plan`]).
#[derive(Debug, Default, Clone)]
struct Variants([[Option<Vec<u8>>; 3]; 2]);

/// One alias's answers: one set per member of a spreading alias's set (one
/// set for any other alias).
#[derive(Debug)]
struct FastAlias {
    /// A spreading alias's route, which chooses the member per query.
    spread: Option<SpreadRoute>,
    answers: Vec<[Variants; 4]>,
    /// Spreading aliases: answers per member since the last
    /// [`FastTable::flush_shares`] (the table belongs to one worker: a
    /// plain load and store, no contended cache line), and the series they
    /// are added to.
    shares: Vec<(AtomicU64, Counter)>,
}

#[derive(Debug)]
struct NxTemplate {
    /// Apex in wire form (lower case), e.g. `\x02db\x04test\x00`.
    apex: Vec<u8>,
    /// Per EDNS variant: the header as the full path wrote it (ID 0, RD
    /// set), the bytes after the question (authority SOA, OPT), and the
    /// offsets in them that hold the low byte of a pointer to the apex.
    tails: [Option<NxTail>; 3],
    /// Names directly below the apex that must not take this path (the SOA's
    /// own names, which the full path compresses differently).
    excluded: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct NxTail {
    header: [u8; HEADER_LEN],
    tail: Vec<u8>,
    pointers: Vec<usize>,
}

/// What [`FastTable::classify`] found.
pub(crate) enum Fast {
    /// An answer of this length and kind was written.
    Answer(usize, QueryKind),
    /// An ordinary query for a name outside every zone.
    Forward(Question),
    /// Anything else: the full path decides.
    Neither,
}

/// What the fast path can answer for one snapshot generation.
#[derive(Debug, Default)]
pub struct FastTable {
    /// Wire-form lower-case alias name -> answers by member, then type index.
    aliases: HashMap<Box<[u8]>, FastAlias>,
    /// Whether any alias spreads (has shares to flush).
    spreading: bool,
    nx: Vec<NxTemplate>,
    max_udp: u16,
    /// Every zone apex in wire form: names outside all of them are forwarded.
    zones: Vec<Vec<u8>>,
    /// Per EDNS variant, the full path's SERVFAIL to a forwarded query, split
    /// around the question (`None` without upstreams: nothing is forwarded).
    refusals: Option<[Option<NxTail>; 3]>,
}

fn synthetic(name: &Name, qtype: RecordType, edns: usize) -> Option<Vec<u8>> {
    synthetic_rd(name, qtype, edns, true)
}

fn synthetic_rd(name: &Name, qtype: RecordType, edns: usize, rd: bool) -> Option<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.id = 0;
    m.metadata.recursion_desired = rd;
    m.queries.push(Query::query(name.clone(), qtype));
    if edns > 0 {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(edns == 2);
        m.set_edns(e);
    }
    m.to_vec().ok()
}

/// The full path's UDP answer for `query`, when it needs no upstream.
fn full_answer(handler: &Handler, query: &[u8]) -> Option<Vec<u8>> {
    full_member_answer(handler, query, 0)
}

/// [`full_answer`] with member `k` of a spreading alias's set.
fn full_member_answer(handler: &Handler, query: &[u8], k: usize) -> Option<Vec<u8>> {
    match handler.plan(query, Transport::Tcp, Pick::Member(k)) {
        Plan::Reply(r) => Some(r.bytes),
        _ => None,
    }
}

impl FastTable {
    /// Precomputes answers with the full path of `handler`, which reads the
    /// current routes and targets snapshots.
    pub(crate) fn build(handler: &Handler, routes: &Routes) -> FastTable {
        let mut t = FastTable {
            max_udp: handler.answerer().encoder().max_udp(),
            ..Default::default()
        };
        let alias_names: Vec<String> = routes.aliases.keys().cloned().collect();
        for alias in &alias_names {
            let Ok(name) = wire_name(alias) else { continue };
            let spread = match routes.get(alias).map(|r| &r.answer) {
                Some(RouteAnswer::Spread(r)) if !r.members.is_empty() => Some(r.clone()),
                _ => None,
            };
            let members = spread.as_ref().map_or(1, |r| r.members.len());
            let mut answers = Vec::with_capacity(members);
            for k in 0..members {
                let mut per_type: [Variants; 4] = Default::default();
                for (ti, qtype) in TYPES.iter().enumerate() {
                    for rd in [false, true] {
                        for v in 0..3 {
                            per_type[ti].0[usize::from(rd)][v] =
                                synthetic_rd(&name, *qtype, v, rd).and_then(|q| full_member_answer(handler, &q, k));
                        }
                    }
                }
                answers.push(per_type);
            }
            let shares = (spread.iter().flat_map(|r| &r.members))
                .map(|m| {
                    let label = AliasServer {
                        alias: alias.clone(),
                        server: m.server.clone(),
                    };
                    (
                        AtomicU64::new(0),
                        handler
                            .answerer()
                            .metrics()
                            .reader
                            .answers
                            .get_or_create(&label)
                            .clone(),
                    )
                })
                .collect();
            t.spreading |= spread.is_some();
            let key: Box<[u8]> = wire(alias).into();
            t.aliases.insert(
                key,
                FastAlias {
                    spread,
                    answers,
                    shares,
                },
            );
        }
        for zone in handler.answerer().zone_apexes() {
            t.zones.push(wire(zone));
            if let Some(nx) = nx_template(handler, zone, &alias_names) {
                t.nx.push(nx);
            }
        }
        if handler.forwarding().forwards() {
            t.refusals = refusal_template(handler, &t.zones);
        }
        t
    }

    /// Whether `q` is an ordinary query (as [`FastTable::answer`] accepts
    /// them) for a name outside every zone, which the full path would
    /// forward. Lets the UDP worker relay it, or refuse it under a limit,
    /// without decoding it. (The worker calls [`FastTable::classify`]; this
    /// is the fuzz targets' and the tests'.)
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn forwardable(&self, q: &[u8]) -> Option<Question> {
        self.forwardable_parsed(q, self.parse(q)?)
    }

    /// What the UDP worker does with `q`, reading it once: an answer written
    /// into `out` (as `FastTable::answer` does), a name to forward
    /// (as `FastTable::forwardable` says), or neither (the full path decides).
    /// `asker` chooses a spreading alias's member, as in
    /// [`Handler::plan`].
    pub(crate) fn classify(&self, q: &[u8], out: &mut [u8], asker: Asker) -> Fast {
        let Some(p) = self.parse(q) else { return Fast::Neither };
        if let Some((len, kind)) = self.answer_parsed(q, &p, out, asker) {
            return Fast::Answer(len, kind);
        }
        match self.forwardable_parsed(q, p) {
            Some(f) => Fast::Forward(f),
            None => Fast::Neither,
        }
    }

    fn forwardable_parsed(&self, q: &[u8], p: Question) -> Option<Question> {
        self.refusals.as_ref()?;
        let name = &q[HEADER_LEN..p.qname_end];
        let inside = if p.upper {
            let mut lower = [0u8; 255];
            let lower = &mut lower[..name.len()];
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            within_any(&self.zones, lower)
        } else {
            within_any(&self.zones, name)
        };
        (!inside).then_some(p)
    }

    /// The full path's answer with `rcode` (SERVFAIL or REFUSED) to a
    /// forwardable query, written into `out`; returns its length.
    pub(crate) fn refuse(&self, q: &[u8], f: &Question, rcode: u8, out: &mut [u8]) -> Option<usize> {
        let t = self.refusals.as_ref()?[f.edns].as_ref()?;
        let qend = f.end();
        let len = qend + t.tail.len();
        if len > f.udp_limit || len > out.len() {
            return None;
        }
        out[..HEADER_LEN].copy_from_slice(&t.header);
        out[HEADER_LEN..qend].copy_from_slice(&q[HEADER_LEN..qend]);
        out[qend..len].copy_from_slice(&t.tail);
        out[3] = (out[3] & 0xF0) | (rcode & 0x0F);
        patch_header(out, q);
        Some(len)
    }

    /// Answers `q` into `out` when it is an ordinary query this table covers.
    /// Returns the answer's length and kind.
    /// A spreading alias answers as for [`Asker::NONE`] (see
    /// [`FastTable::answer_for`]). The fixture's, the fuzz targets' and the
    /// benches' entry (the worker calls [`FastTable::classify`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn answer(&self, q: &[u8], out: &mut [u8]) -> Option<(usize, QueryKind)> {
        self.answer_for(q, out, Asker::NONE)
    }

    /// [`FastTable::answer`], a spreading alias answering `asker`'s member
    /// (what [`Handler::plan`] answers for the same asker).
    #[cfg(any(test, feature = "testing"))]
    pub fn answer_for(&self, q: &[u8], out: &mut [u8], asker: Asker) -> Option<(usize, QueryKind)> {
        self.answer_parsed(q, &self.parse(q)?, out, asker)
    }

    /// Adds the answers counted per spreading alias and server since the
    /// last call to their series (once per batch).
    pub(crate) fn flush_shares(&self) {
        if !self.spreading {
            return;
        }
        for a in self.aliases.values() {
            for (local, counter) in &a.shares {
                let n = local.load(Ordering::Relaxed);
                if n > 0 {
                    local.store(0, Ordering::Relaxed);
                    counter.inc_by(n);
                }
            }
        }
    }

    fn answer_parsed(&self, q: &[u8], p: &Question, out: &mut [u8], asker: Asker) -> Option<(usize, QueryKind)> {
        if p.upper {
            return None;
        }
        let name = &q[HEADER_LEN..p.qname_end];
        if let Some(alias) = self.aliases.get(name) {
            let ti = match p.qtype {
                1 => 0,
                28 => 1,
                5 => 2,
                255 => 3,
                _ => return None,
            };
            let k = alias.spread.as_ref().map_or(0, |r| r.pick(asker));
            let a = alias.answers.get(k)?[ti].0[usize::from(p.rd)][p.edns].as_deref()?;
            if a.len() > p.udp_limit || a.len() > out.len() {
                return None;
            }
            out[..a.len()].copy_from_slice(a);
            patch_header(out, q);
            if let Some((local, _)) = alias.shares.get(k) {
                // This worker's own counter: no atomic read-modify-write.
                local.store(local.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            return Some((a.len(), QueryKind::Alias));
        }
        // NXDOMAIN for one label directly below a zone apex.
        let first = q[HEADER_LEN] as usize;
        let below = &q[HEADER_LEN + 1 + first..p.qname_end];
        let nx = self.nx.iter().find(|z| z.apex == below)?;
        if nx.excluded.iter().any(|e| e.as_slice() == name) {
            return None;
        }
        let t = nx.tails[p.edns].as_ref()?;
        let qend = p.qname_end + 4;
        let len = qend + t.tail.len();
        if len > p.udp_limit || len > out.len() {
            return None;
        }
        out[..HEADER_LEN].copy_from_slice(&t.header);
        out[HEADER_LEN..qend].copy_from_slice(&q[HEADER_LEN..qend]);
        out[qend..len].copy_from_slice(&t.tail);
        let apex_at = (HEADER_LEN + 1 + first) as u8;
        for &i in &t.pointers {
            out[qend + i] = apex_at;
        }
        patch_header(out, q);
        Some((len, QueryKind::Authoritative))
    }

    fn parse(&self, q: &[u8]) -> Option<Question> {
        question(q, self.max_udp)
    }
}

/// ID from the query; RD and CD as the query had them.
fn patch_header(out: &mut [u8], q: &[u8]) {
    out[0] = q[0];
    out[1] = q[1];
    out[2] = (out[2] & !0x01) | (q[2] & 0x01);
    out[3] = (out[3] & !0x10) | (q[3] & 0x10);
}

/// The SERVFAIL template for forwarded queries, from the full path's answer
/// (through [`super::reply::Encoder::refuse`]) to a synthetic query for a name outside the
/// zones.
fn refusal_template(handler: &Handler, zones: &[Vec<u8>]) -> Option<[Option<NxTail>; 3]> {
    let name = ["fast-path-probe.", "fast-path-probe.invalid.", "fast-path-probe.arpa."]
        .into_iter()
        .find(|n| !within_any(zones, &wire(n)))?;
    let mut out: [Option<NxTail>; 3] = Default::default();
    for (v, slot) in out.iter_mut().enumerate() {
        let q = synthetic(&wire_name(name).ok()?, RecordType::A, v)?;
        let req = Message::from_vec(&q).ok()?;
        let r =
            handler
                .forwarding()
                .encoder()
                .refuse(&req, hickory_proto::op::ResponseCode::ServFail, Transport::Udp)?;
        let qend = HEADER_LEN + wire(name).len() + 4;
        if r.bytes.len() < qend || r.bytes[HEADER_LEN..qend] != q[HEADER_LEN..qend] {
            return None;
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&r.bytes[..HEADER_LEN]);
        *slot = Some(NxTail {
            header,
            tail: r.bytes[qend..].to_vec(),
            pointers: Vec::new(),
        });
    }
    Some(out)
}

/// Builds the NXDOMAIN template of `zone` from two synthetic names of
/// different lengths: the bytes that differ between their tails are the
/// pointers into the question.
fn nx_template(handler: &Handler, zone: &str, aliases: &[String]) -> Option<NxTemplate> {
    let probe = |label: &str, edns: usize| -> Option<(Vec<u8>, usize)> {
        let name = wire_name(&format!("{label}.{zone}")).ok()?;
        let q = synthetic(&name, RecordType::A, edns)?;
        let a = full_answer(handler, &q)?;
        let qend = HEADER_LEN + wire(&format!("{label}.{zone}")).len() + 4;
        (a.len() > qend && a[3] & 0x0F == 3).then_some((a, qend))
    };
    let mut tails: [Option<NxTail>; 3] = Default::default();
    for (v, slot) in tails.iter_mut().enumerate() {
        let (a1, e1) = probe("fast-path-probe-a", v)?;
        let (a2, e2) = probe("fast-path-probe-ab", v)?;
        let (t1, t2) = (&a1[e1..], &a2[e2..]);
        if t1.len() != t2.len() || a1[..HEADER_LEN] != a2[..HEADER_LEN] {
            return None;
        }
        let apex_at = (HEADER_LEN + 1 + "fast-path-probe-a".len()) as u8;
        let mut ptrs = Vec::new();
        for (i, (x, y)) in t1.iter().zip(t2).enumerate() {
            if x != y {
                // Only a pointer's low byte may differ, and by exactly one.
                if *x != apex_at || *y != apex_at + 1 || i == 0 || t1[i - 1] != 0xC0 {
                    return None;
                }
                ptrs.push(i);
            }
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&a1[..HEADER_LEN]);
        *slot = Some(NxTail {
            header,
            tail: t1.to_vec(),
            pointers: ptrs,
        });
    }
    // Names directly below the apex that are not plain NXDOMAINs (ancestors
    // of aliases), or that the SOA's own names could be compressed against
    // differently: those take the full path.
    let apex_labels = zone.trim_end_matches('.').split('.').count();
    let (names, _) = handler.answerer().zone_names(zone)?;
    let mut excluded: Vec<Vec<u8>> = names
        .iter()
        .chain(aliases.iter())
        .filter_map(|n| {
            let labels: Vec<&str> = n.trim_end_matches('.').split('.').collect();
            (labels.len() > apex_labels && within(n, zone))
                .then(|| wire(&labels[labels.len() - apex_labels - 1..].join(".")))
        })
        .collect();
    excluded.sort();
    excluded.dedup();
    Some(NxTemplate {
        apex: wire(zone),
        tails,
        excluded,
    })
}
