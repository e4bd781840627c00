//! The servers under test and the upstream: their zone files, config files
//! and command lines, all on 127.0.0.1 and in the scratch directory.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hickory_proto::rr::RecordType;

use crate::dns;
use crate::sys::{self, Proc};

/// The alias every authoritative server answers, and its initial target.
pub const ZONE: &str = "db.test.";
pub const ALIAS: &str = "prod.db.test.";
pub const TARGET_A: &str = "pg-a.test.";
pub const TARGET_B: &str = "pg-b.test.";
/// Mix r's reader alias: `spread = "rotate"` over the two standbys pg-b and
/// pg-c (only configured when the harness starts a second replica).
pub const READERS: &str = "readers.db.test.";
pub const TARGET_C: &str = "pg-c.test.";
/// The zone the upstream serves for forwarded-name tests.
pub const FWD_ZONE: &str = "fwd.test.";

/// Which servers exist. `Sidecar` forwards (like a real deployment: alias
/// answers carry the CNAME plus the target's address, resolved upstream)
/// and caches forwarded answers (the default); `SidecarCname` has no
/// `[upstream]`, so alias answers are the CNAME only, exactly like Knot, NSD
/// and the floor. `SidecarNoProbe` is `Sidecar` with probes every hour (one
/// probe round at start, then none): comparing it with `Sidecar` shows what
/// the probes at their default interval cost. `SidecarNoCache` is `Sidecar`
/// with `[cache] enabled = false` (not measured unless asked for).
/// `Dnsdist` and `DnsdistCache` are dnsdist forwarding to the same upstream,
/// without and with its packet cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Knot,
    Nsd,
    Floor,
    Sidecar,
    SidecarCname,
    SidecarNoProbe,
    SidecarNoCache,
    Dnsmasq,
    Dnsdist,
    DnsdistCache,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Knot,
        Kind::Nsd,
        Kind::Floor,
        Kind::Sidecar,
        Kind::SidecarCname,
        Kind::SidecarNoProbe,
        Kind::SidecarNoCache,
        Kind::Dnsmasq,
        Kind::Dnsdist,
        Kind::DnsdistCache,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Kind::Knot => "knot",
            Kind::Nsd => "nsd",
            Kind::Floor => "floor",
            Kind::Sidecar => "sidecar",
            Kind::SidecarCname => "sidecar-cname",
            Kind::SidecarNoProbe => "sidecar-noprobe",
            Kind::SidecarNoCache => "sidecar-nocache",
            Kind::Dnsmasq => "dnsmasq",
            Kind::Dnsdist => "dnsdist",
            Kind::DnsdistCache => "dnsdist-cache",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.id() == s)
    }

    /// Serves `db.test.` (mixes a and b).
    pub fn authoritative(self) -> bool {
        !matches!(self, Kind::Dnsmasq | Kind::Dnsdist | Kind::DnsdistCache)
    }

    /// Forwards other names to the upstream (mixes c, d, e).
    pub fn forwards(self) -> bool {
        matches!(
            self,
            Kind::Sidecar | Kind::SidecarNoCache | Kind::Dnsmasq | Kind::Dnsdist | Kind::DnsdistCache
        )
    }

    pub fn is_sidecar(self) -> bool {
        matches!(
            self,
            Kind::Sidecar | Kind::SidecarCname | Kind::SidecarNoProbe | Kind::SidecarNoCache
        )
    }

    /// Alias answers carry the target's address (the sidecar has an upstream).
    pub fn chases(self) -> bool {
        matches!(self, Kind::Sidecar | Kind::SidecarNoProbe | Kind::SidecarNoCache)
    }
}

/// A running server.
pub struct Server {
    pub kind: Kind,
    /// e.g. "Knot DNS 3.2.6".
    pub label: String,
    pub addr: SocketAddr,
    pub proc_: Proc,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.proc_.pid()
    }
}

/// Everything the servers need to know, gathered once.
pub struct Setup<'a> {
    pub dir: &'a Path,
    pub server_cpu: usize,
    pub upstream: SocketAddr,
    pub sidecar_bin: &'a Path,
    pub floor_bin: &'a Path,
    pub dnsmasq_cache: u32,
    /// Seconds after which the floor exits by itself.
    pub floor_exit_after: u64,
    /// For the sidecar: the pair's port, CA and password file.
    pub pg: Option<PgInfo>,
    /// The upstream's second address: the forwarding sidecars' `[[forward]]`
    /// zone (mixes f and g).
    pub zone_upstream: Option<SocketAddr>,
}

