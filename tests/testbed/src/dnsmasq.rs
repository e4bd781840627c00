//! A real `dnsmasq` as the upstream resolver the sidecar forwards to.
//!
//! Why dnsmasq and not a hand-written fake: it is a real resolver with real
//! behaviour for NXDOMAIN, NODATA, truncation (TC bit over UDP, full answer
//! over TCP) and EDNS, which is exactly what a forwarding sidecar must pass
//! through unchanged. It starts in a few milliseconds.
//!
//! It is started with no upstream servers at all (`--no-resolv`, no
//! `--server`), so nothing it is asked can ever leave the machine; names
//! outside its records and `local_domains` get REFUSED.

use std::ffi::OsString;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Result, TestbedError};
use crate::process::{self, Watchdog};
use crate::scratch;
use crate::users;

const HINT: &str = "apt-get install -y dnsmasq-base";

/// What the upstream resolver knows.
#[derive(Clone, Debug, Default)]
pub struct DnsmasqOptions {
    /// `host-record=<name>,<ip>`: A (or AAAA) records, one per entry; the
    /// same name may appear several times.
    pub hosts: Vec<(String, IpAddr)>,
    /// `local=/<domain>/`: dnsmasq answers these domains itself, so
    /// unknown names under them get NXDOMAIN (instead of REFUSED).
    pub local_domains: Vec<String>,
    /// `txt-record=<name>,"<text>"`: one TXT record per entry holding one
    /// string (at most 255 bytes, no line breaks; commas, quotes and
    /// backslashes are fine). Repeat a name with long texts (e.g. 40 x 200 bytes)
    /// to get an answer that is truncated over UDP but complete over TCP.
    pub txt_records: Vec<(String, String)>,
    /// `local-ttl`: TTL of the records above. `None` keeps dnsmasq's
    /// default of 0 (i.e. "do not cache").
    pub local_ttl: Option<u32>,
}

/// A running dnsmasq answering UDP and TCP on `127.0.0.1:<free port>`.
/// Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct Dnsmasq {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    /// Scratch directory (holds `dnsmasq.conf` with the records, and the log).
    pub dir: PathBuf,
    /// dnsmasq's log, including every query (`--log-queries`).
    pub log_file: PathBuf,
    child: Child,
    _watchdog: Watchdog,
}

impl Dnsmasq {
    /// Start dnsmasq and wait (at most 10 s) until it answers a UDP query.
    /// Blocking; takes a few milliseconds.
    pub fn start(opts: DnsmasqOptions) -> Result<Self> {
        let program = locate()?;
        validate(&opts)?;
        let dir = scratch::unique_dir("dns-sidecar-dnsmasq")?;
        let log_file = dir.join("dnsmasq.log");
        let conf_file = dir.join("dnsmasq.conf");
        let result = (|| {
            let port = scratch::free_port(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], true)?;
            fs::write(&conf_file, records_conf(&opts))
                .map_err(|e| TestbedError::io(format!("writing {}", conf_file.display()), e))?;
            let log = fs::File::create(&log_file)
                .map_err(|e| TestbedError::io(format!("creating {}", log_file.display()), e))?;
            let log2 = log.try_clone().map_err(|e| TestbedError::io("dup dnsmasq log", e))?;
            let mut cmd = Command::new(&program);
            cmd.args(args(&conf_file, port))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            let child = process::spawn(&mut cmd, "dnsmasq", HINT)?;
            Ok((port, child))
        })();
        let (port, child) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut child = child;
        let watchdog = match Watchdog::spawn(
            "kill \"$1\" 2>/dev/null; sleep 0.2; kill -KILL \"$1\" 2>/dev/null; rm -rf \"$2\"\n",
            &[OsString::from(child.id().to_string()), OsString::from(&dir)],
        ) {
            Ok(w) => w,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut me = Dnsmasq {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir,
            log_file,
            child,
            _watchdog: watchdog,
        };
        me.wait_ready()
            .map_err(|e| e.with_log("starting dnsmasq", &me.log_file))?;
        Ok(me)
    }

