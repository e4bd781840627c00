//! Which upstream answers are kept, and how.
//!
//! Kept are NOERROR answers with records (for their smallest TTL, at most
//! `max_ttl`), NXDOMAIN and NODATA answers with an SOA in the authority
//! section (for min(SOA TTL, SOA MINIMUM), at most `max_negative_ttl`: RFC
//! 2308), and the upstream's SERVFAIL (for `servfail_ttl`). Never kept:
//! truncated answers, other rcodes, answers larger than
//! [`super::MAX_ANSWER`], answers carrying TSIG/SIG(0), answers to another
//! question than asked, answers with trailing bytes. The OPT record of a
//! kept answer loses its options (the upstream's cookie was for the first
//! client). The answer is walked once, without allocating; the offsets of
//! its TTL fields are noted so a hit only patches them.

use super::super::message::{same_question, skip_name, HEADER_LEN};
use super::super::question::Question;
use super::entry::Kind;
use super::MAX_ANSWER;
use crate::config::CacheSettings;

/// Records an answer may have to be kept (a 4096-byte answer holds fewer).
pub(super) const MAX_RECORDS: usize = 512;

/// How an answer is kept (see [`keepable`]).
pub(super) struct Keep {
    /// Bytes kept: the answer, without the OPT options when it had some.
    pub(super) len: usize,
    /// TTL fields (their offsets are in the caller's array).
    pub(super) ttls: usize,
    /// Every TTL is capped at this.
    cap: u32,
    /// The SOA of a negative answer (its TTL offset), whose TTL is also
    /// capped at its MINIMUM, `negative` (RFC 2308).
    soa: Option<usize>,
    negative: u32,
    /// Offset of the OPT record's RDLENGTH when its options are dropped.
    opt_rdlen: Option<usize>,
    /// An OPT record was seen (at most one is).
    opt: bool,
    pub(super) lifetime: u32,
    pub(super) kind: Kind,
}

/// The section a record is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// One record's fixed fields, read in place.
struct Record {
    /// Offset of its type (just after its owner name).
    at: usize,
    rtype: u16,
    ttl: u32,
    /// The OPT record's extended rcode (the TTL's first byte).
    ext_rcode: u8,
    rdata_at: usize,
    rdlen: usize,
}

/// Whether the answer looks like a denial (negative or SERVFAIL) from its
/// header alone: what the admission of a new name to a full shard goes by,
/// before the answer is walked.
pub(super) fn denial_at_a_glance(answer: &[u8]) -> bool {
    answer.len() < HEADER_LEN || answer[3] & 0x0F != 0 || answer[6..8] == [0, 0]
}

/// Whether `a`, the upstream's answer to `q`, may be kept, and how: the
/// offsets of its TTL fields go into `ttls`; the returned [`Keep`] says how
/// to cap them, whether the OPT options go, how long the answer lives. See
/// the module doc for what is kept.
pub(super) fn keepable(
    q: &[u8],
    qn: &Question,
    a: &[u8],
    s: &CacheSettings,
    ttls: &mut [u16; MAX_RECORDS],
) -> Option<Keep> {
    let (mut keep, an, ns, total) = Keep::from_header(q, qn, a, s)?;
    let mut at = qn.end();
    for i in 0..total {
        let section = match i {
            i if i < an => Section::Answer,
            i if i < an + ns => Section::Authority,
            _ => Section::Additional,
        };
        let r = Record::read(a, at)?;
        match r.rtype {
            41 => keep.opt(a, &r, section, i + 1 == total)?,
            // Signed answers (TSIG, SIG(0)) are for one exchange only.
            250 | 24 if section == Section::Additional => return None,
            _ => keep.ttl(a, &r, section, ttls)?,
        }
        at = r.rdata_at + r.rdlen;
    }
    // Trailing bytes, or (RFC 2308) a negative answer without an SOA.
    if at != a.len() || (keep.kind == Kind::Negative && keep.soa.is_none()) || keep.lifetime == 0 {
        return None;
    }
    Some(keep)
}

impl Record {
    /// The record whose owner name starts at `at`; `None` when it runs
    /// past the end of `a`.
    fn read(a: &[u8], at: usize) -> Option<Record> {
        let at = skip_name(a, at).ok()?;
        let fixed = a.get(at..at + 10)?;
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let rdata_at = at + 10;
        a.get(rdata_at..rdata_at + rdlen)?;
        Some(Record {
            at,
            rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
            ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ext_rcode: fixed[4],
            rdata_at,
            rdlen,
        })
    }
}

