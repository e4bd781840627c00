//! `loadtest`: dns-sidecar against Knot, NSD, dnsmasq, dnsdist and a
//! do-nothing floor under `dnsperf`, on loopback, in interleaved rounds. See
//! benches/README.md.
//!
//! What it does, in order:
//! 1. pins itself to the client CPU (so everything it starts that is not a
//!    server under test -- PostgreSQL, the upstream, dnsperf -- runs there);
//! 2. starts the upstream Knot (`fwd.test.` + `test.`), a PostgreSQL
//!    primary and streaming replica (the testbed crate, tests/testbed/),
//!    and the servers under test pinned to the server CPU with `taskset`;
//! 3. checks every server's answers with raw queries;
//! 4. per query mix, runs dnsperf against each server in turn, round after
//!    round, reading each server's CPU time from /proc before and after;
//! 5. optionally promotes the replica in the middle of an extra dns-sidecar
//!    round and checks the alias followed;
//! 6. prints a Markdown report and writes it (plus every round as CSV).
//!
//! Every child is in its own process group with `PR_SET_PDEATHSIG`, and
//! SIGINT/SIGTERM unwind through `Drop`, so nothing outlives the harness.

mod charts;
mod dns;
mod dnsperf;
#[cfg(test)]
mod docs_tests;
mod replay;
mod report;
mod servers;
mod sys;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hickory_proto::rr::RecordType;
use testbed::{PairOptions, PgBinaries, PgPair};

use servers::{Kind, Server};

#[derive(Parser, Debug, Clone)]
#[command(about = "DNS load test: dns-sidecar vs Knot, NSD, dnsmasq, dnsdist and a do-nothing floor (loopback only)")]
pub struct Args {
    /// 1 round x 2 s per server and mix: checks the harness end to end in about 2 minutes.
    #[arg(long)]
    quick: bool,
    /// Rounds per server and mix (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Seconds per round (default 10; 2 with --quick).
    #[arg(long)]
    duration: Option<u32>,
    /// Servers to measure, comma-separated: knot, nsd, floor, sidecar,
    /// sidecar-cname, sidecar-noprobe, dnsmasq, dnsdist, dnsdist-cache, and
    /// (only when named) sidecar-nocache.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "knot,nsd,floor,sidecar,sidecar-cname,sidecar-noprobe,dnsmasq,dnsdist,dnsdist-cache"
    )]
    servers: Vec<String>,
    /// Query mixes, comma-separated: a (alias only), b (90% alias, 10%
    /// nonexistent names), c (forwarded names that repeat: cache hits), d (a
    /// realistic mix: Zipf-distributed names with mixed TTLs), e (forwarded
    /// names never asked before: cache misses; last, as it fills caches),
    /// f and g (c and e with every other name in a `[[forward]]` zone, at a
    /// second upstream; forwarding sidecars only), r (a reader alias
    /// rotating over two standbys; dns-sidecar only, starts a second
    /// replica; only when named).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,f,e,g")]
    mixes: Vec<String>,
    /// Promote the replica in the middle of an extra dns-sidecar round (mix a)
    /// and check that the alias follows.
    #[arg(long)]
    failover: bool,
    /// dnsperf -c: clients (sockets).
    #[arg(long, default_value_t = 1)]
    clients: u32,
    /// dnsperf -q: queries outstanding. Several values (comma-separated)
    /// measure each server at each value, as separate rows.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    outstanding: Vec<u32>,
    /// dnsperf -T: threads.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// dnsperf -t: seconds before a query counts as lost.
    #[arg(long, default_value_t = 2)]
    timeout: u32,
    /// CPU the servers under test are pinned to.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// CPU dnsperf (and the harness, PostgreSQL) are pinned to.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// CPU the upstream Knot (forwarded names, alias targets) is pinned to.
    #[arg(long, default_value_t = 0)]
    upstream_cpu: usize,
    /// Names under fwd.test. in the upstream (mix c cycles through them).
    #[arg(long, default_value_t = 300)]
    fwd_names: usize,
    /// Names of mix d (and of the simulated replay).
    #[arg(long, default_value_t = 3000)]
    zipf_names: usize,
    /// dnsmasq --cache-size (0: every query is forwarded, like dns-sidecar).
    #[arg(long, default_value_t = 0)]
    dnsmasq_cache: u32,
    /// Markdown report (rounds.csv is written next to it).
    #[arg(long)]
    results: Option<PathBuf>,
    /// dns-sidecar binary (default: next to this one, i.e. target/release).
    #[arg(long)]
    sidecar_bin: Option<PathBuf>,
    /// floor binary (default: next to this one).
    #[arg(long)]
    floor_bin: Option<PathBuf>,
    /// A round whose "other CPU" (processes other than the server, dnsperf
    /// and the upstream, e.g. a compile; in % of one core) exceeds this is
    /// noisy: it is repeated (see --retries) and flagged in the report.
    #[arg(long, default_value_t = 60.0)]
    max_other: f64,
    /// How often a noisy round is repeated before it is kept anyway.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Keep the scratch directory (configs, zone files, logs).
    #[arg(long)]
    keep: bool,
}

