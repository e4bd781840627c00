//! Configuration: one TOML file, parsed once into typed values.
//!
//! [`Config::load`] reads the file, lets serde check shapes and single values
//! (with line numbers from the TOML parser), then [`validate`] resolves
//! cross-references (alias -> servers, alias -> zone), reads secrets and
//! applies defaults. Nothing downstream ever sees a string that still needs
//! parsing. See the README's configuration reference for every key.

mod error;
mod raw;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, Located};
pub use validate::forwards_to_self;
pub use values::{ByteSize, Cidr, DnsAddr, HumanDuration, Ttl, MAX_TTL};

use crate::name::DnsName;

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub dns: DnsSettings,
    /// `None`: queries outside the zones are REFUSED.
    pub upstream: Option<UpstreamSettings>,
    pub zones: Vec<Zone>,
    pub probe: ProbeTiming,
    /// Index in this vector is the server's [`ServerId`].
    pub servers: Vec<Server>,
    pub aliases: Vec<Alias>,
    pub admin: AdminSettings,
    pub limits: Limits,
}

/// Bounds on everything that grows with traffic (`[limits]`). When one is
/// reached, new work is refused at once (SERVFAIL, REFUSED or a closed
/// connection); nothing queues.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Bytes that traffic-driven state may hold: forwarded queries waiting on
    /// upstreams, per-query upstream sockets, TCP connections and their buffers.
    pub memory: u64,
    /// Forwarded queries (and alias target lookups) waiting on upstreams at once.
    pub forward_in_flight: usize,
    /// Forwarded queries per second per client (IPv4 address, IPv6 /64); 0 = off.
    pub forward_rate: u32,
    /// Tokens a client may burst above `forward_rate`.
    pub forward_burst: u32,
    pub tcp_connections: usize,
    pub tcp_connections_per_client: usize,
    /// Time a TCP connection may go without a complete query.
    pub tcp_idle_timeout: Duration,
    /// Time an answer may take to be written to a TCP client.
    pub tcp_write_timeout: Duration,
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
pub const MAX_FORWARD_IN_FLIGHT: u32 = 16384;

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
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("literal")),
            token: None,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 32,
        }
    }
}

/// The admin listener's default address: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9153";

/// Index of a server in [`Config::servers`].
pub type ServerId = usize;

#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// Each address is served over UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Largest UDP answer for EDNS clients; clients without EDNS get 512.
    pub max_udp_payload: u16,
    /// Client networks that may query; others get REFUSED (UDP) or a closed
    /// connection (TCP).
    pub allow: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub servers: Vec<SocketAddr>,
    /// Per upstream attempt; the client gets SERVFAIL after all attempts fail.
    pub timeout: Duration,
    /// Consecutive timeouts that take an upstream out of use.
    pub max_fails: u32,
    /// How often an upstream out of use is health-checked.
    pub health_check: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: DnsName,
    pub nameservers: Vec<DnsName>,
    pub hostmaster: DnsName,
    pub ttl: u32,
    pub negative_ttl: u32,
    pub serial: u32,
}

/// Probe timing and damping, shared by all servers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeTiming {
    pub interval: Duration,
    pub deadline: Duration,
    pub fresh_connection_interval: Duration,
    /// Consecutive ambiguous failures (timeouts, TLS or auth errors) before a
    /// server counts as down. A refused or closed connection counts at once.
    pub fall: u32,
    /// Consecutive good probes before a server that was down is eligible again.
    pub rise: u32,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            interval: Duration::from_millis(100),
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
    pub target: DnsName,
    pub conn: ConnSettings,
}

/// How to reach and log in to one server. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnSettings {
    /// Host name for TLS verification (and for connecting when `hostaddr` is unset).
    pub host: String,
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: RootCert,
    pub password: Option<Secret>,
    pub application_name: String,
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
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    pub name: DnsName,
    pub ttl: u32,
    pub role: Role,
    /// Candidates in preference order for ties.
    pub servers: Vec<ServerId>,
    pub on_no_match: NoMatchPolicy,
    pub on_change: Option<Hook>,
}

/// A command run when an alias changes target.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// Program and arguments; no shell is involved.
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// Variables passed from our environment (exact names, or `PREFIX*`);
    /// everything else is cleared.
    pub env: Vec<String>,
}

/// Variables a hook gets from our environment when `on_change_env` is unset.
pub const DEFAULT_HOOK_ENV: [&str; 2] = ["PATH", "HOME"];

/// Which server an alias follows, with libpq's `target_session_attrs` meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Accepts writes: not in recovery and `transaction_read_only` is off.
    ReadWrite,
    /// Not in recovery (may still be read-only, e.g. storage full).
    Primary,
    /// In recovery (a hot standby).
    Standby,
    /// A standby if any is up, otherwise any server.
    PreferStandby,
    /// `transaction_read_only` is on (a standby or a read-only primary).
    ReadOnly,
    /// Any reachable server.
    Any,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadWrite => "read-write",
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::PreferStandby => "prefer-standby",
            Role::ReadOnly => "read-only",
            Role::Any => "any",
        }
    }
}

/// What an alias answers when no candidate matches its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoMatchPolicy {
    /// Keep answering the last target that matched (SERVFAIL if none ever did).
    KeepLast,
    /// Answer SERVFAIL so clients fail fast instead of reaching a wrong server.
    Servfail,
}

impl NoMatchPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            NoMatchPolicy::KeepLast => "keep-last",
            NoMatchPolicy::Servfail => "servfail",
        }
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

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml(path, &text)
    }

    /// Validates `text` as if read from `path` (used by tests and `check-config`).
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let located = Located::at(path, text, e.span(), e.message().trim().to_string());
            ConfigError::from(with_toml_hint(located))
        })?;
        validate::validate(path, text, raw)
    }

    /// The alias whose name equals `name`.
    pub fn alias(&self, name: &DnsName) -> Option<&Alias> {
        self.aliases.iter().find(|a| &a.name == name)
    }
}

/// Adds a hint to the parser's messages that are common enough to deserve one.
fn with_toml_hint(l: Located) -> Located {
    let m = l.message.clone();
    if m.contains("unknown field `password`") {
        return l;
    }
    if m.starts_with("unknown field") {
        return l.hint("check the spelling against the README's configuration reference");
    }
    if m.starts_with("unknown variant") {
        return l.hint("use one of the values listed above");
    }
    if m.starts_with("missing field") {
        return l.hint("add the missing key to this table");
    }
    l
}
