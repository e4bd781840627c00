//! Which server of an old config is which server of a new one, across a
//! reload.
//!
//! A server's id is only its name in the file; what the decision knows about
//! a server (its health, the fences that keep a diverged server off a writer
//! alias, a drain) is knowledge about one PostgreSQL server, reached at one
//! address. So a server is identified by its *endpoint*, `host`, `hostaddr`
//! and `port`, the postmaster a probe talks to. `dbname`, `user`, the
//! password and the TLS settings are how the probe logs in, not which server
//! it judges (recovery state, timeline and WAL position are the whole
//! cluster's), so changing them keeps the identity; the prober reconnects
//! with the new settings.
//!
//! Matching, in this order (each server matched at most once):
//! 1. same id and same endpoint: unchanged;
//! 2. same endpoint, another id: **renamed** (only when the endpoint is unique
//!    among the servers left on both sides, else it is ambiguous and not
//!    matched this way);
//! 3. same id, another endpoint: **moved** (the operator edited the address
//!    of the server they call by that name, e.g. an IP replaced by a DNS
//!    name); what it knew is kept until its new prober reports, fences
//!    included, because dropping a fence is the unsafe direction.
//!
//! Everything else is removed (old side) or new (new side). Both the decision
//! ([`crate::decision::reconfigure_noted`]) and the probers
//! ([`crate::probe::supervisor`]) use this one rule.

use std::net::IpAddr;

use super::{ConnSettings, Server};

/// The endpoint a server is identified by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Endpoint<'a> {
    pub(crate) host: &'a str,
    pub(crate) hostaddr: Option<IpAddr>,
    pub(crate) port: u16,
}

impl ConnSettings {
    /// The endpoint this connection reaches (see the module docs).
    pub(crate) fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            host: &self.host,
            hostaddr: self.hostaddr,
            port: self.port,
        }
    }
}

/// How an old server was matched to a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Matched {
    /// Same id, same endpoint.
    Same(usize),
    /// Same endpoint under another id.
    Renamed(usize),
    /// Same id, another endpoint.
    Moved(usize),
}

impl Matched {
    /// The index of the new server.
    pub(crate) fn new_index(self) -> usize {
        match self {
            Matched::Same(n) | Matched::Renamed(n) | Matched::Moved(n) => n,
        }
    }
}

/// For each server of `old` (by index), the server of `new` it is, if any.
pub(crate) fn match_servers(old: &[Server], new: &[Server]) -> Vec<Option<Matched>> {
    let mut map: Vec<Option<Matched>> = vec![None; old.len()];
    let mut taken = vec![false; new.len()];
    for (o, os) in old.iter().enumerate() {
        if let Some(n) = new
            .iter()
            .position(|ns| ns.id == os.id && ns.conn.endpoint() == os.conn.endpoint())
        {
            map[o] = Some(Matched::Same(n));
            taken[n] = true;
        }
    }
    // Renames: an endpoint held by exactly one unmatched server on each side.
    let free_old: Vec<usize> = (0..old.len()).filter(|&o| map[o].is_none()).collect();
    let free_new: Vec<usize> = (0..new.len()).filter(|&n| !taken[n]).collect();
    for &o in &free_old {
        let ep = old[o].conn.endpoint();
        let olds = free_old.iter().filter(|&&x| old[x].conn.endpoint() == ep).count();
        let news: Vec<usize> = free_new
            .iter()
            .copied()
            .filter(|&n| new[n].conn.endpoint() == ep)
            .collect();
        if olds == 1 && news.len() == 1 {
            map[o] = Some(Matched::Renamed(news[0]));
            taken[news[0]] = true;
        }
    }
    for (o, os) in old.iter().enumerate() {
        if map[o].is_some() {
            continue;
        }
        if let Some(n) = new.iter().position(|ns| ns.id == os.id).filter(|&n| !taken[n]) {
            map[o] = Some(Matched::Moved(n));
            taken[n] = true;
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RootCert, SslMode};

    fn server(id: &str, host: &str, port: u16) -> Server {
        Server {
            id: id.into(),
            target: crate::name::DnsName::parse(&format!("{id}.test")).unwrap(),
            conn: ConnSettings {
                host: host.into(),
                hostaddr: None,
                port,
                user: "probe".into(),
                dbname: "postgres".into(),
                sslmode: SslMode::Require,
                sslrootcert: RootCert::System,
                password: None,
                application_name: "dns-sidecar".into(),
            },
        }
    }

    #[test]
    fn same_renamed_moved_and_gone() {
        let old = [
            server("a", "h1", 5432),
            server("b", "h2", 5432),
            server("c", "h3", 5432),
        ];
        let mut b2 = server("b", "h2", 5432);
        b2.conn.dbname = "other".into();
        let new = [server("a", "h9", 5432), b2, server("x", "h1", 5432)];
        assert_eq!(
            match_servers(&old, &new),
            [Some(Matched::Renamed(2)), Some(Matched::Same(1)), None],
            "a's endpoint went to x: a renamed; the new a is another server; dbname is not identity"
        );
    }

    #[test]
    fn swapped_ids_follow_the_endpoints() {
        let old = [server("a", "h1", 5432), server("b", "h2", 5432)];
        let new = [server("a", "h2", 5432), server("b", "h1", 5432)];
        assert_eq!(
            match_servers(&old, &new),
            [Some(Matched::Renamed(1)), Some(Matched::Renamed(0))]
        );
    }

    #[test]
    fn an_ambiguous_endpoint_is_no_rename() {
        let old = [server("a", "h1", 5432), server("b", "h1", 5432)];
        let new = [server("x", "h1", 5432), server("b", "h1", 6000)];
        assert_eq!(
            match_servers(&old, &new),
            [None, Some(Matched::Moved(1))],
            "two old servers share h1:5432: x is not known to be either"
        );
        let new = [server("x", "h1", 5432), server("y", "h1", 5432)];
        assert_eq!(match_servers(&old[..1], &new), [None]);
    }

    #[test]
    fn a_different_port_is_another_endpoint() {
        let old = [server("a", "h1", 5432)];
        let new = [server("x", "h1", 5433)];
        assert_eq!(match_servers(&old, &new), [None]);
    }
}
