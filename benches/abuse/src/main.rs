//! `abuse`: the sidecar (release build, its own process, default limits)
//! under hostile load, on loopback. See benches/README.md.
//!
//! Per scenario, a fresh sidecar (pinned to the server CPU) with a real
//! PostgreSQL primary + replica behind its alias, and:
//!
//! * `blackhole` / `slow` / `healthy`: a flood of forwarded names from many
//!   loopback source addresses, with the upstream a socket that reads and
//!   never answers, one that answers each query after 200 ms, or dnsmasq;
//! * `tcp-noread`: thousands of TCP connections that pipeline queries and
//!   never read an answer;
//! * `admin-slow`: a thousand admin connections sending their headers one
//!   byte at a time (slowloris);
//! * `admin-starve`: admin connections that send `POST /pin` headers with a
//!   Content-Length and never the body, reopened when closed, while a probe
//!   asks `/readyz` on a new connection every 50 ms and times each answer.
//! * `dead-domain`: a healthy upstream that never answers the names of one
//!   domain; one client sends waves of lookups under it (100 at once every
//!   1.5 s) while another looks up healthy, never cached names (four at a
//!   time, every 10 ms): how many of those failed is the result.
//!
//! Meanwhile a prober asks the alias once per millisecond from another
//! address (a SCHED_FIFO thread, so the flood on its CPU does not delay its
//! own wake-ups) and records each answer's latency. Reported: the sidecar's
//! peak RSS (VmHWM), the alias latency percentiles and losses during the
//! flood, what the flood got back, the limit counters, and whether the
//! process is alive and answering afterwards.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use testbed::{Dnsmasq, DnsmasqOptions, PairOptions, PgBinaries, PgPair};

