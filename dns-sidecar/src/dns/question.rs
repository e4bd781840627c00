//! The question of an ordinary query, read from the wire without decoding.
//!
//! The fast path, the cache of forwarded answers, the relay and the refusal
//! templates all need the same few facts about a query (where its name ends,
//! its type, its EDNS variant and UDP size); [`question`] reads them once, in
//! a few dozen byte comparisons, and declines anything unusual so the full
//! (hickory-based) path decides.

use super::message::{client_udp_limit, HEADER_LEN};

/// An ordinary query's question and EDNS, as read by [`question`]: what the
/// fast path, the refusal templates and the cache need, without decoding.
#[derive(Debug, Clone, Copy)]
pub struct Question {
    /// End of the question name (the name is `q[HEADER_LEN..qname_end]`).
    pub(crate) qname_end: usize,
    pub(crate) qtype: u16,
    /// 0 = no EDNS, 1 = EDNS, 2 = EDNS with DO.
    pub(crate) edns: usize,
    /// Largest UDP answer this client takes (its EDNS size, at least 512,
    /// at most ours; 512 without EDNS): [`client_udp_limit`].
    pub(crate) udp_limit: usize,
    /// Ours (`[dns] max_udp_payload`): what our OPT record advertises.
    pub(crate) max_udp: u16,
    /// RD: the client asked for recursion. Only such queries are answered
    /// from, or fill, the cache of forwarded answers.
    pub(crate) rd: bool,
    /// The name has upper-case letters (0x20 randomisation).
    pub(crate) upper: bool,
    /// The OPT record, if any, carries no options other than a cookie or
    /// padding (nothing that makes the answer specific to this client).
    pub(crate) plain: bool,
}

impl Question {
    /// End of the question section (name, type, class).
    pub(crate) fn end(&self) -> usize {
        self.qname_end + 4
    }
}

/// What the query's OPT record (or its absence) says.
struct Opt {
    /// 0 = no EDNS, 1 = EDNS, 2 = EDNS with DO.
    edns: usize,
    udp_limit: usize,
    /// No option but a cookie or padding.
    plain: bool,
    /// Where the query ends.
    end: usize,
}

/// Reads an ordinary query: QUERY opcode, one question of class IN, no
/// answer or authority records, at most an OPT record (version 0, options
/// well formed) and nothing after it; QR, AA, TC, RA, Z and the rcode clear.
/// Anything else is `None` (the full path decides). `max_udp` is ours.
// Per datagram on the UDP hot path; `#[inline]` (here and on its parts: the
// header, the name, the OPT record) keeps it inlinable into the fast path's
// `classify` as one function, as when it lived in fast.rs.
#[inline]
pub fn question(q: &[u8], max_udp: u16) -> Option<Question> {
    if !ordinary_header(q) {
        return None;
    }
    let (qname_end, upper) = name(q)?;
    let fixed = q.get(qname_end..qname_end + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    if fixed[2..4] != [0, 1] {
        return None;
    }
    let after = qname_end + 4;
    let opt = if q[11] == 1 {
        opt(q, after, max_udp)?
    } else {
        Opt {
            edns: 0,
            udp_limit: client_udp_limit(None, max_udp),
            plain: true,
            end: after,
        }
    };
    if opt.end != q.len() {
        return None;
    }
    Some(Question {
        qname_end,
        qtype,
        edns: opt.edns,
        udp_limit: opt.udp_limit,
        max_udp,
        rd: q[2] & 0x01 != 0,
        upper,
        plain: opt.plain,
    })
}

/// The header of an ordinary query: long enough for a question, the flags
/// of a plain QUERY, one question, no answer or authority records and at
/// most one additional (the OPT).
#[inline]
fn ordinary_header(q: &[u8]) -> bool {
    if q.len() < HEADER_LEN + 5 {
        return false;
    }
    // QR, opcode, AA, TC must be 0 (RD may be set); RA, Z and the rcode
    // must be 0 (AD and CD may be set).
    if q[2] & 0xFE != 0 || q[3] & 0xCF != 0 {
        return false;
    }
    q[4..10] == [0, 1, 0, 0, 0, 0] && q[10] == 0 && q[11] <= 1
}

/// The question name: where it ends, and whether it has upper-case
/// letters. `None` for a compressed or over-long name, or a label with a
/// dot in it (the full path decides those).
#[inline]
fn name(q: &[u8]) -> Option<(usize, bool)> {
    let mut i = HEADER_LEN;
    let mut upper = false;
    loop {
        let len = *q.get(i)? as usize;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = q.get(i + 1..i + 1 + len)?;
        if label.contains(&b'.') {
            return None;
        }
        upper |= label.iter().any(u8::is_ascii_uppercase);
        i += 1 + len;
    }
    let qname_end = i + 1;
    // A name is at most 255 bytes on the wire; longer ones are FORMERR.
    if qname_end - HEADER_LEN > 255 {
        return None;
    }
    Some((qname_end, upper))
}

/// The OPT record at `at`: version 0, no extended rcode, options that
/// exactly fill its data, none with a content the full path checks.
#[inline]
fn opt(q: &[u8], at: usize, max_udp: u16) -> Option<Opt> {
    // OPT: root name, type 41, class = payload, ttl = ext-rcode, version, flags.
    let opt = q.get(at..at + 11)?;
    if opt[0] != 0 || opt[1..3] != [0, 41] || opt[5] != 0 || opt[6] != 0 {
        return None;
    }
    let udp_limit = client_udp_limit(Some(u16::from_be_bytes([opt[3], opt[4]])), max_udp);
    let dnssec_ok = opt[7] & 0x80 != 0;
    let rdlen = u16::from_be_bytes([opt[9], opt[10]]) as usize;
    // Options must exactly fill the OPT data; anything else is the
    // full path's FORMERR.
    let rdata = q.get(at + 11..at + 11 + rdlen)?;
    let mut plain = true;
    let mut o = 0;
    while o < rdata.len() {
        let head = rdata.get(o..o + 4)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        // NSID (3) and client subnet (8) have a content the full path
        // checks (FORMERR when malformed): it decides.
        if matches!(code, 3 | 8) {
            return None;
        }
        // COOKIE (10) and PADDING (12) say nothing about the question.
        plain &= matches!(code, 10 | 12);
        o += 4 + u16::from_be_bytes([head[2], head[3]]) as usize;
    }
    if o != rdata.len() {
        return None;
    }
    Some(Opt {
        edns: if dnssec_ok { 2 } else { 1 },
        udp_limit,
        plain,
        end: at + 11 + rdlen,
    })
}