pub struct PgInfo {
    pub port: u16,
    pub ca_cert: PathBuf,
    pub password_file: PathBuf,
    /// A second replica (pg-c on 127.0.0.4) runs: the sidecar gets server c
    /// and mix r's rotating reader alias over b and c.
    pub second_replica: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no side effects.
    unsafe { libc::geteuid() == 0 }
}

fn taskset(cpu: usize, program: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpu.to_string()).arg(program);
    c
}

fn soa_zone(origin: &str, body: &str) -> String {
    format!(
        "$ORIGIN {origin}\n$TTL 300\n@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 5\n@ IN NS \
            ns.{origin}\n{body}"
    )
}

/// `db.test.`: SOA, NS and the alias as a static CNAME; the same file for
/// Knot and NSD, and the same records dns-sidecar synthesises.
pub fn db_zone() -> String {
    soa_zone(ZONE, &format!("prod 5 IN CNAME {TARGET_A}\n"))
}

/// Name `i` under `fwd.test.` and its address (loopback addresses: this is
/// only data, nothing ever connects to them).
pub fn fwd_name(i: usize) -> (String, String) {
    (format!("h{i}.{FWD_ZONE}"), format!("127.1.{}.{}", i / 256, i % 256))
}

fn fwd_zone(names: usize) -> String {
    let mut body = String::from("ns IN A 127.0.0.1\n");
    for i in 0..names {
        let (n, a) = fwd_name(i);
        let _ = writeln!(body, "{n} IN A {a}");
    }
    soa_zone(FWD_ZONE, &body)
}

/// The zone of mix e: a wildcard, so every one of its never-repeating names
/// exists (TTL 300, as in `fwd.test.`).
pub const MISS_ZONE: &str = "miss.test.";

/// Name `i` of mix e.
pub fn miss_name(i: usize) -> String {
    format!("m{i}.{MISS_ZONE}")
}

fn miss_zone() -> String {
    soa_zone(MISS_ZONE, "ns IN A 127.0.0.1\n* IN A 127.3.0.1\n")
}

/// The `[[forward]]` zone of mixes f and g, served by the upstream Knot on
/// a second port: to the sidecar a second upstream (its own address,
/// sockets, health and breaker), to the CPU accounting the same process.
pub const CORP_ZONE: &str = "corp.test.";

/// Name `i` of the forward zone that repeats (mix f), and its address.
pub fn corp_name(i: usize) -> (String, String) {
    (format!("h{i}.{CORP_ZONE}"), format!("127.6.{}.{}", i / 256, i % 256))
}

/// Name `i` of the forward zone never asked before (mix g).
pub fn corp_miss_name(i: usize) -> String {
    format!("m{i}.miss.{CORP_ZONE}")
}

fn corp_zone(names: usize) -> String {
    let mut body = String::from("ns IN A 127.0.0.1\n*.miss IN A 127.7.0.1\n");
    for i in 0..names {
        let (n, a) = corp_name(i);
        let _ = writeln!(body, "{n} IN A {a}");
    }
    soa_zone(CORP_ZONE, &body)
}

/// The `[[forward]]` zone the forwarding sidecars get (mixes f and g).
pub fn forward_zone_conf(server: SocketAddr) -> String {
    format!(
        "\n[[forward]]\nzone = \"{}\"\nservers = [\"{server}\"]\ntimeout = \"500ms\"\n",
        CORP_ZONE.trim_end_matches('.')
    )
}

/// The zone of mix d (see [`crate::replay::Workload`]): every name that
/// exists with its own TTL; the others get NXDOMAIN, kept for the SOA
/// MINIMUM of 30 s.
fn zipf_zone(w: &crate::replay::Workload) -> String {
    let mut body = String::from("ns IN A 127.0.0.1\n");
    for (i, ttl) in w.ttls.iter().enumerate() {
        if let Some(ttl) = ttl {
            let _ = writeln!(body, "{} {ttl} IN A 127.4.{}.{}", w.name(i), i / 256, i % 256);
        }
    }
    format!(
        "$ORIGIN {z}\n$TTL 300\n@ IN SOA ns.{z} hostmaster.{z} 1 3600 600 86400 {neg}\n@ IN NS ns.{z}\n{body}",
        z = crate::replay::ZONE,
        neg = crate::replay::NEGATIVE_TTL
    )
}

