//! `[[aliases]]`: the names the sidecar answers, each inside a zone, with
//! its candidate servers and its lag limit (its hook is in
//! [`super::hooks`]); and the check that no server's target is an alias.

use super::ctx::Ctx;
use super::hooks::on_change;
use super::servers::Servers;
use crate::config::raw::RawAlias;
use crate::config::{
    Alias, ConfigError, MaxLag, NoMatchPolicy, Prefer, ProbeTiming, Role, Server, ServerId, Spread, Zone, MAX_WEIGHT,
};
use crate::name::DnsName;

/// `secret_vars`: the variables no hook may be given.
pub(super) fn check(
    cx: &Ctx<'_>,
    raw: Vec<RawAlias>,
    zones: &[Zone],
    servers: &[Server],
    probe: &ProbeTiming,
    secret_vars: &[String],
) -> Result<Vec<Alias>, ConfigError> {
    let mut aliases: Vec<Alias> = Vec::new();
    for a in raw {
        let name = a.name.get_ref().clone();
        if aliases.iter().any(|o| o.name == name) {
            return cx.err(
                Some(a.name.span()),
                format!("alias `{name}` is declared twice"),
                "each alias name may appear once",
            );
        }
        aliases.push(alias(cx, a, zones, servers, probe, secret_vars)?);
    }
    Ok(aliases)
}

fn alias(
    cx: &Ctx<'_>,
    a: RawAlias,
    zones: &[Zone],
    servers: &[Server],
    probe: &ProbeTiming,
    secret_vars: &[String],
) -> Result<Alias, ConfigError> {
    let name = a.name.get_ref().clone();
    in_a_zone(cx, &a, &name, zones)?;
    let refs = candidates(cx, &a, &name, servers)?;
    let role = a.role.unwrap_or(Role::ReadWrite);
    let max_lag = max_lag(cx, &a, &name, role, probe)?;
    let on_change = on_change(cx, &a, &name, secret_vars)?;
    let (spread, weights, prefer) = spread(cx, &a, &name, role, &refs, servers)?;
    Ok(Alias {
        spread,
        weights,
        prefer,
        on_change,
        max_lag,
        name,
        ttl: a.ttl.map_or(5, |t| t.0),
        role,
        servers: refs,
        on_no_match: a.on_no_match.unwrap_or(NoMatchPolicy::KeepLast),
    })
}

/// The alias must be below the apex of a zone the sidecar serves.
fn in_a_zone(cx: &Ctx<'_>, a: &RawAlias, name: &DnsName, zones: &[Zone]) -> Result<(), ConfigError> {
    match zones
        .iter()
        .filter(|z| name.is_within(&z.name))
        .max_by_key(|z| z.name.label_count())
    {
        None => {
            let parent = name.as_str().split_once('.').map_or(".", |(_, p)| p).to_string();
            cx.err(
                Some(a.name.span()),
                format!("alias `{name}` is not inside any zone, so the sidecar would not be authoritative for it"),
                format!("add a zone: [[zones]] name = \"{parent}\""),
            )
        }
        Some(z) if z.name == *name => cx.err(
            Some(a.name.span()),
            format!("alias `{name}` is the apex of its zone; the apex holds SOA and NS and cannot be a CNAME"),
            format!("use a name below the zone, e.g. \"prod.{name}\""),
        ),
        Some(_) => Ok(()),
    }
}

/// The alias's candidate servers, as indexes into `servers`: at least one,
/// each defined, none twice.
fn candidates(cx: &Ctx<'_>, a: &RawAlias, name: &DnsName, servers: &[Server]) -> Result<Vec<ServerId>, ConfigError> {
    if a.servers.get_ref().is_empty() {
        return cx.err(
            Some(a.servers.span()),
            format!("alias `{name}` has no servers"),
            "list the ids of its candidate [servers.<id>] tables",
        );
    }
    let ids: Vec<&str> = servers.iter().map(|s| s.id.as_str()).collect();
    let mut refs = Vec::new();
    for sref in a.servers.get_ref() {
        let Some(idx) = ids.iter().position(|id| *id == sref.get_ref().as_str()) else {
            let known = if ids.is_empty() {
                "none are defined".to_string()
            } else {
                format!("defined: {}", ids.join(", "))
            };
            return cx.err(
                Some(sref.span()),
                format!(
                    "alias `{name}` names server `{}`, which has no [servers.{}] table",
                    sref.get_ref(),
                    sref.get_ref()
                ),
                known,
            );
        };
        let idx = ServerId::new(idx);
        if refs.contains(&idx) {
            return cx.err(
                Some(sref.span()),
                format!("alias `{name}` lists server `{}` twice", sref.get_ref()),
                "remove the duplicate",
            );
        }
        refs.push(idx);
    }
    Ok(refs)
}