#[derive(Parser, Debug, Clone)]
#[command(about = "Abuse benchmark for dns-sidecar (loopback only)")]
struct Args {
    /// Scenarios, comma-separated: blackhole, slow, healthy, tcp-noread, admin-slow, admin-starve, dead-domain.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "blackhole,slow,healthy,tcp-noread,admin-slow,admin-starve,dead-domain"
    )]
    scenarios: Vec<String>,
    /// Seconds each flood lasts.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// UDP flood rate in queries/s; 0 sends as fast as one core can.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Loopback source addresses the UDP flood comes from (127.0.1.x).
    #[arg(long, default_value_t = 200)]
    sources: u32,
    /// TCP connections in tcp-noread (from 127.0.2.x, 10 per address).
    #[arg(long, default_value_t = 2000)]
    tcp_connections: u32,
    /// Admin connections in admin-slow.
    #[arg(long, default_value_t = 1000)]
    admin_connections: u32,
    /// Header-only POSTs held open in admin-starve (from 50 addresses, plus
    /// 30 more from the probe's own address).
    #[arg(long, default_value_t = 200)]
    starve_connections: u32,
    /// CPU the sidecar is pinned to.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// CPU the flood, the prober and the upstreams are pinned to.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// The sidecar binary.
    #[arg(long, default_value = "target/release/dns-sidecar")]
    sidecar: PathBuf,
    /// Where the report goes (also printed).
    #[arg(long, default_value = "target/abuse/results.md")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    for s in &args.scenarios {
        if ![
            "blackhole",
            "slow",
            "healthy",
            "tcp-noread",
            "admin-slow",
            "admin-starve",
            "dead-domain",
        ]
        .contains(&s.as_str())
        {
            bail!("unknown scenario `{s}`");
        }
    }
    if !args.sidecar.exists() {
        bail!(
            "{} not found; run `cargo build --release -p dns-sidecar` (benches/abuse.sh does)",
            args.sidecar.display()
        );
    }
    pin(args.client_cpu)?;
    let pair = PgPair::start(&PgBinaries::locate()?, PairOptions::default()).context("starting PostgreSQL")?;
    let dir = std::env::temp_dir().join(format!("dns-sidecar-abuse-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let pw = dir.join("pw");
    fs::write(&pw, &pair.password)?;
    let mut rows = Vec::new();
    for s in &args.scenarios {
        eprintln!("abuse: scenario {s}");
        let row = scenario(&args, s, &pair, &dir, &pw).with_context(|| format!("scenario {s}"))?;
        eprintln!(
            "abuse: {s}: VmHWM {:.1} MiB, alias p99 {:.3} ms",
            row.hwm_kib as f64 / 1024.0,
            row.alias.p(0.99)
        );
        rows.push(row);
    }
    let _ = fs::remove_dir_all(&dir);
    let report = report(&args, &rows);
    print!("{report}");
    if let Some(p) = args.out.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(&args.out, &report)?;
    let failed = rows
        .iter()
        .any(|r| !r.alive_after || r.hwm_kib >= 48 * 1000 || r.alias.p(0.99) >= 1.0);
    if failed {
        eprintln!("abuse: a target was missed (peak RSS < 48 MB, alias p99 < 1 ms, alive and answering after)");
        std::process::exit(1);
    }
    Ok(())
}

struct Row {
    name: String,
    flood: String,
    got_back: String,
    hwm_kib: u64,
    rss_idle_kib: u64,
    rss_after_kib: u64,
    alias: Latencies,
    limited: String,
    alive_after: bool,
}

fn scenario(args: &Args, name: &str, pair: &PgPair, dir: &std::path::Path, pw: &std::path::Path) -> Result<Row> {
    // The upstream.
    let stop = Arc::new(AtomicBool::new(false));
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let mut _dnsmasq = None;
    let upstream: SocketAddr = match name {
        "blackhole" | "slow" | "dead-domain" => programmable_upstream(stop.clone(), mode.clone())?,
        _ => {
            let d = Dnsmasq::start(DnsmasqOptions {
                hosts: vec![
                    ("pg-a.test".into(), "127.0.0.2".parse()?),
                    ("pg-b.test".into(), "127.0.0.3".parse()?),
                ],
                local_domains: vec!["test".into(), "example".into()],
                local_ttl: Some(30),
                ..Default::default()
            })?;
            let a = d.addr;
            _dnsmasq = Some(d);
            a
        }
    };
    let dns: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()?).into();
    let admin: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()?).into();
    let cfg = dir.join(format!("{name}.toml"));
    fs::write(&cfg, config(dns, admin, upstream, pair, pw))?;
    let mut sidecar = Sidecar::start(&args.sidecar, &cfg, args.server_cpu, &dir.join(format!("{name}.log")))?;
    let start = Instant::now();
    while alias_rtt(dns, 1).is_none() {
        sidecar.check()?;
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the alias did not answer within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle_kib = status_kib(sidecar.pid(), "VmRSS").unwrap_or(0);
    mode.store(
        match name {
            "blackhole" => BLACK_HOLE,
            "slow" => SLOW,
            _ => HEALTHY,
        },
        Ordering::Relaxed,
    );

    // The prober and the flood.
    let flooding = Arc::new(AtomicBool::new(true));
    let prober = {
        let (f, cpu) = (flooding.clone(), args.client_cpu);
        std::thread::spawn(move || probe_alias(dns, f, cpu))
    };
    std::thread::sleep(Duration::from_millis(200));
    let dur = Duration::from_secs(args.duration);
    let (flood, got_back) = match name {
        "tcp-noread" => tcp_noread(dns, args.tcp_connections, dur),
        "admin-slow" => admin_slow(admin, args.admin_connections, dur),
        "admin-starve" => admin_starve(admin, args.starve_connections, dur),
        "dead-domain" => dead_domain(dns, dur),
        _ => udp_flood(dns, args.sources, args.rate, dur),
    };
    flooding.store(false, Ordering::Relaxed);
    let alias = prober.join().map_err(|_| anyhow::anyhow!("prober panicked"))?;
    let hwm_kib = status_kib(sidecar.pid(), "VmHWM").unwrap_or(0);

    // Afterwards: alive, answering, and what the limits counted.
    std::thread::sleep(Duration::from_millis(500));
    let alive_after = sidecar.check().is_ok() && (0..10).any(|_| alias_rtt(dns, 7).is_some());
    let rss_after_kib = status_kib(sidecar.pid(), "VmRSS").unwrap_or(0);
    let metrics = http_get(admin, "/metrics").unwrap_or_default();
    let limited: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with("dns_sidecar_limited_total") || l.starts_with("dns_sidecar_admin_refused_total"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            let v: f64 = v.parse().ok()?;
            let reason = k.split('"').nth(1)?;
            (v > 0.0).then(|| format!("{reason} {v}"))
        })
        .collect();
    sidecar.stop();
    stop.store(true, Ordering::Relaxed);
    Ok(Row {
        name: name.into(),
        flood,
        got_back,
        hwm_kib,
        rss_idle_kib,
        rss_after_kib,
        alias,
        limited: limited.join(", "),
        alive_after,
    })
}

