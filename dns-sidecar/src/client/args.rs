//! The command line of the admin subcommands: which command, which listener,
//! which token.
//!
//! Kept apart from the transport so that `main` (and `--help`) see only
//! clap types, and so that where a token comes from is decided in one place.

use std::path::PathBuf;
use std::time::Duration;

use super::ClientError;
use crate::config::DEFAULT_ADMIN_LISTEN;

/// Environment variable holding the admin token itself (`--token-file` wins).
pub(crate) const TOKEN_ENV: &str = "DNS_SIDECAR_ADMIN_TOKEN";

/// Longest `--timeout` honoured: a typo like `--timeout 1e9` must not make a
/// HEALTHCHECK hang for decades.
const MAX_TIMEOUT: f64 = 3600.0;

/// Where the admin listener is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// Address of the admin listener (`host:port`).
    #[arg(long = "admin", value_name = "ADDR", env = "DNS_SIDECAR_ADMIN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub(crate) admin: String,
    /// File holding the admin bearer token (else the DNS_SIDECAR_ADMIN_TOKEN
    /// environment variable, else none).
    #[arg(long, value_name = "FILE", env = "DNS_SIDECAR_ADMIN_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub(crate) timeout: f64,
}

impl Conn {
    /// The bearer token: the token file if given (an unreadable or empty
    /// file is an error, not "no token": the operator asked for it), else
    /// `DNS_SIDECAR_ADMIN_TOKEN` if set and not blank, else none.
    pub(crate) fn token(&self) -> Result<Option<String>, ClientError> {
        match &self.token_file {
            Some(path) => {
                let t = std::fs::read_to_string(path).map_err(|source| ClientError::TokenFile {
                    path: path.clone(),
                    source,
                })?;
                let t = t.trim();
                if t.is_empty() {
                    return Err(ClientError::EmptyToken { path: path.clone() });
                }
                Ok(Some(t.to_string()))
            }
            None => Ok(std::env::var(TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())),
        }
    }

    /// `--timeout` as a duration; `None` (keep the client's default) when it
    /// is not a positive finite number.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        (self.timeout.is_finite() && self.timeout > 0.0).then(|| Duration::from_secs_f64(self.timeout.min(MAX_TIMEOUT)))
    }
}

/// The subcommands that talk to a running sidecar.
// The doc comments below are clap's `--help` text, printed as written:
// `[servers.<id>]` names a TOML table there, not an HTML tag.
#[allow(rustdoc::invalid_html_tags)]
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Show what every alias answers and why, the servers, and recent decisions.
    Status {
        #[command(flatten)]
        conn: Conn,
        /// Print the raw `/status` JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Make ALIAS answer SERVER whatever the probes say (until `unpin`).
    Pin {
        /// Alias name, e.g. prod.db.internal (any case, trailing dot optional).
        alias: String,
        /// Server id, the key of its [servers.<id>] table.
        server: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove the pin of ALIAS; it follows the probes again.
    Unpin {
        /// Alias name, e.g. prod.db.internal.
        alias: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Never choose SERVER for any alias (until `undrain`).
    Drain {
        /// Server id, the key of its [servers.<id>] table.
        server: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Let SERVER be chosen again.
    Undrain {
        /// Server id, the key of its [servers.<id>] table.
        server: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Lift ALIAS's fence on SERVER (and lower its timeline floor to SERVER's
    /// timeline), or every fence of ALIAS and its floor. Only once the server
    /// was rebuilt, or the cluster recreated: a fenced server has diverged.
    Unfence {
        /// Alias name, e.g. prod.db.internal.
        alias: String,
        /// Server id; omit to lift every fence of the alias.
        server: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Empty the cache of forwarded answers, or drop NAME and the names
    /// below it (a record fixed upstream, a negative answer to forget now).
    FlushCache {
        /// A name, e.g. example.com (any case, trailing dot optional); omit
        /// to empty the whole cache.
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Exit 0 if the sidecar is ready, 1 if not or unreachable (for a
    /// container HEALTHCHECK; no curl needed).
    Health {
        #[command(flatten)]
        conn: Conn,
        /// Print nothing on success.
        #[arg(short, long)]
        quiet: bool,
    },
}
