//! `[admin]`: the HTTP listener for status, metrics and overrides, and its
//! token.

use std::net::SocketAddr;

use toml::Spanned;

use super::at_least_100ms;
use super::ctx::{Ctx, Owner};
use crate::config::raw::RawAdmin;
use crate::config::{AdminSettings, ConfigError, Secret, DEFAULT_ADMIN_LISTEN, DEFAULT_ADMIN_PORT};

pub(super) fn check(cx: &Ctx<'_>, raw: Option<RawAdmin>) -> Result<AdminSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(AdminSettings {
            listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("literal")),
            token: None,
            ..AdminSettings::default()
        });
    };
    let listen = listen(cx, &raw)?;
    let token = token(cx, &raw)?;
    let token_configured = raw.token_env.is_some() || raw.token_file.is_some();
    if let (Some(l), false) = (listen, token_configured) {
        if !l.ip().is_loopback() {
            tracing::warn!(
                listen = %l,
                "admin listener is not on loopback and has no token: overrides are only accepted from loopback peers"
            );
        }
    }
    let d = AdminSettings::default();
    let max_connections = match &raw.max_connections {
        None => d.max_connections,
        Some(v) => connections(
            cx,
            v,
            "max_connections",
            "max_connections = 32 is the default; at least 2, as places are kept for health checks",
        )?,
    };
    let max_connections_per_client = match &raw.max_connections_per_client {
        None => d.max_connections_per_client,
        Some(v) => connections(
            cx,
            v,
            "max_connections_per_client",
            "max_connections_per_client = 8 is the default; at least 2, as places are kept for health checks",
        )?,
    };
    Ok(AdminSettings {
        listen,
        token,
        header_timeout: at_least_100ms(cx, &raw.header_timeout, "admin.header_timeout", d.header_timeout)?,
        request_timeout: at_least_100ms(cx, &raw.request_timeout, "admin.request_timeout", d.request_timeout)?,
        max_connections,
        body_timeout: at_least_100ms(cx, &raw.body_timeout, "admin.body_timeout", d.body_timeout)?,
        max_connections_per_client,
    })
}

/// `listen` (an address, default port allowed), or none when `enabled = false`.
fn listen(cx: &Ctx<'_>, raw: &RawAdmin) -> Result<Option<SocketAddr>, ConfigError> {
    match (&raw.enabled, &raw.listen) {
        (Some(false), _) => Ok(None),
        (_, None) => Ok(Some(DEFAULT_ADMIN_LISTEN.parse().expect("literal"))),
        (_, Some(l)) => match admin_addr(l.get_ref()) {
            Some(a) => Ok(Some(a)),
            None => cx.err(
                Some(l.span()),
                format!("`{}` is not an IP address with an optional port", l.get_ref()),
                format!(
                    "e.g. listen = \"{DEFAULT_ADMIN_LISTEN}\", or \"127.0.0.1\" for the default port {DEFAULT_ADMIN_PORT}; host names are not accepted"
                ),
            ),
        },
    }
}

/// The bearer token from `token_env` or `token_file` (one of them at most).
fn token(cx: &Ctx<'_>, raw: &RawAdmin) -> Result<Option<Secret>, ConfigError> {
    match (&raw.token_env, &raw.token_file) {
        (Some(_), Some(f)) => cx.err(
            Some(f.span()),
            "[admin] has both token_env and token_file",
            "keep one of them",
        ),
        (Some(var), None) => match std::env::var(var.get_ref()) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim().to_string()))),
            _ => cx.missing_secret(
                var.span(),
                format!("environment variable `{}` is not set or empty", var.get_ref()),
                Owner::AdminToken,
                format!("export {}=... before starting, or remove token_env", var.get_ref()),
            ),
        },
        (None, Some(file)) => match std::fs::read_to_string(file.get_ref()) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim().to_string()))),
            Ok(_) => cx.missing_secret(
                file.span(),
                format!("token_file `{}` is empty", file.get_ref().display()),
                Owner::AdminToken,
                "write a long random token into it".into(),
            ),
            Err(e) => cx.missing_secret(
                file.span(),
                format!("cannot read token_file `{}`: {e}", file.get_ref().display()),
                Owner::AdminToken,
                "check the path and that this user may read it".into(),
            ),
        },
        (None, None) => Ok(None),
    }
}

/// A connection limit `admin.<key>` in 2..=4096 (at least 2, as places are
/// kept for health checks); `hint` says its default.
fn connections(cx: &Ctx<'_>, v: &Spanned<u32>, key: &str, hint: &str) -> Result<usize, ConfigError> {
    if (2..=4096).contains(v.get_ref()) {
        return Ok(*v.get_ref() as usize);
    }
    cx.err(
        Some(v.span()),
        format!("`admin.{key} = {}` is outside 2..=4096", v.get_ref()),
        hint,
    )
}

/// `"127.0.0.1:9153"`, `"127.0.0.1"` (default port), `"[::1]:9153"`, `"::1"`.
fn admin_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    ip.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, DEFAULT_ADMIN_PORT))
}
