//! Cross-field checks and defaults: raw TOML tables -> [`Config`].
//!
//! One file per table (`dns`, `upstream`, `forward`, `zones`, `probe`, `servers`,
//! `aliases` with their `hooks`, `admin`, `state`, `limits`, `cache`), each
//! with a `check` that turns its raw table into typed settings, reporting
//! through [`ctx::Ctx`] (file, line, hint). [`validate`] runs them in the
//! order of the tables in the reference and stops at the first error; the
//! later tables' checks take the earlier results they depend on (aliases
//! need the zones, the servers and the probe timing).

mod admin;
mod aliases;
mod cache;
mod ctx;
mod dns;
mod forward;
mod hooks;
mod limits;
mod password;
mod probe;
mod servers;
mod state;
mod upstream;
mod zones;

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawAdmin, RawConfig};
use super::{Config, ConfigError, ConfigWarning, HumanDuration, Secrets};
use ctx::Ctx;

pub(crate) use upstream::forwards_to_self;

pub(super) fn validate(
    path: &Path,
    text: &str,
    raw: RawConfig,
    secrets: Secrets,
) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
    let cx = Ctx::new(path, text, secrets);
    let dns = dns::check(&cx, &raw.dns)?;
    let upstream = upstream::check(&cx, raw.upstream, &dns.listen)?;
    let zones = zones::check(&cx, raw.zones)?;
    let forward = forward::check(&cx, raw.forward, &dns.listen, &zones)?;
    let probe = probe::check(&cx, &raw.probe)?;
    let servers = servers::check(&cx, &raw.probe, raw.servers)?;
    let secret_vars = secret_vars(raw.admin.as_ref(), &servers.secret_vars);
    let aliases = aliases::check(&cx, raw.aliases, &zones, &servers.list, &probe, &secret_vars)?;
    aliases::targets_are_not_aliases(&cx, &servers, &aliases)?;
    let admin = admin::check(&cx, raw.admin)?;
    let state = state::check(&cx, raw.state)?;
    let limits = limits::check(&cx, &raw.limits)?;
    let cache = cache::check(&cx, &raw.cache)?;
    let config = Config {
        path: path.to_path_buf(),
        dns,
        upstream,
        forward,
        zones,
        probe,
        servers: servers.list,
        aliases,
        admin,
        state,
        limits,
        cache,
    };
    Ok((config, cx.warnings()))
}

/// The environment variables that hold secrets (the admin token's, then the
/// probe passwords'): they must never reach a hook.
fn secret_vars(admin: Option<&RawAdmin>, probe: &[String]) -> Vec<String> {
    let mut secret_vars: Vec<String> = admin
        .and_then(|a| a.token_env.as_ref())
        .map(|v| v.get_ref().clone())
        .into_iter()
        .collect();
    secret_vars.extend(probe.iter().cloned());
    secret_vars
}

/// A timeout of at least 100ms (`key` as written in the file, with its
/// table), or `default` when not set.
fn at_least_100ms(
    cx: &Ctx<'_>,
    v: &Option<Spanned<HumanDuration>>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let got = v.as_ref().map_or(default, |d| d.get_ref().0);
    if got < Duration::from_millis(100) {
        return cx.err(
            v.as_ref().map(|v| v.span()),
            format!("`{key}` of {} is too short", human(got)),
            format!("use 100ms or more; the default is {}", human(default)),
        );
    }
    Ok(got)
}

/// A duration as people write it in the config (`0s` rather than `0ns`).
fn human(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        format!("{d:?}")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const BASE: &str = "[dns]\nlisten = [\"127.0.0.1:5353\"]\n[[zones]]\nname = \"db.internal\"\n\
        [probe]\nuser = \"probe\"\nsslmode = \"require\"\n[servers.a]\ntarget = \"pg-a.example.com\"\n\
        [[aliases]]\nname = \"prod.db.internal\"\nservers = [\"a\"]\n";

    /// The admin and limits timeouts share one check: each names its own
    /// table and key, where it is written, and its own default.
    #[test]
    fn short_timeouts_name_their_table_key_and_default() {
        for (table, key, default) in [
            ("admin", "header_timeout", "5s"),
            ("admin", "request_timeout", "10s"),
            ("admin", "body_timeout", "2s"),
            ("limits", "tcp_idle_timeout", "10s"),
            ("limits", "tcp_write_timeout", "5s"),
        ] {
            let text = format!("{BASE}[{table}]\n{key} = \"50ms\"\n");
            let err = Config::from_toml(Path::new("t.toml"), &text).unwrap_err().to_string();
            // The value's place: the line after the table's header.
            let line = BASE.lines().count() + 2;
            let want = format!("t.toml:{line}:{}: `{table}.{key}` of 50ms is too short", key.len() + 4);
            assert!(err.starts_with(&want), "{err}");
            assert!(
                err.contains(&format!("hint: use 100ms or more; the default is {default}")),
                "{err}"
            );
        }
    }
}
