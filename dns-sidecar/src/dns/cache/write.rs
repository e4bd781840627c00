//! Answering from an entry: its bytes copied into the send buffer and
//! patched for the query that hit it, without allocating.
//!
//! Patched are the ID, RD and CD of the query; AD only for clients that
//! asked for it (AD or DO set, RFC 6840); the question name as asked (0x20
//! case randomisation); every TTL decremented by the entry's age in whole
//! seconds, or set to [`STALE_TTL`] for a stale answer. The offsets of the
//! TTLs were found once, when the answer was stored.

use super::super::message::{truncated_raw, HEADER_LEN};
use super::super::question::Question;
use super::entry::Entry;
use super::STALE_TTL;

/// How TTLs are written into an answer.
#[derive(Clone, Copy)]
pub(super) enum Ttls {
    /// Decremented by this many seconds.
    Aged(u32),
    /// All [`STALE_TTL`].
    Stale,
}

/// Copies `e`'s answer into `out` for query `q`, patched (see the module
/// doc); larger than `limit` (the client's UDP size), the TC answer
/// instead, so the client retries over TCP; `None` when it does not fit
/// `out`.
#[inline]
pub(super) fn write(e: &Entry, q: &[u8], qn: &Question, limit: usize, ttls: Ttls, out: &mut [u8]) -> Option<usize> {
    let a = e.answer();
    if a.len() > limit {
        return truncated_raw(q, qn, out);
    }
    if a.len() > out.len() {
        return None;
    }
    let out = &mut out[..a.len()];
    out.copy_from_slice(a);
    out[0] = q[0];
    out[1] = q[1];
    out[2] = (out[2] & !0x01) | (q[2] & 0x01);
    out[3] = (out[3] & !0x10) | (q[3] & 0x10);
    // RFC 6840 5.8: AD only for a client that set AD or DO.
    if q[3] & 0x20 == 0 && qn.edns != 2 {
        out[3] &= !0x20;
    }
    out[HEADER_LEN..qn.qname_end].copy_from_slice(&q[HEADER_LEN..qn.qname_end]);
    for o in e.ttl_offsets() {
        let ttl = match ttls {
            Ttls::Aged(age) => u32::from_be_bytes([out[o], out[o + 1], out[o + 2], out[o + 3]]).saturating_sub(age),
            Ttls::Stale => STALE_TTL,
        };
        out[o..o + 4].copy_from_slice(&ttl.to_be_bytes());
    }
    Some(a.len())
}
