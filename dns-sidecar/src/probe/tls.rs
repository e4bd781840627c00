//! Maps libpq's `sslmode` onto a native-tls connector, because tokio-postgres
//! itself only knows disable/prefer/require and leaves verification to the
//! TLS connector.

use native_tls::{Certificate, TlsConnector};
use postgres_native_tls::MakeTlsConnector;

use crate::config::{ConnSettings, RootCert, SslMode};

/// Why a TLS connector could not be built (bad CA file).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    #[error("cannot read sslrootcert {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("sslrootcert {path} holds no usable PEM certificate: {source}")]
    Pem { path: String, source: native_tls::Error },
    #[error("sslrootcert {path} holds no PEM certificate")]
    Empty { path: String },
    #[error("cannot build the TLS connector: {0}")]
    Build(#[source] native_tls::Error),
}

/// The trust anchors of `c` as read from its `sslrootcert` file now (`None`
/// for the system store). Read once per prober build, and again at every
/// reload: a reload compares the contents, so a CA file replaced in place
/// (same path, new certificates) takes effect on SIGHUP.
pub(crate) fn read_roots(c: &ConnSettings) -> Result<Option<String>, TlsSetupError> {
    match &c.sslrootcert {
        RootCert::System => Ok(None),
        RootCert::File(path) => std::fs::read_to_string(path)
            .map(Some)
            .map_err(|source| TlsSetupError::Read {
                path: path.display().to_string(),
                source,
            }),
    }
}

/// Builds the connector for `c` with `roots`, the contents of its
/// `sslrootcert` file ([`read_roots`]).
pub(crate) fn connector_with(
    c: &ConnSettings,
    roots: Option<&str>,
) -> Result<(MakeTlsConnector, tokio_postgres::config::SslMode), TlsSetupError> {
    use tokio_postgres::config::SslMode as Pg;
    let mut b = TlsConnector::builder();
    let pg_mode = match c.sslmode {
        SslMode::Disable => Pg::Disable,
        SslMode::Prefer => {
            b.danger_accept_invalid_certs(true);
            Pg::Prefer
        }
        SslMode::Require => {
            b.danger_accept_invalid_certs(true);
            Pg::Require
        }
        SslMode::VerifyCa => {
            b.danger_accept_invalid_hostnames(true);
            Pg::Require
        }
        SslMode::VerifyFull => Pg::Require,
    };
    if let RootCert::File(path) = &c.sslrootcert {
        let pem = roots.unwrap_or_default();
        let shown = path.display().to_string();
        // Like libpq, an explicit root file replaces the system store.
        b.disable_built_in_roots(true);
        let mut any = false;
        for block in pem
            .split_inclusive("-----END CERTIFICATE-----")
            .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        {
            let cert = Certificate::from_pem(block.trim().as_bytes()).map_err(|source| TlsSetupError::Pem {
                path: shown.clone(),
                source,
            })?;
            b.add_root_certificate(cert);
            any = true;
        }
        if !any {
            return Err(TlsSetupError::Empty { path: shown });
        }
    }
    let tls = b.build().map_err(TlsSetupError::Build)?;
    Ok((MakeTlsConnector::new(tls), pg_mode))
}
