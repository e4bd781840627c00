//! A throwaway certificate authority made with the `openssl` CLI.
//!
//! Why real certificates: the sidecar connects with `sslmode=verify-full`
//! semantics, i.e. it checks the chain *and* that the server's certificate
//! names the host it meant to reach. The testbed therefore gives every
//! cluster its own certificate for its own DNS name (and IP), so a test can
//! catch a sidecar that talks to the wrong server or skips verification.
//!
//! EC P-256 keys are used because generating them is instant (RSA 2048 takes
//! tens of milliseconds per key). `openssl req -x509 -CA` needs OpenSSL 3.0+
//! (Debian 12 ships 3.0). A minimal config file is passed with `-config` so
//! the system `openssl.cnf` cannot add surprising default extensions.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Result, TestbedError};
use crate::process::run;

const OPENSSL_HINT: &str = "apt-get install -y openssl";
const TIMEOUT: Duration = Duration::from_secs(30);
const DAYS: &str = "30";

/// A CA certificate and key inside a directory.
#[derive(Clone, Debug)]
pub struct Ca {
    pub dir: PathBuf,
    pub cert: PathBuf,
    key: PathBuf,
    config: PathBuf,
}

/// A server certificate and its private key (PEM files).
#[derive(Clone, Debug)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// Create `dir` (if needed) and a self-signed CA `ca.crt` / `ca.key` in it.
    pub fn create(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| TestbedError::io(format!("creating {}", dir.display()), e))?;
        let config = dir.join("openssl.cnf");
        fs::write(&config, "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n")
            .map_err(|e| TestbedError::io(format!("writing {}", config.display()), e))?;
        let ca = Ca {
            dir: dir.to_path_buf(),
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
            config,
        };
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-config"])
            .arg(&ca.config)
            .args(["-x509", "-new", "-nodes", "-days", DAYS])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .arg("-keyout")
            .arg(&ca.key)
            .arg("-out")
            .arg(&ca.cert)
            .args(["-subj", "/CN=dns-sidecar testbed CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .args(["-addext", "subjectKeyIdentifier=hash"]);
        run(&mut cmd, "openssl: creating the testbed CA", TIMEOUT, OPENSSL_HINT)?;
        set_mode(&ca.cert, 0o644)?;
        Ok(ca)
    }

    /// Issue a server certificate `<file_stem>.crt` / `.key` with
    /// `subjectAltName = DNS:<dns_name>, IP:<ip>`. The key is mode 0600
    /// (PostgreSQL refuses group/world-readable keys); the caller must chown
    /// it to the server's user.
    pub fn issue_server(&self, file_stem: &str, dns_name: &str, ip: IpAddr) -> Result<ServerCert> {
        let sc = ServerCert {
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-config"])
            .arg(&self.config)
            .args(["-x509", "-new", "-nodes", "-days", DAYS])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .arg("-keyout")
            .arg(&sc.key)
            .arg("-out")
            .arg(&sc.cert)
            .arg("-subj")
            .arg(format!("/CN={dns_name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{dns_name},IP:{ip}"))
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "keyUsage=critical,digitalSignature"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .args(["-addext", "subjectKeyIdentifier=hash"])
            .args(["-addext", "authorityKeyIdentifier=keyid"]);
        run(
            &mut cmd,
            &format!("openssl: issuing the server certificate for {dns_name}"),
            TIMEOUT,
            OPENSSL_HINT,
        )?;
        set_mode(&sc.cert, 0o644)?;
        set_mode(&sc.key, 0o600)?;
        Ok(sc)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| TestbedError::io(format!("chmod {mode:o} {}", path.display()), e))
}
