//! Cross-field checks and defaults: raw TOML tables -> [`Config`].

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawConfig, RawConn};
use super::*;

/// A place-aware error builder for one file, which also knows whether
/// missing secrets are errors or warnings.
struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    secrets: Secrets,
    /// Secrets that could not be read, with [`Secrets::Deferred`].
    deferred: RefCell<Vec<DeferredSecret>>,
}

/// A secret left for run time: where it is configured, what went wrong, and
/// whose it is (server ids; empty for the admin token).
struct DeferredSecret {
    span: Range<usize>,
    problem: String,
    owners: Vec<String>,
    hint: String,
}

/// Whose a secret is: a server's probe password, or the admin token.
#[derive(Clone, Copy)]
enum Owner<'a> {
    Server(&'a str),
    AdminToken,
}

fn whose(owners: &[String]) -> String {
    match owners {
        [] => "the admin token".to_string(),
        [one] => format!("the password of server `{one}`"),
        many => format!(
            "the password of servers {}",
            many.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

impl Ctx<'_> {
    fn err<T>(
        &self,
        span: Option<Range<usize>>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) -> Result<T, ConfigError> {
        let hint: String = hint.into();
        let l = Located::at(self.path, self.text, span, msg);
        Err(if hint.is_empty() { l } else { l.hint(hint) }.into())
    }

    /// A secret that cannot be read (`problem`, e.g. "environment variable
    /// `X` is not set or empty"): an error when secrets are required; else
    /// remembered as a warning (one per place in the file, naming every
    /// server that uses it) and left unset.
    fn missing_secret(
        &self,
        span: Range<usize>,
        problem: String,
        owner: Owner<'_>,
        hint: String,
    ) -> Result<Option<Secret>, ConfigError> {
        let owners: Vec<String> = match owner {
            Owner::Server(id) => vec![id.to_string()],
            Owner::AdminToken => Vec::new(),
        };
        if self.secrets == Secrets::Required {
            return self.err(Some(span), format!("{problem}: it holds {}", whose(&owners)), hint);
        }
        let mut deferred = self.deferred.borrow_mut();
        match deferred.iter_mut().find(|d| d.span == span) {
            Some(d) => d.owners.extend(owners),
            None => deferred.push(DeferredSecret {
                span,
                problem,
                owners,
                hint,
            }),
        }
        Ok(None)
    }

    fn warnings(&self) -> Vec<ConfigWarning> {
        self.deferred
            .borrow()
            .iter()
            .map(|d| {
                let msg = format!(
                    "{}: it holds {}; needed at run time, not to check the file",
                    d.problem,
                    whose(&d.owners)
                );
                ConfigWarning(Located::at(self.path, self.text, Some(d.span.clone()), msg).hint(d.hint.clone()))
            })
            .collect()
    }
}

pub(super) fn validate(
    path: &Path,
    text: &str,
    raw: RawConfig,
    secrets: Secrets,
) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
    let cx = Ctx {
        path,
        text,
        secrets,
        deferred: RefCell::new(Vec::new()),
    };

    // [dns]
    let listen: Vec<SocketAddr> = raw.dns.listen.get_ref().iter().map(|a| a.0).collect();
    if listen.is_empty() {
        return cx.err(
            Some(raw.dns.listen.span()),
            "`dns.listen` is empty",
            "add at least one address, e.g. listen = [\"127.0.0.1:53\"]",
        );
    }
    for (i, a) in listen.iter().enumerate() {
        if listen[..i].contains(a) {
            return cx.err(
                Some(raw.dns.listen.span()),
                format!("`dns.listen` names {a} twice"),
                "remove the duplicate",
            );
        }
    }
    let max_udp_payload = match &raw.dns.max_udp_payload {
        None => 1232,
        Some(v) if (512..=4096).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            return cx.err(
                Some(v.span()),
                format!("`max_udp_payload = {}` is outside 512..=4096", v.get_ref()),
                "1232 (the DNS flag day value) avoids IP fragmentation",
            )
        }
    };

    let allow = match &raw.dns.allow {
        Some(a) => {
            if a.get_ref().is_empty() {
                return cx.err(
                    Some(a.span()),
                    "`dns.allow` is empty, so every client would be refused",
                    "list your clients' networks, e.g. allow = [\"10.0.0.0/8\"]",
                );
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
                    "it is how long each upstream gets before the next is tried; e.g. timeout = \"1500ms\" (the default)",
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
            Some(UpstreamSettings {
                servers,
                timeout,
                max_fails,
                health_check,
            })
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
            return cx.err(
                span,
                format!("zone `{name}` is declared twice"),
                "merge the two [[zones]] tables",
            );
        }
        // The default NS and SOA names are built below the apex; a zone name
        // near the 253-character limit leaves no room for them.
        let child = |label: &str| {
            DnsName::parse(&format!("{label}.{}", name.as_str())).or_else(|e| {
                cx.err(
                    span.clone(),
                    format!("zone `{name}` is too long for its default `{label}.` name ({e})"),
                    format!(
                        "shorten the zone name, or set {} explicitly",
                        if label == "ns" { "nameservers" } else { "hostmaster" }
                    ),
                )
            })
        };
        let nameservers = match z.nameservers {
            None => vec![child("ns")?],
            Some(ns) if ns.get_ref().is_empty() => {
                let default = child("ns").map_or_else(|_| "ns.<zone>".to_string(), |n| n.to_string());
                return cx.err(
                    Some(ns.span()),
                    format!("zone `{name}` has an empty `nameservers` list; the apex would have no NS records"),
                    format!("remove the key to serve the default [\"{default}\"], or list the names of the servers that answer for this zone"),
                );
            }
            Some(ns) => ns.into_inner(),
        };
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
    let duration =
        |v: &Option<Spanned<HumanDuration>>, default: Duration| v.as_ref().map_or(default, |v| v.get_ref().0);
    let span = |v: &Option<Spanned<HumanDuration>>| v.as_ref().map(|v| v.span());
    let probe = ProbeTiming {
        interval: duration(&p.interval, d.interval),
        incident_interval: duration(&p.incident_interval, d.incident_interval),
        deadline: duration(&p.deadline, d.deadline),
        fresh_connection_interval: p.fresh_connection_interval.map_or(d.fresh_connection_interval, |v| v.0),
        fall: positive(&cx, p.fall.as_ref(), "fall", d.fall)?,
        rise: positive(&cx, p.rise.as_ref(), "rise", d.rise)?,
    };
    if probe.interval < Duration::from_millis(10) {
        return cx.err(
            span(&p.interval),
            format!("`probe.interval` of {} is too short", human(probe.interval)),
            "use 10ms or more; 100ms follows a promote within ~150ms",
        );
    }
    if probe.deadline < Duration::from_millis(10) {
        return cx.err(
            span(&p.deadline),
            format!("`probe.deadline` of {} is too short", human(probe.deadline)),
            "a fresh TLS probe needs a few round trips; use e.g. \"1s\"",
        );
    }
    if probe.incident_interval < Duration::from_millis(1) {
        return cx.err(
            span(&p.incident_interval),
            format!(
                "`probe.incident_interval` of {} is too short",
                human(probe.incident_interval)
            ),
            "use 1ms or more; the default 10ms sees a promote within ~10ms",
        );
    }
    if probe.incident_interval > probe.interval {
        // Without an explicit incident_interval the default (10ms) can only
        // exceed an interval that is itself too short, which was rejected above.
        return cx.err(
            span(&p.incident_interval).or(span(&p.interval)),
            format!("`probe.incident_interval` ({}) is longer than `probe.interval` ({})", human(probe.incident_interval), human(probe.interval)),
            "it is the faster cadence used during an incident: make it at most `interval`, e.g. incident_interval = \"10ms\"",
        );
    }
    let defaults = raw.probe.conn();
    let mut probe_secret_vars: Vec<String> = defaults.password_env.iter().map(|v| v.get_ref().clone()).collect();

    // [servers.<id>]
    let mut ids: Vec<String> = Vec::new();
    let mut servers = Vec::new();
    let mut target_spans = Vec::new();
    for (id, s) in raw.servers {
        let span = s.span();
        let s = s.into_inner();
        let target = s.target.get_ref().clone();
        let raw_conn = s.conn().or(defaults.clone());
        probe_secret_vars.extend(raw_conn.password_env.iter().map(|v| v.get_ref().clone()));
        let conn = conn_settings(&cx, &id, span, &target, s.host.clone(), s.hostaddr, raw_conn)?;
        ids.push(id.clone());
        target_spans.push(s.target.span());
        servers.push(Server { id, target, conn });
    }

    // Variables that hold secrets must never reach a hook.
    let mut secret_vars: Vec<String> = raw
        .admin
        .as_ref()
        .and_then(|a| a.token_env.as_ref())
        .map(|v| v.get_ref().clone())
        .into_iter()
        .collect();
    secret_vars.extend(probe_secret_vars.iter().cloned());

    // [[aliases]]
    let mut aliases: Vec<Alias> = Vec::new();
    for a in raw.aliases {
        let name = a.name.get_ref().clone();
        let span = Some(a.name.span());
        if aliases.iter().any(|o| o.name == name) {
            return cx.err(
                span,
                format!("alias `{name}` is declared twice"),
                "each alias name may appear once",
            );
        }
        match zones
            .iter()
            .filter(|z| name.is_within(&z.name))
            .max_by_key(|z| z.name.label_count())
        {
            None => {
                let parent = name.as_str().split_once('.').map_or(".", |(_, p)| p).to_string();
                return cx.err(
                    span,
                    format!("alias `{name}` is not inside any zone, so the sidecar would not be authoritative for it"),
                    format!("add a zone: [[zones]] name = \"{parent}\""),
                );
            }
            Some(z) if z.name == name => {
                return cx.err(
                    span,
                    format!("alias `{name}` is the apex of its zone; the apex holds SOA and NS and cannot be a CNAME"),
                    format!("use a name below the zone, e.g. \"prod.{name}\""),
                );
            }
            Some(_) => {}
        }
        if a.servers.get_ref().is_empty() {
            return cx.err(
                Some(a.servers.span()),
                format!("alias `{name}` has no servers"),
                "list the ids of its candidate [servers.<id>] tables",
            );
        }
        let mut refs = Vec::new();
        for sref in a.servers.get_ref() {
            let Some(idx) = ids.iter().position(|id| id == sref.get_ref()) else {
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
            if refs.contains(&idx) {
                return cx.err(
                    Some(sref.span()),
                    format!("alias `{name}` lists server `{}` twice", sref.get_ref()),
                    "remove the duplicate",
                );
            }
            refs.push(idx);
        }
        let max_lag = max_lag(&cx, &a, &name, a.role.unwrap_or(Role::ReadWrite), &probe)?;
        let on_change = match a.on_change {
            None => None,
            Some(argv) if argv.get_ref().is_empty() || argv.get_ref()[0].is_empty() => {
                return cx.err(Some(argv.span()), format!("alias `{name}` has an empty on_change"), "give the program and its arguments, e.g. on_change = [\"/usr/local/bin/sync-dns\", \"--zone\", \"db.internal\"]");
            }
            Some(argv) => {
                let timeout = a
                    .on_change_timeout
                    .as_ref()
                    .map_or(Duration::from_secs(30), |d| d.get_ref().0);
                if timeout.is_zero() {
                    return cx.err(
                        a.on_change_timeout.as_ref().map(|t| t.span()),
                        format!(
                            "alias `{name}` has `on_change_timeout` of 0s; the hook would be killed before it starts"
                        ),
                        "give it time to finish, e.g. on_change_timeout = \"30s\" (the default)",
                    );
                }
                Some(Hook {
                    argv: argv.into_inner(),
                    timeout,
                    env: hook_env(&cx, &a.on_change_env, &secret_vars)?,
                })
            }
        };
        aliases.push(Alias {
            on_change,
            max_lag,
            name,
            ttl: a.ttl.map_or(5, |t| t.0),
            role: a.role.unwrap_or(Role::ReadWrite),
            servers: refs,
            on_no_match: a.on_no_match.unwrap_or(NoMatchPolicy::KeepLast),
        });
    }

    // A CNAME from an alias to itself (or to another alias) is a loop, or a
    // chain no client expects: a server's target is its own DNS name.
    for (i, s) in servers.iter().enumerate() {
        if let Some(a) = aliases.iter().find(|a| a.name == s.target) {
            return cx.err(
                Some(target_spans[i].clone()),
                format!("server `{}` has target `{}`, which is an alias; the alias would answer a CNAME to an alias", s.id, a.name),
                "`target` is the server's own DNS name (e.g. \"pg-prod-eastus.privatelink.postgres.database.azure.com\"); the alias is the name applications use",
            );
        }
    }

    let admin = admin_settings(&cx, raw.admin)?;
    let state = state_settings(&cx, raw.state)?;
    let limits = limits(&cx, &raw.limits)?;
    let cache = cache_settings(&cx, &raw.cache)?;
    let config = Config {
        path: path.to_path_buf(),
        dns: DnsSettings {
            listen,
            max_udp_payload,
            allow,
        },
        upstream,
        zones,
        probe,
        servers,
        aliases,
        admin,
        state,
        limits,
        cache,
    };
    Ok((config, cx.warnings()))
}

/// An alias's lag limit: only for reader roles, non-zero, and (for time)
/// long enough to be measured by probes.
fn max_lag(
    cx: &Ctx<'_>,
    a: &super::raw::RawAlias,
    name: &DnsName,
    role: Role,
    probe: &ProbeTiming,
) -> Result<MaxLag, ConfigError> {
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
            format!("alias `{name}` has role `{}`, which never chooses a standby, so a lag limit cannot apply", role.as_str()),
            "use max_lag / max_lag_time on a reader alias (role = \"prefer-standby\", \"standby\" or \"read-only\"), or remove it",
        );
    }
    if let (Some(0), Some(b)) = (limit.bytes, &a.max_lag) {
        return cx.err(Some(b.span()), "`max_lag` must be more than zero", "the primary writes between two probes, so 0 would exclude every standby most of the time; e.g. max_lag = \"16MiB\"");
    }
    let shortest = probe.interval * 2;
    if let (Some(t), Some(raw)) = (limit.time, &a.max_lag_time) {
        if t < shortest {
            return cx.err(
                Some(raw.span()),
                format!("`max_lag_time` of {t:?} is shorter than two probe intervals ({shortest:?})"),
                format!("the lag is measured from the probes, which are up to one interval old each; use at least {shortest:?}, e.g. max_lag_time = \"5s\""),
            );
        }
    }
    Ok(limit)
}

fn state_settings(cx: &Ctx<'_>, raw: Option<super::raw::RawState>) -> Result<StateSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(StateSettings { path: None });
    };
    let p = raw.path.get_ref();
    if p.as_os_str().is_empty() {
        return cx.err(
            Some(raw.path.span()),
            "`state.path` is empty",
            "give a file in a writable directory, e.g. path = \"/var/lib/dns-sidecar/state.json\", or remove [state]",
        );
    }
    if !p.is_absolute() {
        return cx.err(
            Some(raw.path.span()),
            format!("`state.path` {} is relative", p.display()),
            "use an absolute path, e.g. \"/var/lib/dns-sidecar/state.json\"",
        );
    }
    if p.file_name().is_none() {
        return cx.err(
            Some(raw.path.span()),
            format!("`state.path` {} names a directory", p.display()),
            "name a file in it, e.g. \"/var/lib/dns-sidecar/state.json\"",
        );
    }
    Ok(StateSettings { path: Some(p.clone()) })
}

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

