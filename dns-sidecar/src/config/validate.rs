//! Cross-field checks and defaults: raw TOML tables -> [`Config`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawConfig, RawConn};
use super::*;

/// A place-aware error builder for one file.
struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err<T>(&self, span: Option<std::ops::Range<usize>>, msg: impl Into<String>, hint: impl Into<String>) -> Result<T, ConfigError> {
        let hint: String = hint.into();
        let l = Located::at(self.path, self.text, span, msg);
        Err(if hint.is_empty() { l } else { l.hint(hint) }.into())
    }
}

pub(super) fn validate(path: &Path, text: &str, raw: RawConfig) -> Result<Config, ConfigError> {
    let cx = Ctx { path, text };

    // [dns]
    let listen: Vec<SocketAddr> = raw.dns.listen.get_ref().iter().map(|a| a.0).collect();
    if listen.is_empty() {
        return cx.err(Some(raw.dns.listen.span()), "`dns.listen` is empty", "add at least one address, e.g. listen = [\"127.0.0.1:53\"]");
    }
    for (i, a) in listen.iter().enumerate() {
        if listen[..i].contains(a) {
            return cx.err(Some(raw.dns.listen.span()), format!("`dns.listen` names {a} twice"), "remove the duplicate");
        }
    }
    let max_udp_payload = match &raw.dns.max_udp_payload {
        None => 1232,
        Some(v) if (512..=4096).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            return cx.err(Some(v.span()), format!("`max_udp_payload = {}` is outside 512..=4096", v.get_ref()), "1232 (the DNS flag day value) avoids IP fragmentation")
        }
    };

    let allow = match &raw.dns.allow {
        Some(a) => {
            if a.get_ref().is_empty() {
                return cx.err(Some(a.span()), "`dns.allow` is empty, so every client would be refused", "list your clients' networks, e.g. allow = [\"10.0.0.0/8\"]");
            }
            a.get_ref().clone()
        }
        None => {
            if let Some(l) = listen.iter().find(|l| !l.ip().to_canonical().is_loopback()) {
                return cx.err(
                    Some(raw.dns.listen.span()),
                    format!("`dns.listen` has {l}, which is not loopback, but [dns] has no `allow` list (without one only loopback clients may query)"),
                    "add the networks of your clients to [dns], e.g. allow = [\"10.0.0.0/8\", \"127.0.0.1\"]; allow = [\"0.0.0.0/0\", \"::/0\"] would make this an open resolver for anyone who reaches it",
                );
            }
            Cidr::loopback()
        }
    };

    // [upstream]
    let upstream = match raw.upstream {
        None => None,
        Some(u) => {
            let servers: Vec<SocketAddr> = u.servers.get_ref().iter().map(|a| a.0).collect();
            if servers.is_empty() {
                return cx.err(Some(u.servers.span()), "`upstream.servers` is empty", "name at least one resolver (Azure: \"168.63.129.16\"), or remove [upstream] to refuse other names");
            }
            if let Some(s) = servers.iter().find(|s| listen.iter().any(|l| forwards_to_self(*l, **s))) {
                return cx.err(
                    Some(u.servers.span()),
                    format!("upstream {s} is one of this sidecar's own listeners; forwarding to it would loop"),
                    "point upstream at the resolver the sidecar itself should use (Azure: \"168.63.129.16\")",
                );
            }
            let timeout = u.timeout.map_or(Duration::from_millis(1500), |d| d.0);
            if timeout.is_zero() {
                return cx.err(None, "`upstream.timeout` must be more than zero", "e.g. timeout = \"1500ms\"");
            }
            let max_fails = match &u.max_fails {
                None => 5,
                Some(v) if *v.get_ref() >= 1 => *v.get_ref(),
                Some(v) => return cx.err(Some(v.span()), "`upstream.max_fails` must be at least 1", "max_fails = 5 is the default"),
            };
            let health_check = u.health_check.map_or(Duration::from_secs(1), |d| d.0);
            if health_check < Duration::from_millis(100) {
                return cx.err(None, format!("`upstream.health_check` of {health_check:?} is too short"), "use 100ms or more; the default is \"1s\"");
            }
            Some(UpstreamSettings { servers, timeout, max_fails, health_check })
        }
    };

    // [[zones]]
    let mut zones = Vec::new();
    for z in raw.zones {
        let name = z.name.get_ref().clone();
        let span = Some(z.name.span());
        if name.label_count() == 0 {
            return cx.err(
                span,
                "zone `.` (the root) cannot be served: the sidecar would be authoritative for every name and forward nothing",
                "name the zone that holds your aliases, e.g. name = \"db.internal\"",
            );
        }
        if zones.iter().any(|other: &Zone| other.name == name) {
            return cx.err(span, format!("zone `{name}` is declared twice"), "merge the two [[zones]] tables");
        }
        // The default NS and SOA names are built below the apex; a zone name
        // near the 253-character limit leaves no room for them.
        let child = |label: &str| {
            DnsName::parse(&format!("{label}.{}", name.as_str())).or_else(|e| {
                cx.err(span.clone(), format!("zone `{name}` is too long for its default `{label}.` name ({e})"), format!("shorten the zone name, or set {} explicitly", if label == "ns" { "nameservers" } else { "hostmaster" }))
            })
        };
        let nameservers = if z.nameservers.is_empty() { vec![child("ns")?] } else { z.nameservers };
        let hostmaster = match z.hostmaster {
            Some(h) => h,
            None => child("hostmaster")?,
        };
        zones.push(Zone {
            nameservers,
            hostmaster,
            ttl: z.ttl.map_or(300, |t| t.0),
            negative_ttl: z.negative_ttl.map_or(5, |t| t.0),
            serial: z.serial.unwrap_or(1),
            name,
        });
    }

    // [probe]
    let d = ProbeTiming::default();
    let p = &raw.probe;
    let probe = ProbeTiming {
        interval: p.interval.map_or(d.interval, |v| v.0),
        deadline: p.deadline.map_or(d.deadline, |v| v.0),
        fresh_connection_interval: p.fresh_connection_interval.map_or(d.fresh_connection_interval, |v| v.0),
        fall: positive(&cx, p.fall.as_ref(), "fall", d.fall)?,
        rise: positive(&cx, p.rise.as_ref(), "rise", d.rise)?,
    };
    if probe.interval < Duration::from_millis(10) {
        return cx.err(None, format!("`probe.interval` of {:?} is too short", probe.interval), "use 10ms or more; 100ms follows a promote within ~150ms");
    }
    if probe.deadline < Duration::from_millis(10) {
        return cx.err(None, format!("`probe.deadline` of {:?} is too short", probe.deadline), "a fresh TLS probe needs a few round trips; use e.g. \"1s\"");
    }
    let defaults = raw.probe.conn();
    let mut probe_secret_vars: Vec<String> = defaults.password_env.iter().map(|v| v.get_ref().clone()).collect();

    // [servers.<id>]
    let mut ids: Vec<String> = Vec::new();
    let mut servers = Vec::new();
    for (id, s) in raw.servers {
        let span = s.span();
        let s = s.into_inner();
        let raw_conn = s.conn().or(defaults.clone());
        probe_secret_vars.extend(raw_conn.password_env.iter().map(|v| v.get_ref().clone()));
        let conn = conn_settings(&cx, &id, span, &s.target, s.host.clone(), s.hostaddr, raw_conn)?;
        ids.push(id.clone());
        servers.push(Server { id, target: s.target, conn });
    }

    // Variables that hold secrets must never reach a hook.
    let mut secret_vars: Vec<String> = raw.admin.as_ref().and_then(|a| a.token_env.as_ref()).map(|v| v.get_ref().clone()).into_iter().collect();
    secret_vars.extend(probe_secret_vars.iter().cloned());

    // [[aliases]]
    let mut aliases: Vec<Alias> = Vec::new();
    for a in raw.aliases {
        let name = a.name.get_ref().clone();
        let span = Some(a.name.span());
        if aliases.iter().any(|o| o.name == name) {
            return cx.err(span, format!("alias `{name}` is declared twice"), "each alias name may appear once");
        }
        match zones.iter().filter(|z| name.is_within(&z.name)).max_by_key(|z| z.name.label_count()) {
            None => {
                let parent = name.as_str().split_once('.').map_or(".", |(_, p)| p).to_string();
                return cx.err(
                    span,
                    format!("alias `{name}` is not inside any zone, so the sidecar would not be authoritative for it"),
                    format!("add a zone: [[zones]] name = \"{parent}\""),
                );
            }
            Some(z) if z.name == name => {
                return cx.err(span, format!("alias `{name}` is the apex of its zone; the apex holds SOA and NS and cannot be a CNAME"), format!("use a name below the zone, e.g. \"prod.{name}\""));
            }
            Some(_) => {}
        }
        if a.servers.get_ref().is_empty() {
            return cx.err(Some(a.servers.span()), format!("alias `{name}` has no servers"), "list the ids of its candidate [servers.<id>] tables");
        }
        let mut refs = Vec::new();
        for sref in a.servers.get_ref() {
            let Some(idx) = ids.iter().position(|id| id == sref.get_ref()) else {
                let known = if ids.is_empty() { "none are defined".to_string() } else { format!("defined: {}", ids.join(", ")) };
                return cx.err(Some(sref.span()), format!("alias `{name}` names server `{}`, which has no [servers.{}] table", sref.get_ref(), sref.get_ref()), known);
            };
            if refs.contains(&idx) {
                return cx.err(Some(sref.span()), format!("alias `{name}` lists server `{}` twice", sref.get_ref()), "remove the duplicate");
            }
            refs.push(idx);
        }
        let on_change = match a.on_change {
            None => None,
            Some(argv) if argv.get_ref().is_empty() || argv.get_ref()[0].is_empty() => {
                return cx.err(Some(argv.span()), format!("alias `{name}` has an empty on_change"), "give the program and its arguments, e.g. on_change = [\"/usr/local/bin/sync-dns\", \"--zone\", \"db.internal\"]");
            }
            Some(argv) => Some(Hook { argv: argv.into_inner(), timeout: a.on_change_timeout.map_or(Duration::from_secs(30), |d| d.0), env: hook_env(&cx, &a.on_change_env, &secret_vars)? }),
        };
        aliases.push(Alias {
            on_change,
            name,
            ttl: a.ttl.map_or(5, |t| t.0),
            role: a.role.unwrap_or(Role::ReadWrite),
            servers: refs,
            on_no_match: a.on_no_match.unwrap_or(NoMatchPolicy::KeepLast),
        });
    }

    let admin = admin_settings(&cx, raw.admin)?;
    let limits = limits(&cx, &raw.limits)?;
    Ok(Config { path: path.to_path_buf(), dns: DnsSettings { listen, max_udp_payload, allow }, upstream, zones, probe, servers, aliases, admin, limits })
}