/// `test.`: the alias targets' addresses, which dns-sidecar resolves
/// upstream to complete its alias answers.
fn targets_zone() -> String {
    soa_zone(
        "test.",
        "ns IN A 127.0.0.1\npg-a IN A 127.0.0.2\npg-b IN A 127.0.0.3\npg-c IN A 127.0.0.4\n",
    )
}

fn knot_conf(dir: &Path, port: u16, zones: &[(&str, &str)], stats: bool, port2: Option<u16>) -> String {
    let mut c = String::new();
    let listen = match port2 {
        Some(p2) => format!("[ 127.0.0.1@{port}, 127.0.0.1@{p2} ]"),
        None => format!("127.0.0.1@{port}"),
    };
    let _ = writeln!(c, "server:\n    listen: {listen}\n    rundir: \"{}\"", dir.display());
    if is_root() {
        c.push_str("    user: root:root\n");
    }
    // Worker counts stay at Knot's defaults (one UDP worker per online CPU).
    // Knot pins each UDP worker to a CPU of its own choosing over `taskset`;
    // the harness moves every thread back to the server CPU after start-up
    // (sys::pin_tree).
    c.push_str("log:\n  - target: stderr\n    any: warning\n");
    if stats {
        // The upstream counts the queries it answers (read with knotc after
        // each round: what the caches in front of it saved).
        let _ = writeln!(c, "control:\n    listen: \"{}\"", dir.join("knot.sock").display());
        c.push_str("mod-stats:\n  - id: default\n    request-protocol: on\n    server-operation: on\n");
    }
    let _ = writeln!(c, "database:\n    storage: \"{}\"", dir.join("db").display());
    let _ = writeln!(
        c,
        "template:\n  - id: default\n    storage: \"{}\"\n    semantic-checks: off\n    journal-content: \
            none\n    zonefile-sync: -1{}",
        dir.display(),
        if stats {
            "\n    global-module: mod-stats/default"
        } else {
            ""
        }
    );
    c.push_str("zone:\n");
    for (domain, file) in zones {
        let _ = writeln!(c, "  - domain: {domain}\n    file: \"{file}\"");
    }
    c
}

/// Starts a Knot instance serving `zones` (name, zone text) on a free port
/// (with `stats`, counting the queries it answers: see [`upstream_queries`]).
fn start_knot(name: &str, dir: &Path, cpu: usize, zones: &[(&str, String)], stats: bool) -> Result<(SocketAddr, Proc)> {
    start_knot_on(name, dir, cpu, zones, stats, None)
}

/// [`start_knot`], also listening on `port2` when given.
fn start_knot_on(
    name: &str,
    dir: &Path,
    cpu: usize,
    zones: &[(&str, String)],
    stats: bool,
    port2: Option<u16>,
) -> Result<(SocketAddr, Proc)> {
    fs::create_dir_all(dir.join("db"))?;
    let port = sys::free_port()?;
    let mut files = Vec::new();
    for (domain, text) in zones {
        let file = format!("{}zone", domain);
        fs::write(dir.join(&file), text)?;
        files.push((*domain, file));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(d, f)| (*d, f.as_str())).collect();
    let conf = dir.join("knot.conf");
    fs::write(&conf, knot_conf(dir, port, &refs, stats, port2))?;
    let knotd = sys::which("knotd").context("knotd not found (apt-get install -y knot)")?;
    let mut cmd = taskset(cpu, &knotd);
    cmd.arg("-c").arg(&conf);
    let p = Proc::spawn(name, cmd, &dir.join("knotd.log"))?;
    Ok((SocketAddr::from(([127, 0, 0, 1], port)), p))
}

