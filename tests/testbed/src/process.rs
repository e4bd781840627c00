//! Process plumbing: running commands with a time bound, running them as the
//! `postgres` OS user when we are root, finding child processes through
//! `/proc`, sending signals, and a cleanup watchdog.
//!
//! Signals are sent with `libc::kill` (no `kill` program, no shell). The
//! watchdog alone is a `/bin/sh` script using the shell's builtin `kill`,
//! because it has to act after this process is gone, and `/bin/sh` is on
//! every image while procps (the `kill` and `ps` programs) may be missing.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Result, TestbedError};
use crate::users;

/// Environment variables that would silently change what `psql`,
/// `pg_basebackup` or `initdb` do if inherited from a developer's shell.
const SCRUBBED_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGOPTIONS",
    "PGDATA",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGAPPNAME",
    "PSQLRC",
];

/// Look `name` up on `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Who PostgreSQL commands run as.
///
/// PostgreSQL refuses to run as root (`initdb`, `pg_ctl` and `postgres` all
/// check). CI runs the tests as root, so there every server-side command is
/// prefixed with `setpriv --reuid=postgres --regid=postgres --init-groups --`
/// and every file the server touches is `chown`ed to that user. `setpriv`
/// (unlike `runuser`/`su`) `exec`s the target directly, so the pid we spawn
/// *is* the PostgreSQL program and a timeout kill hits the right process.
/// When not root we simply run everything as ourselves.
#[derive(Clone, Debug)]
pub(crate) enum RunAs {
    Me,
    User {
        name: String,
        uid: u32,
        gid: u32,
        setpriv: PathBuf,
    },
}

impl RunAs {
    /// `Me` unless we are root, in which case the `postgres` user.
    pub(crate) fn for_postgres() -> Result<Self> {
        if users::effective_uid() != 0 {
            return Ok(RunAs::Me);
        }
        let name = "postgres";
        let (uid, gid) = users::user_ids(name).ok_or_else(|| TestbedError::MissingUser {
            name: name.into(),
            hint: "apt-get install -y postgresql-15 (creates it), or useradd --system postgres".into(),
        })?;
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
            .iter()
            .map(PathBuf::from)
            .find(|p| is_executable(p))
            .or_else(|| find_in_path("setpriv"))
            .ok_or_else(|| TestbedError::MissingBinary {
                name: "setpriv".into(),
                hint: "apt-get install -y util-linux".into(),
            })?;
        Ok(RunAs::User {
            name: name.into(),
            uid,
            gid,
            setpriv,
        })
    }

    /// A `Command` for `program` that runs as this user, with a scrubbed,
    /// predictable environment (C locale, UTC, no `PG*` variables).
    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut cmd = match self {
            RunAs::Me => Command::new(program),
            RunAs::User { name, setpriv, .. } => {
                let mut c = Command::new(setpriv);
                c.arg(format!("--reuid={name}"))
                    .arg(format!("--regid={name}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                c
            }
        };
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        // C locale: predictable initdb, no "invalid locale" failures on
        // minimal images. TZ: initdb otherwise probes the whole zoneinfo db.
        cmd.env("LC_ALL", "C").env("TZ", "UTC");
        cmd
    }

    /// Give `path` to the server user (no-op when running as ourselves).
    pub(crate) fn chown(&self, path: &Path) -> Result<()> {
        if let RunAs::User { uid, gid, .. } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .map_err(|e| TestbedError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }
}

/// Captured result of a successful [`run`].
pub(crate) struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Run `cmd` to completion with stdin closed, capturing stdout and stderr,
/// killing it after `timeout`. Non-zero exit becomes
/// [`TestbedError::Command`], a missing program [`TestbedError::MissingBinary`]
/// with `hint`.
pub(crate) fn run(cmd: &mut Command, what: &str, timeout: Duration, hint: &str) -> Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(cmd, what, hint)?;
    let out_reader = reader(child.stdout.take());
    let err_reader = reader(child.stderr.take());
    let status = match wait_timeout(&mut child, timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            return Err(TestbedError::Timeout {
                what: what.into(),
                waited: timeout,
                detail: stderr.trim().to_string(),
            });
        }
        Err(e) => return Err(TestbedError::io(format!("waiting for {what}"), e)),
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        let mut output = stderr.trim().to_string();
        if !stdout.trim().is_empty() {
            if !output.is_empty() {
                output.push('\n');
            }
            output.push_str(stdout.trim());
        }
        return Err(TestbedError::Command {
            what: what.into(),
            status,
            output,
        });
    }
    Ok(Output { stdout, stderr })
}

/// Spawn, mapping "program not found" to [`TestbedError::MissingBinary`].
pub(crate) fn spawn(cmd: &mut Command, what: &str, hint: &str) -> Result<Child> {
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TestbedError::MissingBinary {
                name: cmd.get_program().to_string_lossy().into_owned(),
                hint: hint.into(),
            }
        } else {
            TestbedError::io(format!("spawning {what}"), e)
        }
    })
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// `try_wait` with a short, growing poll interval (1 ms .. 10 ms): the
/// commands we run mostly take a few milliseconds, and a fixed 100 ms poll
/// would dominate the testbed's start time.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut step = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(step.min(deadline - now));
        step = (step * 2).min(Duration::from_millis(10));
    }
}