impl Args {
    pub fn rounds(&self) -> u32 {
        self.rounds.unwrap_or(if self.quick { 1 } else { 3 }).max(1)
    }
    pub fn duration(&self) -> u32 {
        self.duration.unwrap_or(if self.quick { 2 } else { 10 }).max(1)
    }
}

/// A query mix: which queries, and which servers take part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    A,
    B,
    C,
    D,
    E,
    R,
    /// Mix c's names, every other one in the `[[forward]]` zone.
    F,
    /// Mix e's names, every other one in the `[[forward]]` zone.
    G,
}

/// Names of mix e per second of a round: more than any server answers, so
/// no name comes twice within a round (dnsperf loops over its input).
const MISS_NAMES_PER_SECOND: usize = 300_000;
/// Queries in mix d's input (dnsperf loops over it).
const ZIPF_QUERIES: usize = 500_000;

impl Mix {
    fn parse(s: &str) -> Option<Mix> {
        match s {
            "a" => Some(Mix::A),
            "b" => Some(Mix::B),
            "c" => Some(Mix::C),
            "d" => Some(Mix::D),
            "e" => Some(Mix::E),
            "r" => Some(Mix::R),
            "f" => Some(Mix::F),
            "g" => Some(Mix::G),
            _ => None,
        }
    }
    pub fn id(self) -> &'static str {
        match self {
            Mix::A => "a",
            Mix::B => "b",
            Mix::C => "c",
            Mix::D => "d",
            Mix::E => "e",
            Mix::R => "r",
            Mix::F => "f",
            Mix::G => "g",
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            Mix::A => "alias only (`prod.db.test A`)",
            Mix::B => "90% alias, 10% nonexistent names in the zone (NXDOMAIN)",
            Mix::C => {
                "forwarded names that repeat (`hN.fwd.test A`, TTL 300 s): answered from the cache by the \
                caches, forwarded by the others"
            }
            Mix::D => {
                "a realistic mix: Zipf-distributed names of `zipf.test.` with TTLs of 5 s to 1 h and 20% \
                NXDOMAIN names"
            }
            Mix::F => {
                "mix c's names split across two upstreams: every other one (`hN.corp.test A`) in a `[[forward]]` \
                zone: compare with mix c"
            }
            Mix::G => {
                "mix e's names split across two upstreams: every other one (`mN.miss.corp.test A`) in a \
                `[[forward]]` zone, every query a cache miss: compare with mix e"
            }
            Mix::E => {
                "forwarded names never asked before (`mN.miss.test A`, a wildcard upstream): every query a \
                cache miss"
            }
            Mix::R => {
                "a reader alias rotating over two standbys (`readers.db.test A`, `spread = \"rotate\"`), each \
                round paired with mix a's single-target alias on the same process (the `single-target` row)"
            }
        }
    }
    fn takes_part(self, k: Kind) -> bool {
        match self {
            Mix::A | Mix::B => k.authoritative(),
            Mix::C | Mix::D | Mix::E => k.forwards(),
            Mix::R => k.is_sidecar(),
            Mix::F | Mix::G => k.forwards() && k.is_sidecar(),
        }
    }
    /// The queries reach the upstream (its query count is read per round).
    pub fn forwarded(self) -> bool {
        matches!(self, Mix::C | Mix::D | Mix::E | Mix::F | Mix::G)
    }
    /// dnsperf's input (dnsperf loops over it).
    fn data(self, args: &Args, zipf: &replay::Workload) -> String {
        let mut s = String::new();
        match self {
            Mix::A => s.push_str(&format!("{} A\n", servers::ALIAS)),
            Mix::B => {
                for i in 0..1000 {
                    if i % 10 == 9 {
                        s.push_str(&format!("nx{i}.{} A\n", servers::ZONE));
                    } else {
                        s.push_str(&format!("{} A\n", servers::ALIAS));
                    }
                }
            }
            Mix::C => {
                for i in 0..args.fwd_names.max(1) {
                    s.push_str(&format!("{} A\n", servers::fwd_name(i).0));
                }
            }
            Mix::D => s = zipf.data(ZIPF_QUERIES, 1),
            Mix::E => {
                for i in 0..args.duration() as usize * MISS_NAMES_PER_SECOND {
                    s.push_str(&servers::miss_name(i));
                    s.push_str(" A\n");
                }
            }
            Mix::F => {
                for i in 0..args.fwd_names.max(1) {
                    let name = if i % 2 == 0 {
                        servers::fwd_name(i / 2).0
                    } else {
                        servers::corp_name(i / 2).0
                    };
                    s.push_str(&format!("{name} A\n"));
                }
            }
            Mix::G => {
                for i in 0..args.duration() as usize * MISS_NAMES_PER_SECOND {
                    // New names: mix e's own are asked again in neither.
                    let name = if i % 2 == 0 {
                        servers::miss_name(i + 1_000_000_000)
                    } else {
                        servers::corp_miss_name(i)
                    };
                    s.push_str(&name);
                    s.push_str(" A\n");
                }
            }
            Mix::R => s.push_str(&format!("{} A\n", servers::READERS)),
        }
        s
    }
}

