//! Wire-level helpers: early header checks, response skeletons, EDNS echo and
//! UDP truncation. Everything that knows hickory's message types is in `dns/`.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};

use super::Transport;

/// The fixed DNS header is 12 bytes.
pub const HEADER_LEN: usize = 12;
/// Clients without EDNS get at most this much over UDP (RFC 1035).
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// A datagram we must never answer: too short to carry a header, or a
/// response (QR set). Answering responses would let two servers bounce
/// packets between each other forever (and reflect spoofed traffic).
pub fn must_drop(raw: &[u8]) -> bool {
    raw.len() < HEADER_LEN || raw[2] & 0x80 != 0
}

/// FORMERR for a query we could not parse: ID, opcode and RD copied from the
/// raw header, nothing else (we cannot trust the rest).
pub fn formerr_from_raw(raw: &[u8]) -> Vec<u8> {
    let mut out = raw[..HEADER_LEN].to_vec();
    out[2] = 0x80 | (raw[2] & 0x79); // QR, opcode, RD; clear AA and TC
    out[3] = ResponseCode::FormErr.low();
    out[4..12].fill(0);
    out
}

/// A response skeleton for `req`: same ID, opcode, RD and CD, QR set, the
/// question echoed exactly as asked (case included).
pub fn response_to(req: &Message, code: ResponseCode, recursion_available: bool) -> Message {
    let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.checking_disabled = req.metadata.checking_disabled;
    m.metadata.recursion_available = recursion_available;
    m.metadata.response_code = code;
    m.queries = req.queries.clone();
    m
}

/// Largest UDP answer this client accepts, capped by our own limit.
pub fn udp_limit(req: &Message, ours: u16) -> usize {
    match &req.edns {
        Some(e) => (e.max_payload().max(512)).min(ours) as usize,
        None => CLASSIC_UDP_LIMIT,
    }
}

/// Adds our OPT record when the query had one (RFC 6891 requires it), with
/// the DO bit copied (RFC 3225).
pub fn echo_edns(req: &Message, resp: &mut Message, ours: u16) {
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
pub fn encode(resp: &Message, limit: Option<usize>) -> Option<Vec<u8>> {
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
            t.to_vec().ok()
        }
        _ => Some(bytes),
    }
}

/// The size limit for a transport: UDP is bounded, TCP is not.
pub fn limit_for(transport: Transport, req: &Message, ours: u16) -> Option<usize> {
    match transport {
        Transport::Udp => Some(udp_limit(req, ours)),
        Transport::Tcp => None,
    }
}

/// Whether the query uses an opcode we serve.
pub fn is_query(req: &Message) -> bool {
    req.metadata.op_code == OpCode::Query
}
