//! Wire-level helpers: early header checks, response skeletons, EDNS echo and
//! UDP truncation, and the [`Transport`] a query came on (which bounds the
//! answer's size). Everything that knows hickory's message types is in `dns/`.
//!
//! `wire` reads the wire form (early checks, names, questions); `raw`
//! builds answers from the raw bytes; this file holds the size limits and
//! the hickory-level response helpers.

mod raw;
#[cfg(test)]
mod tests;
mod wire;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};

pub(super) use raw::{formerr_from_raw, refused_from_raw, truncated_raw};
pub(super) use wire::skip_name;
pub(super) use wire::{check_wire, must_drop, question_end, same_question};

/// How the query arrived, which bounds the answer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The fixed DNS header is 12 bytes.
pub(super) const HEADER_LEN: usize = 12;
/// Clients without EDNS get at most this much over UDP (RFC 1035).
pub(super) const CLASSIC_UDP_LIMIT: usize = 512;

/// A response skeleton for `req`: same ID, opcode, RD and CD, QR set, the
/// question echoed exactly as asked (case included).
pub(super) fn response_to(req: &Message, code: ResponseCode, recursion_available: bool) -> Message {
    let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.checking_disabled = req.metadata.checking_disabled;
    m.metadata.recursion_available = recursion_available;
    m.metadata.response_code = code;
    m.queries = req.queries.clone();
    m
}

/// Largest UDP answer a client takes: its EDNS UDP size (`payload`, at
/// least 512) capped by ours (`[dns] max_udp_payload`); 512 without EDNS
/// (RFC 1035). The one place this is decided: the full path, the fast
/// path, the cache and the relay all ask it, so an answer larger than this
/// is sent with TC wherever it comes from.
pub(super) fn client_udp_limit(payload: Option<u16>, ours: u16) -> usize {
    match payload {
        Some(p) => p.max(512).min(ours) as usize,
        None => CLASSIC_UDP_LIMIT,
    }
}

/// Largest UDP answer this client accepts ([`client_udp_limit`]).
pub(super) fn udp_limit(req: &Message, ours: u16) -> usize {
    client_udp_limit(req.edns.as_ref().map(|e| e.max_payload()), ours)
}

/// Adds our OPT record when the query had one (RFC 6891 requires it), with
/// the DO bit copied (RFC 3225).
pub(super) fn echo_edns(req: &Message, resp: &mut Message, ours: u16) {
    if let Some(q) = &req.edns {
        let mut e = Edns::new();
        e.set_max_payload(ours);
        e.set_version(0);
        e.set_dnssec_ok(q.flags().dnssec_ok);
        resp.set_edns(e);
    }
}

/// Encodes `resp`; over UDP, an answer that does not fit becomes header +
/// question (+ OPT) with TC set, so the client retries over TCP.
pub(super) fn encode(resp: &Message, limit: Option<usize>) -> Option<Vec<u8>> {
    let bytes = match resp.to_vec() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a response; answering SERVFAIL");
            let mut m = resp.clone();
            m.answers.clear();
            m.authorities.clear();
            m.additionals.clear();
            m.metadata.response_code = ResponseCode::ServFail;
            return m.to_vec().ok();
        }
    };
    match limit {
        Some(limit) if bytes.len() > limit => {
            let mut t = resp.clone();
            t.answers.clear();
            t.authorities.clear();
            t.additionals.clear();
            t.metadata.truncation = true;
            let b = t.to_vec().ok()?;
            if b.len() <= limit {
                return Some(b);
            }
            // Still too big: only a query with many (or huge) questions
            // gets here; the header says TC and nothing else.
            t.queries.clear();
            t.to_vec().ok()
        }
        _ => Some(bytes),
    }
}

/// The size limit for a transport: UDP is bounded, TCP is not.
pub(super) fn limit_for(transport: Transport, req: &Message, ours: u16) -> Option<usize> {
    match transport {
        Transport::Udp => Some(udp_limit(req, ours)),
        Transport::Tcp => None,
    }
}

/// Whether the query uses an opcode we serve.
pub(super) fn is_query(req: &Message) -> bool {
    req.metadata.op_code == OpCode::Query
}