/// One measured round.
#[derive(Debug, Clone)]
pub struct Round {
    pub mix: Mix,
    /// Row label, e.g. "knot" or "knot -q 200".
    pub row: String,
    pub round: u32,
    pub stats: dnsperf::Stats,
    pub wall: f64,
    pub server_cpu: f64,
    pub client_cpu: f64,
    pub upstream_cpu: f64,
    /// CPU seconds of kernel work charged to no process: irq and softirq
    /// time (where the loopback's packet processing mostly lands) plus
    /// kernel threads, summed over all CPUs.
    pub kernel_cpu: f64,
    /// CPU seconds of everything else: other processes on the machine,
    /// steal; summed over all CPUs.
    pub other_cpu: f64,
    /// Busy share (0-100 %) of the server's CPU and of dnsperf's CPU, all
    /// causes included (`/proc/stat`).
    pub server_core_pct: f64,
    pub client_core_pct: f64,
    /// Queries the upstream answered during the round (forwarding mixes).
    pub upstream_queries: Option<u64>,
    /// 1 + how often it was repeated because it was noisy.
    pub attempts: u32,
}

impl Round {
    pub fn us_per_query(&self) -> f64 {
        if self.stats.completed == 0 {
            f64::NAN
        } else {
            self.server_cpu / self.stats.completed as f64 * 1e6
        }
    }
    pub fn pct(&self, cpu_s: f64) -> f64 {
        100.0 * cpu_s / self.wall
    }
    pub fn noisy(&self, max_other: f64) -> bool {
        self.pct(self.other_cpu) > max_other
    }
    /// Upstream queries per 1000 answered queries.
    pub fn upstream_per_1000(&self) -> f64 {
        match self.upstream_queries {
            Some(u) if self.stats.completed > 0 => 1000.0 * u as f64 / self.stats.completed as f64,
            _ => f64::NAN,
        }
    }
}

pub struct FailoverResult {
    pub server: String,
    pub round: Round,
    pub promoted_at: f64,
    pub followed_after: Option<f64>,
    /// From the logs, seconds after the promote request: the new primary
    /// accepting connections (PostgreSQL's log), and the sidecar switching
    /// the alias (its log).
    pub pg_ready_after: Option<f64>,
    pub sidecar_switched_after: Option<f64>,
    pub after: Option<dns::Answer>,
    pub ok: bool,
    /// The alias polled every 5 ms from half a second before the promote to
    /// half a second after the first answer naming the new target.
    pub polls: Vec<charts::Poll>,
}

pub struct Memory {
    pub server: String,
    pub idle_rss_kib: Option<u64>,
    pub peak_hwm_kib: Option<u64>,
}

/// Everything the report needs.
pub struct Outcome {
    pub args: Args,
    pub command: String,
    pub started: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub labels: Vec<(String, String)>,
    pub answers: Vec<(String, Vec<(String, String)>)>,
    pub rows: Vec<(Mix, Vec<String>)>,
    pub rounds: Vec<Round>,
    pub failover: Option<FailoverResult>,
    pub memory: Vec<Memory>,
    pub dnsperf_version: String,
    /// Mix d's workload through the cache at a pod's pace (simulated).
    pub replays: Vec<replay::Replay>,
}

