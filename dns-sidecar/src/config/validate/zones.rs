//! `[[zones]]`: the zones the sidecar is authoritative for.

use super::ctx::Ctx;
use crate::config::raw::RawZone;
use crate::config::{ConfigError, Zone};
use crate::name::DnsName;

pub(super) fn check(cx: &Ctx<'_>, raw: Vec<RawZone>) -> Result<Vec<Zone>, ConfigError> {
    let mut zones = Vec::new();
    for z in raw {
        let name = z.name.get_ref().clone();
        let span = Some(z.name.span());
        if name.label_count() == 0 {
            return cx.err(
                span,
                "zone `.` (the root) cannot be served: the sidecar would be authoritative for every name and forward nothing",
                "name the zone that holds your aliases, e.g. name = \"db.internal\"",
            );
        }
        if zones.iter().any(|other: &Zone| other.name == name) {
            return cx.err(
                span,
                format!("zone `{name}` is declared twice"),
                "merge the two [[zones]] tables",
            );
        }
        // The default NS and SOA names are built below the apex; a zone name
        // near the 253-character limit leaves no room for them.
        let child = |label: &str| {
            DnsName::parse(&format!("{label}.{}", name.as_str())).or_else(|e| {
                cx.err(
                    span.clone(),
                    format!("zone `{name}` is too long for its default `{label}.` name ({e})"),
                    format!(
                        "shorten the zone name, or set {} explicitly",
                        if label == "ns" { "nameservers" } else { "hostmaster" }
                    ),
                )
            })
        };
        let nameservers = match z.nameservers {
            None => vec![child("ns")?],
            Some(ns) if ns.get_ref().is_empty() => {
                let default = child("ns").map_or_else(|_| "ns.<zone>".to_string(), |n| n.to_string());
                return cx.err(
                    Some(ns.span()),
                    format!("zone `{name}` has an empty `nameservers` list; the apex would have no NS records"),
                    format!(
                        "remove the key to serve the default [\"{default}\"], or list the names of the servers that answer for this zone"
                    ),
                );
            }
            Some(ns) => ns.into_inner(),
        };
        let hostmaster = match z.hostmaster {
            Some(h) => h,
            None => child("hostmaster")?,
        };
        zones.push(Zone {
            nameservers,
            hostmaster,
            ttl: z.ttl.map_or(300, |t| t.0),
            negative_ttl: z.negative_ttl.map_or(5, |t| t.0),
            serial: z.serial.unwrap_or(1),
            name,
        });
    }
    Ok(zones)
}