fn limits(cx: &Ctx<'_>, raw: &super::raw::RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let count =
        |v: &Option<Spanned<u32>>, key: &str, min: u32, max: u32, default: usize| -> Result<usize, ConfigError> {
            match v {
                None => Ok(default),
                Some(v) if (min..=max).contains(v.get_ref()) => Ok(*v.get_ref() as usize),
                Some(v) => cx.err(
                    Some(v.span()),
                    format!("`limits.{key} = {}` is outside {min}..={max}", v.get_ref()),
                    format!("{key} = {default} is the default"),
                ),
            }
        };
    let memory = match &raw.memory {
        None => d.memory,
        Some(m) if m.get_ref().0 >= 1 << 20 && m.get_ref().0 <= 1 << 40 => m.get_ref().0,
        Some(m) => {
            return cx.err(
                Some(m.span()),
                format!("`limits.memory` of {} bytes is outside 1MiB..=1TiB", m.get_ref().0),
                "memory = \"16MiB\" is the default; it keeps the process under 48 MB",
            )
        }
    };
    let forward_rate = count(
        &raw.forward_rate,
        "forward_rate",
        0,
        10_000_000,
        d.forward_rate as usize,
    )? as u32;
    let forward_burst = match &raw.forward_burst {
        None => forward_rate.saturating_mul(2),
        Some(b) if *b.get_ref() >= 1 || forward_rate == 0 => *b.get_ref(),
        Some(b) => {
            return cx.err(
                Some(b.span()),
                "`limits.forward_burst` must be at least 1 when forward_rate is set",
                "leave it out for 2 x forward_rate",
            )
        }
    };
    let secs = |v: &Option<Spanned<HumanDuration>>, key: &str, default: Duration| -> Result<Duration, ConfigError> {
        let got = v.as_ref().map_or(default, |d| d.get_ref().0);
        if got < Duration::from_millis(100) {
            return cx.err(
                v.as_ref().map(|v| v.span()),
                format!("`limits.{key}` of {} is too short", human(got)),
                format!("use 100ms or more; the default is {}", human(default)),
            );
        }
        Ok(got)
    };
    let tcp_connections = count(&raw.tcp_connections, "tcp_connections", 1, 65_536, d.tcp_connections)?;
    let tcp_connections_per_client = count(
        &raw.tcp_connections_per_client,
        "tcp_connections_per_client",
        1,
        65_536,
        d.tcp_connections_per_client,
    )?
    .min(tcp_connections);
    Ok(Limits {
        memory,
        forward_in_flight: count(
            &raw.forward_in_flight,
            "forward_in_flight",
            1,
            MAX_FORWARD_IN_FLIGHT,
            d.forward_in_flight,
        )?,
        forward_rate,
        forward_burst,
        tcp_connections,
        tcp_connections_per_client,
        tcp_idle_timeout: secs(&raw.tcp_idle_timeout, "tcp_idle_timeout", d.tcp_idle_timeout)?,
        tcp_write_timeout: secs(&raw.tcp_write_timeout, "tcp_write_timeout", d.tcp_write_timeout)?,
    })
}

