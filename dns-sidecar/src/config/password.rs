//! Where a server's probe password comes from (`password_env`,
//! `password_file`, `password_command`, `entra_identity`). Validation only
//! checks the choice and the environment it needs; the values are fetched and
//! kept fresh at run time by [`crate::credential`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;

/// One server's password source. Two servers with equal sources share one
/// refresher (and one token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PasswordSource {
    /// `password_env`: read once, at start and at every reload.
    Env { var: String, value: Secret },
    /// `password_file`: read at start, again when it changes and when the
    /// server refuses the password.
    File(PathBuf),
    /// `password_command`: its standard output (trimmed), run again every
    /// `refresh` and when the server refuses the password.
    Command { argv: Vec<String>, refresh: Duration },
    /// A Microsoft Entra ID access token for Azure Database for PostgreSQL.
    Entra {
        identity: EntraIdentity,
        /// MI: the user-assigned identity's client id (`None`: system-assigned).
        /// WI: overrides `AZURE_CLIENT_ID`.
        client_id: Option<String>,
    },
}

impl PasswordSource {
    /// What to call the source in messages and metric labels, e.g. `managed-identity`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PasswordSource::Env { .. } => "env",
            PasswordSource::File(_) => "file",
            PasswordSource::Command { .. } => "command",
            PasswordSource::Entra { identity, .. } => identity.as_str(),
        }
    }
}

impl fmt::Display for PasswordSource {
    /// For humans (never the value): `password_env PGPASSWORD`, `managed identity`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::Env { var, .. } => write!(f, "password_env {var}"),
            PasswordSource::File(p) => write!(f, "password_file {}", p.display()),
            PasswordSource::Command { argv, .. } => {
                write!(f, "password_command {}", argv.first().map_or("", String::as_str))
            }
            PasswordSource::Entra {
                identity: EntraIdentity::ManagedIdentity,
                ..
            } => f.write_str("managed identity"),
            PasswordSource::Entra {
                identity: EntraIdentity::WorkloadIdentity,
                ..
            } => f.write_str("workload identity"),
        }
    }
}

/// `entra_identity`: which Azure identity asks Entra ID for the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum EntraIdentity {
    /// The VM's / scale set's / AKS node's identity, from the instance
    /// metadata service (IMDS).
    ManagedIdentity,
    /// AKS workload identity: the federated service-account token exchanged
    /// at the authority host.
    WorkloadIdentity,
}

impl EntraIdentity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EntraIdentity::ManagedIdentity => "managed-identity",
            EntraIdentity::WorkloadIdentity => "workload-identity",
        }
    }
}

/// Default `password_refresh`.
pub(crate) const DEFAULT_PASSWORD_REFRESH: Duration = Duration::from_secs(600);
