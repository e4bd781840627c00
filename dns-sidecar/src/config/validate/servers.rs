//! `[servers.<id>]`: the PostgreSQL servers to probe, each with its
//! connection settings (`[probe]`'s as defaults) and password.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::ctx::Ctx;
use crate::config::raw::{RawConn, RawProbe, RawServer};
use crate::config::{ConfigError, ConnSettings, RootCert, Server, SslMode};
use crate::name::DnsName;

/// The servers, in the order of their ids (which is their [`crate::config::ServerId`]).
pub(super) struct Servers {
    pub(crate) list: Vec<Server>,
    /// Where each server's `target` is written, for checks that need the
    /// aliases (see [`super::aliases::targets_are_not_aliases`]).
    pub(crate) target_spans: Vec<Range<usize>>,
    /// The environment variables that hold probe passwords (they must never
    /// reach a hook).
    pub(crate) secret_vars: Vec<String>,
}

pub(super) fn check(
    cx: &Ctx<'_>,
    probe: &RawProbe,
    raw: BTreeMap<String, Spanned<RawServer>>,
) -> Result<Servers, ConfigError> {
    let defaults = probe.conn();
    let mut probe_secret_vars: Vec<String> = defaults.password_env.iter().map(|v| v.get_ref().clone()).collect();
    let mut servers = Vec::new();
    let mut target_spans = Vec::new();
    for (id, s) in raw {
        let span = s.span();
        let s = s.into_inner();
        let target = s.target.get_ref().clone();
        let raw_conn = s.conn().or(defaults.clone());
        probe_secret_vars.extend(raw_conn.password_env.iter().map(|v| v.get_ref().clone()));
        let conn = conn_settings(cx, &id, span, &target, s.host.clone(), s.hostaddr, raw_conn)?;
        target_spans.push(s.target.span());
        servers.push(Server { id, target, conn });
    }
    Ok(Servers {
        list: servers,
        target_spans,
        secret_vars: probe_secret_vars,
    })
}

fn conn_settings(
    cx: &Ctx<'_>,
    id: &str,
    span: Range<usize>,
    target: &DnsName,
    host: Option<String>,
    hostaddr: Option<std::net::IpAddr>,
    c: RawConn,
) -> Result<ConnSettings, ConfigError> {
    if let Some(p) = &c.password {
        return cx.err(
            Some(p.span()),
            "inline passwords are not accepted, so they never end up in a repository or a ConfigMap",
            "use password_env, password_file, password_command or entra_identity (see the configuration reference)",
        );
    }
    let password = super::password::source(cx, id, &c)?;
    let Some(user) = c.user else {
        return cx.err(
            Some(span),
            format!("server `{id}` has no `user`"),
            "set user = \"...\" in [probe] (for all servers) or in this server's table",
        );
    };
    let sslmode = c.sslmode.unwrap_or(SslMode::VerifyFull);
    let sslrootcert = match &c.sslrootcert {
        None => RootCert::System,
        Some(s) if s.get_ref() == "system" => RootCert::System,
        Some(s) => {
            let p = PathBuf::from(s.get_ref());
            if matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && !p.is_file() {
                return cx.err(
                    Some(s.span()),
                    format!("sslrootcert `{}` is not a readable file", p.display()),
                    "give the CA bundle's path, or \"system\" for the OS trust store",
                );
            }
            RootCert::File(p)
        }
    };
    Ok(ConnSettings {
        host: host.unwrap_or_else(|| target.without_dot().to_string()),
        hostaddr,
        port: c.port.unwrap_or(5432),
        user,
        dbname: c.dbname.unwrap_or_else(|| "postgres".into()),
        sslmode,
        sslrootcert,
        password,
        application_name: c.application_name.unwrap_or_else(|| "dns-sidecar".into()),
    })
}
