//! Wire-level helpers: early header checks, response skeletons, EDNS echo and
//! UDP truncation, and the [`Transport`] a query came on (which bounds the
//! answer's size). Everything that knows hickory's message types is in `dns/`.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};

use super::question::Question;

/// How the query arrived, which bounds the answer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

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

/// Why a message is malformed, beyond what the decoder checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A section count runs past the end of the message.
    Short,
    /// A question name uses a compression pointer (there is nothing before
    /// the question it could point to except the header).
    CompressedQuestion,
    /// A name is longer than 255 bytes, has a label over 63, or a pointer
    /// that does not point strictly backwards.
    BadName,
    /// A record's data runs past the end of the message.
    BadRecord,
    /// An OPT record whose options do not exactly fill its data, whose
    /// owner is not the root, or a second OPT record (RFC 6891 6.1.1).
    BadOpt,
}

/// Walks the whole message as the wire format says, without allocating:
/// the checks hickory's decoder does not make (an EDNS option longer than its
/// OPT record, a second OPT, a compressed question) answer FORMERR.
pub fn check_wire(raw: &[u8]) -> Result<(), Malformed> {
    if raw.len() < HEADER_LEN {
        return Err(Malformed::Short);
    }
    let count = |i: usize| u16::from_be_bytes([raw[i], raw[i + 1]]) as usize;
    let (qd, records) = (count(4), count(6) + count(8) + count(10));
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        let start = at;
        loop {
            let len = *raw.get(at).ok_or(Malformed::Short)? as usize;
            if len & 0xC0 != 0 {
                return Err(Malformed::CompressedQuestion);
            }
            at += 1 + len;
            if len == 0 {
                break;
            }
            if at - start > 255 {
                return Err(Malformed::BadName);
            }
        }
        at += 4;
        if at > raw.len() {
            return Err(Malformed::Short);
        }
    }
    let mut opts = 0;
    for _ in 0..records {
        let name_at = at;
        at = skip_name(raw, at)?;
        let fixed = raw.get(at..at + 10).ok_or(Malformed::Short)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        at += 10;
        let rdata = raw.get(at..at + rdlen).ok_or(Malformed::BadRecord)?;
        if rtype == 41 {
            opts += 1;
            if opts > 1 || raw[name_at] != 0 {
                return Err(Malformed::BadOpt);
            }
            let mut o = 0;
            while o < rdata.len() {
                let head = rdata.get(o..o + 4).ok_or(Malformed::BadOpt)?;
                let olen = u16::from_be_bytes([head[2], head[3]]) as usize;
                o += 4 + olen;
                if o > rdata.len() {
                    return Err(Malformed::BadOpt);
                }
            }
        }
        at += rdlen;
    }
    Ok(())
}

/// Skips the name at `at`; returns where the record continues. Pointers
/// must point strictly before the name that uses them, which rules out loops.
pub(super) fn skip_name(raw: &[u8], mut at: usize) -> Result<usize, Malformed> {
    let mut end = None;
    let mut floor = at;
    let mut total = 0;
    loop {
        let len = *raw.get(at).ok_or(Malformed::Short)? as usize;
        match len & 0xC0 {
            0x00 => {
                total += 1 + len;
                if total > 255 {
                    return Err(Malformed::BadName);
                }
                at += 1 + len;
                if len == 0 {
                    return Ok(end.unwrap_or(at));
                }
                if at > raw.len() {
                    return Err(Malformed::Short);
                }
            }
            0xC0 => {
                let lo = *raw.get(at + 1).ok_or(Malformed::Short)? as usize;
                let target = ((len & 0x3F) << 8) | lo;
                if target >= floor {
                    return Err(Malformed::BadName);
                }
                end.get_or_insert(at + 2);
                floor = target;
                at = target;
            }
            _ => return Err(Malformed::BadName),
        }
    }
}

/// End of the first question of an uncompressed query.
pub fn question_end(msg: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = *msg.get(i)? as usize;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 1 + 4;
    (end <= msg.len()).then_some(end)
}