/// An alias's lag limit: only for reader roles, non-zero, and (for time)
/// long enough to be measured by probes.
fn max_lag(cx: &Ctx<'_>, a: &RawAlias, name: &DnsName, role: Role, probe: &ProbeTiming) -> Result<MaxLag, ConfigError> {
    let limit = MaxLag {
        bytes: a.max_lag.as_ref().map(|b| b.get_ref().0),
        time: a.max_lag_time.as_ref().map(|t| t.get_ref().0),
    };
    let first = a
        .max_lag
        .as_ref()
        .map(|b| b.span())
        .or_else(|| a.max_lag_time.as_ref().map(|t| t.span()));
    if limit.is_set() && !role.reads_standbys() {
        return cx.err(
            first,
            format!(
                "alias `{name}` has role `{}`, which never chooses a standby, so a lag limit cannot apply",
                role.as_str()
            ),
            "use max_lag / max_lag_time on a reader alias (role = \"prefer-standby\", \"standby\" or \"read-only\"), or remove it",
        );
    }
    if let (Some(0), Some(b)) = (limit.bytes, &a.max_lag) {
        return cx.err(
            Some(b.span()),
            "`max_lag` must be more than zero",
            "the primary writes between two probes, so 0 would exclude every standby most of the time; e.g. max_lag = \"16MiB\"",
        );
    }
    let shortest = probe.interval * 2;
    if let (Some(t), Some(raw)) = (limit.time, &a.max_lag_time) {
        if t < shortest {
            return cx.err(
                Some(raw.span()),
                format!("`max_lag_time` of {t:?} is shorter than two probe intervals ({shortest:?})"),
                format!(
                    "the lag is measured from the probes, which are up to one interval old each; use at least {shortest:?}, e.g. max_lag_time = \"5s\""
                ),
            );
        }
    }
    Ok(limit)
}

/// A reader alias's `spread`, `weights` (one per candidate, in `refs`
/// order) and `prefer`: only on reader roles (a writer alias must name
/// exactly one server), weights only with a set (`rotate`, `client`), each
/// naming one of the alias's servers, at most [`MAX_WEIGHT`], not all zero.
fn spread(
    cx: &Ctx<'_>,
    a: &RawAlias,
    name: &DnsName,
    role: Role,
    refs: &[ServerId],
    servers: &[Server],
) -> Result<(Spread, Vec<u32>, Prefer), ConfigError> {
    let first = (a.spread.as_ref().map(|s| s.span()))
        .or_else(|| a.prefer.as_ref().map(|p| p.span()))
        .or_else(|| a.weights.as_ref().map(|w| w.span()));
    if first.is_some() && !role.reads_standbys() {
        return cx.err(
            first,
            format!(
                "alias `{name}` has role `{}`: spread, weights and prefer apply only to reader aliases",
                role.as_str()
            ),
            "an alias that writes (read-write, primary) or follows any server must answer exactly one server at a time, the one the decision chose; use them on a role = \"standby\", \"prefer-standby\" or \"read-only\" alias",
        );
    }
    let spread = a.spread.as_ref().map_or(Spread::First, |s| *s.get_ref());
    let prefer = a.prefer.as_ref().map_or(Prefer::Order, |p| *p.get_ref());
    let mut weights = vec![1; refs.len()];
    let Some(raw) = &a.weights else {
        return Ok((spread, weights, prefer));
    };
    if !spread.is_set() {
        return cx.err(
            Some(raw.span()),
            format!("alias `{name}` has weights but spread = \"first\", which answers one server"),
            "set spread = \"rotate\" or \"client\", or remove weights",
        );
    }
    for (id, w) in raw.get_ref() {
        let Some(k) = refs.iter().position(|&s| servers[s].id == *id.get_ref()) else {
            let listed: Vec<&str> = refs.iter().map(|&s| servers[s].id.as_str()).collect();
            return cx.err(
                Some(id.span()),
                format!(
                    "alias `{name}` has a weight for `{}`, which is not one of its servers",
                    id.get_ref()
                ),
                format!("weights name the alias's own servers: {}", listed.join(", ")),
            );
        };
        if *w.get_ref() > MAX_WEIGHT {
            return cx.err(
                Some(w.span()),
                format!("weight {} is more than {MAX_WEIGHT}", w.get_ref()),
                "weights are relative: e.g. 2 and 1 send two answers to the first for one to the second",
            );
        }
        weights[k] = *w.get_ref();
    }
    if weights.iter().all(|&w| w == 0) {
        return cx.err(
            Some(raw.span()),
            format!("alias `{name}` has weight 0 for every server"),
            "weight 0 marks a backup, answered only when no weighted server matches; give at least one server a weight",
        );
    }
    Ok((spread, weights, prefer))
}

/// No server's `target` may be an alias.
pub(super) fn targets_are_not_aliases(cx: &Ctx<'_>, servers: &Servers, aliases: &[Alias]) -> Result<(), ConfigError> {
    // A CNAME from an alias to itself (or to another alias) is a loop, or a
    // chain no client expects: a server's target is its own DNS name.
    for (i, s) in servers.list.iter().enumerate() {
        if let Some(a) = aliases.iter().find(|a| a.name == s.target) {
            return cx.err(
                Some(servers.target_spans[i].clone()),
                format!(
                    "server `{}` has target `{}`, which is an alias; the alias would answer a CNAME to an alias",
                    s.id, a.name
                ),
                "`target` is the server's own DNS name (e.g. \"pg-prod-eastus.privatelink.postgres.database.azure.com\"); the alias is the name applications use",
            );
        }
    }
    Ok(())
}