fn hook_env(cx: &Ctx<'_>, raw: &Option<Spanned<Vec<Spanned<String>>>>, secrets: &[String]) -> Result<Vec<String>, ConfigError> {
    let Some(list) = raw else {
        return Ok(DEFAULT_HOOK_ENV.iter().map(|s| s.to_string()).collect());
    };
    let mut out = Vec::new();
    for v in list.get_ref() {
        let name = v.get_ref();
        let stem = name.strip_suffix('*').unwrap_or(name);
        if stem.is_empty() && name != "*" || stem.contains('*') || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return cx.err(Some(v.span()), format!("`{name}` is not an environment variable name (or `PREFIX*`)"), "write e.g. \"HOME\" or \"AZURE_*\"");
        }
        if name == "*" {
            return cx.err(Some(v.span()), "`*` would hand the hook every variable, secrets included", "list the variables the hook needs, e.g. [\"PATH\", \"HOME\", \"AZURE_*\"]");
        }
        let matches = |s: &String| if name.ends_with('*') { s.starts_with(stem) } else { s == name };
        if let Some(secret) = secrets.iter().find(|s| matches(s)) {
            return cx.err(Some(v.span()), format!("`{name}` would pass `{secret}`, which holds a password or the admin token, to the hook"), "hooks must not see the sidecar's secrets; give the hook its own credentials");
        }
        out.push(name.clone());
    }
    Ok(out)
}