fn cache_settings(cx: &Ctx<'_>, raw: &super::raw::RawCache) -> Result<CacheSettings, ConfigError> {
    let d = CacheSettings::default();
    let max_entries = match &raw.max_entries {
        None => d.max_entries,
        Some(v) if (1..=MAX_CACHE_ENTRIES).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            return cx.err(
                Some(v.span()),
                format!(
                    "`cache.max_entries = {}` is outside 1..={MAX_CACHE_ENTRIES}",
                    v.get_ref()
                ),
                format!(
                    "max_entries = {} is the default; to turn the cache off write enabled = false",
                    d.max_entries
                ),
            )
        }
    };
    let max_bytes = match &raw.max_bytes {
        None => d.max_bytes,
        Some(b) if (64 << 10..=1 << 30).contains(&b.get_ref().0) => b.get_ref().0,
        Some(b) => {
            return cx.err(
                Some(b.span()),
                format!("`cache.max_bytes` of {} bytes is outside 64KiB..=1GiB", b.get_ref().0),
                "max_bytes = \"4MiB\" is the default (about 20 000 typical answers); it counts on its own, besides [limits] memory",
            )
        }
    };
    let ttl = |v: &Option<Spanned<Ttl>>,
               key: &str,
               min: u32,
               max: u32,
               default: u32,
               hint: &str|
     -> Result<u32, ConfigError> {
        match v {
            None => Ok(default),
            Some(t) if (min..=max).contains(&t.get_ref().0) => Ok(t.get_ref().0),
            Some(t) => cx.err(
                Some(t.span()),
                format!("`cache.{key}` of {}s is outside {min}s..={max}s", t.get_ref().0),
                hint.to_string(),
            ),
        }
    };
    let max_ttl = ttl(
        &raw.max_ttl,
        "max_ttl",
        1,
        MAX_TTL,
        d.max_ttl,
        "max_ttl = \"1h\" is the default (CoreDNS's cache caps at 1h too); to turn the cache off write enabled = false",
    )?;
    let max_negative_ttl = ttl(
        &raw.max_negative_ttl,
        "max_negative_ttl",
        0,
        MAX_TTL,
        d.max_negative_ttl,
        "max_negative_ttl = \"5m\" is the default; \"0s\" caches no negative answers",
    )?;
    let servfail_ttl = ttl(
        &raw.servfail_ttl,
        "servfail_ttl",
        0,
        MAX_SERVFAIL_TTL,
        d.servfail_ttl,
        "an upstream's SERVFAIL is kept a few seconds at most: servfail_ttl = \"5s\" is the default, \"0s\" keeps none",
    )?;
    let max_stale = match &raw.max_stale {
        None => d.max_stale,
        Some(m) if m.get_ref().0 >= Duration::from_secs(1) && m.get_ref().0 <= MAX_STALE => Duration::from_secs(m.get_ref().0.as_secs()),
        Some(m) => {
            return cx.err(
                Some(m.span()),
                format!("`cache.max_stale` of {} is outside 1s..=7d", human(m.get_ref().0)),
                "max_stale = \"1d\" is the default (RFC 8767 suggests 1 to 3 days, at most 7); to serve nothing stale write serve_stale = false",
            )
        }
    };
    if raw.serve_stale == Some(false) {
        if let Some(m) = &raw.max_stale {
            return cx.err(
                Some(m.span()),
                "`cache.max_stale` is set but serve_stale = false, so it would never apply",
                "remove max_stale, or set serve_stale = true",
            );
        }
    }
    Ok(CacheSettings {
        enabled: raw.enabled.unwrap_or(d.enabled),
        max_entries,
        max_bytes,
        max_ttl,
        max_negative_ttl,
        servfail_ttl,
        serve_stale: raw.serve_stale.unwrap_or(d.serve_stale),
        max_stale,
    })
}