/// The upstream for forwarded names and alias targets: Knot, authoritative
/// for `fwd.test.` (`names` A records), `miss.test.` (a wildcard),
/// `zipf.test.` (the names of mix d), `corp.test.` (mixes f and g) and
/// `test.` (pg-a, pg-b); it counts the queries it answers. It also listens
/// on a second port, returned second: the sidecars' `[[forward]]` zone.
pub fn start_upstream(
    dir: &Path,
    cpu: usize,
    names: usize,
    zipf: &crate::replay::Workload,
) -> Result<(SocketAddr, SocketAddr, Proc)> {
    let dir = dir.join("upstream");
    fs::create_dir_all(&dir)?;
    let zones = [
        (FWD_ZONE, fwd_zone(names)),
        (MISS_ZONE, miss_zone()),
        (crate::replay::ZONE, zipf_zone(zipf)),
        (CORP_ZONE, corp_zone(names)),
        ("test.", targets_zone()),
    ];
    let port2 = sys::free_port()?;
    let (addr, mut p) = start_knot_on("upstream knotd", &dir, cpu, &zones, true, Some(port2))?;
    let probe = fwd_name(0);
    wait_ready(&mut p, addr, &probe.0, |a| a.addrs == [probe.1.clone()])?;
    let second = SocketAddr::from(([127, 0, 0, 1], port2));
    let probe = corp_name(0);
    wait_ready(&mut p, second, &probe.0, |a| a.addrs == [probe.1.clone()])?;
    Ok((addr, second, p))
}

/// Starts one server under test, pinned to `setup.server_cpu`, and waits
/// until it answers correctly.
pub fn start(kind: Kind, s: &Setup) -> Result<Server> {
    let dir = s.dir.join(kind.id());
    fs::create_dir_all(&dir)?;
    let cpu = s.server_cpu;
    let (addr, label, mut p) = match kind {
        Kind::Knot => {
            let (addr, p) = start_knot("knotd", &dir, cpu, &[(ZONE, db_zone())], false)?;
            (
                addr,
                sys::version_of("knotd", "--version").replace("knotd (Knot DNS), version", "Knot DNS"),
                p,
            )
        }
        Kind::Nsd => {
            let port = sys::free_port()?;
            fs::write(dir.join("db.test.zone"), db_zone())?;
            let conf = dir.join("nsd.conf");
            fs::write(&conf, nsd_conf(&dir, port))?;
            let nsd = sys::which("nsd").context("nsd not found (apt-get install -y nsd)")?;
            let mut cmd = taskset(cpu, &nsd);
            cmd.arg("-d").arg("-c").arg(&conf);
            let p = Proc::spawn("nsd", cmd, &dir.join("nsd.out"))?;
            (
                SocketAddr::from(([127, 0, 0, 1], port)),
                sys::version_of(nsd.to_str().unwrap_or("nsd"), "-v").replace("version ", ""),
                p,
            )
        }
        Kind::Floor => {
            let port = sys::free_port()?;
            let mut cmd = taskset(cpu, s.floor_bin);
            cmd.args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--target",
                TARGET_A,
                "--ttl",
                "5",
                "--exit-after",
                &s.floor_exit_after.to_string(),
            ]);
            let p = Proc::spawn("floor", cmd, &dir.join("floor.log"))?;
            (
                SocketAddr::from(([127, 0, 0, 1], port)),
                "floor (recvmmsg/sendmmsg)".to_string(),
                p,
            )
        }
        Kind::Sidecar | Kind::SidecarCname | Kind::SidecarNoProbe | Kind::SidecarNoCache => {
            let pg = s.pg.as_ref().context("dns-sidecar needs the PostgreSQL pair")?;
            let port = sys::free_port()?;
            let conf = dir.join("config.toml");
            let upstream = kind.chases().then_some(s.upstream);
            let interval = if kind == Kind::SidecarNoProbe { "1h" } else { "100ms" };
            let mut text = sidecar_conf(port, upstream, pg, interval);
            if let (Some(z), true) = (s.zone_upstream, kind.chases()) {
                text.push_str(&forward_zone_conf(z));
            }
            if kind == Kind::SidecarNoCache {
                text.push_str("\n[cache]\nenabled = false\n");
            }
            fs::write(&conf, text)?;
            let mut cmd = taskset(cpu, s.sidecar_bin);
            cmd.arg("run").arg("--config").arg(&conf).env("DNS_SIDECAR_LOG", "info");
            let p = Proc::spawn(kind.id(), cmd, &dir.join("sidecar.log"))?;
            let version = sys::version_of(s.sidecar_bin.to_str().unwrap_or("dns-sidecar"), "--version");
            let label = match kind {
                Kind::Sidecar => format!("{version} (forwarding, cache on: the defaults)"),
                Kind::SidecarNoProbe => format!("{version} (forwarding, probes every hour)"),
                Kind::SidecarNoCache => format!("{version} (forwarding, cache off)"),
                _ => format!("{version} (no upstream)"),
            };
            (SocketAddr::from(([127, 0, 0, 1], port)), label, p)
        }
        Kind::Dnsmasq => {
            let port = sys::free_port()?;
            let empty = dir.join("dnsmasq.conf");
            fs::write(&empty, "# all settings are on the command line\n")?;
            let prog = sys::which("dnsmasq").context("dnsmasq not found (apt-get install -y dnsmasq-base)")?;
            let mut cmd = taskset(cpu, &prog);
            cmd.args(testbed::DNSMASQ_LOOPBACK_ARGS).arg("--dns-forward-max=4096");
            cmd.arg(format!("--conf-file={}", empty.display()));
            cmd.arg(format!("--port={port}"));
            cmd.arg(format!("--server={}#{}", s.upstream.ip(), s.upstream.port()));
            cmd.arg(format!("--cache-size={}", s.dnsmasq_cache));
            if is_root() {
                cmd.args(["--user=root", "--group=root"]);
            }
            let p = Proc::spawn("dnsmasq", cmd, &dir.join("dnsmasq.log"))?;
            let label = sys::version_of(prog.to_str().unwrap_or("dnsmasq"), "--version")
                .split("  ")
                .next()
                .unwrap_or("dnsmasq")
                .to_string();
            let label = if s.dnsmasq_cache == 0 {
                format!("{label} (no cache)")
            } else {
                format!("{label} (cache {})", s.dnsmasq_cache)
            };
            (SocketAddr::from(([127, 0, 0, 1], port)), label, p)
        }
        Kind::Dnsdist | Kind::DnsdistCache => {
            let port = sys::free_port()?;
            let conf = dir.join("dnsdist.conf");
            fs::write(&conf, dnsdist_conf(port, s.upstream, kind == Kind::DnsdistCache))?;
            let prog = sys::which("dnsdist").context("dnsdist not found (apt-get install -y dnsdist)")?;
            let mut cmd = taskset(cpu, &prog);
            cmd.args(["--supervised", "--disable-syslog", "-C"]).arg(&conf);
            let p = Proc::spawn(kind.id(), cmd, &dir.join("dnsdist.log"))?;
            let version = sys::version_of(prog.to_str().unwrap_or("dnsdist"), "--version")
                .lines()
                .next()
                .unwrap_or("dnsdist")
                .split(" (")
                .next()
                .unwrap_or("dnsdist")
                .to_string();
            let label = if kind == Kind::DnsdistCache {
                format!("{version} (packet cache: 10000 entries, max TTL 1 h, SERVFAIL 5 s)")
            } else {
                format!("{version} (no cache)")
            };
            (SocketAddr::from(([127, 0, 0, 1], port)), label, p)
        }
    };
    match kind {
        Kind::Dnsmasq | Kind::Dnsdist | Kind::DnsdistCache => {
            let probe = fwd_name(1);
            wait_ready(&mut p, addr, &probe.0, |a| a.addrs == [probe.1.clone()])?;
        }
        // The sidecar answers SERVFAIL until its first probe round; wait for
        // the real CNAME.
        _ => wait_ready(&mut p, addr, ALIAS, |a| {
            a.rcode == "NOERROR" && a.cnames.first().map(String::as_str) == Some(TARGET_A)
        })?,
    }
    Ok(Server {
        kind,
        label,
        addr,
        proc_: p,
    })
}

