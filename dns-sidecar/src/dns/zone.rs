//! Authoritative data: the zones' SOA and NS records, and which names exist.

use hickory_proto::rr::rdata::{CNAME, NS, SOA};
use hickory_proto::rr::{Name, RData, Record};

use super::names::{wire_name, NameConversion};
use crate::config::{Config, Zone};

/// One zone, ready to answer from.
#[derive(Debug)]
pub(super) struct ZoneData {
    /// Canonical text (`db.internal.`), for suffix matching.
    pub(crate) apex_text: String,
    pub(crate) soa: Record,
    pub(crate) ns: Vec<Record>,
    /// Names that exist in the zone only because an alias lies below them
    /// (empty non-terminals): they answer NODATA, not NXDOMAIN.
    pub(crate) empty_non_terminals: Vec<String>,
    /// The SOA MNAME, RNAME and NS names (canonical text).
    pub(crate) own_names: Vec<String>,
    negative_ttl: u32,
}

impl ZoneData {
    pub(super) fn build(zone: &Zone, config: &Config) -> Result<ZoneData, NameConversion> {
        let apex = wire_name(zone.name.as_str())?;
        let mname = wire_name(zone.nameservers[0].as_str())?;
        let rname = wire_name(zone.hostmaster.as_str())?;
        let soa = SOA::new(mname, rname, zone.serial, 3600, 600, 86400 * 7, zone.negative_ttl);
        let soa = Record::from_rdata(apex.clone(), zone.ttl, RData::SOA(soa));
        let ns = zone
            .nameservers
            .iter()
            .map(|n| {
                Ok(Record::from_rdata(
                    apex.clone(),
                    zone.ttl,
                    RData::NS(NS(wire_name(n.as_str())?)),
                ))
            })
            .collect::<Result<Vec<_>, NameConversion>>()?;
        let mut ents = Vec::new();
        for a in config.aliases.iter().filter(|a| a.name.is_within(&zone.name)) {
            let mut rest = a.name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() <= zone.name.as_str().len() {
                    break;
                }
                if !ents.iter().any(|e| e == parent) {
                    ents.push(parent.to_string());
                }
                rest = parent;
            }
        }
        let mut own_names: Vec<String> = zone.nameservers.iter().map(|n| n.to_string()).collect();
        own_names.push(zone.hostmaster.to_string());
        Ok(ZoneData {
            own_names,
            apex_text: zone.name.as_str().to_string(),
            soa,
            ns,
            empty_non_terminals: ents,
            negative_ttl: zone.ttl.min(zone.negative_ttl),
        })
    }

    /// The SOA as it appears in the authority section of a negative answer:
    /// its TTL is min(SOA TTL, MINIMUM), which resolvers use as the negative
    /// caching time (RFC 2308).
    pub(super) fn negative_soa(&self) -> Record {
        let mut r = self.soa.clone();
        r.ttl = self.negative_ttl;
        r
    }
}

/// A CNAME record from `owner` (as the client asked it) to `target`.
pub(super) fn cname(owner: &Name, target: &Name, ttl: u32) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::CNAME(CNAME(target.clone())))
}
