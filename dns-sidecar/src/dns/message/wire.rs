//! Reading a message's wire form without decoding it: the early checks
//! (a datagram never answered, the checks hickory's decoder does not make),
//! walking names, and matching an answer's question with the query's.

use super::HEADER_LEN;

/// A datagram we must never answer: too short to carry a header, or a
/// response (QR set). Answering responses would let two servers bounce
/// packets between each other forever (and reflect spoofed traffic).
pub(crate) fn must_drop(raw: &[u8]) -> bool {
    raw.len() < HEADER_LEN || raw[2] & 0x80 != 0
}

/// Why a message is malformed, beyond what the decoder checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
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
pub(crate) fn check_wire(raw: &[u8]) -> Result<(), Malformed> {
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
pub(crate) fn skip_name(raw: &[u8], mut at: usize) -> Result<usize, Malformed> {
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
pub(crate) fn question_end(msg: &[u8]) -> Option<usize> {
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
pub(crate) fn same_question(query: &[u8], answer: &[u8]) -> bool {
    let Some(end) = question_end(query) else { return false };
    answer.len() >= end
        && answer[4..6] == query[4..6]
        && answer[HEADER_LEN..end - 4].eq_ignore_ascii_case(&query[HEADER_LEN..end - 4])
        && answer[end - 4..end] == query[end - 4..end]
}
