//! Configuration: one TOML file, parsed once into typed values.
//!
//! `Config::load` reads the file, lets serde check shapes and single values
//! (with line numbers from the TOML parser), then `validate` resolves
//! cross-references (alias -> servers, alias -> zone), reads secrets and
//! applies defaults. Nothing downstream ever sees a string that still needs
//! parsing. See the README's configuration reference for every key.

mod alias;
mod error;
mod hint;
mod identity;
pub(crate) mod ids;
mod password;
mod raw;
mod spread;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

// Public: what the binary and the tests name (the config, its errors, the
// secrets it reads); the rest is the crate's own.
pub(crate) use alias::{Alias, Hook, MaxLag, NoMatchPolicy, Role, DEFAULT_HOOK_ENV};
pub use error::{ConfigError, ConfigWarning, Located};
pub(crate) use identity::{match_servers, Matched};
pub(crate) use ids::{AliasId, IdVec, ServerId};
pub(crate) use password::{EntraIdentity, PasswordSource, DEFAULT_PASSWORD_REFRESH};
pub(crate) use spread::{Prefer, Spread, MAX_WEIGHT};
pub(crate) use validate::forwards_to_self;
pub(crate) use values::{Cidr, HumanDuration, Ttl, MAX_TTL};

use crate::name::DnsName;

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub dns: DnsSettings,
    /// `None`: queries outside the zones and the forward zones are REFUSED.
    pub upstream: Option<UpstreamSettings>,
    /// `[[forward]]`: zones with their own upstreams, in file order.
    pub forward: Vec<ForwardZone>,
    pub zones: Vec<Zone>,
    pub(crate) probe: ProbeTiming,
    /// Index in this vector is the server's `ServerId`.
    pub servers: Vec<Server>,
    pub aliases: Vec<Alias>,
    pub admin: AdminSettings,
    pub(crate) state: StateSettings,
    pub(crate) limits: Limits,
    pub(crate) cache: CacheSettings,
}

/// The cache of forwarded answers (`[cache]`; see `crate::dns::cache`).
/// Its bytes are bounded by `max_bytes`, on their own: they are not part of
/// the `[limits] memory` budget, so a full cache never refuses a query and
/// a burst of queries never empties the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub enabled: bool,
    /// Answers held at most.
    pub max_entries: usize,
    /// Bytes the answers (with their keys and bookkeeping) take at most.
    pub max_bytes: u64,
    /// Positive answers are kept at most this long (seconds), whatever their TTL.
    pub max_ttl: u32,
    /// NXDOMAIN and NODATA answers are kept for their SOA's negative TTL
    /// (RFC 2308), at most this long (seconds); 0 = not cached.
    pub max_negative_ttl: u32,
    /// An upstream's SERVFAIL is kept this long (seconds); 0 = not cached.
    pub servfail_ttl: u32,
    /// RFC 8767: when the upstream fails, answer from an expired entry.
    pub serve_stale: bool,
    /// How long after expiry an entry may still be served stale.
    pub max_stale: Duration,
    /// Refresh an entry hit at least `prefetch_hits` times when it is hit
    /// in the last tenth of its lifetime (see `crate::dns::cache`).
    pub prefetch: bool,
    pub prefetch_hits: u32,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            max_entries: 10_000,
            max_bytes: 4 << 20,
            max_ttl: 3600,
            max_negative_ttl: 300,
            servfail_ttl: 5,
            serve_stale: true,
            max_stale: Duration::from_secs(86_400),
            prefetch: true,
            prefetch_hits: 3,
        }
    }
}

/// Most answers `[cache] max_entries` accepts.
pub(crate) const MAX_CACHE_ENTRIES: u32 = 1_000_000;
/// Longest `[cache] servfail_ttl` (RFC 9520 allows up to 5 minutes; a
/// forwarder in front of one resolver wants seconds).
pub(crate) const MAX_SERVFAIL_TTL: u32 = 30;
/// Largest `[cache] prefetch_hits`.
pub(crate) const MAX_PREFETCH_HITS: u32 = 1_000_000;
/// Longest `[cache] max_stale` (RFC 8767 suggests a cap of 7 days).
pub(crate) const MAX_STALE: Duration = Duration::from_secs(7 * 86_400);

/// Where the decision state that safety depends on (fences, timeline
/// floors, targets, pins and drains) is kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// `None`: kept in memory only (a restart forgets it; logged at start).
    pub(crate) path: Option<PathBuf>,
}

