//! The CLI side of the admin listener: `dns-sidecar status | pin | unpin |
//! drain | undrain | unfence | flush-cache | health`.
//!
//! One file per concern, so a change to one does not wade through the others:
//! - `args.rs`: the subcommands and their flags (clap), where the token
//!   comes from;
//! - `transport.rs`: one HTTP/1.1 request per connection through hyper's
//!   client, with the connect and exchange deadlines;
//! - `endpoints.rs`: `/status`, `/readyz` and the overrides as typed calls;
//! - `render.rs`: the `status` tables;
//! - `error.rs`: what went wrong, worded with what to do next.
//!
//! [`run`] ties them together for `main`: it is synchronous and returns the
//! outcome instead of exiting, so tests call it like the binary does. The
//! admin listener is on loopback or a private address, and `health` runs
//! as a container HEALTHCHECK where no curl is installed.

mod args;
mod endpoints;
mod error;
mod render;
mod transport;

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::control::Override;

pub use args::AdminCommand;
pub use error::ClientError;
pub(crate) use render::render_status;
pub use transport::{Client, Response};

/// Runs one CLI command, printing to `out`. `Ok(false)` means "ran, but the
/// answer is a failure" (only `health`: not ready), for exit code 1.
pub fn run(cmd: &AdminCommand, out: &mut dyn Write) -> Result<bool, ClientError> {
    let (conn, op) = match cmd {
        AdminCommand::Status { conn, json } => {
            let client = Client::from_conn(conn)?;
            let (status, raw) = client.status()?;
            let text = if *json {
                raw
            } else {
                render_status(&status, client.addr(), now())
            };
            let _ = write!(out, "{text}");
            return Ok(true);
        }
        AdminCommand::Health { conn, quiet } => {
            let client = Client::from_conn(conn)?;
            let (ready, body) = client.ready()?;
            if !ready || !quiet {
                let _ = writeln!(out, "{}", body.trim_end());
            }
            return Ok(ready);
        }
        AdminCommand::FlushCache { name, conn } => {
            let body = match name {
                Some(n) => serde_json::json!({ "name": n }),
                None => serde_json::json!({}),
            };
            let summary = Client::from_conn(conn)?.post_json("/cache/flush", &body)?.ok()?.body;
            let _ = writeln!(out, "{}", summary.trim_end());
            return Ok(true);
        }
        AdminCommand::Pin { alias, server, conn } => (
            conn,
            Override::Pin {
                alias: alias.clone(),
                server: server.clone(),
            },
        ),
        AdminCommand::Unpin { alias, conn } => (conn, Override::Unpin { alias: alias.clone() }),
        AdminCommand::Drain { server, conn } => (conn, Override::Drain { server: server.clone() }),
        AdminCommand::Undrain { server, conn } => (conn, Override::Undrain { server: server.clone() }),
        AdminCommand::Unfence { alias, server, conn } => (
            conn,
            Override::Unfence {
                alias: alias.clone(),
                server: server.clone(),
            },
        ),
    };
    let summary = Client::from_conn(conn)?.apply(&op)?;
    let _ = writeln!(out, "{}", summary.trim_end());
    Ok(true)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