fn config(dns: SocketAddr, admin: SocketAddr, upstream: SocketAddr, pair: &PgPair, pw: &std::path::Path) -> String {
    format!(
        r#"[dns]
listen = ["{dns}"]

[upstream]
servers = ["{upstream}"]

[[zones]]
name = "db.test"

[probe]
user = "{user}"
password_file = "{pw}"
sslmode = "verify-full"
sslrootcert = "{ca}"
port = {port}

[servers.a]
target = "pg-a.test"
hostaddr = "{a}"

[servers.b]
target = "pg-b.test"
hostaddr = "{b}"

[[aliases]]
name = "prod.db.test"
servers = ["a", "b"]

[admin]
listen = "{admin}"
"#,
        user = pair.probe_user,
        pw = pw.display(),
        ca = pair.ca_cert.display(),
        port = pair.port,
        a = pair.primary.ip,
        b = pair.replica.ip,
    )
}

// ---------------------------------------------------------------- upstreams

const HEALTHY: u8 = 0;
const BLACK_HOLE: u8 = 1;
const SLOW: u8 = 2;

/// An upstream whose behaviour can be switched: healthy (answers pg-a.test
/// and pg-b.test A with their addresses, names under live.example with
/// 10.0.0.1, never answers names under dead.example, everything else
/// NXDOMAIN), a black hole (reads and never answers) or slow (answers after
/// 200 ms). Scenarios
/// start it healthy, so the sidecar has resolved its targets, as it would
/// have in production before the upstream starts failing.
fn programmable_upstream(stop: Arc<AtomicBool>, mode: Arc<AtomicU8>) -> Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_millis(5)))?;
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20);
    let addr = s.local_addr()?;
    std::thread::spawn(move || {
        let mut queue: std::collections::VecDeque<(Instant, SocketAddr, Vec<u8>)> = Default::default();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let m = mode.load(Ordering::Relaxed);
                let dead = buf[..n]
                    .windows(14)
                    .any(|w| w.eq_ignore_ascii_case(b"\x04dead\x07example\x00"));
                if n >= 17 && m != BLACK_HOLE && !dead {
                    let a = answer(&buf[..n]);
                    if m == SLOW {
                        queue.push_back((Instant::now() + Duration::from_millis(200), from, a));
                    } else {
                        let _ = s.send_to(&a, from);
                    }
                }
            }
            while queue.front().is_some_and(|(due, _, _)| *due <= Instant::now()) {
                let (_, to, a) = queue.pop_front().expect("checked");
                let _ = s.send_to(&a, to);
            }
        }
    });
    Ok(addr)
}

