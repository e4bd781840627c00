//! `[dns]`: the listeners, the EDNS payload size and who may query.

use std::net::SocketAddr;

use super::ctx::Ctx;
use crate::config::raw::RawDns;
use crate::config::{Cidr, ConfigError, DnsSettings};

pub(super) fn check(cx: &Ctx<'_>, raw: &RawDns) -> Result<DnsSettings, ConfigError> {
    let listen: Vec<SocketAddr> = raw.listen.get_ref().iter().map(|a| a.0).collect();
    if listen.is_empty() {
        return cx.err(
            Some(raw.listen.span()),
            "`dns.listen` is empty",
            "add at least one address, e.g. listen = [\"127.0.0.1:53\"]",
        );
    }
    for (i, a) in listen.iter().enumerate() {
        if listen[..i].contains(a) {
            return cx.err(
                Some(raw.listen.span()),
                format!("`dns.listen` names {a} twice"),
                "remove the duplicate",
            );
        }
    }
    let max_udp_payload = match &raw.max_udp_payload {
        None => 1232,
        Some(v) if (512..=4096).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            return cx.err(
                Some(v.span()),
                format!("`max_udp_payload = {}` is outside 512..=4096", v.get_ref()),
                "1232 (the DNS flag day value) avoids IP fragmentation",
            )
        }
    };

    let allow = match &raw.allow {
        Some(a) => {
            if a.get_ref().is_empty() {
                return cx.err(
                    Some(a.span()),
                    "`dns.allow` is empty, so every client would be refused",
                    "list your clients' networks, e.g. allow = [\"10.0.0.0/8\"]",
                );
            }
            a.get_ref().clone()
        }
        None => {
            if let Some(l) = listen.iter().find(|l| !l.ip().to_canonical().is_loopback()) {
                return cx.err(
                    Some(raw.listen.span()),
                    format!(
                        "`dns.listen` has {l}, which is not loopback, but [dns] has no `allow` list (without one only loopback clients may query)"
                    ),
                    "add the networks of your clients to [dns], e.g. allow = [\"10.0.0.0/8\", \"127.0.0.1\"]; allow = [\"0.0.0.0/0\", \"::/0\"] would make this an open resolver for anyone who reaches it",
                );
            }
            Cidr::loopback()
        }
    };
    Ok(DnsSettings {
        listen,
        max_udp_payload,
        allow,
    })
}