fn limits(cx: &Ctx<'_>, raw: &super::raw::RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let count = |v: &Option<Spanned<u32>>, key: &str, min: u32, max: u32, default: usize| -> Result<usize, ConfigError> {
        match v {
            None => Ok(default),
            Some(v) if (min..=max).contains(v.get_ref()) => Ok(*v.get_ref() as usize),
            Some(v) => cx.err(Some(v.span()), format!("`limits.{key} = {}` is outside {min}..={max}", v.get_ref()), format!("{key} = {default} is the default")),
        }
    };
    let memory = match &raw.memory {
        None => d.memory,
        Some(m) if m.get_ref().0 >= 1 << 20 && m.get_ref().0 <= 1 << 40 => m.get_ref().0,
        Some(m) => return cx.err(Some(m.span()), format!("`limits.memory` of {} bytes is outside 1MiB..=1TiB", m.get_ref().0), "memory = \"16MiB\" is the default; it keeps the process under 48 MB"),
    };
    let forward_rate = count(&raw.forward_rate, "forward_rate", 0, 10_000_000, d.forward_rate as usize)? as u32;
    let forward_burst = match &raw.forward_burst {
        None => forward_rate.saturating_mul(2),
        Some(b) if *b.get_ref() >= 1 || forward_rate == 0 => *b.get_ref(),
        Some(b) => return cx.err(Some(b.span()), "`limits.forward_burst` must be at least 1 when forward_rate is set", "leave it out for 2 x forward_rate"),
    };
    let secs = |v: &Option<HumanDuration>, key: &str, default: Duration| -> Result<Duration, ConfigError> {
        let v = v.map_or(default, |d| d.0);
        if v < Duration::from_millis(100) {
            return cx.err(None, format!("`limits.{key}` of {v:?} is too short"), format!("use 100ms or more; the default is {default:?}"));
        }
        Ok(v)
    };
    let tcp_connections = count(&raw.tcp_connections, "tcp_connections", 1, 65_536, d.tcp_connections)?;
    let tcp_connections_per_client = count(&raw.tcp_connections_per_client, "tcp_connections_per_client", 1, 65_536, d.tcp_connections_per_client)?.min(tcp_connections);
    Ok(Limits {
        memory,
        forward_in_flight: count(&raw.forward_in_flight, "forward_in_flight", 1, MAX_FORWARD_IN_FLIGHT, d.forward_in_flight)?,
        forward_rate,
        forward_burst,
        tcp_connections,
        tcp_connections_per_client,
        tcp_idle_timeout: secs(&raw.tcp_idle_timeout, "tcp_idle_timeout", d.tcp_idle_timeout)?,
        tcp_write_timeout: secs(&raw.tcp_write_timeout, "tcp_write_timeout", d.tcp_write_timeout)?,
    })
}