fn main() {
    sys::install_signal_handlers();
    let args = Args::parse();
    match run(args) {
        Ok(ok) => std::process::exit(if ok { 0 } else { 1 }),
        Err(e) => {
            if sys::interrupted() {
                eprintln!("loadtest: interrupted; everything stopped and removed");
                std::process::exit(130);
            }
            eprintln!("loadtest: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn exe_sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| std::env::current_dir().unwrap_or_default())
}

fn run(args: Args) -> Result<bool> {
    let ncpu = sys::online_cpus();
    for (what, cpu) in [
        ("--server-cpu", args.server_cpu),
        ("--client-cpu", args.client_cpu),
        ("--upstream-cpu", args.upstream_cpu),
    ] {
        if cpu >= ncpu {
            bail!("{what} {cpu}: this machine has CPUs 0..{}", ncpu - 1);
        }
    }
    if args.server_cpu == args.client_cpu {
        eprintln!(
            "loadtest: warning: server and dnsperf share CPU {}; results measure both together",
            args.server_cpu
        );
    }
    let mut kinds = Vec::new();
    for s in &args.servers {
        let k = Kind::parse(s.trim()).with_context(|| {
            format!(
                "unknown server {s:?}; use knot, nsd, floor, sidecar, \
            sidecar-cname, sidecar-noprobe, sidecar-nocache, dnsmasq, dnsdist, dnsdist-cache"
            )
        })?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let mut mixes = Vec::new();
    for m in &args.mixes {
        let mix = Mix::parse(m.trim()).with_context(|| format!("unknown mix {m:?}; use a, b, c, d, e, r"))?;
        if !mixes.contains(&mix) {
            mixes.push(mix);
        }
    }
    if args.failover && !kinds.iter().any(|k| k.is_sidecar()) {
        bail!("--failover needs the sidecar (or sidecar-cname) among --servers");
    }
    if args.outstanding.is_empty() || args.outstanding.contains(&0) {
        bail!("--outstanding needs positive values");
    }
    let sidecar_bin = args.sidecar_bin.clone().unwrap_or_else(|| exe_sibling("dns-sidecar"));
    let floor_bin = args.floor_bin.clone().unwrap_or_else(|| exe_sibling("floor"));
    for (k, bin, hint) in [(Kind::Floor, &floor_bin, "cargo build --release -p floor")] {
        if kinds.contains(&k) && !bin.is_file() {
            bail!("{} not found; build it first: {hint}", bin.display());
        }
    }
    if kinds.iter().any(|k| k.is_sidecar()) && !sidecar_bin.is_file() {
        bail!(
            "{} not found; build it first: cargo build --release -p dns-sidecar",
            sidecar_bin.display()
        );
    }
    for prog in ["dnsperf", "taskset", "knotd", "knotc"] {
        sys::which(prog)
            .with_context(|| format!("{prog} not found; run benches/loadtest.sh, which installs what is missing"))?;
    }
    if kinds.iter().any(|k| matches!(k, Kind::Dnsdist | Kind::DnsdistCache)) {
        sys::which("dnsdist").context("dnsdist not found; run benches/loadtest.sh, which installs what is missing")?;
    }

    let command = std::env::var("LOADTEST_COMMAND").unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let results = args
        .results
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/loadtest/results.md"));
    let started = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M:%S UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let loadavg_start = sys::loadavg();

    sys::pin_self(args.client_cpu)?;
    let scratch = sys::Scratch::new(args.keep)?;
    let dir = scratch.path.clone();
    eprintln!("loadtest: scratch directory {}", dir.display());

    // dnsperf inputs.
    let zipf = replay::Workload::new(args.zipf_names);
    let mut data_files = Vec::new();
    for &m in &mixes {
        let f = dir.join(format!("mix-{}.txt", m.id()));
        fs::write(&f, m.data(&args, &zipf))?;
        data_files.push((m, f));
    }

    // The upstream: forwarded names for mix c, and the alias targets'
    // addresses that the forwarding sidecar adds to its alias answers.
    let mut zone_upstream = None;
    let need_upstream = kinds.iter().any(|k| k.chases() || k.forwards());
    let (upstream_addr, upstream) = if need_upstream {
        let (a, zone, p) = servers::start_upstream(&dir, args.upstream_cpu, args.fwd_names, &zipf)?;
        sys::pin_tree(p.pid(), args.upstream_cpu)?;
        eprintln!(
            "loadtest: upstream Knot on {a} and {zone} (the [[forward]] zone's server; CPU {})",
            args.upstream_cpu
        );
        zone_upstream = Some(zone);
        (a, Some(p))
    } else {
        ("127.0.0.1:9".parse().expect("literal"), None)
    };

    // Mix r rotates over two standbys: a second replica (pg-c) then.
    let second_replica = mixes.contains(&Mix::R);
    let pair = if kinds.iter().any(|k| k.is_sidecar()) {
        let (what, opts) = if second_replica {
            ("primary + two streaming replicas", PairOptions::trio())
        } else {
            ("primary + streaming replica", PairOptions::default())
        };
        eprintln!("loadtest: starting a PostgreSQL {what} (testbed)");
        let bins = PgBinaries::locate().context("PostgreSQL server binaries (apt-get install -y postgresql-15)")?;
        let pair = PgPair::start(&bins, opts).context("starting the PostgreSQL pair")?;
        sys::check_interrupted()?;
        Some(pair)
    } else {
        None
    };
    let pg = match &pair {
        Some(p) => {
            let pw = dir.join("probe.pw");
            fs::write(&pw, format!("{}\n", p.password))?;
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&pw, fs::Permissions::from_mode(0o600))?;
            }
            Some(servers::PgInfo {
                port: p.port,
                ca_cert: p.ca_cert.clone(),
                password_file: pw,
                second_replica,
            })
        }
        None => None,
    };

    let rounds = args.rounds();
    let dur = args.duration();
    let n_targets = kinds.len() * args.outstanding.len();
    let planned = (rounds as u64 * mixes.len() as u64 * n_targets as u64 + 1) * (dur as u64 + args.timeout as u64 + 5);
    let setup = servers::Setup {
        dir: &dir,
        server_cpu: args.server_cpu,
        upstream: upstream_addr,
        sidecar_bin: &sidecar_bin,
        floor_bin: &floor_bin,
        dnsmasq_cache: args.dnsmasq_cache,
        floor_exit_after: planned * 2 + 600,
        pg,
        zone_upstream,
    };
    let mut running: Vec<Server> = Vec::new();
    for &k in &kinds {
        let needed = mixes.iter().any(|m| m.takes_part(k)) || (args.failover && k.is_sidecar());
        if !needed {
            continue;
        }
        let mut s = servers::start(k, &setup)?;
        let moved = sys::pin_tree(s.pid(), args.server_cpu)?;
        if moved > 0 {
            eprintln!(
                "loadtest: {}: moved {moved} thread(s) that had pinned themselves elsewhere back to CPU {}",
                k.id(),
                args.server_cpu
            );
        }
        let (procs, threads) = sys::tree_size(s.pid());
        s.label = format!(
            "{}; {procs} process{}, {threads} thread{}",
            s.label,
            if procs == 1 { "" } else { "es" },
            if threads == 1 { "" } else { "s" }
        );
        eprintln!(
            "loadtest: {:<14} {} on {} (CPU {}, pid {})",
            k.id(),
            s.label,
            s.addr,
            args.server_cpu,
            s.pid()
        );
        running.push(s);
    }

    // What each server answers, before any load.
    let mut answers = Vec::new();
    let mut answers_ok = true;
    for s in &running {
        let mut row = Vec::new();
        let mut check = |q: &str, expect: &dyn Fn(&dns::Answer) -> bool| {
            let a = dns::ask(s.addr, q, RecordType::A, Duration::from_secs(2));
            let text = a.as_ref().map_or("(no answer)".to_string(), |a| a.summary());
            let good = a.as_ref().is_some_and(expect);
            if !good && s.kind != Kind::Floor {
                answers_ok = false;
            }
            row.push((q.to_string(), text));
        };
        if s.kind.authoritative() {
            let chase = s.kind.chases();
            check(servers::ALIAS, &|a| {
                a.rcode == "NOERROR" && a.cnames == [servers::TARGET_A] && (!chase || a.addrs == ["127.0.0.2"])
            });
            check(&format!("nx9.{}", servers::ZONE), &|a| a.rcode == "NXDOMAIN");
        }
        if s.kind.forwards() {
            let (n, ip) = servers::fwd_name(1);
            check(&n, &|a| a.rcode == "NOERROR" && a.addrs == [ip.clone()]);
        }
        if s.kind.forwards() && s.kind.is_sidecar() && zone_upstream.is_some() {
            // The [[forward]] zone (mixes f and g), through its own upstream.
            let (n, ip) = servers::corp_name(1);
            check(&n, &|a| a.rcode == "NOERROR" && a.addrs == [ip.clone()]);
        }
        if s.kind.is_sidecar() && second_replica {
            let (good, text) = check_rotation(s.addr, s.kind.chases());
            answers_ok &= good;
            row.push((format!("{} (x{ROTATION_CHECK})", servers::READERS), text));
        }
        answers.push((s.kind.id().to_string(), row));
    }
    if !answers_ok {
        eprintln!("loadtest: warning: some answers are not as expected (see the report's answer table)");
    }

    // Idle memory of the sidecars, after a moment of probing.
    sys::sleep(Duration::from_secs(1))?;
    let mut memory: Vec<Memory> = running
        .iter()
        .filter(|s| s.kind.is_sidecar())
        .map(|s| Memory {
            server: s.kind.id().to_string(),
            idle_rss_kib: sys::status_kib(s.pid(), "VmRSS"),
            peak_hwm_kib: None,
        })
        .collect();

    let upstream_pid = upstream.as_ref().map(|p| p.pid());
    let mut all_rounds = Vec::new();
    let mut rows = Vec::new();
    // Mix r compares two aliases of one process: each round measures mix
    // a's single-target alias and then the rotating one, so both see the same
    // machine state (measured one mix after the other, minutes apart, the
    // rounds' spread alone exceeded the 5% being checked).
    let single_file = dir.join("mix-r-single.txt");
    if mixes.contains(&Mix::R) {
        fs::write(&single_file, Mix::A.data(&args, &zipf))?;
    }
    for (mix, file) in &data_files {
        let label = |s: &Server, q: u32, paired: &str| {
            let q = if args.outstanding.len() > 1 {
                format!(" -q {q}")
            } else {
                String::new()
            };
            format!("{}{paired}{q}", s.kind.id())
        };
        let mut targets: Vec<(&Server, u32, &Path, String)> = Vec::new();
        for s in running.iter().filter(|s| mix.takes_part(s.kind)) {
            for &q in &args.outstanding {
                if *mix == Mix::R {
                    targets.push((s, q, single_file.as_path(), label(s, q, report::SINGLE_SUFFIX)));
                }
                targets.push((s, q, file.as_path(), label(s, q, "")));
            }
        }
        if targets.is_empty() {
            continue;
        }
        rows.push((*mix, targets.iter().map(|t| t.3.clone()).collect()));
        for r in 1..=rounds {
            // Mix r alternates which alias of a pair goes first, so that
            // neither always follows the pause between rounds.
            let mut order: Vec<&(&Server, u32, &Path, String)> = targets.iter().collect();
            if *mix == Mix::R && r % 2 == 0 {
                for pair in order.chunks_mut(2) {
                    pair.reverse();
                }
            }
            for (s, q, file, row) in order {
                let (s, q, row) = (*s, *q, row.clone());
                let mut attempt = 1;
                let round = loop {
                    eprint!("loadtest: mix {} round {r}/{rounds} {row:<22} ", mix.id());
                    let mut round = measure(&args, s, q, *mix, file, upstream_pid, &dir, r, &row, |_| Ok(()))?;
                    round.attempts = attempt;
                    let noisy = round.noisy(args.max_other);
                    eprintln!(
                        "{:>7.0} q/s  lost {:>5}  avg {:>6.3} ms  max {:>6.2} ms  {:>5.2} µs/q  server \
                            {:>3.0}%  dnsperf {:>3.0}%  upstream {:>3.0}%  kernel {:>3.0}%  other {:>3.0}%{}{}",
                        round.stats.qps,
                        round.stats.lost,
                        round.stats.avg_latency * 1e3,
                        round.stats.max_latency * 1e3,
                        round.us_per_query(),
                        round.pct(round.server_cpu),
                        round.pct(round.client_cpu),
                        round.pct(round.upstream_cpu),
                        round.pct(round.kernel_cpu),
                        round.pct(round.other_cpu),
                        if round.upstream_queries.is_some() {
                            format!(
                                "  upstream \
                            {:.1}/1000",
                                round.upstream_per_1000()
                            )
                        } else {
                            String::new()
                        },
                        if noisy { "  (noisy)" } else { "" }
                    );
                    sys::sleep(Duration::from_millis(300))?;
                    if !noisy || attempt > args.retries {
                        break round;
                    }
                    attempt += 1;
                    wait_for_quiet(args.max_other)?;
                };
                all_rounds.push(round);
            }
        }
    }

    let failover = if args.failover {
        let pair = pair.as_ref().context("failover needs the PostgreSQL pair")?;
        let s = running
            .iter()
            .find(|s| s.kind == Kind::Sidecar)
            .or_else(|| running.iter().find(|s| s.kind == Kind::SidecarCname))
            .context("no sidecar running")?;
        let file = dir.join("mix-a.txt");
        fs::write(&file, Mix::A.data(&args, &zipf))?;
        Some(failover_round(&args, s, pair, &file, upstream_pid, &dir)?)
    } else {
        None
    };

    for m in memory.iter_mut() {
        if let Some(s) = running.iter().find(|s| s.kind.id() == m.server) {
            m.peak_hwm_kib = sys::status_kib(s.pid(), "VmHWM");
        }
    }
    for s in running.iter_mut() {
        if let Err(e) = s.proc_.check_running() {
            eprintln!("loadtest: warning: {e:#}");
        }
    }

    // Mix d's names at a pod's pace, through the cache's own code.
    let replays = if mixes.contains(&Mix::D) {
        eprintln!("loadtest: simulating an hour of mix d's names through the cache at 1, 10, 100 and 1000 queries/s, without and with prefetch");
        [1.0, 10.0, 100.0, 1000.0]
            .into_iter()
            .flat_map(|rate| [false, true].map(|prefetch| replay::simulate(&zipf, rate, 3600, 42, prefetch)))
            .collect()
    } else {
        Vec::new()
    };

    let outcome = Outcome {
        replays,
        labels: running
            .iter()
            .map(|s| (s.kind.id().to_string(), s.label.clone()))
            .collect(),
        command,
        started,
        loadavg_start,
        loadavg_end: sys::loadavg(),
        answers,
        rows,
        rounds: all_rounds,
        failover,
        memory,
        dnsperf_version: sys::dnsperf_version(),
        args,
    };
    let md = report::markdown(&outcome);
    println!("{md}");
    if let Some(parent) = results.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(&results, &md).with_context(|| format!("writing {}", results.display()))?;
    let csv = results.with_file_name("rounds.csv");
    fs::write(&csv, report::csv(&outcome))?;
    eprintln!("loadtest: wrote {} and {}", results.display(), csv.display());
    for (name, svg) in report::charts(&outcome) {
        let path = results.with_file_name(name);
        fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("loadtest: wrote {}", path.display());
    }

    // Stop the servers before the pair they probe.
    drop(running);
    drop(upstream);
    drop(pair);
    let failover_ok = outcome.failover.as_ref().is_none_or(|f| f.ok);
    Ok(answers_ok && failover_ok)
}

/// Before repeating a noisy round: waits (at most 30 s) until the machine's
/// busy time, with no load running, is below `max_other` % of one core.
fn wait_for_quiet(max_other: f64) -> Result<()> {
    let tck = sys::clock_ticks();
    let start = Instant::now();
    loop {
        let a = sys::cpu_ticks();
        let t = Instant::now();
        sys::sleep(Duration::from_millis(500))?;
        let (busy, _) = sys::cpu_delta(&a, &sys::cpu_ticks());
        let pct = 100.0 * busy as f64 / tck / t.elapsed().as_secs_f64();
        if pct < max_other || start.elapsed() > Duration::from_secs(30) {
            return Ok(());
        }
    }
}

/// Fails if the server under test is gone (crashed, or killed by someone
/// else: the results would be meaningless).
fn ensure_alive(s: &Server) -> Result<()> {
    if !sys::alive(s.pid()) {
        bail!(
            "{} (pid {}) is no longer running; command: {}\n--- {} (tail) ---\n{}",
            s.kind.id(),
            s.pid(),
            s.proc_.command,
            s.proc_.log.display(),
            sys::log_tail(&s.proc_.log, 15)
        );
    }
    Ok(())
}

/// One dnsperf run against `s`, with CPU accounting around it. `tick` is
/// called every few milliseconds while dnsperf runs, with the seconds since
/// it started.
#[allow(clippy::too_many_arguments)]
fn measure(
    args: &Args,
    s: &Server,
    q: u32,
    mix: Mix,
    file: &Path,
    upstream_pid: Option<u32>,
    dir: &Path,
    round: u32,
    row: &str,
    mut tick: impl FnMut(f64) -> Result<()>,
) -> Result<Round> {
    ensure_alive(s)?;
    if upstream_pid.is_some_and(|u| !sys::alive(u)) {
        bail!("the upstream Knot is no longer running");
    }
    // Threads started since (or re-pinned by the server itself) go back too.
    sys::pin_tree(s.pid(), args.server_cpu)?;
    if let Some(u) = upstream_pid {
        sys::pin_tree(u, args.upstream_cpu)?;
    }
    let tck = sys::clock_ticks();
    let dur = args.duration();
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(args.client_cpu.to_string()).arg("dnsperf");
    cmd.args(["-s", &s.addr.ip().to_string(), "-p", &s.addr.port().to_string()]);
    cmd.arg("-d").arg(file);
    cmd.args([
        "-l",
        &dur.to_string(),
        "-c",
        &args.clients.to_string(),
        "-q",
        &q.to_string(),
        "-T",
        &args.threads.to_string(),
        "-t",
        &args.timeout.to_string(),
    ]);
    let log = dir.join(format!("dnsperf-{}-{}-{}.log", mix.id(), row.replace(' ', ""), round));

    let queries0 = mix.forwarded().then(|| servers::upstream_queries(dir)).flatten();
    let srv0 = sys::tree_ticks(s.pid());
    let up0 = upstream_pid.map_or(0, sys::tree_ticks);
    let cpu0 = sys::cpu_ticks();
    let kthreads0 = sys::tree_ticks(2);
    let start = Instant::now();
    let limit = Duration::from_secs((dur + args.timeout + 15) as u64);
    let (ok, out, client_cpu) = sys::run_bounded(cmd, limit, &log, || tick(start.elapsed().as_secs_f64()))?;
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = sys::cpu_ticks();
    let kthreads1 = sys::tree_ticks(2);
    let srv1 = sys::tree_ticks(s.pid());
    let up1 = upstream_pid.map_or(0, sys::tree_ticks);
    let queries1 = mix.forwarded().then(|| servers::upstream_queries(dir)).flatten();
    if !ok {
        bail!("dnsperf failed against {row}:\n{out}\n{}", sys::log_tail(&log, 20));
    }
    let stats = dnsperf::parse(&out)?;
    ensure_alive(s)?;
    let (busy, irq) = sys::cpu_delta(&cpu0, &cpu1);
    let server_cpu = srv1.saturating_sub(srv0) as f64 / tck;
    let upstream_cpu = up1.saturating_sub(up0) as f64 / tck;
    let kernel_cpu = (irq + kthreads1.saturating_sub(kthreads0)) as f64 / tck;
    let other_cpu = (busy as f64 / tck - server_cpu - client_cpu - upstream_cpu - kernel_cpu).max(0.0);
    let core_pct = |i: usize| {
        let (a, b) = (
            cpu1.get(i).copied().unwrap_or_default(),
            cpu0.get(i).copied().unwrap_or_default(),
        );
        100.0 * a.busy.saturating_sub(b.busy) as f64 / tck / wall
    };
    Ok(Round {
        mix,
        row: row.to_string(),
        round,
        stats,
        wall,
        server_cpu,
        client_cpu,
        upstream_cpu,
        kernel_cpu,
        other_cpu,
        server_core_pct: core_pct(args.server_cpu).min(100.0),
        client_core_pct: core_pct(args.client_cpu).min(100.0),
        upstream_queries: queries0.zip(queries1).map(|(a, b)| b.saturating_sub(a)),
        attempts: 1,
    })
}

/// Queries of mix r's alias in the answer check.
const ROTATION_CHECK: usize = 20;

/// Mix r's alias rotates: [`ROTATION_CHECK`] answers name both standbys,
/// each with its own address when `chase`. Polls for up to 10 s (the second
/// replica may still be rising). Returns whether it does, and what the last
/// answers were.
fn check_rotation(addr: std::net::SocketAddr, chase: bool) -> (bool, String) {
    let start = Instant::now();
    loop {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        let mut good = true;
        for _ in 0..ROTATION_CHECK {
            let a = dns::ask(addr, servers::READERS, RecordType::A, Duration::from_secs(2));
            let ok = a.as_ref().is_some_and(|a| {
                a.rcode == "NOERROR"
                    && match a.cnames.as_slice() {
                        [t] if t == servers::TARGET_B => !chase || a.addrs == ["127.0.0.3"],
                        [t] if t == servers::TARGET_C => !chase || a.addrs == ["127.0.0.4"],
                        _ => false,
                    }
            });
            good &= ok;
            let text = a.map_or("(no answer)".to_string(), |a| a.summary());
            *seen.entry(text).or_default() += 1;
        }
        let text = seen
            .iter()
            .map(|(t, n)| format!("{n} x {t}"))
            .collect::<Vec<_>>()
            .join("; ");
        if (good && seen.len() == 2) || start.elapsed() > Duration::from_secs(10) {
            return (good && seen.len() == 2, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An extra mix-a round against the sidecar: the replica is promoted at
/// half time; the alias is polled every 5 ms until it names the new target.
fn failover_round(
    args: &Args,
    s: &Server,
    pair: &PgPair,
    file: &Path,
    upstream_pid: Option<u32>,
    dir: &Path,
) -> Result<FailoverResult> {
    let half = args.duration() as f64 / 2.0;
    let mut promoted_at: Option<(f64, Instant)> = None;
    let mut followed_after = None;
    let mut last_poll = Instant::now();
    let mut promoted_wall = None;
    let mut polls: Vec<(Instant, Option<String>)> = Vec::new();
    let mut followed_at: Option<Instant> = None;
    let q = args.outstanding[0];
    eprint!(
        "loadtest: failover round: {} mix a, promoting {} at {half:.1} s ",
        s.kind.id(),
        pair.replica.name
    );
    let round = measure(
        args,
        s,
        q,
        Mix::A,
        file,
        upstream_pid,
        dir,
        1,
        &format!("{} (failover)", s.kind.id()),
        |t| {
            // The timeline (the chart): every 5 ms around the promote.
            let around = t >= half - 0.5 && followed_at.is_none_or(|f| f.elapsed() < Duration::from_millis(500));
            if around && last_poll.elapsed() >= Duration::from_millis(5) {
                last_poll = Instant::now();
                let target = dns::cname_of(s.addr, servers::ALIAS);
                if promoted_at.is_some() && followed_at.is_none() && target.as_deref() == Some(servers::TARGET_B) {
                    followed_at = Some(last_poll);
                    followed_after = promoted_at.map(|(_, at)| last_poll.duration_since(at).as_secs_f64());
                }
                polls.push((last_poll, target));
            }
            match promoted_at {
                None if t >= half => {
                    let (at, wall) = (Instant::now(), std::time::SystemTime::now());
                    pair.replica.promote(false).context("promoting the replica")?;
                    promoted_at = Some((t, at));
                    promoted_wall = Some(wall);
                }
                _ => {}
            }
            Ok(())
        },
    )?;
    // A raw query after the round: the alias must name the new primary.
    let after = dns::ask(s.addr, servers::ALIAS, RecordType::A, Duration::from_secs(2));
    let chase = s.kind.chases();
    let ok = after.as_ref().is_some_and(|a| {
        a.rcode == "NOERROR" && a.cnames == [servers::TARGET_B] && (!chase || a.addrs == ["127.0.0.3"])
    });
    // When things happened, from the logs (UTC time of day, ms precision).
    let since = |log: &Path, needle: &str| -> Option<f64> {
        let wall = promoted_wall?.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64() % 86400.0;
        let text = fs::read_to_string(log).ok()?;
        text.lines()
            .filter(|l| l.contains(needle))
            .filter_map(report::time_of_day)
            .map(|t| t - wall)
            .find(|d| *d >= -0.002)
    };
    let pg_ready_after = since(&pair.replica.log_file, "database system is ready to accept connections");
    let sidecar_switched_after = since(&s.proc_.log, "pg-b.test");
    let ms = |x: Option<f64>| x.map_or("?".to_string(), |f| format!("{:.0} ms", f * 1e3));
    eprintln!(
        "{:.0} q/s, lost {}; after the promote request: PostgreSQL ready {}, sidecar switched {} (logs), first answer \
            naming pg-b {}; now: {}",
        round.stats.qps,
        round.stats.lost,
        ms(pg_ready_after),
        ms(sidecar_switched_after),
        ms(followed_after),
        after.as_ref().map_or("(no answer)".into(), |a| a.summary())
    );
    Ok(FailoverResult {
        server: s.kind.id().to_string(),
        round,
        promoted_at: promoted_at.map_or(f64::NAN, |p| p.0),
        followed_after,
        pg_ready_after,
        sidecar_switched_after,
        after,
        ok,
        polls: polls
            .into_iter()
            .map(|(at, target)| charts::Poll {
                t: promoted_at.map_or(f64::NAN, |(_, p)| {
                    if at >= p {
                        at.duration_since(p).as_secs_f64()
                    } else {
                        -p.duration_since(at).as_secs_f64()
                    }
                }),
                target,
            })
            .collect(),
    })
}
