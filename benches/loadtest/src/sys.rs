//! Linux plumbing: CPU pinning, child processes that cannot outlive us,
//! signals, and the `/proc` readings the report is made of.

use std::collections::HashMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP only set a flag; every wait in the harness
/// polls [`interrupted`] and unwinds, so `Drop` stops every child and removes
/// the scratch directory.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps up to `d`, returning early with an error on a signal.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// Pins the calling process (and so every child it starts later) to `cpu`.
pub fn pin_self(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is a plain bitmap; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("pinning the harness to CPU {cpu}"));
        }
    }
    Ok(())
}

/// Pins every thread of every process in `root`'s tree to `cpu`; returns
/// how many threads had been elsewhere. Needed because some servers pin
/// their own threads at start-up over `taskset` (Knot 3.2 binds its UDP
/// workers to CPUs 0, 1, ... in turn, so one of them would share dnsperf's
/// CPU).
pub fn pin_tree(root: u32, cpu: usize) -> Result<usize> {
    let mut moved = 0;
    for pid in tree_pids(root) {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()) else {
                continue;
            };
            let status = fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(str::trim)
                .unwrap_or("");
            if allowed == cpu.to_string() {
                continue;
            }
            // SAFETY: as in pin_self, for another thread of our own child.
            let r = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("pinning thread {tid} of pid {pid} to CPU {cpu}"));
            }
            moved += 1;
        }
    }
    Ok(moved)
}

pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A child in its own process group (so a terminal's Ctrl-C reaches only the
/// harness, which then stops it in order) that the kernel kills if the
/// harness dies without cleaning up (`PR_SET_PDEATHSIG`). Dropping it
/// terminates the whole group: SIGTERM, then SIGKILL after 3 s.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub command: String,
}

/// Makes the child get SIGKILL when the harness dies, however it dies.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        die_with_parent(&mut cmd);
        let command = describe(&cmd);
        let child = cmd.spawn().with_context(|| format!("starting {name}: {command}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            command,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails (with the log's tail) if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); command: {}\n--- {} (tail) ---\n{}",
                self.name,
                self.command,
                self.log.display(),
                log_tail(&self.log, 30)
            );
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            kill_group(self.pid(), libc::SIGKILL); // stragglers of a dead leader
            return;
        }
        kill_group(self.pid(), libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_group(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill_group(pgid: u32, sig: libc::c_int) {
    // SAFETY: signalling our own child's process group (pgid == its pid).
    unsafe { libc::kill(-(pgid as libc::pid_t), sig) };
}

/// The command line as one shell-like string, for logs and the report.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a child to completion, polling so that a signal or `limit` ends it.
/// Returns (exit ok, stdout, CPU seconds it used (user + system, from
/// `wait4`)). Its stderr goes to `stderr_log`.
pub fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    stderr_log: &Path,
    mut tick: impl FnMut() -> Result<()>,
) -> Result<(bool, String, f64)> {
    let out_path = stderr_log.with_extension("stdout");
    let out = fs::File::create(&out_path)?;
    let err = fs::File::create(stderr_log)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    die_with_parent(&mut cmd);
    let command = describe(&cmd);
    let child = cmd.spawn().with_context(|| format!("starting {command}"))?;
    let pid = child.id() as libc::pid_t;
    // From here on the child is reaped with wait4 (for its rusage), not
    // through `Child`, which is only kept so nothing else reaps it.
    let start = Instant::now();
    let mut killed = false;
    let reap = |flags| -> Option<(libc::c_int, libc::rusage)> {
        let mut status = 0;
        // SAFETY: rusage is a plain struct that wait4 fills in.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        (r == pid).then_some((status, ru))
    };
    let (status, ru) = loop {
        if let Some(x) = reap(libc::WNOHANG) {
            break x;
        }
        let stop = interrupted() || start.elapsed() > limit;
        if stop && !killed {
            kill_group(pid as u32, libc::SIGKILL);
            killed = true;
        }
        if !killed {
            if let Err(e) = tick() {
                kill_group(pid as u32, libc::SIGKILL);
                let _ = reap(0);
                drop(child);
                return Err(e);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(child);
    check_interrupted()?;
    if killed {
        bail!("{command} did not finish within {limit:?}; killed");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    Ok((ok, stdout, cpu))
}

/// One line of `/proc/<pid>/stat` after the command name: (ppid, utime+stime ticks).
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, ut + st))
}

/// Whether `pid` still runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = s.rfind(')').and_then(|i| s[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// (processes, threads) in `root`'s process tree.
pub fn tree_size(root: u32) -> (usize, u64) {
    let pids = tree_pids(root);
    let threads = pids.iter().filter_map(|&p| status_kib(p, "Threads")).sum();
    (pids.len(), threads)
}

fn tree_pids(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, _)) = stat_of(pid) {
                parent.insert(pid, ppid);
            }
        }
    }
    parent.keys().copied().filter(|&p| descends(&parent, p, root)).collect()
}