fn admin_settings(cx: &Ctx<'_>, raw: Option<super::raw::RawAdmin>) -> Result<AdminSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(AdminSettings { listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("literal")), token: None, ..AdminSettings::default() });
    };
    let listen = match (&raw.enabled, &raw.listen) {
        (Some(false), _) => None,
        (_, None) => Some(DEFAULT_ADMIN_LISTEN.parse().expect("literal")),
        (_, Some(l)) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => return cx.err(Some(l.span()), format!("`{}` is not an address with a port", l.get_ref()), format!("e.g. listen = \"{DEFAULT_ADMIN_LISTEN}\"")),
        },
    };
    let token = match (&raw.token_env, &raw.token_file) {
        (Some(_), Some(f)) => return cx.err(Some(f.span()), "[admin] has both token_env and token_file", "keep one of them"),
        (Some(var), None) => match std::env::var(var.get_ref()) {
            Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_string())),
            _ => return cx.err(Some(var.span()), format!("environment variable `{}` (admin token) is not set or empty", var.get_ref()), format!("export {}=... or remove token_env", var.get_ref())),
        },
        (None, Some(file)) => match std::fs::read_to_string(file.get_ref()) {
            Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_string())),
            Ok(_) => return cx.err(Some(file.span()), format!("token_file `{}` is empty", file.get_ref().display()), "write a long random token into it"),
            Err(e) => return cx.err(Some(file.span()), format!("cannot read token_file `{}`: {e}", file.get_ref().display()), "check the path and permissions"),
        },
        (None, None) => None,
    };
    if let (Some(l), None) = (listen, &token) {
        if !l.ip().is_loopback() {
            tracing::warn!(listen = %l, "admin listener is not on loopback and has no token: overrides are only accepted from loopback peers");
        }
    }
    let d = AdminSettings::default();
    let timeout = |v: &Option<HumanDuration>, key: &str, default: Duration| -> Result<Duration, ConfigError> {
        let v = v.map_or(default, |d| d.0);
        if v < Duration::from_millis(100) {
            return cx.err(None, format!("`admin.{key}` of {v:?} is too short"), format!("use 100ms or more; the default is {default:?}"));
        }
        Ok(v)
    };
    let max_connections = match &raw.max_connections {
        None => d.max_connections,
        Some(v) if (1..=4096).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => return cx.err(Some(v.span()), format!("`admin.max_connections = {}` is outside 1..=4096", v.get_ref()), "max_connections = 32 is the default"),
    };
    Ok(AdminSettings {
        listen,
        token,
        header_timeout: timeout(&raw.header_timeout, "header_timeout", d.header_timeout)?,
        request_timeout: timeout(&raw.request_timeout, "request_timeout", d.request_timeout)?,
        max_connections,
    })
}

