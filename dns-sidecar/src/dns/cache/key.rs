//! The key an answer is kept under, and which queries have one.
//!
//! The key is the question in wire form: the name in lower case (so 0x20
//! randomised queries share an entry), type, class (IN), and one byte for
//! what changes the upstream's answer: EDNS (0 none, 1 EDNS, 2 EDNS with
//! DO) and CD (4). It is built on the stack, never allocated.

use super::super::message::HEADER_LEN;
use super::super::question::Question;

/// A key: the name (at most 255 bytes), type, class and one byte of flags.
pub(crate) const KEY_MAX: usize = 255 + 5;

/// Whether answers to this query may come from, and go into, the cache:
/// it asks for recursion (RD; a resolver answers RD=0 from its own cache
/// only, often partially: a CNAME without its address, which must not be
/// handed to the next RD=1 client, and an RD=0 client must not get an
/// answer the upstream would only give with recursion), and it carries no
/// EDNS option that makes the answer specific to the client.
#[inline]
pub(super) fn cacheable(qn: &Question) -> bool {
    qn.rd && qn.plain
}

/// The key of `q`: its name in lower case, type, class (IN), and one byte
/// for EDNS (0 none, 1 EDNS, 2 EDNS with DO) and CD (4).
#[inline]
pub(super) fn key_of<'b>(q: &[u8], qn: &Question, buf: &'b mut [u8; KEY_MAX]) -> &'b [u8] {
    let name = &q[HEADER_LEN..qn.qname_end];
    let n = name.len();
    buf[..n].copy_from_slice(name);
    if qn.upper {
        buf[..n].make_ascii_lowercase();
    }
    buf[n..n + 2].copy_from_slice(&qn.qtype.to_be_bytes());
    buf[n + 2..n + 4].copy_from_slice(&[0, 1]);
    buf[n + 4] = qn.edns as u8 | ((q[3] & 0x10) >> 2);
    &buf[..n + 5]
}

/// The key that selects `q`'s entry (see [`key_of`]); the relay also
/// coalesces identical questions in flight by it.
pub(crate) fn entry_key<'b>(q: &[u8], qn: &Question, buf: &'b mut [u8; KEY_MAX]) -> &'b [u8] {
    key_of(q, qn, buf)
}

/// The name of a key (lower case, wire form).
pub(super) fn name_of(key: &[u8]) -> &[u8] {
    &key[..key.len() - 5]
}
