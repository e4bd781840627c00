//! Scratch directories and free ports.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, TestbedError};

/// Environment variable that overrides where scratch directories are created.
pub const DIR_ENV: &str = "DNS_SIDECAR_TESTBED_DIR";

/// `/dev/shm` needs at least this much free space to be used. A pair needs
/// ~60 MiB of files plus PostgreSQL's own dynamic shared memory; Docker's
/// default `/dev/shm` is only 64 MiB, which would fail with ENOSPC mid-test.
const MIN_SHM_FREE_KIB: u64 = 256 * 1024;

/// Where scratch directories go: `$DNS_SIDECAR_TESTBED_DIR` if set, else
/// `/dev/shm` if it exists and has room (tmpfs: `initdb` + `pg_basebackup`
/// never touch a disk, so a pair starts in well under a second), else the
/// system temp dir.
pub(crate) fn base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && shm_free_kib(shm).is_none_or(|kib| kib >= MIN_SHM_FREE_KIB) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// Space available to unprivileged users under `path`, in KiB (what
/// `df -Pk` calls "Available"), from `statvfs(3)`. `None` if unknown.
pub(crate) fn shm_free_kib(path: &Path) -> Option<u64> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is writable memory of the
    // right type.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // Both are u64 here, but `c_ulong` is 32 bits on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)) / 1024)
}

/// Create a fresh, uniquely named directory `<base>/<prefix>-<pid>-<random>`.
pub(crate) fn unique_dir(prefix: &str) -> Result<PathBuf> {
    let base = base_dir();
    for _ in 0..100 {
        let dir = base.join(format!("{prefix}-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TestbedError::io(format!("creating {}", dir.display()), e)),
        }
    }
    Err(TestbedError::InvalidOptions(format!(
        "could not create a unique directory under {}",
        base.display()
    )))
}

/// A port in 20000..32768 that is currently bindable on every address in
/// `ips` for TCP (and UDP too if `udp`). Random rather than sequential so
/// that tests running in parallel rarely race for the same port; there is
/// still a small window between this check and the server binding it.
///
/// Below Linux's ephemeral range (`net.ipv4.ip_local_port_range`, 32768 and
/// up by default): a port-0 bind never gets such a port, so neither a client
/// socket opened meanwhile takes it before the server binds it, nor does a
/// `dig` (which binds its query socket with SO_REUSEPORT) join a server's
/// SO_REUSEPORT group on it later and read its own query back.
pub fn free_port(ips: &[IpAddr], udp: bool) -> Result<u16> {
    for _ in 0..500 {
        let port = rand::random_range(20000..32768u16);
        let ok = ips
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok() && (!udp || UdpSocket::bind((*ip, port)).is_ok()));
        if ok {
            return Ok(port);
        }
    }
    Err(TestbedError::NoFreePort(format!("{ips:?}")))
}
