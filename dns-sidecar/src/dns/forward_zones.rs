//! Which forwarder a name goes to: the `[[forward]]` zone that is its
//! longest suffix, on label boundaries and without regard to case, else the
//! `[upstream]` default (CoreDNS server blocks, dnsmasq `--server=/zone/`
//! and Private Resolver rulesets all route this way).
//!
//! The table is built once per handler (config load and reload): each
//! zone's lower-case wire form next to its forwarder. A lookup walks the
//! query's name in wire form as it arrived (no decoding, no allocation,
//! no lock): at each label start, the zones of exactly the remaining
//! length are compared, case-insensitively (length bytes are below 64, so
//! ASCII case folding never changes them). The first label start that
//! matches is the longest zone. With no `[[forward]]` zones the lookup is
//! one branch. The sidecar's own zones are never asked about: they are
//! answered before anything is forwarded (see [`super::handler`]).

use std::sync::Arc;

use super::forward::Forwarder;
use super::guard::Guard;
use super::names::wire;
use crate::config::{Config, DEFAULT_ZONE};

/// Which forwarder of a [`ForwardZones`] a query goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteId(u16);

/// The forwarders of one config: the default and each forward zone.
pub(crate) struct ForwardZones {
    /// Lower-case wire names of the `[[forward]]` zones; `forwarders[i + 1]`
    /// is zone `i`'s.
    zones: Box<[Box<[u8]>]>,
    /// Index 0: `[upstream]` (absent: `None`); then the zones'.
    forwarders: Box<[Option<Forwarder>]>,
}

impl ForwardZones {
    /// The forwarders of `config`; `guard` as [`Forwarder::new`] takes it.
    pub(crate) fn new(config: &Config, guard: Option<&Arc<Guard>>) -> ForwardZones {
        let default = config
            .upstream
            .as_ref()
            .map(|u| Forwarder::new(DEFAULT_ZONE, u, true, guard));
        let zones = config.forward.iter().map(|f| wire(f.zone.as_str()).into()).collect();
        let forwarders = std::iter::once(default)
            .chain(
                config
                    .forward
                    .iter()
                    .map(|f| Some(Forwarder::new(f.zone.as_str(), &f.upstream, f.cache, guard))),
            )
            .collect();
        ForwardZones { zones, forwarders }
    }

    /// Whether any name is forwarded at all.
    pub(crate) fn any(&self) -> bool {
        self.forwarders.iter().any(Option::is_some)
    }

    /// Where the wire-form name `name` (any case; the query's question name
    /// as sent) is forwarded: `None` when it matches no zone and there is
    /// no `[upstream]`.
    #[inline]
    pub(crate) fn route(&self, name: &[u8]) -> Option<RouteId> {
        let id = if self.zones.is_empty() {
            0
        } else {
            longest(&self.zones, name).map_or(0, |i| i + 1)
        };
        self.forwarders[id].as_ref().map(|_| RouteId(id as u16))
    }

    /// The forwarder of `id` (from [`ForwardZones::route`] on this table).
    pub(crate) fn get(&self, id: RouteId) -> &Forwarder {
        self.forwarders[id.0 as usize]
            .as_ref()
            .expect("route() only returns configured forwarders")
    }

    /// Every forwarder (the health checks ask them all).
    pub(crate) fn all(&self) -> impl Iterator<Item = &Forwarder> {
        self.forwarders.iter().flatten()
    }
}

/// The index of the longest of `zones` (lower-case wire names, none the
/// root) that `name` (wire form, any case) equals or lies below.
#[inline]
fn longest(zones: &[Box<[u8]>], name: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < name.len() {
        let rest = &name[i..];
        if let Some(z) = zones
            .iter()
            .position(|z| z.len() == rest.len() && z.eq_ignore_ascii_case(rest))
        {
            return Some(z);
        }
        let len = rest[0] as usize;
        // The root label (or a malformed one): no zone is shorter.
        if len == 0 || len > 63 {
            return None;
        }
        i += 1 + len;
    }
    None
}

