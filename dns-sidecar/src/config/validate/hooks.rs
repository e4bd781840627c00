//! An alias's `on_change` hook: the command, its time limit and the
//! environment it may see (never the sidecar's secrets).

use std::time::Duration;

use toml::Spanned;

use super::ctx::Ctx;
use crate::config::raw::RawAlias;
use crate::config::{ConfigError, Hook, DEFAULT_HOOK_ENV};
use crate::name::DnsName;

/// `secret_vars`: the variables that hold a password or the admin token.
pub(super) fn on_change(
    cx: &Ctx<'_>,
    a: &RawAlias,
    name: &DnsName,
    secret_vars: &[String],
) -> Result<Option<Hook>, ConfigError> {
    let Some(argv) = &a.on_change else {
        return Ok(None);
    };
    if argv.get_ref().is_empty() || argv.get_ref()[0].is_empty() {
        return cx.err(
            Some(argv.span()),
            format!("alias `{name}` has an empty on_change"),
            "give the program and its arguments, e.g. on_change = [\"/usr/local/bin/sync-dns\", \"--zone\", \"db.internal\"]",
        );
    }
    let timeout = a
        .on_change_timeout
        .as_ref()
        .map_or(Duration::from_secs(30), |d| d.get_ref().0);
    if timeout.is_zero() {
        return cx.err(
            a.on_change_timeout.as_ref().map(|t| t.span()),
            format!("alias `{name}` has `on_change_timeout` of 0s; the hook would be killed before it starts"),
            "give it time to finish, e.g. on_change_timeout = \"30s\" (the default)",
        );
    }
    Ok(Some(Hook {
        argv: argv.get_ref().clone(),
        timeout,
        env: hook_env(cx, &a.on_change_env, secret_vars)?,
    }))
}

/// The variables passed to the hook: names or `PREFIX*`, never `*`, and
/// none that holds a secret.
fn hook_env(
    cx: &Ctx<'_>,
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
    secrets: &[String],
) -> Result<Vec<String>, ConfigError> {
    let Some(list) = raw else {
        return Ok(DEFAULT_HOOK_ENV.iter().map(|s| s.to_string()).collect());
    };
    let mut out = Vec::new();
    for v in list.get_ref() {
        let name = v.get_ref();
        let stem = name.strip_suffix('*').unwrap_or(name);
        if stem.is_empty() && name != "*"
            || stem.contains('*')
            || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return cx.err(
                Some(v.span()),
                format!("`{name}` is not an environment variable name (or `PREFIX*`)"),
                "write e.g. \"HOME\" or \"AZURE_*\"",
            );
        }
        if name == "*" {
            return cx.err(
                Some(v.span()),
                "`*` would hand the hook every variable, secrets included",
                "list the variables the hook needs, e.g. [\"PATH\", \"HOME\", \"AZURE_*\"]",
            );
        }
        let matches = |s: &String| {
            if name.ends_with('*') {
                s.starts_with(stem)
            } else {
                s == name
            }
        };
        if let Some(secret) = secrets.iter().find(|s| matches(s)) {
            return cx.err(
                Some(v.span()),
                format!("`{name}` would pass `{secret}`, which holds a password or the admin token, to the hook"),
                "hooks must not see the sidecar's secrets; give the hook its own credentials",
            );
        }
        out.push(name.clone());
    }
    Ok(out)
}
