//! `dns-sidecar demo`: a self-contained show of the product.
//!
//! Starts a throwaway primary + streaming replica (with TLS and passwords)
//! from the local PostgreSQL binaries, a dnsmasq upstream when one is
//! installed (so A queries carry addresses), and the sidecar on loopback
//! ports (DNS 5353 and admin 9153 by default, free ones when those are
//! taken); prints the `dig` and `status` commands to try and every decision
//! as it happens; promotes the replica on Enter (or after `--promote-after`),
//! so the CNAME flip is visible; removes everything on exit. Scripted runs
//! (`--promote-after N --exit-after-promote M`, as CI does) exit 1 when the
//! writer alias did not follow the promote.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use testbed::{Dnsmasq, DnsmasqOptions, PairOptions, PgBinaries, PgPair};
use tokio::io::AsyncBufReadExt;

use crate::config::Config;
use crate::routes::{RouteAnswer, Routes};
use crate::{Listeners, RunError};

/// The demo's config, with `{placeholders}` filled in at run time.
pub(crate) const TEMPLATE: &str = include_str!("../../config/demo.toml.in");

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Loopback port to serve DNS on (UDP and TCP) [default: 5353, or a free
    /// port when 5353 is taken]; 0 picks a free one.
    #[arg(long)]
    pub port: Option<u16>,
    /// Loopback port of the admin listener (status, metrics, overrides)
    /// [default: 9153, or a free port when 9153 is taken]; 0 picks a free one.
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// Promote the replica automatically after this many seconds (otherwise: press Enter).
    #[arg(long, value_name = "SECS")]
    pub promote_after: Option<u64>,
    /// Stop by itself this many seconds after the promote (for scripted
    /// runs); exits with status 1 unless prod.demo.internal answers the
    /// promoted server by then.
    #[arg(long, value_name = "SECS")]
    pub exit_after_promote: Option<u64>,
}

/// The demo's DNS port when `--port` is not given.
pub const DEFAULT_PORT: u16 = 5353;
/// The demo's admin port when `--admin-port` is not given (the same as a
/// real sidecar's, so `dns-sidecar status` works without `--admin`).
pub const DEFAULT_ADMIN_PORT: u16 = 9153;

/// The alias the demo promotes under, and where it must point afterwards.
const WRITER_ALIAS: &str = "prod.demo.internal.";
const PROMOTED_TARGET: &str = "pg-west.servers.demo.";

/// Values substituted into [`TEMPLATE`].
pub(crate) struct DemoValues<'a> {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: Option<SocketAddr>,
    pub password_file: &'a Path,
    pub ca: &'a Path,
    pub port: u16,
    pub state_file: &'a Path,
}

/// Renders the demo config.
pub(crate) fn render(v: &DemoValues<'_>) -> String {
    let upstream = match v.upstream {
        Some(u) => format!("[upstream]\nservers = [\"{u}\"]\ntimeout = \"1s\""),
        None => "# no [upstream]: dnsmasq is not installed, names outside the zone are REFUSED".to_string(),
    };
    TEMPLATE
        .replace("{listen}", &v.listen.to_string())
        .replace("{admin}", &v.admin.to_string())
        .replace("{upstream}", &upstream)
        .replace("{password_file}", &v.password_file.display().to_string())
        .replace("{ca}", &v.ca.display().to_string())
        .replace("{port}", &v.port.to_string())
        .replace("{state_file}", &v.state_file.display().to_string())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let bins = PgBinaries::locate().context("the demo needs the PostgreSQL server binaries")?;
    println!("Starting a throwaway PostgreSQL primary (127.0.0.2) and streaming replica (127.0.0.3)...");
    let t = Instant::now();
    let pair = tokio::task::spawn_blocking(move || {
        PgPair::start(
            &bins,
            PairOptions {
                primary_name: "pg-east.servers.demo".into(),
                replica_name: "pg-west.servers.demo".into(),
                ..PairOptions::default()
            },
        )
    })
    .await??;
    println!(
        "  ready in {:.2}s, data in {}",
        t.elapsed().as_secs_f64(),
        pair.dir.display()
    );

    let upstream = tokio::task::spawn_blocking(|| {
        Dnsmasq::start(DnsmasqOptions {
            hosts: vec![
                ("pg-east.servers.demo".into(), "127.0.0.2".parse().expect("literal")),
                ("pg-west.servers.demo".into(), "127.0.0.3".parse().expect("literal")),
            ],
            local_domains: vec!["servers.demo".into()],
            local_ttl: Some(30),
            ..Default::default()
        })
    })
    .await?;
    let upstream = match upstream {
        Ok(d) => Some(d),
        Err(e) => {
            println!("  (no upstream: {e}; A queries will carry the CNAME only)");
            None
        }
    };

    let outcome = serve(&args, &pair, upstream.as_ref().map(|u| u.addr)).await;
    println!("\nStopping and removing the demo servers...");
    drop(upstream);
    tokio::task::spawn_blocking(move || drop(pair)).await?;
    println!("Done.");
    outcome
}