fn admin_settings(cx: &Ctx<'_>, raw: Option<super::raw::RawAdmin>) -> Result<AdminSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(AdminSettings {
            listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("literal")),
            token: None,
            ..AdminSettings::default()
        });
    };
    let listen = match (&raw.enabled, &raw.listen) {
        (Some(false), _) => None,
        (_, None) => Some(DEFAULT_ADMIN_LISTEN.parse().expect("literal")),
        (_, Some(l)) => match admin_addr(l.get_ref()) {
            Some(a) => Some(a),
            None => {
                return cx.err(
                    Some(l.span()),
                    format!("`{}` is not an IP address with an optional port", l.get_ref()),
                    format!("e.g. listen = \"{DEFAULT_ADMIN_LISTEN}\", or \"127.0.0.1\" for the default port {DEFAULT_ADMIN_PORT}; host names are not accepted"),
                )
            }
        },
    };
    let token = match (&raw.token_env, &raw.token_file) {
        (Some(_), Some(f)) => {
            return cx.err(
                Some(f.span()),
                "[admin] has both token_env and token_file",
                "keep one of them",
            )
        }
        (Some(var), None) => match std::env::var(var.get_ref()) {
            Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_string())),
            _ => cx.missing_secret(
                var.span(),
                format!("environment variable `{}` is not set or empty", var.get_ref()),
                Owner::AdminToken,
                format!("export {}=... before starting, or remove token_env", var.get_ref()),
            )?,
        },
        (None, Some(file)) => match std::fs::read_to_string(file.get_ref()) {
            Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_string())),
            Ok(_) => cx.missing_secret(
                file.span(),
                format!("token_file `{}` is empty", file.get_ref().display()),
                Owner::AdminToken,
                "write a long random token into it".into(),
            )?,
            Err(e) => cx.missing_secret(
                file.span(),
                format!("cannot read token_file `{}`: {e}", file.get_ref().display()),
                Owner::AdminToken,
                "check the path and that this user may read it".into(),
            )?,
        },
        (None, None) => None,
    };
    let token_configured = raw.token_env.is_some() || raw.token_file.is_some();
    if let (Some(l), false) = (listen, token_configured) {
        if !l.ip().is_loopback() {
            tracing::warn!(listen = %l, "admin listener is not on loopback and has no token: overrides are only accepted from loopback peers");
        }
    }
    let d = AdminSettings::default();
    let timeout = |v: &Option<Spanned<HumanDuration>>, key: &str, default: Duration| -> Result<Duration, ConfigError> {
        let got = v.as_ref().map_or(default, |d| d.get_ref().0);
        if got < Duration::from_millis(100) {
            return cx.err(
                v.as_ref().map(|v| v.span()),
                format!("`admin.{key}` of {} is too short", human(got)),
                format!("use 100ms or more; the default is {}", human(default)),
            );
        }
        Ok(got)
    };
    let max_connections = match &raw.max_connections {
        None => d.max_connections,
        Some(v) if (1..=4096).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            return cx.err(
                Some(v.span()),
                format!("`admin.max_connections = {}` is outside 1..=4096", v.get_ref()),
                "max_connections = 32 is the default",
            )
        }
    };
    Ok(AdminSettings {
        listen,
        token,
        header_timeout: timeout(&raw.header_timeout, "header_timeout", d.header_timeout)?,
        request_timeout: timeout(&raw.request_timeout, "request_timeout", d.request_timeout)?,
        max_connections,
    })
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