/// The question name of `raw` in wire form, when it is written out (not
/// compressed) and well formed: `raw[12..end]`, its terminating root label
/// included.
#[inline]
pub(super) fn qname(raw: &[u8]) -> Option<&[u8]> {
    let mut i = super::message::HEADER_LEN;
    loop {
        let len = *raw.get(i)? as usize;
        if len == 0 {
            return raw.get(super::message::HEADER_LEN..i + 1);
        }
        if len > 63 {
            return None;
        }
        i += 1 + len;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn table(zones: &[&str]) -> Vec<Box<[u8]>> {
        zones.iter().map(|z| wire(z).into()).collect()
    }

    #[test]
    fn longest_suffix_on_label_boundaries_without_regard_to_case() {
        let zones = table(&[
            "corp.example.com.",
            "example.com.",
            "a.b.corp.example.com.",
            "svc.cluster.local.",
        ]);
        let at = |name: &str| longest(&zones, &wire(name));
        assert_eq!(at("corp.example.com."), Some(0), "the apex itself");
        assert_eq!(at("db.corp.example.com."), Some(0));
        assert_eq!(at("xcorp.example.com."), Some(1), "not on a label boundary: the parent");
        assert_eq!(at("x.xcorp.example.com."), Some(1));
        assert_eq!(at("DB.Corp.EXAMPLE.com."), Some(0), "case");
        assert_eq!(at("c.a.b.corp.example.com."), Some(2), "the longest wins");
        assert_eq!(
            at("b.corp.example.com."),
            Some(0),
            "a parent of a zone, inside a shorter one"
        );
        assert_eq!(at("example.com."), Some(1));
        assert_eq!(at("com."), None);
        assert_eq!(at("example.org."), None);
        assert_eq!(at("."), None, "the root is the default's");
        assert_eq!(at("corp.example.com.evil."), None, "a suffix, not a prefix");
        assert_eq!(longest(&[], &wire("a.b.")), None);
    }

    #[test]
    fn the_question_name_as_sent() {
        // id, flags, 1 question, "Db.Test." A IN.
        let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x02Db\x04Test\x00\x00\x01\x00\x01");
        assert_eq!(qname(&q), Some(&b"\x02Db\x04Test\x00"[..]));
        // Compressed (a pointer) or cut short: not read here.
        let mut p = q[..12].to_vec();
        p.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(qname(&p), None);
        assert_eq!(qname(&q[..16]), None);
    }

    fn label() -> impl Strategy<Value = String> {
        // Few labels (a, b, aa, ab, ba, bb in either case): names share
        // suffixes, and match nested zones, often.
        "[abAB]{1,2}"
    }

    proptest! {
        /// The matcher agrees with the definition: the zone with the most
        /// labels among those the name (lower-cased) equals or ends with
        /// `.zone`, whatever the case of either.
        #[test]
        fn agrees_with_the_text_definition(
            zones in proptest::collection::vec(proptest::collection::vec(label(), 1..4), 0..8),
            name in proptest::collection::vec(label(), 1..6),
        ) {
            let mut zone_names: Vec<String> = zones.iter().map(|z| format!("{}.", z.join(".").to_ascii_lowercase())).collect();
            zone_names.dedup();
            let mut seen = std::collections::HashSet::new();
            zone_names.retain(|z| seen.insert(z.clone()));
            let name = format!("{}.", name.join("."));
            let lower = name.to_ascii_lowercase();
            let want = zone_names
                .iter()
                .enumerate()
                .filter(|(_, z)| crate::name::within(&lower, z))
                .max_by_key(|(_, z)| z.len())
                .map(|(i, _)| i);
            let refs: Vec<&str> = zone_names.iter().map(String::as_str).collect();
            let got = longest(&table(&refs), &wire(&name));
            prop_assert_eq!(got, want);
        }
    }
}
