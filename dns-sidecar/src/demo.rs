//! `dns-sidecar demo`: a self-contained show of the product.
//!
//! Starts a throwaway primary + streaming replica (with TLS and passwords)
//! from the local PostgreSQL binaries, a dnsmasq upstream when one is
//! installed (so A queries carry addresses), and the sidecar on a loopback
//! port; prints the `dig` command to try and every decision as it happens;
//! promotes the replica on Enter (or after `--promote-after`), so the CNAME
//! flip is visible; removes everything on exit.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncBufReadExt;

use crate::config::Config;
use crate::routes::{RouteAnswer, Routes};
use crate::testbed::{Dnsmasq, DnsmasqOptions, PairOptions, PgBinaries, PgPair};
use crate::Listeners;

/// The demo's config, with `{placeholders}` filled in at run time.
pub const TEMPLATE: &str = include_str!("../../config/demo.toml.in");

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Loopback port to serve DNS on (UDP and TCP).
    #[arg(long, default_value_t = 5353)]
    pub port: u16,
    /// Promote the replica automatically after this many seconds (otherwise: press Enter).
    #[arg(long)]
    pub promote_after: Option<u64>,
    /// Stop by itself this many seconds after the promote (for scripted runs).
    #[arg(long)]
    pub exit_after_promote: Option<u64>,
}

/// Values substituted into [`TEMPLATE`].
pub struct DemoValues<'a> {
    pub listen: SocketAddr,
    pub upstream: Option<SocketAddr>,
    pub password_file: &'a Path,
    pub ca: &'a Path,
    pub port: u16,
    pub state_file: &'a Path,
}

/// Renders the demo config.
pub fn render(v: &DemoValues<'_>) -> String {
    let upstream = match v.upstream {
        Some(u) => format!("[upstream]\nservers = [\"{u}\"]\ntimeout = \"1s\""),
        None => "# no [upstream]: dnsmasq is not installed, names outside the zone are REFUSED".to_string(),
    };
    TEMPLATE
        .replace("{listen}", &v.listen.to_string())
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
            PairOptions { primary_name: "pg-east.servers.demo".into(), replica_name: "pg-west.servers.demo".into(), ..PairOptions::default() },
        )
    })
    .await??;
    println!("  ready in {:.2}s, data in {}", t.elapsed().as_secs_f64(), pair.dir.display());

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

    let pw_file = pair.dir.join("probe.password");
    std::fs::write(&pw_file, &pair.password).context("writing the probe password file")?;
    let listen: SocketAddr = ([127, 0, 0, 1], args.port).into();
    let text = render(&DemoValues { listen, upstream: upstream.as_ref().map(|u| u.addr), password_file: &pw_file, ca: &pair.ca_cert, port: pair.port, state_file: &pair.dir.join("sidecar-state.json") });
    let config_path = pair.dir.join("demo.toml");
    std::fs::write(&config_path, &text).context("writing the demo config")?;
    let config = Config::load(&config_path)?;
    let listeners = Listeners::bind(&config).with_context(|| format!("port {} is taken; try --port 15353", args.port))?;
    let running = crate::start(config, listeners)?;

    println!("\nServing DNS on {listen} with config {}", config_path.display());
    println!("Try, in another terminal:\n");
    println!("    dig @127.0.0.1 -p {} prod.demo.internal A +noall +answer", args.port);
    println!("    dig @127.0.0.1 -p {} ro.demo.internal A +noall +answer", args.port);
    println!("    watch -n 0.5 dig @127.0.0.1 -p {} prod.demo.internal +short\n", args.port);
    match args.promote_after {
        Some(s) => println!("The replica will be promoted in {s}s. Ctrl-C stops the demo and removes everything."),
        None => println!("Press Enter to promote the replica (pg-west). Ctrl-C stops the demo and removes everything."),
    }

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
    tokio::select! {
        _ = promote_at => {
            println!(">>> promoting pg-west (pg_ctl promote)...");
            let replica = pair.replica.clone();
            let t = Instant::now();
            tokio::task::spawn_blocking(move || replica.promote(true)).await??;
            println!(">>> pg-west is writable {:.0} ms after the promote request; watch the alias follow", t.elapsed().as_secs_f64() * 1000.0);
            match args.exit_after_promote {
                Some(s) => tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                    _ = tokio::signal::ctrl_c() => {}
                },
                None => { let _ = tokio::signal::ctrl_c().await; }
            }
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    shown.abort();
    println!("\nStopping and removing the demo servers...");
    running.stop().await;
    drop(upstream);
    tokio::task::spawn_blocking(move || drop(pair)).await?;
    println!("Done.");
    Ok(())
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
            let text = render(&DemoValues { listen: "127.0.0.1:5353".parse().unwrap(), upstream, password_file: &pw, ca: &ca, port: 5432, state_file: Path::new("/tmp/state.json") });
            let c = Config::from_toml(Path::new("demo.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.aliases.len(), 2);
            assert_eq!(c.upstream.is_some(), upstream.is_some());
        }
        let _ = std::fs::remove_file(ca);
        let _ = std::fs::remove_file(pw);
    }
}