/// Bounds on everything that grows with traffic (`[limits]`). When one is
/// reached, new work is refused at once (SERVFAIL, REFUSED or a closed
/// connection); nothing queues.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Bytes that traffic-driven state may hold: forwarded queries waiting on
    /// upstreams, per-query upstream sockets, TCP connections and their buffers.
    pub(crate) memory: u64,
    /// Forwarded queries (and alias target lookups) waiting on upstreams at once.
    pub(crate) forward_in_flight: usize,
    /// Forwarded queries per second per client (IPv4 address, IPv6 /64); 0 = off.
    pub(crate) forward_rate: u32,
    /// Tokens a client may burst above `forward_rate`.
    pub(crate) forward_burst: u32,
    pub(crate) tcp_connections: usize,
    pub(crate) tcp_connections_per_client: usize,
    /// Time a TCP connection may go without a complete query.
    pub(crate) tcp_idle_timeout: Duration,
    /// Time an answer may take to be written to a TCP client.
    pub(crate) tcp_write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 16 << 20,
            forward_in_flight: 2048,
            forward_rate: 1000,
            forward_burst: 2000,
            tcp_connections: 512,
            tcp_connections_per_client: 16,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_write_timeout: Duration::from_secs(5),
        }
    }
}

/// Most forwarded queries in flight we accept in `[limits]` (IDs are 16 bits
/// per relay; staying far below keeps picking a free one cheap).
pub(crate) const MAX_FORWARD_IN_FLIGHT: u32 = 16384;

/// The admin HTTP listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// `None`: no admin listener.
    pub listen: Option<SocketAddr>,
    /// Bearer token required for overrides. Without one, overrides are
    /// accepted from loopback peers only.
    pub token: Option<Secret>,
    /// Time a client has to send a request's headers (also bounds idle keep-alive).
    pub header_timeout: Duration,
    /// Time from a request's headers to its answer.
    pub request_timeout: Duration,
    /// Open admin connections; more are closed at once.
    pub max_connections: usize,
    /// Time a request's body may take to arrive once its headers are in.
    pub(crate) body_timeout: Duration,
    /// Open admin connections per client address.
    pub max_connections_per_client: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("literal")),
            token: None,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 32,
            body_timeout: Duration::from_secs(2),
            max_connections_per_client: 8,
        }
    }
}

/// The admin listener's default address: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9153";

/// The admin listener's port when `[admin] listen` gives an address only.
pub(crate) const DEFAULT_ADMIN_PORT: u16 = 9153;

#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// Each address is served over UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Largest UDP answer for EDNS clients; clients without EDNS get 512.
    pub(crate) max_udp_payload: u16,
    /// Client networks that may query; others get REFUSED (UDP) or a closed
    /// connection (TCP).
    pub(crate) allow: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub servers: Vec<SocketAddr>,
    /// Per upstream attempt (at most `validate::upstream::MAX_TIMEOUT`); the
    /// client gets SERVFAIL after all attempts fail.
    pub(crate) timeout: Duration,
    /// Failed health checks in a row that take an upstream out of use.
    pub(crate) max_fails: u32,
    /// How often an upstream out of use is health-checked.
    pub(crate) health_check: Duration,
}

/// A `[[forward]]` zone: its names (matched by the longest suffix, on label
/// boundaries) go to its own upstreams, with their own health.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardZone {
    /// Not the root, not inside one of [`Config::zones`].
    pub zone: DnsName,
    pub upstream: UpstreamSettings,
    /// `false`: its answers are never put in, or answered from, the cache.
    pub cache: bool,
}

/// The zone label of the `[upstream]` default (metrics, health).
pub(crate) const DEFAULT_ZONE: &str = ".";

#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: DnsName,
    pub(crate) nameservers: Vec<DnsName>,
    pub(crate) hostmaster: DnsName,
    pub(crate) ttl: u32,
    pub(crate) negative_ttl: u32,
    pub(crate) serial: u32,
}

