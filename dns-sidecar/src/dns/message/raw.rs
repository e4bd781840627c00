//! Answers built from the query's raw bytes, without decoding it: FORMERR
//! for what could not be parsed, REFUSED for a client that may not query,
//! and the TC answer for what does not fit the client's UDP limit.

use hickory_proto::op::ResponseCode;

use super::super::question::Question;
use super::{question_end, HEADER_LEN};

/// FORMERR for a query we could not parse: ID, opcode and RD copied from the
/// raw header, nothing else (we cannot trust the rest).
pub(crate) fn formerr_from_raw(raw: &[u8]) -> Vec<u8> {
    let mut out = raw[..HEADER_LEN].to_vec();
    out[2] = 0x80 | (raw[2] & 0x79); // QR, opcode, RD; clear AA and TC
    out[3] = ResponseCode::FormErr.low();
    out[4..12].fill(0);
    out
}

/// REFUSED for a client that may not query, built from the raw bytes without
/// decoding them: header (ID, opcode, RD, CD) and the question when it is a
/// plain one; never longer than the query, so it amplifies nothing.
pub(crate) fn refused_from_raw(raw: &[u8]) -> Vec<u8> {
    let question = (u16::from_be_bytes([raw[4], raw[5]]) == 1)
        .then(|| question_end(raw))
        .flatten();
    let end = question.unwrap_or(HEADER_LEN);
    let mut out = raw[..end].to_vec();
    out[2] = 0x80 | (raw[2] & 0x79);
    out[3] = (raw[3] & 0x10) | ResponseCode::Refused.low();
    out[4..12].fill(0);
    if question.is_some() {
        out[5] = 1;
    }
    out
}

/// The TC answer to the ordinary query `q` (read as `qn`), written into
/// `out`: header (ID, opcode, RD and CD of the query; QR, RA and TC set;
/// NOERROR), the question exactly as asked, and our OPT record (`ours`, DO
/// copied) when the query had EDNS. What a client gets over UDP when the
/// answer does not fit its limit: it retries over TCP. The same bytes as
/// the full path's [`super::encode`] of an empty truncated response.
pub(crate) fn truncated_raw(q: &[u8], qn: &Question, out: &mut [u8]) -> Option<usize> {
    let qend = qn.end();
    let len = qend + if qn.edns > 0 { 11 } else { 0 };
    if len > out.len() || q.len() < qend {
        return None;
    }
    out[..qend].copy_from_slice(&q[..qend]);
    out[2] = 0x80 | (q[2] & 0x79) | 0x02;
    out[3] = 0x80 | (q[3] & 0x10);
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(qn.edns > 0)]);
    if qn.edns > 0 {
        let [hi, lo] = qn.max_udp.to_be_bytes();
        let dnssec_ok = if qn.edns == 2 { 0x80 } else { 0 };
        out[qend..len].copy_from_slice(&[0, 0, 41, hi, lo, 0, 0, dnssec_ok, 0, 0, 0]);
    }
    Some(len)
}
