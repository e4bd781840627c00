//! The `dns-sidecar` binary: argument parsing, logging and signals. All the
//! work is in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dns_sidecar::config::Config;
use dns_sidecar::Listeners;

#[derive(Parser)]
#[command(version, about = "Authoritative DNS alias that follows the writable PostgreSQL server")]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `dns_sidecar=debug`.
    #[arg(long, env = "DNS_SIDECAR_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS with the given config until SIGTERM or Ctrl-C.
    Run {
        /// Config file (TOML).
        #[arg(short, long, env = "DNS_SIDECAR_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file without starting; exits non-zero on errors.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Start a throwaway primary + replica and serve an alias for them.
    Demo(dns_sidecar::demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: OK ({} zone(s), {} server(s), {} alias(es))",
                    file.display(),
                    c.zones.len(),
                    c.servers.len(),
                    c.aliases.len()
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            };
            let listeners = Listeners::bind(&config.dns.listen)?;
            tokio::runtime::Runtime::new()?.block_on(dns_sidecar::run(config, listeners, shutdown_signal()))?;
            Ok(())
        }
        Command::Demo(args) => tokio::runtime::Runtime::new()?.block_on(dns_sidecar::demo::run(args)),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
