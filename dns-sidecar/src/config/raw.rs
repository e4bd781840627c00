//! The TOML file as written. Every table denies unknown fields, so a typo is an
//! error with its line, not a silently ignored setting. Values that can be
//! checked on their own (names, durations, addresses, enums) are parsed here;
//! cross-references are checked in `validate`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::values::{ByteSize, Cidr, DnsAddr, HumanDuration, Ttl};
use super::{EntraIdentity, NoMatchPolicy, Prefer, Role, Spread, SslMode};
use crate::name::DnsName;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// Where the DNS server listens.
    pub(crate) dns: RawDns,
    /// Where queries outside the sidecar's zones go.
    #[serde(default)]
    pub(crate) upstream: Option<RawUpstream>,
    /// Zones the sidecar is authoritative for (the aliases live in them).
    #[serde(default)]
    pub(crate) zones: Vec<RawZone>,
    /// Zones forwarded to their own upstreams (longest suffix wins).
    #[serde(default)]
    pub(crate) forward: Vec<RawForward>,
    /// Probe timing and damping, and connection defaults for every server.
    #[serde(default)]
    pub(crate) probe: RawProbe,
    /// PostgreSQL servers, keyed by an id that aliases refer to.
    #[serde(default)]
    pub(crate) servers: BTreeMap<String, Spanned<RawServer>>,
    /// The stable names that follow a server of the chosen role.
    #[serde(default)]
    pub(crate) aliases: Vec<RawAlias>,
    /// The admin HTTP listener (metrics, health, status, overrides).
    #[serde(default)]
    pub(crate) admin: Option<RawAdmin>,
    /// Where the decision's safety state (fences, timelines) is kept across restarts.
    #[serde(default)]
    pub(crate) state: Option<RawState>,
    /// Bounds on everything that grows with traffic.
    #[serde(default)]
    pub(crate) limits: RawLimits,
    /// The cache of forwarded answers.
    #[serde(default)]
    pub(crate) cache: RawCache,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    /// Cache forwarded answers (default true).
    pub(crate) enabled: Option<bool>,
    /// Answers held at most (default 10000).
    pub(crate) max_entries: Option<Spanned<u32>>,
    /// Bytes the cached answers may take at most (default 4MiB).
    pub(crate) max_bytes: Option<Spanned<ByteSize>>,
    /// Longest time a positive answer is kept, whatever its TTL (default 1h).
    pub(crate) max_ttl: Option<Spanned<Ttl>>,
    /// Longest time a negative answer (NXDOMAIN, NODATA) is kept (default 5m).
    pub(crate) max_negative_ttl: Option<Spanned<Ttl>>,
    /// How long an upstream's SERVFAIL is kept (default 5s; 0s = never).
    pub(crate) servfail_ttl: Option<Spanned<Ttl>>,
    /// Answer from an expired entry when the upstream fails (RFC 8767; default true).
    pub(crate) serve_stale: Option<bool>,
    /// How long after it expired an entry may still be served stale (default 1d).
    pub(crate) max_stale: Option<Spanned<HumanDuration>>,
    /// Refresh popular entries shortly before they expire (default true).
    pub(crate) prefetch: Option<bool>,
    /// Hits an entry needs within its lifetime to be refreshed (default 3).
    pub(crate) prefetch_hits: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    /// The state file (absolute path; its directory must be writable).
    pub(crate) path: Spanned<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    /// Memory budget for everything that grows with traffic (default 16MiB).
    pub(crate) memory: Option<Spanned<ByteSize>>,
    /// Forwarded queries waiting on upstreams at once (default 2048).
    pub(crate) forward_in_flight: Option<Spanned<u32>>,
    /// Forwarded queries per second per client address (IPv6: per /64); 0 = no limit.
    pub(crate) forward_rate: Option<Spanned<u32>>,
    /// Burst allowed above `forward_rate` (default 2 x forward_rate).
    pub(crate) forward_burst: Option<Spanned<u32>>,
    /// Open DNS TCP connections (default 512).
    pub(crate) tcp_connections: Option<Spanned<u32>>,
    /// Open DNS TCP connections per client address (default 16).
    pub(crate) tcp_connections_per_client: Option<Spanned<u32>>,
    /// A TCP connection without a complete query for this long is closed.
    pub(crate) tcp_idle_timeout: Option<Spanned<HumanDuration>>,
    /// A TCP answer the client does not take within this time closes the connection.
    pub(crate) tcp_write_timeout: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    /// Serve the admin endpoints (default true).
    pub(crate) enabled: Option<bool>,
    /// Address of the admin HTTP listener (default 127.0.0.1:9153).
    pub(crate) listen: Option<Spanned<String>>,
    /// Environment variable holding the bearer token for overrides.
    pub(crate) token_env: Option<Spanned<String>>,
    /// File holding the bearer token for overrides.
    pub(crate) token_file: Option<Spanned<PathBuf>>,
    /// Time a client has to send a request's headers (default 5s).
    pub(crate) header_timeout: Option<Spanned<HumanDuration>>,
    /// Time a request may take from its headers to the answer (default 10s).
    pub(crate) request_timeout: Option<Spanned<HumanDuration>>,
    /// Open admin connections (default 32).
    pub(crate) max_connections: Option<Spanned<u32>>,
    /// Time a request's body may take once its headers are in (default 2s).
    pub(crate) body_timeout: Option<Spanned<HumanDuration>>,
    /// Open admin connections per client address (default 8).
    pub(crate) max_connections_per_client: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    /// Addresses to serve on, UDP and TCP each (`"0.0.0.0:53"`, `"127.0.0.1:5353"`).
    pub(crate) listen: Spanned<Vec<DnsAddr>>,
    /// Largest UDP answer we send to EDNS clients (bytes, 512..=4096).
    #[serde(default)]
    pub(crate) max_udp_payload: Option<Spanned<u16>>,
    /// Client networks that may query (default: loopback only).
    #[serde(default)]
    pub(crate) allow: Option<Spanned<Vec<Cidr>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    /// Resolvers tried in order (Azure: `"168.63.129.16"`).
    pub(crate) servers: Spanned<Vec<DnsAddr>>,
    /// How long to wait for one upstream before trying the next (at most 5s).
    #[serde(default)]
    pub(crate) timeout: Option<Spanned<HumanDuration>>,
    /// Failed health checks in a row after which an upstream is taken out
    /// of use until it answers again (default 5).
    #[serde(default)]
    pub(crate) max_fails: Option<Spanned<u32>>,
    /// How often an upstream taken out of use is health-checked (default 1s).
    #[serde(default)]
    pub(crate) health_check: Option<Spanned<HumanDuration>>,
}

