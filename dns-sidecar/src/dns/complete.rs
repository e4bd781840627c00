//! Completing a plan that waits on the network, on the runtime (TCP, and
//! the UDP workers' slow path): relaying a query to its zone's upstreams,
//! and chasing an alias target's records of a type the background snapshot
//! does not keep. Both are the forwarding context's: they need the
//! forwarders, the cache and the guard, and nothing of the answerer.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::admission;
use super::forward::{ForwardError, Forwarder};
use super::forwarding::Forwarding;
use super::message::Transport;
use super::plan::{Chase, Plan, Request};
use super::reply::Reply;
use super::targets;
use crate::metrics::{Limited, QueryKind};

impl Forwarding {
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

    /// Relays a query to the upstreams; SERVFAIL when none answers.
    async fn forward(&self, req: &Message, raw: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let fwd = self.zones().get(self.route(raw)?);
        // Every upstream out of use: a stale answer at once beats a trial
        // (the admission policy, as the relays apply it).
        if fwd.all_down() {
            if let Some(r) = self.stale(raw, transport) {
                self.guard().refused(Limited::UpstreamDown);
                return Some(r.bytes);
            }
        }
        match fwd.forward(raw, transport).await {
            Ok(answer) => {
                // The upstream could not answer (SERVFAIL, REFUSED): a stale
                // answer is better (RFC 8767).
                if admission::stale_instead(answer[3]) {
                    if let Some(r) = self.stale(raw, transport) {
                        return Some(r.bytes);
                    }
                }
                self.keep(raw, &answer);
                // Larger than the client takes over UDP: TC, it retries over TCP.
                if transport == Transport::Udp && answer.len() > self.encoder().udp_limit_of(raw) {
                    return self.encoder().truncated(raw);
                }
                Some(answer)
            }
            Err(ForwardError::TooBig) => self.encoder().truncated(raw),
            Err(e) => self.forward_failed(fwd, req, raw, transport, e),
        }
    }

    /// Every upstream failed for `raw`: a stale answer, else SERVFAIL
    /// (remembered for the name when they timed out).
    fn forward_failed(
        &self,
        fwd: &Forwarder,
        req: &Message,
        raw: &[u8],
        transport: Transport,
        e: ForwardError,
    ) -> Option<Vec<u8>> {
        if matches!(e, ForwardError::AllDown) {
            self.guard().refused(Limited::UpstreamDown);
        }
        tracing::debug!(error = %e, zone = fwd.zone(), "forwarding failed");
        self.count_upstream_error(fwd.zone(), &e);
        if let Some(r) = self.stale(raw, transport) {
            return Some(r.bytes);
        }
        let servfail = self.encoder().refuse(req, ResponseCode::ServFail, transport)?.bytes;
        if matches!(e, ForwardError::Timeout { .. }) {
            admission::remember_timeout(self, raw, &servfail);
        }
        Some(servfail)
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
                    Some(r) => self.chase_upstream(self.zones().get(r), &query).await,
                    None => None,
                },
            },
            Err(_) => None,
        };
        merge_chased(&mut resp, answer);
        self.encoder()
            .finish(req, resp, transport, QueryKind::Alias)
            .map(|r| r.bytes)
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
}

/// Adds the upstream's answer for an alias's target (its rcode, NOERROR or
/// NXDOMAIN, and its answer records) to the alias answer `resp`; no answer,
/// or any other rcode, makes it SERVFAIL.
pub(super) fn merge_chased(resp: &mut Message, answer: Option<Message>) {
    match answer {
        Some(a) if matches!(a.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain) => {
            resp.metadata.response_code = a.metadata.response_code;
            resp.answers.extend(a.answers);
        }
        _ => resp.metadata.response_code = ResponseCode::ServFail,
    }
}
