//! How one config's answers are encoded: the largest UDP payload we offer
//! (`[dns] max_udp_payload`) and whether we recurse (the RA bit: some name
//! is forwarded). The answerer and the forwarding context both write
//! answers, so both hold a copy of the one [`Encoder`] built per config,
//! rather than each asking the other.

use hickory_proto::op::{Message, ResponseCode};

use super::message::{
    echo_edns, encode, limit_for, response_to, truncated_raw, udp_limit, Transport, CLASSIC_UDP_LIMIT,
};
use super::question::question;
use crate::metrics::{Metrics, QueryKind};

/// Bytes to send, and what kind of query they answer (for metrics).
pub struct Reply {
    pub(crate) bytes: Vec<u8>,
    pub(crate) kind: QueryKind,
}

impl Reply {
    /// The rcode in the answer's header (low 4 bits; enough for metrics).
    pub(crate) fn rcode(&self) -> u16 {
        self.bytes.get(3).map_or(0, |b| (b & 0x0F) as u16)
    }

    /// Counts this answer as sent, `seconds` after its query arrived
    /// (query path: atomics only).
    pub(crate) fn count(&self, metrics: &Metrics, seconds: f64) {
        metrics.answered(self.kind, self.rcode());
        metrics.latency(self.kind, seconds);
    }
}

/// The encoding rules of one config's answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Encoder {
    max_udp: u16,
    recurses: bool,
}

impl Encoder {
    /// `max_udp`: our EDNS payload size; `recurses`: whether any name is
    /// forwarded.
    pub(crate) fn new(max_udp: u16, recurses: bool) -> Encoder {
        Encoder { max_udp, recurses }
    }

    /// Largest UDP answer for EDNS clients.
    pub(crate) fn max_udp(&self) -> u16 {
        self.max_udp
    }

    /// A response to `req` with `code` and our RA bit, to be filled.
    pub(crate) fn response(&self, req: &Message, code: ResponseCode) -> Message {
        response_to(req, code, self.recurses)
    }

    /// `resp` with `req`'s EDNS echoed, encoded within the transport's limit.
    pub(crate) fn finish(
        &self,
        req: &Message,
        mut resp: Message,
        transport: Transport,
        kind: QueryKind,
    ) -> Option<Reply> {
        echo_edns(req, &mut resp, self.max_udp);
        encode(&resp, limit_for(transport, req, self.max_udp)).map(|bytes| Reply { bytes, kind })
    }

    /// An empty answer to `req` with `code`.
    pub(crate) fn reply(
        &self,
        req: &Message,
        code: ResponseCode,
        transport: Transport,
        kind: QueryKind,
    ) -> Option<Reply> {
        self.finish(req, self.response(req, code), transport, kind)
    }

    /// An immediate answer with `code` for a query we decided not to forward
    /// (a limit, every upstream out of use).
    pub(crate) fn refuse(&self, req: &Message, code: ResponseCode, transport: Transport) -> Option<Reply> {
        self.reply(req, code, transport, QueryKind::Forwarded)
    }

    /// SERVFAIL for a query whose forwarding failed.
    pub(crate) fn servfail(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let req = Message::from_vec(raw).ok()?;
        self.refuse(&req, ResponseCode::ServFail, Transport::Udp)
            .map(|r| r.bytes)
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

    /// [`Encoder::truncated`] through hickory, for the queries
    /// [`question`] declines (EDNS options it leaves to the full path).
    fn truncated_decoded(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let req = Message::from_vec(raw).ok()?;
        let mut resp = response_to(&req, ResponseCode::NoError, true);
        resp.metadata.truncation = true;
        echo_edns(&req, &mut resp, self.max_udp);
        resp.to_vec().ok()
    }

    /// Largest UDP answer the client of `raw` takes
    /// ([`super::message::client_udp_limit`]).
    pub(crate) fn udp_limit_of(&self, raw: &[u8]) -> usize {
        match question(raw, self.max_udp) {
            Some(qn) => qn.udp_limit,
            None => Message::from_vec(raw).map_or(CLASSIC_UDP_LIMIT, |m| udp_limit(&m, self.max_udp)),
        }
    }
}