/// Poll `check` every `step` until it returns `Ok(Some(v))`, an error, or
/// `timeout` passes.
pub(crate) fn poll<T>(
    what: &str,
    timeout: Duration,
    step: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TestbedError::Timeout {
                what: what.into(),
                waited: timeout,
                detail: String::new(),
            });
        }
        thread::sleep(step);
    }
}

/// The last `lines` lines of a log file, or a note that it is unreadable.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `(state, ppid)` of a process from `/proc/<pid>/stat`. The command name
/// (field 2) may contain spaces and parentheses, so parse after the last `)`.
pub(crate) fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True if `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Direct children of `pid`, found by scanning `/proc/*/stat` for the ppid.
/// (PostgreSQL backends are all direct children of the postmaster.)
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| matches!(proc_stat(p), Some((_, pp)) if pp == pid))
        .collect()
}

/// The signals the testbed sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Freeze a process (it cannot catch or ignore it).
    Stop,
    /// Resume a stopped process.
    Cont,
    /// The last resort of a teardown.
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Kill => libc::SIGKILL,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Stop => "SIGSTOP",
            Signal::Cont => "SIGCONT",
            Signal::Kill => "SIGKILL",
        }
    }
}

/// Send `signal` to every process in `pids`. Processes that already vanished
/// are not an error; any other failure (e.g. `EPERM`) is reported after the
/// signal was sent to the remaining pids. A pid that is not a single
/// process's (0, or beyond `pid_t`, which `kill(2)` would take as a process
/// group or "every process") is refused.
pub(crate) fn signal(pids: &[u32], signal: Signal) -> Result<()> {
    let mut first_error = None;
    for &pid in pids {
        let error = match libc::pid_t::try_from(pid) {
            Ok(p) if p > 0 => {
                // SAFETY: kill has no memory-safety preconditions; `p` names
                // one process.
                if unsafe { libc::kill(p, signal.number()) } == 0 {
                    continue;
                }
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ESRCH) {
                    continue;
                }
                e
            }
            _ => std::io::Error::new(std::io::ErrorKind::InvalidInput, "not the id of one process"),
        };
        first_error.get_or_insert(TestbedError::io(
            format!("sending {} to pid {pid}", signal.name()),
            error,
        ));
    }
    first_error.map_or(Ok(()), Err)
}

/// Shell prelude of every watchdog: ignore terminal signals, define
/// `alive <pid>` (exists and is not a zombie: orphans are reaped by pid 1,
/// which in containers may be slow or never do it), then wait until the
/// watched process (argument `$1`) has died.
const WATCHDOG_PRELUDE: &str = r#"
trap '' INT HUP TERM
alive() {
  read -r l < "/proc/$1/stat" 2>/dev/null || return 1
  l=${l##*) }
  case $l in Z*|X*) return 1;; esac
  return 0
}
watched=$1; shift
while alive "$watched"; do sleep 1; done
"#;

/// A tiny `/bin/sh` process that cleans up after us if we die without running
/// `Drop` (Ctrl-C on `cargo test`, a test timeout's SIGKILL, a panic with
/// `panic=abort`).
///
/// Why: `pg_ctl` starts the postmaster in its own session, so it survives our
/// death and would keep running, listening and holding memory on `/dev/shm`
/// forever. The watchdog is put in its own process group so the terminal's
/// Ctrl-C does not kill it too; it polls once a second whether our pid still
/// exists and then runs its cleanup script. `Drop` kills the watchdog first
/// and cleans up itself.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
}

impl Watchdog {
    /// `script` runs after this process has died, with positional args `args`.
    pub(crate) fn spawn(script: &str, args: &[OsString]) -> Result<Self> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("{WATCHDOG_PRELUDE}\n{script}"))
            .arg("testbed-watchdog")
            .arg(std::process::id().to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = spawn(&mut cmd, "cleanup watchdog", "apt-get install -y dash")?;
        Ok(Watchdog { child })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Shell function for watchdog scripts (needs `alive` from the prelude):
/// `pg_crash <datadir>` continues a
/// possibly frozen postmaster and its children, sends SIGQUIT (PostgreSQL's
/// "immediate shutdown"), waits up to ~10 s and finally SIGKILLs. Uses only
/// shell builtins and `/proc`, since procps may be missing.
pub(crate) const SH_PG_CRASH: &str = r#"
pg_crash() {
  [ -f "$1/postmaster.pid" ] || return 0
  read -r pm < "$1/postmaster.pid" || return 0
  kids=""
  for f in /proc/[0-9]*/stat; do
    read -r l < "$f" 2>/dev/null || continue
    l=${l##*) }
    set -- $l
    if [ "$2" = "$pm" ]; then p=${f#/proc/}; kids="$kids ${p%/stat}"; fi
  done
  kill -CONT $kids "$pm" 2>/dev/null
  kill -QUIT "$pm" 2>/dev/null
  i=0
  while alive "$pm" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL $kids "$pm" 2>/dev/null
  return 0
}
"#;