fn descends(parent: &HashMap<u32, u32>, mut p: u32, root: u32) -> bool {
    for _ in 0..64 {
        if p == root {
            return true;
        }
        match parent.get(&p) {
            Some(&pp) if pp != 0 && pp != p => p = pp,
            _ => return false,
        }
    }
    false
}

/// CPU ticks (utime + stime) of `root` and all its live descendants: NSD
/// answers from forked child processes, the others from threads (which
/// the process's own line already includes).
pub fn tree_ticks(root: u32) -> u64 {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, t)) = stat_of(pid) {
                parent.insert(pid, ppid);
                ticks.insert(pid, t);
            }
        }
    }
    ticks
        .iter()
        .filter(|(&p, _)| descends(&parent, p, root))
        .map(|(_, &t)| t)
        .sum()
}

/// One CPU's counters from `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTicks {
    /// user + nice + system + irq + softirq + steal.
    pub busy: u64,
    /// irq + softirq (time not charged to any process).
    pub irq: u64,
}

/// Per-CPU counters from `/proc/stat`, indexed by CPU number.
pub fn cpu_ticks() -> Vec<CpuTicks> {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut out = Vec::new();
    for l in s.lines() {
        let mut f = l.split_whitespace();
        let Some(name) = f.next() else { continue };
        if !name.starts_with("cpu") || name == "cpu" {
            continue;
        }
        let Ok(idx) = name[3..].parse::<usize>() else { continue };
        let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
        let g = |i: usize| v.get(i).copied().unwrap_or(0);
        if out.len() <= idx {
            out.resize(idx + 1, CpuTicks::default());
        }
        out[idx] = CpuTicks {
            busy: g(0) + g(1) + g(2) + g(5) + g(6) + g(7),
            irq: g(5) + g(6),
        };
    }
    out
}

/// (busy, irq) ticks summed over all CPUs between two readings.
pub fn cpu_delta(before: &[CpuTicks], after: &[CpuTicks]) -> (u64, u64) {
    let mut busy = 0;
    let mut irq = 0;
    for (i, a) in after.iter().enumerate() {
        let b = before.get(i).copied().unwrap_or_default();
        busy += a.busy.saturating_sub(b.busy);
        irq += a.irq.saturating_sub(b.irq);
    }
    (busy, irq)
}

/// `VmRSS` / `VmHWM` style fields of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    l[field.len() + 1..].split_whitespace().next()?.parse().ok()
}

pub fn cpu_model() -> String {
    let s = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn kernel() -> String {
    let rel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("Linux {}", rel.trim())
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// First line of `<program> <flag>` output (stdout or stderr), for versions.
pub fn version_of(program: &str, flag: &str) -> String {
    match Command::new(program).arg(flag).stdin(Stdio::null()).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(_) => "?".into(),
    }
}

/// "2.10.0", from the banner `dnsperf -h` prints.
pub fn dnsperf_version() -> String {
    let out = Command::new("dnsperf").arg("-h").stdin(Stdio::null()).output();
    let text = out
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Version "))
        .unwrap_or("?")
        .trim()
        .to_string()
}

/// `program` on PATH or in the sbin directories (not on a non-root PATH).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = u.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1")
}

/// A scratch directory removed on drop (unless `keep`).
pub struct Scratch {
    pub path: PathBuf,
    pub keep: bool,
}

impl Scratch {
    /// Under `$LOADTEST_TMPDIR` (the wrapper script's own temporary
    /// directory, which it removes even if the harness is SIGKILLed), else
    /// (or to keep it) under the system temp dir.
    pub fn new(keep: bool) -> Result<Scratch> {
        let wrapper_dir = std::env::var_os("LOADTEST_TMPDIR").filter(|_| !keep).map(PathBuf::from);
        let base = wrapper_dir.unwrap_or_else(std::env::temp_dir);
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = base.join(format!("dns-sidecar-loadtest-{pid}-{nanos:x}"));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch { path, keep })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("loadtest: keeping {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