/// The upstream's answer to `q` (question kept, OPT dropped).
fn answer(q: &[u8]) -> Vec<u8> {
    let mut end = 12;
    while end < q.len() && q[end] != 0 {
        end += 1 + q[end] as usize;
    }
    let qend = (end + 5).min(q.len());
    let mut a = q[..qend].to_vec();
    a[2] |= 0x80;
    a[3] = 0x80;
    a[6..12].fill(0);
    let name = String::from_utf8_lossy(&q[12..end.min(q.len())]).to_lowercase();
    let ip = if name == "\u{4}pg-a\u{4}test" {
        Some([127, 0, 0, 2])
    } else if name.ends_with("\u{4}live\u{7}example") {
        Some([10, 0, 0, 1])
    } else if name == "\u{4}pg-b\u{4}test" {
        Some([127, 0, 0, 3])
    } else {
        None
    };
    let qtype = q.get(end + 1..end + 3).map(|t| u16::from_be_bytes([t[0], t[1]]));
    match (ip, qtype) {
        (Some(ip), Some(1)) => {
            a[7] = 1;
            a.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
            a.extend_from_slice(&ip);
        }
        (Some(_), _) => {}
        _ => a[3] |= 3,
    }
    a
}

// ---------------------------------------------------------------- sidecar

struct Sidecar {
    child: Child,
}

impl Sidecar {
    fn start(bin: &std::path::Path, cfg: &std::path::Path, cpu: usize, log: &std::path::Path) -> Result<Sidecar> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cpu.to_string()])
            .arg(bin)
            .args(["run", "--config"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log)?);
        // SAFETY: prctl in the child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Ok(Sidecar {
            child: cmd.spawn().context("starting the sidecar")?,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check(&mut self) -> Result<()> {
        if let Some(s) = self.child.try_wait()? {
            bail!("the sidecar exited: {s}");
        }
        Ok(())
    }

    fn stop(&mut self) {
        // SAFETY: plain syscall to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- alias prober

#[derive(Default)]
struct Latencies {
    /// Milliseconds, sorted.
    ms: Vec<f64>,
    lost: u64,
}

impl Latencies {
    fn p(&self, q: f64) -> f64 {
        if self.lost > 0 && q >= 1.0 - self.lost as f64 / (self.ms.len() as f64 + self.lost as f64) {
            return f64::INFINITY;
        }
        if self.ms.is_empty() {
            return f64::INFINITY;
        }
        self.ms[((self.ms.len() as f64 * q) as usize).min(self.ms.len() - 1)]
    }
}

fn query(name: &str, qtype: u16, id: u16) -> Vec<u8> {
    let mut q = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.trim_end_matches('.').split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// One alias query; its round trip, or `None` without a CNAME answer in 1 s.
fn alias_rtt(dns: SocketAddr, id: u16) -> Option<Duration> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let q = query("prod.db.test", 1, id);
    let t = Instant::now();
    s.send_to(&q, dns).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = s.recv_from(&mut buf).ok()?;
        if n >= 12 && buf[..2] == q[..2] {
            // NOERROR with the CNAME and the target's address.
            return (buf[3] & 0x0F == 0 && buf[7] >= 2).then(|| t.elapsed());
        }
    }
}