/// Probe timing and damping, shared by all servers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeTiming {
    pub(crate) interval: Duration,
    /// Time between probes of a server while it is in the incident set
    /// ([`crate::shared::Shared::incident`]): an alias that lost its target
    /// wants the next writable server seen within milliseconds, not within a
    /// full `interval`. At most `interval`.
    pub(crate) incident_interval: Duration,
    pub(crate) deadline: Duration,
    pub(crate) fresh_connection_interval: Duration,
    /// Consecutive ambiguous failures (timeouts, TLS or auth errors) before a
    /// server counts as down. A refused or closed connection counts at once.
    pub(crate) fall: u32,
    /// Consecutive good probes before a server that was down is eligible again.
    pub(crate) rise: u32,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            interval: Duration::from_millis(100),
            incident_interval: Duration::from_millis(10),
            deadline: Duration::from_secs(1),
            fresh_connection_interval: Duration::from_secs(10),
            fall: 3,
            rise: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// The key of its `[servers.<id>]` table.
    pub id: String,
    /// What the alias's CNAME points at.
    pub(crate) target: DnsName,
    pub(crate) conn: ConnSettings,
}

/// How to reach and log in to one server. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnSettings {
    /// Host name for TLS verification (and for connecting when `hostaddr` is unset).
    pub(crate) host: String,
    pub(crate) hostaddr: Option<IpAddr>,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) dbname: String,
    pub(crate) sslmode: SslMode,
    pub(crate) sslrootcert: RootCert,
    /// Where the password comes from (`None`: no password is sent).
    pub(crate) password: Option<PasswordSource>,
    pub(crate) application_name: String,
}

/// Where TLS trust anchors come from.
#[derive(Debug, Clone, PartialEq)]
pub enum RootCert {
    /// The operating system's store.
    System,
    /// A PEM file with one or more CA certificates.
    File(PathBuf),
}

/// A password. Its `Debug` and `Display` print `***`, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// libpq's sslmode values that make sense for a health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What validation does with a secret it cannot read (a password's
/// `password_env` / `password_file`, the admin token's `token_env` /
/// `token_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// The secret is needed now (`run`, a reload, `check-config --strict`):
    /// a missing one is an error.
    Required,
    /// Only the file is being checked (`check-config`, e.g. a ConfigMap in a
    /// CI pipeline where the Secret does not exist): a missing secret is a
    /// warning saying it is needed at run time, and stays unset.
    Deferred,
}

impl Config {
    /// Every server with its id, in file order.
    pub(crate) fn enumerate_servers(&self) -> impl Iterator<Item = (ServerId, &Server)> + '_ {
        self.servers.iter().enumerate().map(|(i, s)| (ServerId::new(i), s))
    }

    /// Every alias with its id, in file order.
    pub(crate) fn enumerate_aliases(&self) -> impl Iterator<Item = (AliasId, &Alias)> + '_ {
        self.aliases.iter().enumerate().map(|(i, a)| (AliasId::new(i), a))
    }

    /// The server whose id is `id`.
    pub fn server_id(&self, id: &str) -> Option<ServerId> {
        self.enumerate_servers().find(|(_, s)| s.id == id).map(|(s, _)| s)
    }

    /// The alias named `name`.
    pub(crate) fn alias_id(&self, name: &DnsName) -> Option<AliasId> {
        self.enumerate_aliases().find(|(_, a)| a.name == *name).map(|(i, _)| i)
    }

    /// Reads and validates `path`; every secret must be readable.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, Secrets::Required).map(|(c, _)| c)
    }

    /// Reads and validates `path` with the given treatment of secrets;
    /// returns the config and the warnings (missing secrets, with
    /// [`Secrets::Deferred`]).
    pub fn load_with(path: &Path, secrets: Secrets) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_with(path, &text, secrets)
    }

    /// Validates `text` as if read from `path` (used by tests); every secret
    /// must be readable.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with(path, text, Secrets::Required).map(|(c, _)| c)
    }

    /// [`Config::from_toml`] with the given treatment of secrets.
    pub fn from_toml_with(
        path: &Path,
        text: &str,
        secrets: Secrets,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let located = Located::at(path, text, e.span(), e.message().trim().to_string());
            ConfigError::from(hint::with_toml_hint(located))
        })?;
        validate::validate(path, text, raw, secrets)
    }

    /// Every upstream list with its zone label: the `[upstream]` default
    /// (zone `DEFAULT_ZONE`, ".") first, then each `[[forward]]` zone.
    pub fn upstreams(&self) -> impl Iterator<Item = (&str, &UpstreamSettings)> {
        let default = self.upstream.iter().map(|u| (DEFAULT_ZONE, u));
        default.chain(self.forward.iter().map(|f| (f.zone.as_str(), &f.upstream)))
    }
}
