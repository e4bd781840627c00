//! Where tokens come from: the instance metadata service (managed identity)
//! and the Entra ID authority host (workload identity), with the overrides
//! the Azure SDKs honour (`AZURE_POD_IDENTITY_AUTHORITY_HOST`,
//! `AZURE_AUTHORITY_HOST`).
//!
//! One rule for every endpoint ([`Url::parse`]): `https`, or plain `http` to
//! a loopback address only (a local stand-in), or the documented metadata
//! address itself, and that only when no override is set. So a test that
//! sets the override can never reach the real metadata service, and a typo
//! in an override can never send a federated token in clear text.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// The instance metadata service's address (link-local, reached without a proxy).
pub(crate) const IMDS_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Its token path.
pub(crate) const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
/// The variable that replaces `http://169.254.169.254` (as in the Azure SDKs).
pub(crate) const IMDS_OVERRIDE: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";
/// The resource Azure Database for PostgreSQL accepts tokens for.
pub(crate) const RESOURCE: &str = "https://ossrdbms-aad.database.windows.net";
/// The same as an OAuth 2.0 v2 scope.
pub(crate) const SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";
/// Entra ID's public-cloud authority host.
pub(crate) const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";

/// An endpoint: scheme, host, port and path (no query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) tls: bool,
    /// A name or an IP literal (without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Starts with `/`.
    pub(crate) path: String,
}

impl Url {
    /// Parses `text`, allowing plain http to loopback addresses only, or to
    /// the metadata address when `imds_default` (no override is set).
    pub(crate) fn parse(text: &str, imds_default: bool) -> Result<Url, String> {
        let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{text}` is not an http(s) URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.contains(['?', '#']) || authority.contains('@') {
            return Err(format!("`{text}`: give scheme, host, port and path only"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| format!("`{text}`: unclosed `[`"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("`{text}`: bad port `{p}`"))?,
            None if tls => 443,
            None => 80,
        };
        if !tls {
            let ip: Option<IpAddr> = host.parse().ok();
            let loopback = ip.is_some_and(|ip| ip.is_loopback());
            let imds = imds_default && ip == Some(IpAddr::V4(IMDS_ADDR)) && port == 80;
            if !loopback && !imds {
                return Err(format!(
                    "`{text}`: plain http is allowed only to a loopback address (a local stand-in); use https"
                ));
            }
        }
        Ok(Url {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `host:port` for the `Host` header.
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (query
/// values and `application/x-www-form-urlencoded` fields).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A variable's value, `None` when unset or empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Managed identity through the instance metadata service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Imds {
    pub(crate) url: Url,
    /// A user-assigned identity's client id (`None`: the system-assigned one).
    pub(crate) client_id: Option<String>,
}

impl Imds {
    /// From `AZURE_POD_IDENTITY_AUTHORITY_HOST` (or the metadata address).
    pub(crate) fn from_env(client_id: Option<String>) -> Result<Imds, String> {
        let url = match var(IMDS_OVERRIDE) {
            Some(base) => Url::parse(&format!("{}{IMDS_PATH}", base.trim().trim_end_matches('/')), false)
                .map_err(|e| format!("{IMDS_OVERRIDE}: {e}"))?,
            None => Url::parse(&format!("http://{IMDS_ADDR}{IMDS_PATH}"), true)?,
        };
        Ok(Imds { url, client_id })
    }

    /// The request target: path and query.
    pub(crate) fn target(&self) -> String {
        let mut t = format!("{}?api-version=2018-02-01&resource={}", self.url.path, encode(RESOURCE));
        if let Some(id) = &self.client_id {
            t.push_str(&format!("&client_id={}", encode(id)));
        }
        t
    }
}

/// AKS workload identity: the variables the webhook injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    /// `{AZURE_AUTHORITY_HOST}{tenant}/oauth2/v2.0/token`.
    pub(crate) url: Url,
    pub(crate) client_id: String,
    /// The projected service-account token (rotated by the kubelet; read at every fetch).
    pub(crate) token_file: PathBuf,
}

impl Workload {
    /// From `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` (unless `client_id` is
    /// given), `AZURE_FEDERATED_TOKEN_FILE` and `AZURE_AUTHORITY_HOST`.
    pub(crate) fn from_env(client_id: Option<String>) -> Result<Workload, String> {
        let tenant = var("AZURE_TENANT_ID");
        let client_id = client_id.or_else(|| var("AZURE_CLIENT_ID"));
        let file = var("AZURE_FEDERATED_TOKEN_FILE");
        let mut missing = Vec::new();
        if tenant.is_none() {
            missing.push("AZURE_TENANT_ID");
        }
        if client_id.is_none() {
            missing.push("AZURE_CLIENT_ID (or entra_client_id)");
        }
        if file.is_none() {
            missing.push("AZURE_FEDERATED_TOKEN_FILE");
        }
        let (Some(tenant), Some(client_id), Some(file)) = (tenant, client_id, file) else {
            return Err(format!("workload identity needs {} set", missing.join(", ")));
        };
        if !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err("AZURE_TENANT_ID is not a tenant id or domain".into());
        }
        let authority = var("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.into());
        let authority = authority.trim().trim_end_matches('/');
        let url = Url::parse(&format!("{authority}/{tenant}/oauth2/v2.0/token"), false)
            .map_err(|e| format!("AZURE_AUTHORITY_HOST: {e}"))?;
        Ok(Workload {
            url,
            client_id,
            token_file: PathBuf::from(file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_or_the_default_metadata_address() {
        assert!(Url::parse("http://127.0.0.1:8080/x", false).is_ok());
        assert!(Url::parse("http://[::1]:8080", false).is_ok());
        assert!(Url::parse("https://login.microsoftonline.com/", false).is_ok());
        let imds = format!("http://{IMDS_ADDR}{IMDS_PATH}");
        assert!(Url::parse(&imds, true).is_ok());
        // With an override set, the metadata address is not special.
        assert!(Url::parse(&imds, false).unwrap_err().contains("loopback"));
        assert!(Url::parse("http://10.0.0.1/", true).unwrap_err().contains("loopback"));
        assert!(Url::parse("http://localhost:1/", false).is_err());
        assert!(Url::parse("ftp://x/", false).is_err());
        assert!(Url::parse("https://u@x/", false).is_err());
        let u = Url::parse("https://[::1]:8443/a/b", false).unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 8443, "/a/b"));
        assert_eq!(u.authority(), "[::1]:8443");
    }

    #[test]
    fn imds_target_has_the_resource_and_client_id() {
        let i = Imds {
            url: Url::parse("http://127.0.0.1:1/metadata/identity/oauth2/token", false).unwrap(),
            client_id: Some("abc-1".into()),
        };
        assert_eq!(
            i.target(),
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fossrdbms-aad.database.windows.net&client_id=abc-1"
        );
    }
}