/// Polls `name`/A every 20 ms until `ok` (at most 20 s); fails early if the
/// process exited.
fn wait_ready(p: &mut Proc, addr: SocketAddr, name: &str, ok: impl Fn(&dns::Answer) -> bool) -> Result<()> {
    let start = Instant::now();
    let mut last = None;
    loop {
        p.check_running()?;
        sys::check_interrupted()?;
        if let Some(a) = dns::ask(addr, name, RecordType::A, Duration::from_millis(200)) {
            if ok(&a) {
                return Ok(());
            }
            last = Some(a);
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!(
                "{} on {addr} did not answer {name} A as expected within 20 s (last answer: {:?}); command: {}\n--- \
                    {} (tail) ---\n{}",
                p.name,
                last.map(|a| a.summary()),
                p.command,
                p.log.display(),
                sys::log_tail(&p.log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn nsd_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{d}"
    pidfile: "{d}/nsd.pid"
    xfrdfile: "{d}/xfrd.state"
    zonelistfile: "{d}/zone.list"
    database: ""
    server-count: 1
    verbosity: 0
    hide-version: yes
    # Debian's NSD limits responses per source (RRL, 200/s by default):
    # under dnsperf that drops almost everything. Knot has no RRL unless its
    # rrl module is configured.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
    logfile: "{d}/nsd.log"
remote-control:
    control-enable: no
zone:
    name: {ZONE}
    zonefile: db.test.zone
"#
    )
}

/// dnsdist (Debian's 1.7) forwarding to `upstream`, with its packet cache
/// sized like the sidecar's when `cache`. Security polling (a query to
/// PowerDNS's servers) is off: nothing leaves loopback. Otherwise defaults.
fn dnsdist_conf(port: u16, upstream: SocketAddr, cache: bool) -> String {
    let mut c = format!(
        "setSecurityPollSuffix(\"\")\nsetLocal(\"127.0.0.1:{port}\")\nsetACL({{\"127.0.0.0/8\"}})\nnewServer({{address=\"{upstream}\", name=\"upstream\"}})\n"
    );
    if cache {
        // The sidecar's defaults: 10000 entries, TTLs capped at 1 h; SERVFAIL
        // kept 5 s; expired entries served for 60 s when no backend is up.
        c.push_str(
            "pc = newPacketCache(10000, \
            {maxTTL=3600, minTTL=0, temporaryFailureTTL=5, staleTTL=60})\ngetPool(\"\"):setCache(pc)\n",
        );
    }
    c
}

/// Queries the upstream Knot answered so far (mod-stats, read with knotc),
/// or `None` when they cannot be read.
pub fn upstream_queries(scratch: &Path) -> Option<u64> {
    let conf = scratch.join("upstream").join("knot.conf");
    let out = Command::new(sys::which("knotc")?)
        .arg("-c")
        .arg(conf)
        .args(["stats", "mod-stats.server-operation"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "mod-stats.server-operation[query] = 123" (absent before the first query)
    Some(
        text.lines()
            .filter(|l| l.contains("[query]"))
            .filter_map(|l| l.rsplit('=').next()?.trim().parse::<u64>().ok())
            .sum(),
    )
}

/// The sidecar config: as the integration tests write it (zone db.test,
/// servers a/b on 127.0.0.2/.3 with TLS verify-full, alias prod.db.test
/// read-write, probes every `interval`), plus nine more aliases of various
/// roles (the memory target is stated for ten aliases), admin listener off;
/// with a second replica, server c (127.0.0.4) and mix r's reader alias
/// rotating over b and c.
pub fn sidecar_conf(port: u16, upstream: Option<SocketAddr>, pg: &PgInfo, interval: &str) -> String {
    let mut t = format!("[dns]\nlisten = [\"127.0.0.1:{port}\"]\n\n");
    if let Some(u) = upstream {
        let _ = write!(t, "[upstream]\nservers = [\"{u}\"]\ntimeout = \"500ms\"\n\n");
    }
    let _ = write!(
        t,
        r#"[[zones]]
name = "db.test"

[probe]
interval = "{interval}"
fresh_connection_interval = "{fresh}"
user = "probe"
password_file = "{pw}"
sslmode = "verify-full"
sslrootcert = "{ca}"
port = {pgport}

[servers.a]
target = "pg-a.test"
hostaddr = "127.0.0.2"

[servers.b]
target = "pg-b.test"
hostaddr = "127.0.0.3"

[[aliases]]
name = "prod.db.test"
role = "read-write"
servers = ["a", "b"]

[admin]
enabled = false

# One dnsperf client measures throughput: the per-client limit on forwarded
# queries (default 1000/s) would measure the limit instead.
[limits]
forward_rate = 0
"#,
        pw = pg.password_file.display(),
        ca = pg.ca_cert.display(),
        pgport = pg.port,
        fresh = if interval == "100ms" { "10s" } else { interval },
    );
    if pg.second_replica {
        let _ = write!(
            t,
            r#"
[servers.c]
target = "pg-c.test"
hostaddr = "127.0.0.4"

[[aliases]]
name = "{readers}"
role = "standby"
servers = ["b", "c"]
spread = "rotate"
"#,
            readers = READERS.trim_end_matches('.')
        );
    }
    let roles = ["read-write", "standby", "prefer-standby", "any", "read-only", "primary"];
    for i in 2..=10 {
        let _ = write!(
            t,
            "\n[[aliases]]\nname = \"alias{i}.db.test\"\nrole = \"{}\"\nservers = [\"a\", \"b\"]\n",
            roles[i % roles.len()]
        );
    }
    t
}