fn probe_alias(dns: SocketAddr, flooding: Arc<AtomicBool>, cpu: usize) -> Latencies {
    let _ = pin(cpu);
    // SAFETY: sets this thread's scheduling policy; harmless if refused.
    unsafe {
        let p = libc::sched_param { sched_priority: 10 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &p);
    }
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let mut out = Latencies::default();
    let mut id: u16 = 0;
    let mut buf = [0u8; 1500];
    while flooding.load(Ordering::Relaxed) {
        id = id.wrapping_add(1);
        let q = query("prod.db.test", 1, id);
        let t = Instant::now();
        let _ = s.send_to(&q, dns);
        let got = loop {
            match s.recv_from(&mut buf) {
                Ok((n, _)) if n >= 12 && buf[..2] == q[..2] => break Some(t.elapsed()),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        match got {
            Some(d) => out.ms.push(d.as_secs_f64() * 1000.0),
            None => out.lost += 1,
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    out.ms.sort_by(f64::total_cmp);
    out
}

// ---------------------------------------------------------------- floods

fn udp_flood(dns: SocketAddr, sources: u32, rate: u64, dur: Duration) -> (String, String) {
    let socks: Vec<UdpSocket> = (0..sources)
        .filter_map(|i| {
            let ip = Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
            let s = UdpSocket::bind((ip, 0)).ok()?;
            s.set_nonblocking(true).ok()?;
            let _ = socket2::SockRef::from(&s).set_recv_buffer_size(1 << 20);
            Some(s)
        })
        .collect();
    let mut counts = [0u64; 16];
    let mut buf = [0u8; 4096];
    let drain = |s: &UdpSocket, counts: &mut [u64; 16], buf: &mut [u8]| {
        while let Ok((n, _)) = s.recv_from(buf) {
            if n >= 4 {
                counts[(buf[3] & 0x0F) as usize] += 1;
            }
        }
    };
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut i = 0usize;
    while start.elapsed() < dur {
        let s = &socks[i % socks.len()];
        i += 1;
        // A batch of 16 random forwarded names from this source.
        for _ in 0..16 {
            let q = query(&format!("n{sent}.flood.example"), 1, sent as u16);
            if s.send_to(&q, dns).is_ok() {
                sent += 1;
            }
        }
        drain(s, &mut counts, &mut buf);
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Late answers (upstream timeouts answer SERVFAIL after 1.5 s).
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        for s in &socks {
            drain(s, &mut counts, &mut buf);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let answered: u64 = counts.iter().sum();
    let names = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];
    let mut got = String::new();
    for (i, n) in names.iter().enumerate() {
        if counts[i] > 0 {
            let _ = write!(got, "{n} {:.1}%, ", 100.0 * counts[i] as f64 / sent as f64);
        }
    }
    let _ = write!(
        got,
        "no answer {:.1}%",
        100.0 * (sent.saturating_sub(answered)) as f64 / sent as f64
    );
    (
        format!(
            "{sent} UDP queries from {} addresses, {:.0}/s",
            socks.len(),
            sent as f64 / secs
        ),
        got,
    )
}

/// Waves of 100 lookups under dead.example (never answered) every 1.5 s
/// from 127.0.4.1, while 127.0.4.2 looks up fresh names under live.example,
/// four at a time every 10 ms: how many of those were not answered NOERROR.
fn dead_domain(dns: SocketAddr, dur: Duration) -> (String, String) {
    let stop = Arc::new(AtomicBool::new(false));
    let healthy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.4.2:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            let (mut asked, mut failed, mut i) = (0u64, 0u64, 0u32);
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                for k in 0..4 {
                    let _ = s.send_to(&query(&format!("h{}.live.example", i + k), 1, (i + k) as u16), dns);
                }
                let mut ok = 0;
                for _ in 0..4 {
                    match s.recv_from(&mut buf) {
                        Ok((n, _)) if n >= 12 && buf[3] & 0x0F == 0 => ok += 1,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                asked += 4;
                failed += 4 - ok;
                i += 4;
                std::thread::sleep(Duration::from_millis(10));
            }
            (asked, failed)
        })
    };
    let s = UdpSocket::bind("127.0.4.1:0").expect("bind");
    s.set_nonblocking(true).expect("nonblocking");
    let (mut sent, mut waves, mut servfail) = (0u32, 0, 0);
    let mut buf = [0u8; 1500];
    let start = Instant::now();
    while start.elapsed() < dur {
        let wave = Instant::now();
        for _ in 0..100 {
            let _ = s.send_to(&query(&format!("d{sent}.dead.example"), 1, sent as u16), dns);
            sent += 1;
        }
        waves += 1;
        while wave.elapsed() < Duration::from_millis(1500) {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                servfail += u32::from(n >= 4 && buf[3] & 0x0F == 2);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The last wave's SERVFAILs come after the upstream timeout.
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            servfail += u32::from(n >= 4 && buf[3] & 0x0F == 2);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let (asked, failed) = healthy.join().unwrap_or((0, 0));
    (
        format!(
            "{waves} waves of 100 lookups under a dead domain, every 1.5 s, from one address; another address \
            looks up fresh healthy names, 4 at a time every 10 ms"
        ),
        format!(
            "dead lookups: SERVFAIL {servfail} of {sent}; healthy lookups failed: {failed} of {asked} ({:.1}%)",
            100.0 * failed as f64 / asked.max(1) as f64
        ),
    )
}

/// Queries each never-reading TCP connection sends at once: their answers
/// (about 130 kB) are more than the kernel buffers take, so writes block.
const PIPELINED: u16 = 1000;

fn tcp_noread(dns: SocketAddr, n: u32, dur: Duration) -> (String, String) {
    let mut pipelined = Vec::new();
    for id in 0..PIPELINED {
        let q = query("db.test", 255, id);
        pipelined.extend_from_slice(&(q.len() as u16).to_be_bytes());
        pipelined.extend_from_slice(&q);
    }
    let mut conns = Vec::new();
    let mut failed = 0;
    let start = Instant::now();
    for i in 0..n {
        let ip = Ipv4Addr::new(127, 0, 2, 1 + (i / 10) as u8 % 250);
        let s = match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) {
            Ok(s) => s,
            Err(_) => {
                failed += 1;
                continue;
            }
        };
        let _ = s.set_recv_buffer_size(4096);
        if s.bind(&SocketAddr::from((ip, 0)).into()).is_err()
            || s.connect_timeout(&dns.into(), Duration::from_secs(1)).is_err()
        {
            failed += 1;
            continue;
        }
        let mut t: TcpStream = s.into();
        let _ = t.set_nonblocking(true);
        let _ = t.write(&pipelined);
        conns.push(t);
    }
    while start.elapsed() < dur {
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed = conns.iter().filter(|c| peer_closed(c)).count();
    // Those still open are stuck writing: the write timeout (5 s) closes them.
    std::thread::sleep(Duration::from_secs(6));
    let later = conns.iter().filter(|c| peer_closed(c)).count();
    (
        format!(
            "{n} TCP connections from {} addresses, {PIPELINED} pipelined queries each, never \
            reading",
            n.div_ceil(10).min(250)
        ),
        format!(
            "{} connected, {failed} refused at connect; closed by the sidecar: {closed} during the {}s flood, \
            {later} 6 s later",
            conns.len(),
            dur.as_secs()
        ),
    )
}

fn peer_closed(c: &TcpStream) -> bool {
    let mut p = libc::pollfd {
        fd: c.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 0) };
    p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

fn admin_slow(admin: SocketAddr, n: u32, dur: Duration) -> (String, String) {
    let reconnects = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let conns: Arc<Mutex<Vec<Option<TcpStream>>>> = Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let slow = {
        let (r, s, c) = (reconnects.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (i, slot) in c.lock().expect("lock").iter_mut().enumerate() {
                    let alive = slot.as_mut().is_some_and(|t| !peer_closed(t) && t.write(b"X").is_ok());
                    if !alive {
                        let ip = Ipv4Addr::new(127, 0, 3, 1 + (i / 10) as u8 % 250);
                        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok();
                        *slot = sock.and_then(|sock| {
                            sock.bind(&SocketAddr::from((ip, 0)).into()).ok()?;
                            sock.connect_timeout(&admin.into(), Duration::from_millis(200)).ok()?;
                            let mut t: TcpStream = sock.into();
                            t.set_nonblocking(true).ok()?;
                            t.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").ok()?;
                            Some(t)
                        });
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let (mut ok, mut tries) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < dur {
        tries += 1;
        if http_get(admin, "/healthz").is_some_and(|b| b.contains("ok")) {
            ok += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = slow.join();
    (
        format!("{n} admin connections sending headers one byte per 500 ms (reconnecting when closed)"),
        format!(
            "{} connects (closed and reopened); a normal GET /healthz succeeded {ok} of {tries} times",
            reconnects.load(Ordering::Relaxed)
        ),
    )
}

/// Header-only `POST /pin`s (valid from loopback: JSON, no Origin, a
/// Content-Length, never the body): `n` from 127.0.4.1-50 and 30 from
/// 127.0.0.1, each reopened (every 100 ms) when the sidecar closes it. A
/// probe from 127.0.0.1 asks `GET /readyz` on a new connection every 50 ms,
/// as a kubelet does, and times each answer from connect to the end.
fn admin_starve(admin: SocketAddr, n: u32, dur: Duration) -> (String, String) {
    const HEAD: &[u8] =
        b"POST /pin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n";
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let mut sources: Vec<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::new(127, 0, 4, 1 + (i % 50) as u8)).collect();
    sources.extend(std::iter::repeat_n(Ipv4Addr::LOCALHOST, 30));
    let flood = {
        let (s, o) = (stop.clone(), opened.clone());
        std::thread::spawn(move || {
            let mut conns: Vec<Option<TcpStream>> = sources.iter().map(|_| None).collect();
            let mut buf = [0u8; 1024];
            while !s.load(Ordering::Relaxed) {
                for (slot, ip) in conns.iter_mut().zip(&sources) {
                    let alive = slot.as_mut().is_some_and(
                        |t| matches!(t.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                    );
                    if !alive {
                        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok();
                        *slot = sock.and_then(|sock| {
                            sock.bind(&SocketAddr::from((*ip, 0)).into()).ok()?;
                            sock.connect_timeout(&admin.into(), Duration::from_millis(200)).ok()?;
                            let mut t: TcpStream = sock.into();
                            t.write_all(HEAD).ok()?;
                            t.set_nonblocking(true).ok()?;
                            Some(t)
                        });
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut ready = Latencies::default();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        match http_get(admin, "/readyz") {
            Some(b) if b.contains("ready") => ready.ms.push(t.elapsed().as_secs_f64() * 1000.0),
            _ => ready.lost += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = flood.join();
    ready.ms.sort_by(f64::total_cmp);
    let tries = ready.ms.len() as u64 + ready.lost;
    (
        format!("{} header-only POST /pin connections held open ({n} from 50 addresses, 30 from the probe's), reopened when closed", n + 30),
        format!(
            "{} connects; GET /readyz (new connection every 50 ms) 200 in {} of {tries}, p50 / p99 / max {:.3} / {:.3} / {:.3} ms",
            opened.load(Ordering::Relaxed),
            ready.ms.len(),
            ready.p(0.5),
            ready.p(0.99),
            ready.ms.last().copied().unwrap_or(f64::INFINITY)
        ),
    )
}

// ---------------------------------------------------------------- helpers

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let u = UdpSocket::bind("127.0.0.1:0")?;
        let port = u.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
}

fn pin(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is a plain bitmap.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn report(args: &Args, rows: &[Row]) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "## Abuse benchmark\n");
    let _ = writeln!(
        r,
        "Command: `benches/abuse.sh --duration {} --rate {}`; sidecar pinned to CPU {}, flood, prober and upstreams \
            on CPU {}; default `[limits]`; alias probed once per ms.\n",
        args.duration, args.rate, args.server_cpu, args.client_cpu
    );
    let _ = writeln!(
        r,
        "| scenario | flood | what the flood got back | VmHWM | RSS idle / after | alias p50 / p99 / \
        p99.9 / max (ms) | alias lost | limits counted | alive and answering after |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let a = &row.alias;
        let max = a.ms.last().copied().unwrap_or(f64::INFINITY);
        let _ = writeln!(
            r,
            "| {} | {} | {} | {:.1} MiB | {:.1} / {:.1} MiB | {:.3} / {:.3} / {:.3} / {:.3} | {} of {} | {} | {} |",
            row.name,
            row.flood,
            row.got_back,
            row.hwm_kib as f64 / 1024.0,
            row.rss_idle_kib as f64 / 1024.0,
            row.rss_after_kib as f64 / 1024.0,
            a.p(0.5),
            a.p(0.99),
            a.p(0.999),
            max,
            a.lost,
            a.ms.len() as u64 + a.lost,
            if row.limited.is_empty() { "-" } else { &row.limited },
            if row.alive_after { "yes" } else { "NO" }
        );
    }
    r
}
