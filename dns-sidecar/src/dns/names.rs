//! Names as the DNS side holds them, and the only conversions between them.
//!
//! Config, routes and decisions speak [`crate::name::DnsName`]'s canonical
//! text (lower case, trailing dot); containment on that form is
//! [`crate::name::within`]. This module turns that text into hickory's
//! [`Name`] (answers built by the full path) and into raw wire form (what the
//! fast path, the cache and the relay compare without decoding), and back
//! from a decoded [`Name`] to canonical text. [`within_any`] is containment on
//! the wire form, the only one there is.

use hickory_proto::rr::Name;

/// Errors turning config names into wire names (cannot happen for names that
/// passed config validation, but we do not panic on it). The decoder's own
/// error is kept as the [`std::error::Error::source`], so its type does not
/// leave `dns`.
#[derive(Debug, thiserror::Error)]
#[error("`{name}` is not a valid DNS name: {source}")]
pub struct NameConversion {
    name: String,
    #[source]
    source: hickory_proto::ProtoError,
}

/// Canonical text (`prod.db.test.`) -> hickory's [`Name`].
pub(super) fn wire_name(s: &str) -> Result<Name, NameConversion> {
    Name::from_ascii(s).map_err(|source| NameConversion {
        name: s.to_string(),
        source,
    })
}

/// Lower-case text with the trailing dot, comparable with config names.
pub(super) fn canonical(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// Canonical text -> uncompressed wire form: `db.test.` -> `\x02db\x04test\x00`.
pub(crate) fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// Whether the wire-form, lower-case `name` equals or lies below one of `zones`.
// Per forwarded datagram on the UDP hot path; `#[inline]` keeps it
// inlinable into the fast path, as when it lived in fast.rs.
#[inline]
pub(super) fn within_any(zones: &[Vec<u8>], name: &[u8]) -> bool {
    let mut i = 0;
    loop {
        if zones.iter().any(|z| z.as_slice() == &name[i..]) {
            return true;
        }
        match name.get(i) {
            Some(&len) if len != 0 => i += 1 + len as usize,
            _ => return false,
        }
        if i >= name.len() {
            return false;
        }
    }
}
