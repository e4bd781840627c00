//! `[upstream]`: where names outside the zones are forwarded; also the
//! settings every `[[forward]]` zone shares with it (see [`super::forward`]).

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::ctx::Ctx;
use super::human;
use crate::config::raw::RawUpstream;
use crate::config::values::{DnsAddr, HumanDuration};
use crate::config::{ConfigError, UpstreamSettings};

/// Longest `[upstream] timeout`. A stub resolver gives up on a query after a
/// few seconds (glibc: 5 s), so an answer later than this reaches nobody,
/// while every query waiting for it holds an in-flight slot and its bytes.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(5);

/// `listen`: this sidecar's own DNS addresses, which must not be an upstream.
pub(super) fn check(
    cx: &Ctx<'_>,
    raw: Option<RawUpstream>,
    listen: &[SocketAddr],
) -> Result<Option<UpstreamSettings>, ConfigError> {
    let Some(u) = raw else {
        return Ok(None);
    };
    let fields = Fields {
        table: "upstream",
        servers: &u.servers,
        timeout: &u.timeout,
        max_fails: &u.max_fails,
        health_check: &u.health_check,
    };
    settings(
        cx,
        &fields,
        listen,
        "name at least one resolver (Azure: \"168.63.129.16\"), or remove [upstream] to refuse other names",
    )
    .map(Some)
}

/// The keys `[upstream]` and each `[[forward]]` share, as written;
/// `table` names the table in messages (`upstream`, `forward`).
pub(super) struct Fields<'a> {
    pub(crate) table: &'a str,
    pub(crate) servers: &'a Spanned<Vec<DnsAddr>>,
    pub(crate) timeout: &'a Option<Spanned<HumanDuration>>,
    pub(crate) max_fails: &'a Option<Spanned<u32>>,
    pub(crate) health_check: &'a Option<Spanned<HumanDuration>>,
}

/// Checks the shared keys and applies their defaults; `empty_hint` is the
/// hint for an empty `servers` list.
pub(super) fn settings(
    cx: &Ctx<'_>,
    f: &Fields<'_>,
    listen: &[SocketAddr],
    empty_hint: &str,
) -> Result<UpstreamSettings, ConfigError> {
    let table = f.table;
    let servers = servers(cx, f, listen, empty_hint)?;
    let timeout = timeout(cx, f)?;
    let max_fails = match f.max_fails {
        None => 5,
        Some(v) if *v.get_ref() >= 1 => *v.get_ref(),
        Some(v) => {
            return cx.err(
                Some(v.span()),
                format!("`{table}.max_fails` must be at least 1"),
                "max_fails = 5 is the default",
            )
        }
    };
    let health_check = f
        .health_check
        .as_ref()
        .map_or(Duration::from_secs(1), |d| d.get_ref().0);
    if health_check < Duration::from_millis(100) {
        return cx.err(
            f.health_check.as_ref().map(|h| h.span()),
            format!("`{table}.health_check` of {} is too short", human(health_check)),
            "use 100ms or more; the default is \"1s\"",
        );
    }
    Ok(UpstreamSettings {
        servers,
        timeout,
        max_fails,
        health_check,
    })
}

/// `servers`: not empty, and none of them this sidecar's own listener.
fn servers(
    cx: &Ctx<'_>,
    f: &Fields<'_>,
    listen: &[SocketAddr],
    empty_hint: &str,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let table = f.table;
    let servers: Vec<SocketAddr> = f.servers.get_ref().iter().map(|a| a.0).collect();
    if servers.is_empty() {
        return cx.err(
            Some(f.servers.span()),
            format!("`{table}.servers` is empty"),
            empty_hint,
        );
    }
    if let Some(s) = servers
        .iter()
        .find(|s| listen.iter().any(|l| forwards_to_self(*l, **s)))
    {
        return cx.err(
            Some(f.servers.span()),
            format!("{table} {s} is one of this sidecar's own listeners; forwarding to it would loop"),
            if table == "upstream" {
                "point upstream at the resolver the sidecar itself should use (Azure: \"168.63.129.16\")"
            } else {
                "list the resolvers that serve this zone (another sidecar or forwarder tier, a VPN resolver), not this sidecar's own listen address"
            },
        );
    }
    Ok(servers)
}

/// `timeout`: more than zero and at most [`MAX_TIMEOUT`] (default 1500ms).
fn timeout(cx: &Ctx<'_>, f: &Fields<'_>) -> Result<Duration, ConfigError> {
    let table = f.table;
    let timeout = f
        .timeout
        .as_ref()
        .map_or(Duration::from_millis(1500), |d| d.get_ref().0);
    if timeout.is_zero() {
        return cx.err(
            f.timeout.as_ref().map(|t| t.span()),
            format!("`{table}.timeout` must be more than zero"),
            "it is how long each upstream gets before the next is tried; e.g. timeout = \"1500ms\" (the default)",
        );
    }
    if timeout > MAX_TIMEOUT {
        return cx.err(
            f.timeout.as_ref().map(|t| t.span()),
            format!(
                "`{table}.timeout` of {} is longer than the maximum, {}",
                human(timeout),
                human(MAX_TIMEOUT)
            ),
            "clients give up after a few seconds (glibc: 5s), so a later answer reaches nobody; e.g. timeout = \"1500ms\" (the default)",
        );
    }
    Ok(timeout)
}

/// True when a query sent to `upstream` would arrive at listener `listen`.
pub(crate) fn forwards_to_self(listen: SocketAddr, upstream: SocketAddr) -> bool {
    listen.port() == upstream.port()
        && (listen.ip() == upstream.ip()
            || (listen.ip().is_unspecified() && (upstream.ip().is_loopback() || upstream.ip().is_unspecified())))
}