/// A duration as people write it in the config (`0s` rather than `0ns`).
fn human(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        format!("{d:?}")
    }
}

fn positive(cx: &Ctx<'_>, v: Option<&Spanned<u32>>, key: &str, default: u32) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) if *v.get_ref() >= 1 => Ok(*v.get_ref()),
        Some(v) => cx.err(
            Some(v.span()),
            format!("`probe.{key}` must be at least 1"),
            format!("{key} = {default} is the default"),
        ),
    }
}

/// True when a query sent to `upstream` would arrive at listener `listen`.
pub fn forwards_to_self(listen: SocketAddr, upstream: SocketAddr) -> bool {
    listen.port() == upstream.port()
        && (listen.ip() == upstream.ip()
            || (listen.ip().is_unspecified() && (upstream.ip().is_loopback() || upstream.ip().is_unspecified())))
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
    let password = match (&c.password_env, &c.password_file) {
        (Some(_), Some(f)) => {
            return cx.err(
                Some(f.span()),
                format!("server `{id}` has both password_env and password_file"),
                "keep one of them",
            );
        }
        (Some(var), None) => match std::env::var(var.get_ref()) {
            Ok(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => cx.missing_secret(
                var.span(),
                format!("environment variable `{}` is not set or empty", var.get_ref()),
                Owner::Server(id),
                format!("export {}=... before starting, or use password_file", var.get_ref()),
            )?,
        },
        (None, Some(file)) => match std::fs::read_to_string(file.get_ref()) {
            Ok(v) => Some(Secret::new(v.trim_end_matches(['\r', '\n']).to_string())),
            Err(e) => cx.missing_secret(
                file.span(),
                format!("cannot read password_file `{}`: {e}", file.get_ref().display()),
                Owner::Server(id),
                "check the path and that this user may read it".into(),
            )?,
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