/// `[[forward]]`: one zone sent to its own resolvers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    /// The zone, e.g. `"corp.example.com."` (it and every name below it).
    pub(crate) zone: Spanned<DnsName>,
    /// Resolvers tried in order.
    pub(crate) servers: Spanned<Vec<DnsAddr>>,
    /// As `[upstream] timeout`.
    #[serde(default)]
    pub(crate) timeout: Option<Spanned<HumanDuration>>,
    /// As `[upstream] max_fails`.
    #[serde(default)]
    pub(crate) max_fails: Option<Spanned<u32>>,
    /// As `[upstream] health_check`.
    #[serde(default)]
    pub(crate) health_check: Option<Spanned<HumanDuration>>,
    /// Whether this zone's answers are cached (default true).
    #[serde(default)]
    pub(crate) cache: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZone {
    /// The zone apex, e.g. `"db.internal."`.
    pub(crate) name: Spanned<DnsName>,
    /// NS records served at the apex (default `ns.<zone>`; an empty list is
    /// rejected rather than silently replaced by the default).
    #[serde(default)]
    pub(crate) nameservers: Option<Spanned<Vec<DnsName>>>,
    /// SOA RNAME, the mailbox as a name (default `hostmaster.<zone>`).
    #[serde(default)]
    pub(crate) hostmaster: Option<DnsName>,
    /// TTL of the SOA and NS records.
    #[serde(default)]
    pub(crate) ttl: Option<Ttl>,
    /// How long resolvers may cache NXDOMAIN/NODATA (SOA MINIMUM).
    #[serde(default)]
    pub(crate) negative_ttl: Option<Ttl>,
    /// SOA serial (default 1).
    #[serde(default)]
    pub(crate) serial: Option<u32>,
}

