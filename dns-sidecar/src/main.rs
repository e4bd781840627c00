//! The `dns-sidecar` binary: argument parsing, logging and signals. All the
//! work is in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dns_sidecar::config::{Config, Secrets};

#[derive(Parser)]
#[command(
    version,
    about = "Authoritative DNS alias that follows the writable PostgreSQL server"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `dns_sidecar=debug`.
    #[arg(long, env = "DNS_SIDECAR_LOG", default_value = "info", global = true)]
    log: String,
    /// Log format: `human` (default) or `json` (one JSON object per line).
    #[arg(long, env = "DNS_SIDECAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS with the given config until SIGTERM or Ctrl-C; SIGHUP reloads the config.
    Run {
        /// Config file (TOML).
        #[arg(short, long, env = "DNS_SIDECAR_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file without starting: exit 2 on errors. Secrets
    /// (password and token variables or files) that are missing here are
    /// warnings, since they are only needed at run time; see --strict.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
        /// Treat missing secrets as errors (exit 2), as `run` does: for
        /// checking on the host that will run it.
        #[arg(long)]
        strict: bool,
    },
    /// Start a throwaway primary + replica and serve an alias for them.
    #[cfg(feature = "demo")]
    Demo(dns_sidecar::demo::DemoArgs),
    /// Talk to a running sidecar's admin listener.
    #[command(flatten)]
    Admin(dns_sidecar::client::AdminCommand),
}

/// The async runtime (probes, engine, TCP, admin, hooks). Its threads run
/// a little below the UDP worker threads, which answer the aliases.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| dns_sidecar::lower_priority(5))
        .build()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Admin(cmd) = &cli.command {
        // A client of the admin listener: no logging, exit 0 / 1.
        let code = match dns_sidecar::client::run(cmd, &mut std::io::stdout()) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match cli.command {
        Command::CheckConfig { file, strict } => {
            match Config::load_with(&file, if strict { Secrets::Required } else { Secrets::Deferred }) {
                Ok((c, warnings)) => {
                    for w in &warnings {
                        eprintln!("{w}");
                    }
                    let note = match warnings.len() {
                        0 => String::new(),
                        n => format!("; {n} warning(s): secrets missing here are needed at run time"),
                    };
                    println!(
                        "{}: OK ({} zone(s), {} server(s), {} alias(es)){note}",
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
            }
        }
        Command::Run { config } => match runtime()?.block_on(dns_sidecar::daemon::run(&config)) {
            Ok(()) => Ok(()),
            Err(dns_sidecar::daemon::DaemonError::Config(e)) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
            // Logged at ERROR already; a status of its own for the service manager.
            Err(dns_sidecar::daemon::DaemonError::Died(_)) => std::process::exit(dns_sidecar::daemon::EXIT_TASK_DIED),
            Err(e) => Err(e.into()),
        },
        #[cfg(feature = "demo")]
        Command::Demo(args) => tokio::runtime::Runtime::new()?.block_on(dns_sidecar::demo::run(args)),
        Command::Admin(_) => unreachable!("handled above"),
    }
}