/// Whether `answer`'s question is `query`'s (the first, which is all an
/// ordinary query has): the same count, the name equal without regard to
/// ASCII case (0x20 randomisation), and the type and class equal byte for
/// byte. Every upstream answer is matched with this before it is relayed,
/// kept or used.
pub fn same_question(query: &[u8], answer: &[u8]) -> bool {
    let Some(end) = question_end(query) else { return false };
    answer.len() >= end
        && answer[4..6] == query[4..6]
        && answer[HEADER_LEN..end - 4].eq_ignore_ascii_case(&query[HEADER_LEN..end - 4])
        && answer[end - 4..end] == query[end - 4..end]
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

/// REFUSED for a client that may not query, built from the raw bytes without
/// decoding them: header (ID, opcode, RD, CD) and the question when it is a
/// plain one; never longer than the query, so it amplifies nothing.
pub fn refused_from_raw(raw: &[u8]) -> Vec<u8> {
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

/// Largest UDP answer a client takes: its EDNS UDP size (`payload`, at
/// least 512) capped by ours (`[dns] max_udp_payload`); 512 without EDNS
/// (RFC 1035). The one place this is decided: the full path, the fast
/// path, the cache and the relay all ask it, so an answer larger than this
/// is sent with TC wherever it comes from.
pub fn client_udp_limit(payload: Option<u16>, ours: u16) -> usize {
    match payload {
        Some(p) => p.max(512).min(ours) as usize,
        None => CLASSIC_UDP_LIMIT,
    }
}

/// Largest UDP answer this client accepts ([`client_udp_limit`]).
pub fn udp_limit(req: &Message, ours: u16) -> usize {
    client_udp_limit(req.edns.as_ref().map(|e| e.max_payload()), ours)
}

/// The TC answer to the ordinary query `q` (read as `qn`), written into
/// `out`: header (ID, opcode, RD and CD of the query; QR, RA and TC set;
/// NOERROR), the question exactly as asked, and our OPT record (`ours`, DO
/// copied) when the query had EDNS. What a client gets over UDP when the
/// answer does not fit its limit: it retries over TCP. The same bytes as
/// the full path's [`encode`] of an empty truncated response.
pub fn truncated_raw(q: &[u8], qn: &Question, out: &mut [u8]) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn query(extra: &[u8], arcount: u8) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, arcount, 1, b'a', 0, 0, 1, 0, 1];
        q.extend_from_slice(extra);
        q
    }

    #[test]
    fn wire_checks() {
        let opt = |rd: &[u8]| {
            let mut v = vec![0, 0, 41, 4, 0xd0, 0, 0, 0, 0];
            v.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            v.extend_from_slice(rd);
            v
        };
        assert_eq!(check_wire(&query(&[], 0)), Ok(()));
        assert_eq!(check_wire(&query(&opt(&[]), 1)), Ok(()));
        assert_eq!(check_wire(&query(&opt(&[0, 10, 0, 2, 1, 2]), 1)), Ok(()));
        assert_eq!(
            check_wire(&query(&opt(&[0, 10, 0, 100]), 1)),
            Err(Malformed::BadOpt),
            "option longer than the OPT"
        );
        assert_eq!(
            check_wire(&query(&opt(&[0, 10, 0, 8, 1, 2, 3, 4]), 1)),
            Err(Malformed::BadOpt)
        );
        assert_eq!(
            check_wire(&query(&opt(&[0, 10]), 1)),
            Err(Malformed::BadOpt),
            "half an option header"
        );
        let mut two = opt(&[]);
        two.extend(opt(&[]));
        assert_eq!(check_wire(&query(&two, 2)), Err(Malformed::BadOpt));
        assert_eq!(
            check_wire(&query(&[], 1)),
            Err(Malformed::Short),
            "a record that is not there"
        );
        // Question names with pointers.
        let mut q = query(&[], 0);
        q.splice(12..15, [0xC0, 0x0E, 0xC0, 0x0C]);
        assert_eq!(check_wire(&q), Err(Malformed::CompressedQuestion));
        // A record whose owner points forward, or to itself.
        let rr = |ptr: u8| vec![0xC0, ptr, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(check_wire(&query(&rr(12), 1)), Ok(()), "backwards to the question");
        assert_eq!(check_wire(&query(&rr(19), 1)), Err(Malformed::BadName), "itself");
        assert_eq!(check_wire(&query(&rr(40), 1)), Err(Malformed::BadName), "forwards");
    }

    #[test]
    fn one_udp_limit_for_every_answer() {
        assert_eq!(client_udp_limit(None, 1232), 512, "no EDNS: 512");
        assert_eq!(client_udp_limit(None, 4096), 512);
        assert_eq!(client_udp_limit(Some(4096), 1232), 1232, "capped by ours");
        assert_eq!(client_udp_limit(Some(1000), 1232), 1000);
        assert_eq!(client_udp_limit(Some(100), 1232), 512, "at least 512");
        // The raw reader and the decoded message agree.
        for (payload, ours) in [(None, 1232), (Some(4096), 1232), (Some(600), 4096), (Some(0), 512)] {
            let mut m = Message::query();
            m.queries.push(hickory_proto::op::Query::query(
                "a.".parse().unwrap(),
                hickory_proto::rr::RecordType::A,
            ));
            if let Some(p) = payload {
                let mut e = Edns::new();
                e.set_max_payload(p);
                m.set_edns(e);
            }
            let raw = m.to_vec().unwrap();
            let qn = super::super::question::question(&raw, ours).unwrap();
            assert_eq!(
                qn.udp_limit,
                udp_limit(&Message::from_vec(&raw).unwrap(), ours),
                "{payload:?}"
            );
            assert_eq!(qn.udp_limit, client_udp_limit(payload, ours));
        }
    }

    #[test]
    fn truncated_answers_are_the_full_paths_bytes() {
        use hickory_proto::op::Query;
        use hickory_proto::rr::{Name, RecordType};
        for (name, edns, rd, cd) in [
            ("www.example.com.", None, true, false),
            ("WwW.Example.COM.", Some(false), false, true),
            ("a.", Some(true), true, true),
        ] {
            let mut m = Message::query();
            m.metadata.id = 0xBEEF;
            m.metadata.recursion_desired = rd;
            m.metadata.checking_disabled = cd;
            m.queries
                .push(Query::query(Name::from_ascii(name).unwrap(), RecordType::TXT));
            if let Some(dnssec_ok) = edns {
                let mut e = Edns::new();
                e.set_max_payload(4096);
                e.set_dnssec_ok(dnssec_ok);
                m.set_edns(e);
            }
            let raw = m.to_vec().unwrap();
            let req = Message::from_vec(&raw).unwrap();
            let mut resp = response_to(&req, ResponseCode::NoError, true);
            resp.metadata.truncation = true;
            echo_edns(&req, &mut resp, 1232);
            let qn = super::super::question::question(&raw, 1232).unwrap();
            let mut out = [0u8; 512];
            let n = truncated_raw(&raw, &qn, &mut out).unwrap();
            assert_eq!(out[..n], resp.to_vec().unwrap()[..], "{name} {edns:?} rd {rd} cd {cd}");
            assert_eq!(truncated_raw(&raw, &qn, &mut out[..n - 1]), None, "does not fit");
        }
    }

    #[test]
    fn questions_match_by_name_without_case_and_type_and_class_exactly() {
        let q = query(&[], 0);
        let mut a = q.clone();
        assert!(same_question(&q, &a));
        a[13] = b'A';
        assert!(same_question(&q, &a), "0x20");
        for (at, byte, what) in [(16, 0x41, "type 65 vs 1"), (18, 3, "class CH")] {
            let mut other = q.clone();
            other[at] = byte;
            let mut upper = other.clone();
            assert!(!same_question(&q, &other), "{what}");
            upper[at] ^= 0x20;
            assert!(
                !same_question(&other, &upper),
                "{what}: types differing in the 0x20 bit"
            );
        }
        assert!(!same_question(&q, &q[..18]), "short");
    }

    #[test]
    fn refused_is_never_longer_than_the_query() {
        let q = query(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0], 1);
        let r = refused_from_raw(&q);
        assert_eq!(r.len(), 19);
        assert_eq!((r[2] & 0x80, r[3] & 0x0F, r[5], r[11]), (0x80, 5, 1, 0));
        let r = refused_from_raw(&q[..12]);
        assert_eq!((r.len(), r[5]), (12, 0));
    }
}