/// Declares a raw table that also carries the connection settings, because
/// serde's `flatten` cannot be combined with `deny_unknown_fields`.
macro_rules! with_conn_fields {
    ($(#[$m:meta])* pub(crate) struct $name:ident { $($(#[$fm:meta])* pub(crate) $f:ident: $t:ty,)* }) => {
        $(#[$m])*
        pub(crate) struct $name {
            $($(#[$fm])* pub(crate) $f: $t,)*
            /// TCP port (default 5432).
            pub(crate) port: Option<u16>,
            /// Role the probe logs in as.
            pub(crate) user: Option<String>,
            /// Database to connect to (default `postgres`).
            pub(crate) dbname: Option<String>,
            /// libpq-style sslmode (default `verify-full`).
            pub(crate) sslmode: Option<SslMode>,
            /// CA bundle (PEM) to verify the server with, or `"system"` for the OS store.
            pub(crate) sslrootcert: Option<Spanned<String>>,
            /// Environment variable that holds the password.
            pub(crate) password_env: Option<Spanned<String>>,
            /// File that holds the password (trailing newline ignored); read
            /// again when it changes and when the server refuses the password.
            pub(crate) password_file: Option<Spanned<PathBuf>>,
            /// Command (argv, no shell) whose standard output is the password or token.
            pub(crate) password_command: Option<Spanned<Vec<String>>>,
            /// How often `password_command` runs again (default 10m).
            pub(crate) password_refresh: Option<Spanned<HumanDuration>>,
            /// Microsoft Entra ID token source: `managed-identity` or `workload-identity`.
            pub(crate) entra_identity: Option<Spanned<EntraIdentity>>,
            /// MI: the user-assigned identity's client id; WI: overrides `AZURE_CLIENT_ID`.
            pub(crate) entra_client_id: Option<Spanned<String>>,
            /// Not supported: accepted by the parser only to explain why.
            pub(crate) password: Option<Spanned<toml::Value>>,
            /// `application_name` shown in pg_stat_activity (default `dns-sidecar`).
            pub(crate) application_name: Option<String>,
        }

        impl $name {
            /// The connection settings of this table.
            pub(crate) fn conn(&self) -> RawConn {
                RawConn {
                    port: self.port,
                    user: self.user.clone(),
                    dbname: self.dbname.clone(),
                    sslmode: self.sslmode,
                    sslrootcert: self.sslrootcert.clone(),
                    password_env: self.password_env.clone(),
                    password_file: self.password_file.clone(),
                    password_command: self.password_command.clone(),
                    password_refresh: self.password_refresh.clone(),
                    entra_identity: self.entra_identity.clone(),
                    entra_client_id: self.entra_client_id.clone(),
                    password: self.password.clone(),
                    application_name: self.application_name.clone(),
                }
            }
        }
    };
}

/// Connection settings: `[probe]` gives defaults, each server may override.
#[derive(Debug, Default, Clone)]
pub(super) struct RawConn {
    pub(crate) port: Option<u16>,
    pub(crate) user: Option<String>,
    pub(crate) dbname: Option<String>,
    pub(crate) sslmode: Option<SslMode>,
    pub(crate) sslrootcert: Option<Spanned<String>>,
    pub(crate) password_env: Option<Spanned<String>>,
    pub(crate) password_file: Option<Spanned<PathBuf>>,
    pub(crate) password_command: Option<Spanned<Vec<String>>>,
    pub(crate) password_refresh: Option<Spanned<HumanDuration>>,
    pub(crate) entra_identity: Option<Spanned<EntraIdentity>>,
    pub(crate) entra_client_id: Option<Spanned<String>>,
    pub(crate) password: Option<Spanned<toml::Value>>,
    pub(crate) application_name: Option<String>,
}

impl RawConn {
    /// Fields set here win over `defaults`.
    pub(super) fn or(self, defaults: RawConn) -> RawConn {
        // A server that names its own password source replaces [probe]'s,
        // with its qualifiers (`password_refresh`, `entra_client_id`); a
        // server that names none may still override [probe]'s qualifiers.
        let own = self.has_password_source();
        let (password_refresh, entra_client_id) = if own {
            (self.password_refresh.clone(), self.entra_client_id.clone())
        } else {
            (
                self.password_refresh.clone().or(defaults.password_refresh.clone()),
                self.entra_client_id.clone().or(defaults.entra_client_id.clone()),
            )
        };
        let src = if own { &self } else { &defaults };
        let (password_env, password_file, password_command, entra_identity) = (
            src.password_env.clone(),
            src.password_file.clone(),
            src.password_command.clone(),
            src.entra_identity.clone(),
        );
        RawConn {
            port: self.port.or(defaults.port),
            user: self.user.or(defaults.user),
            dbname: self.dbname.or(defaults.dbname),
            sslmode: self.sslmode.or(defaults.sslmode),
            sslrootcert: self.sslrootcert.or(defaults.sslrootcert),
            password_env,
            password_file,
            password_command,
            password_refresh,
            entra_identity,
            entra_client_id,
            password: self.password.or(defaults.password),
            application_name: self.application_name.or(defaults.application_name),
        }
    }

    /// Whether one of the password source keys is set here.
    fn has_password_source(&self) -> bool {
        self.password_env.is_some()
            || self.password_file.is_some()
            || self.password_command.is_some()
            || self.entra_identity.is_some()
    }
}

with_conn_fields! {
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawProbe {
        /// Time between probes of one server.
        pub(crate) interval: Option<Spanned<HumanDuration>>,
        /// Time between probes of a server while an alias that may use it has
        /// no matching target (an incident).
        pub(crate) incident_interval: Option<Spanned<HumanDuration>>,
        /// Hard limit on one probe (connect + TLS + auth + query).
        pub(crate) deadline: Option<Spanned<HumanDuration>>,
        /// How often a probe uses a brand-new connection instead of the kept one.
        pub(crate) fresh_connection_interval: Option<HumanDuration>,
        /// Consecutive failed probes before a server counts as down.
        pub(crate) fall: Option<Spanned<u32>>,
        /// Consecutive good probes before a server that was down counts as up.
        pub(crate) rise: Option<Spanned<u32>>,
    }
}

with_conn_fields! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RawServer {
        /// The DNS name the alias's CNAME points at.
        pub(crate) target: Spanned<DnsName>,
        /// Host name the probe connects to and verifies the certificate against
        /// (default: `target` without the trailing dot).
        pub(crate) host: Option<String>,
        /// IP address to connect to instead of resolving `host` (libpq `hostaddr`).
        pub(crate) hostaddr: Option<std::net::IpAddr>,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlias {
    /// The stable name applications use, e.g. `"prod.db.internal."`.
    pub(crate) name: Spanned<DnsName>,
    /// Which server to follow, named like libpq's `target_session_attrs`.
    #[serde(default)]
    pub(crate) role: Option<Role>,
    /// TTL of the CNAME answer (default 5s).
    #[serde(default)]
    pub(crate) ttl: Option<Ttl>,
    /// Candidate server ids, in order of preference for ties.
    pub(crate) servers: Spanned<Vec<Spanned<String>>>,
    /// What to answer when no server matches the role.
    #[serde(default)]
    pub(crate) on_no_match: Option<NoMatchPolicy>,
    /// Command (argv, no shell) run when the alias changes target.
    #[serde(default)]
    pub(crate) on_change: Option<Spanned<Vec<String>>>,
    /// Time limit for `on_change` (default 30s).
    #[serde(default)]
    pub(crate) on_change_timeout: Option<Spanned<HumanDuration>>,
    /// Reader aliases: how many bytes of WAL a standby may be behind the
    /// primary and still be chosen.
    #[serde(default)]
    pub(crate) max_lag: Option<Spanned<ByteSize>>,
    /// Reader aliases: how long ago the primary may have been at the position
    /// a standby has replayed, for the standby still to be chosen.
    #[serde(default)]
    pub(crate) max_lag_time: Option<Spanned<HumanDuration>>,
    /// Environment variables passed to `on_change` (default PATH and HOME);
    /// `PREFIX_*` passes every variable starting with `PREFIX_`.
    #[serde(default)]
    pub(crate) on_change_env: Option<Spanned<Vec<Spanned<String>>>>,
    /// Reader aliases: `"first"` (default), `"rotate"` or `"client"`.
    #[serde(default)]
    pub(crate) spread: Option<Spanned<Spread>>,
    /// Reader aliases: weight per server id (default 1 each).
    #[serde(default)]
    pub(crate) weights: Option<Spanned<BTreeMap<Spanned<String>, Spanned<u32>>>>,
    /// Reader aliases: `"order"` (default) or `"nearest"`.
    #[serde(default)]
    pub(crate) prefer: Option<Spanned<Prefer>>,
}