    /// Process id of dnsmasq.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a hand-built query for the root SOA every 10 ms until any answer
    /// with our id arrives; fail early if dnsmasq exited (bad flag, port
    /// taken).
    fn wait_ready(&mut self) -> Result<()> {
        let sock =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| TestbedError::io("binding a UDP socket", e))?;
        sock.set_read_timeout(Some(Duration::from_millis(10)))
            .map_err(|e| TestbedError::io("setting a UDP timeout", e))?;
        let id: u16 = rand::random();
        let mut query = Vec::with_capacity(17);
        query.extend_from_slice(&id.to_be_bytes());
        query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, QDCOUNT=1
        query.extend_from_slice(&[0, 0, 6, 0, 1]); // root, SOA, IN
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| TestbedError::io("dnsmasq", e))? {
                return Err(TestbedError::NotRunning(format!("dnsmasq (exited: {status})")));
            }
            let _ = sock.send_to(&query, self.addr);
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                if from == self.addr && n >= 2 && buf[..2] == id.to_be_bytes() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout {
                    what: "dnsmasq to answer".into(),
                    waited: Duration::from_secs(10),
                    detail: String::new(),
                });
            }
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `$DNSMASQ` if set, else `/usr/sbin/dnsmasq` (not on a non-root `PATH` on
/// Debian), else `dnsmasq` on `PATH`.
fn locate() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DNSMASQ") {
        return Ok(PathBuf::from(p));
    }
    let sbin = Path::new("/usr/sbin/dnsmasq");
    if process::is_executable(sbin) {
        return Ok(sbin.to_path_buf());
    }
    process::find_in_path("dnsmasq").ok_or_else(|| TestbedError::MissingBinary {
        name: "dnsmasq".into(),
        hint: HINT.into(),
    })
}

fn validate(opts: &DnsmasqOptions) -> Result<()> {
    let names = opts
        .hosts
        .iter()
        .map(|(n, _)| n)
        .chain(opts.txt_records.iter().map(|(n, _)| n))
        .chain(opts.local_domains.iter());
    for n in names {
        if n.is_empty() || n.contains([',', '/', ' ', '"']) {
            return Err(TestbedError::InvalidOptions(format!("{n:?} is not a plain DNS name")));
        }
    }
    for (n, t) in &opts.txt_records {
        if t.contains(['\n', '\r']) {
            return Err(TestbedError::InvalidOptions(format!(
                "TXT text for {n} contains a line break"
            )));
        }
        if t.len() > 255 {
            return Err(TestbedError::InvalidOptions(format!(
                "TXT text for {n} is {} bytes; one TXT string holds at most 255",
                t.len()
            )));
        }
    }
    Ok(())
}

/// Flags for a dnsmasq in the foreground on 127.0.0.1 only, configured from
/// the command line alone and logging to stderr: shared by the test upstream
/// here and the load test's forwarding dnsmasq.
pub const LOOPBACK_ARGS: &[&str] = &[
    "--keep-in-foreground",
    "--no-resolv",
    "--no-hosts",
    "--no-poll",
    "--bind-interfaces",
    "--listen-address=127.0.0.1",
    "--pid-file=",
    "--log-facility=-",
];

/// The command line. Flags that matter:
/// - `--keep-in-foreground`: stay our child (so `Drop` can kill it) without
///   `-d`'s debug mode;
/// - `--conf-file=<ours>`: never read `/etc/dnsmasq.conf` (or the
///   `conf-dir` it may name); ours holds only the records;
/// - `--no-resolv --no-hosts --no-poll`: ignore `/etc/resolv.conf` and
///   `/etc/hosts`, so there is no upstream and nothing leaks in;
/// - `--bind-interfaces --listen-address=127.0.0.1`: bind only that address
///   (the default wildcard bind would clash with a system resolver on :53
///   and listen on every interface);
/// - `--pid-file=` (empty): no pid file;
/// - `--user=<us> --group=<our group>`: as root, dnsmasq would otherwise
///   switch to `nobody` / `dip` after binding;
/// - `--log-facility=-`: log to stderr, which goes to the log file.
fn args(conf_file: &Path, port: u16) -> Vec<String> {
    let mut a: Vec<String> = LOOPBACK_ARGS
        .iter()
        .chain(&["--log-queries"])
        .map(|s| s.to_string())
        .collect();
    a.push(format!("--conf-file={}", conf_file.display()));
    a.push(format!("--port={port}"));
    if let Some(user) = users::user_name(users::effective_uid()) {
        a.push(format!("--user={user}"));
    }
    if let Some(group) = users::group_name(users::effective_gid()) {
        a.push(format!("--group={group}"));
    }
    a
}

/// The records, as a dnsmasq config file. A file rather than command-line
/// flags because only the config-file parser understands quoting: on the
/// command line `--txt-record=n,"a,b"` yields the two strings `"a` and `b"`.
fn records_conf(opts: &DnsmasqOptions) -> String {
    let mut c = String::from("# dns-sidecar testbed upstream resolver\n");
    if let Some(ttl) = opts.local_ttl {
        c.push_str(&format!("local-ttl={ttl}\n"));
    }
    for d in &opts.local_domains {
        c.push_str(&format!("local=/{}/\n", d.trim_matches('.')));
    }
    for (name, ip) in &opts.hosts {
        c.push_str(&format!("host-record={name},{ip}\n"));
    }
    for (name, text) in &opts.txt_records {
        let quoted = text.replace('\\', "\\\\").replace('"', "\\\"");
        c.push_str(&format!("txt-record={name},\"{quoted}\"\n"));
    }
    c
}
