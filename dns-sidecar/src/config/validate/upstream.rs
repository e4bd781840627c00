//! `[upstream]`: where names outside the zones are forwarded.

use std::net::SocketAddr;
use std::time::Duration;

use super::ctx::Ctx;
use super::human;
use crate::config::raw::RawUpstream;
use crate::config::{ConfigError, UpstreamSettings};

/// Longest `[upstream] timeout`. A stub resolver gives up on a query after a
/// few seconds (glibc: 5 s), so an answer later than this reaches nobody,
/// while every query waiting for it holds an in-flight slot and its bytes.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);

/// `listen`: this sidecar's own DNS addresses, which must not be an upstream.
pub(super) fn check(
    cx: &Ctx<'_>,
    raw: Option<RawUpstream>,
    listen: &[SocketAddr],
) -> Result<Option<UpstreamSettings>, ConfigError> {
    let Some(u) = raw else {
        return Ok(None);
    };
    let servers: Vec<SocketAddr> = u.servers.get_ref().iter().map(|a| a.0).collect();
    if servers.is_empty() {
        return cx.err(
            Some(u.servers.span()),
            "`upstream.servers` is empty",
            "name at least one resolver (Azure: \"168.63.129.16\"), or remove [upstream] to refuse other names",
        );
    }
    if let Some(s) = servers
        .iter()
        .find(|s| listen.iter().any(|l| forwards_to_self(*l, **s)))
    {
        return cx.err(
            Some(u.servers.span()),
            format!("upstream {s} is one of this sidecar's own listeners; forwarding to it would loop"),
            "point upstream at the resolver the sidecar itself should use (Azure: \"168.63.129.16\")",
        );
    }
    let timeout = u
        .timeout
        .as_ref()
        .map_or(Duration::from_millis(1500), |d| d.get_ref().0);
    if timeout.is_zero() {
        return cx.err(
            u.timeout.as_ref().map(|t| t.span()),
            "`upstream.timeout` must be more than zero",
            "it is how long each upstream gets before the next is tried; \
            e.g. timeout = \"1500ms\" (the default)",
        );
    }
    if timeout > MAX_TIMEOUT {
        return cx.err(
            u.timeout.as_ref().map(|t| t.span()),
            format!(
                "`upstream.timeout` of {} is longer than the maximum, {}",
                human(timeout),
                human(MAX_TIMEOUT)
            ),
            "clients give up after a few seconds (glibc: 5s), so a later answer reaches nobody; \
            e.g. timeout = \"1500ms\" (the default)",
        );
    }
    let max_fails = match &u.max_fails {
        None => 5,
        Some(v) if *v.get_ref() >= 1 => *v.get_ref(),
        Some(v) => {
            return cx.err(
                Some(v.span()),
                "`upstream.max_fails` must be at least 1",
                "max_fails = 5 is the default",
            )
        }
    };
    let health_check = u
        .health_check
        .as_ref()
        .map_or(Duration::from_secs(1), |d| d.get_ref().0);
    if health_check < Duration::from_millis(100) {
        return cx.err(
            u.health_check.as_ref().map(|h| h.span()),
            format!("`upstream.health_check` of {} is too short", human(health_check)),
            "use 100ms or more; the default is \"1s\"",
        );
    }
    Ok(Some(UpstreamSettings {
        servers,
        timeout,
        max_fails,
        health_check,
    }))
}

/// True when a query sent to `upstream` would arrive at listener `listen`.
pub fn forwards_to_self(listen: SocketAddr, upstream: SocketAddr) -> bool {
    listen.port() == upstream.port()
        && (listen.ip() == upstream.ip()
            || (listen.ip().is_unspecified() && (upstream.ip().is_loopback() || upstream.ip().is_unspecified())))
}