fn positive(cx: &Ctx<'_>, v: Option<&Spanned<u32>>, key: &str, default: u32) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) if *v.get_ref() >= 1 => Ok(*v.get_ref()),
        Some(v) => cx.err(Some(v.span()), format!("`probe.{key}` must be at least 1"), format!("{key} = {default} is the default")),
    }
}

/// True when a query sent to `upstream` would arrive at listener `listen`.
pub fn forwards_to_self(listen: SocketAddr, upstream: SocketAddr) -> bool {
    listen.port() == upstream.port()
        && (listen.ip() == upstream.ip() || (listen.ip().is_unspecified() && (upstream.ip().is_loopback() || upstream.ip().is_unspecified())))
}

fn conn_settings(
    cx: &Ctx<'_>,
    id: &str,
    span: std::ops::Range<usize>,
    target: &DnsName,
    host: Option<String>,
    hostaddr: Option<std::net::IpAddr>,
    c: RawConn,
) -> Result<ConnSettings, ConfigError> {
    if let Some(p) = &c.password {
        return cx.err(
            Some(p.span()),
            "inline passwords are not accepted, so they never end up in a repository or a ConfigMap",
            "use password_env = \"PGPROBE_PASSWORD\" or password_file = \"/run/secrets/pgprobe\"",
        );
    }
    let Some(user) = c.user else {
        return cx.err(Some(span), format!("server `{id}` has no `user`"), "set user = \"...\" in [probe] (for all servers) or in this server's table");
    };
    let sslmode = c.sslmode.unwrap_or(SslMode::VerifyFull);
    let sslrootcert = match &c.sslrootcert {
        None => RootCert::System,
        Some(s) if s.get_ref() == "system" => RootCert::System,
        Some(s) => {
            let p = PathBuf::from(s.get_ref());
            if matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && !p.is_file() {
                return cx.err(Some(s.span()), format!("sslrootcert `{}` is not a readable file", p.display()), "give the CA bundle's path, or \"system\" for the OS trust store");
            }
            RootCert::File(p)
        }
    };
    let password = match (&c.password_env, &c.password_file) {
        (Some(_), Some(f)) => {
            return cx.err(Some(f.span()), format!("server `{id}` has both password_env and password_file"), "keep one of them");
        }
        (Some(var), None) => match std::env::var(var.get_ref()) {
            Ok(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => {
                return cx.err(Some(var.span()), format!("environment variable `{}` (password for server `{id}`) is not set or empty", var.get_ref()), format!("export {}=... before starting, or use password_file", var.get_ref()));
            }
        },
        (None, Some(file)) => match std::fs::read_to_string(file.get_ref()) {
            Ok(v) => Some(Secret::new(v.trim_end_matches(['\r', '\n']).to_string())),
            Err(e) => {
                return cx.err(Some(file.span()), format!("cannot read password_file `{}`: {e}", file.get_ref().display()), "check the path and that this user may read it");
            }
        },
        (None, None) => None,
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