impl Keep {
    /// Checks `a`'s header and question against `q`, and starts its
    /// [`Keep`] from its rcode: the kind, the cap that applies. Also
    /// returns the answer and authority counts, and the records' total.
    fn from_header(q: &[u8], qn: &Question, a: &[u8], s: &CacheSettings) -> Option<(Keep, usize, usize, usize)> {
        if a.len() > MAX_ANSWER || a.len() < HEADER_LEN {
            return None;
        }
        // A response (QR) to a QUERY (opcode 0), not truncated (TC).
        if a[2] & 0x80 == 0 || a[2] & 0x7A != 0 {
            return None;
        }
        let count = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]) as usize;
        if count(4) != 1 || !same_question(&q[..qn.end()], a) {
            return None;
        }
        let (an, ns, ar) = (count(6), count(8), count(10));
        let total = an + ns + ar;
        if total > MAX_RECORDS {
            return None;
        }
        let kind = match a[3] & 0x0F {
            0 if an > 0 => Kind::Positive,
            0 | 3 => Kind::Negative,
            2 => Kind::ServFail,
            _ => return None,
        };
        let cap = match kind {
            Kind::Positive => s.max_ttl,
            Kind::Negative => s.max_negative_ttl,
            Kind::ServFail => s.servfail_ttl,
        };
        if cap == 0 {
            return None;
        }
        let keep = Keep {
            len: a.len(),
            ttls: 0,
            cap,
            soa: None,
            negative: u32::MAX,
            opt_rdlen: None,
            opt: false,
            lifetime: cap,
            kind,
        };
        Some((keep, an, ns, total))
    }

    /// Takes in the OPT record `r` (the `last` record of `a`): one, in the
    /// additional section, without an extended rcode; its options are
    /// dropped when nothing follows them (always, in practice), otherwise
    /// the answer is not kept.
    fn opt(&mut self, a: &[u8], r: &Record, section: Section, last: bool) -> Option<()> {
        if section != Section::Additional || self.opt || r.ext_rcode != 0 {
            return None;
        }
        self.opt = true;
        if r.rdlen > 0 {
            if !last || r.rdata_at + r.rdlen != a.len() {
                return None;
            }
            self.opt_rdlen = Some(r.at + 8);
            self.len = r.rdata_at;
        }
        Some(())
    }

    /// Takes in the TTL of record `r` of `a` (its offset into `ttls`): the
    /// answer lives as long as its smallest TTL. The SOA of a negative
    /// answer lives min(SOA TTL, MINIMUM) (RFC 2308); two SOAs are not a
    /// negative answer this knows.
    fn ttl(&mut self, a: &[u8], r: &Record, section: Section, ttls: &mut [u16; MAX_RECORDS]) -> Option<()> {
        let mut ttl = r.ttl;
        if r.rtype == 6 && section == Section::Authority {
            if r.rdlen < 22 {
                return None;
            }
            if self.kind == Kind::Negative && self.soa.is_none() {
                let end = r.rdata_at + r.rdlen;
                self.negative = u32::from_be_bytes([a[end - 4], a[end - 3], a[end - 2], a[end - 1]]);
                self.soa = Some(r.at + 4);
                ttl = ttl.min(self.negative);
            } else if self.kind == Kind::Negative {
                return None;
            }
        }
        ttls[self.ttls] = (r.at + 4) as u16;
        self.ttls += 1;
        self.lifetime = self.lifetime.min(ttl);
        Some(())
    }

    /// Applies this to `a`, the copy of the answer being kept (its TTL
    /// fields at `ttls`): every TTL capped, the SOA's also at its MINIMUM,
    /// the OPT options dropped.
    pub(super) fn apply(&self, a: &mut [u8], ttls: &[u16]) {
        for &t in ttls {
            let t = t as usize;
            let ttl = u32::from_be_bytes([a[t], a[t + 1], a[t + 2], a[t + 3]]).min(self.cap);
            let ttl = if self.soa == Some(t) {
                ttl.min(self.negative)
            } else {
                ttl
            };
            a[t..t + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        if let Some(o) = self.opt_rdlen {
            a[o..o + 2].copy_from_slice(&[0, 0]);
        }
    }
}