/// Binds the listeners, runs the sidecar on the pair, and drives the promote.
async fn serve(args: &DemoArgs, pair: &PgPair, upstream: Option<SocketAddr>) -> anyhow::Result<()> {
    let pw_file = pair.dir.join("probe.password");
    std::fs::write(&pw_file, &pair.password).context("writing the probe password file")?;
    let state_file = pair.dir.join("sidecar-state.json");
    let config_path = pair.dir.join("demo.toml");
    let text = |listen: SocketAddr, admin: SocketAddr| {
        render(&DemoValues {
            listen,
            admin,
            upstream,
            password_file: &pw_file,
            ca: &pair.ca_cert,
            port: pair.port,
            state_file: &state_file,
        })
    };
    let (listeners, dns, admin) = bind(args, |dns, admin| {
        Config::from_toml(&config_path, &text(dns, admin)).map_err(Into::into)
    })?;
    // The file shows the ports actually bound, so it can be run as it is.
    let text = text(dns, admin);
    std::fs::write(&config_path, &text).context("writing the demo config")?;
    let config = Config::from_toml(&config_path, &text)?;
    let running = crate::start(config, listeners)?;

    print_instructions(args, dns, admin, &config_path);

    let shown = tokio::spawn(show_routes(running.shared.clone()));
    let promote_at = async {
        match args.promote_after {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None if std::io::stdin().is_terminal() => {
                let mut line = String::new();
                let _ = tokio::io::BufReader::new(tokio::io::stdin()).read_line(&mut line).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let outcome = tokio::select! {
        _ = promote_at => promote(args, pair, &running.shared).await,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    shown.abort();
    running.stop().await;
    outcome
}

/// What to try while the demo runs: the `dig`, `status` and `curl` commands
/// for the addresses actually bound, and how the promote is triggered.
fn print_instructions(args: &DemoArgs, dns: SocketAddr, admin: SocketAddr, config_path: &Path) {
    let me = std::env::current_exe().ok().and_then(|p| {
        let cwd = std::env::current_dir().ok()?;
        Some(p.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or(p))
    });
    let me = me
        .as_deref()
        .map_or_else(|| "dns-sidecar".to_string(), |p| p.display().to_string());
    let admin_flag = if admin.port() == DEFAULT_ADMIN_PORT {
        String::new()
    } else {
        format!(" --admin {admin}")
    };
    println!("\nServing DNS on {dns} with config {}", config_path.display());
    println!("Try, in another terminal:\n");
    println!(
        "    dig @{} -p {} prod.demo.internal A +noall +answer",
        dns.ip(),
        dns.port()
    );
    println!(
        "    dig @{} -p {} ro.demo.internal A +noall +answer",
        dns.ip(),
        dns.port()
    );
    println!(
        "    watch -n 0.5 dig @{} -p {} prod.demo.internal +short",
        dns.ip(),
        dns.port()
    );
    println!("    {me} status{admin_flag}");
    println!("    curl -s {admin}/status | jq '.aliases[] | {{name, target, reason}}'\n");
    println!("Admin listener (health, metrics, status, overrides) on {admin}.");
    match args.promote_after {
        Some(s) => println!("The replica will be promoted in {s}s. Ctrl-C stops the demo and removes everything."),
        None => println!("Press Enter to promote the replica (pg-west). Ctrl-C stops the demo and removes everything."),
    }
}

/// Binds the DNS and admin listeners on loopback. A port given on the
/// command line must be free; a default port that is taken is replaced by a
/// free one, and said so. `config` builds the config for a pair of addresses.
fn bind(
    args: &DemoArgs,
    config: impl Fn(SocketAddr, SocketAddr) -> anyhow::Result<Config>,
) -> anyhow::Result<(Listeners, SocketAddr, SocketAddr)> {
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (mut dns, mut admin) = (
        args.port.unwrap_or(DEFAULT_PORT),
        args.admin_port.unwrap_or(DEFAULT_ADMIN_PORT),
    );
    loop {
        match Listeners::bind(&config(at(dns), at(admin))?) {
            Ok(l) => {
                let dns = l.local_addrs().first().copied().context("no DNS listener bound")?;
                let admin = l.admin_addr().context("no admin listener bound")?;
                return Ok((l, dns, admin));
            }
            Err(RunError::Bind { proto, source, .. }) if proto.contains("admin") => {
                if args.admin_port.is_some() || admin == 0 {
                    anyhow::bail!(
                        "cannot listen on {} for the admin listener: {source}; choose another with --admin-port PORT, or --admin-port 0 for a free one",
                        at(admin)
                    );
                }
                println!("  (admin port {admin} is taken: {source}; using a free port instead)");
                admin = 0;
            }
            Err(RunError::Bind { source, .. }) => {
                if args.port.is_some() || dns == 0 {
                    anyhow::bail!(
                        "cannot listen on {} for DNS: {source}; choose another with --port PORT, or --port 0 for a free one",
                        at(dns)
                    );
                }
                println!("  (DNS port {dns} is taken: {source}; using a free port instead)");
                dns = 0;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Promotes the replica; with `--exit-after-promote`, waits that long and
/// fails unless the writer alias answers the promoted server.
async fn promote(args: &DemoArgs, pair: &PgPair, shared: &crate::shared::Shared) -> anyhow::Result<()> {
    println!(">>> promoting pg-west (pg_ctl promote)...");
    let replica = pair.replica.clone();
    let t = Instant::now();
    tokio::task::spawn_blocking(move || replica.promote(true)).await??;
    println!(
        ">>> pg-west is writable {:.0} ms after the promote request; watch the alias follow",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let Some(secs) = args.exit_after_promote else {
        let _ = tokio::signal::ctrl_c().await;
        return Ok(());
    };
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }
    let routes = shared.routes.load();
    match routes.get(WRITER_ALIAS).map(|r| &r.answer) {
        Some(RouteAnswer::Cname(t)) if t.as_str() == PROMOTED_TARGET => {
            println!(">>> OK: {WRITER_ALIAS} answers CNAME {PROMOTED_TARGET} (the promoted server)");
            Ok(())
        }
        other => anyhow::bail!(
            "{WRITER_ALIAS} answers {other:?} {secs}s after the promote, not CNAME {PROMOTED_TARGET}: the alias did not follow"
        ),
    }
}

/// Prints one line per alias whenever the published answer changes.
async fn show_routes(shared: Arc<crate::shared::Shared>) {
    let mut last: Option<Arc<Routes>> = None;
    let start = Instant::now();
    let config = shared.config.load_full();
    loop {
        let now = shared.routes.load_full();
        if last.as_ref() != Some(&now) {
            for a in &config.aliases {
                let name = a.name.as_str();
                let Some(route) = now.get(name) else { continue };
                if last.as_ref().is_some_and(|l| l.get(name) == Some(route)) {
                    continue;
                }
                let shown = match &route.answer {
                    RouteAnswer::Pending => "(waiting for the first probe round)".to_string(),
                    RouteAnswer::Cname(t) => format!("CNAME {t}"),
                    RouteAnswer::Spread(r) => {
                        let t: Vec<&str> = r.members.iter().map(|m| m.target.as_str()).collect();
                        format!("CNAME one of {} ({})", t.join(", "), r.spread.as_str())
                    }
                    RouteAnswer::Servfail => "SERVFAIL (no server matches)".to_string(),
                };
                println!("[{:>7.3}s] {name} -> {shown}", start.elapsed().as_secs_f64());
            }
            last = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_renders_to_a_valid_config() {
        let dir = std::env::temp_dir();
        let ca = dir.join(format!("demo-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not checked by the parser").unwrap();
        let pw = dir.join(format!("demo-pw-{}", std::process::id()));
        std::fs::write(&pw, "pw").unwrap();
        for upstream in [None, Some("127.0.0.1:5354".parse().unwrap())] {
            let text = render(&DemoValues {
                listen: "127.0.0.1:5353".parse().unwrap(),
                admin: "127.0.0.1:9153".parse().unwrap(),
                upstream,
                password_file: &pw,
                ca: &ca,
                port: 5432,
                state_file: Path::new("/tmp/state.json"),
            });
            let c = Config::from_toml(Path::new("demo.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.aliases.len(), 2);
            assert_eq!(c.upstream.is_some(), upstream.is_some());
        }
        let _ = std::fs::remove_file(ca);
        let _ = std::fs::remove_file(pw);
    }
}
