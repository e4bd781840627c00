//! The external record an on-change hook keeps converges on what DNS
//! answers: with the real binary, a real hook script (its "external record"
//! is a file) and a real primary + replica. A reload that renames a
//! server's target runs the hook; a restart whose state file records
//! another target runs it; a shutdown during a hook kills its whole process
//! group, so a child it left behind never writes, and the next start
//! repeats the run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{PairOptions, PgBinaries, PgPair};

use crate::support::env::{config_text, tempdir, upstream};
use crate::support::{raw, signal};

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `(seq, old, new)` of every run the hook logged.
fn runs(p: &Path) -> Vec<(u64, String, String)> {
    read(p)
        .lines()
        .map(|l| {
            let (seq, rest) = l.split_once(' ').unwrap();
            let (old, new) = rest.split_once('>').unwrap();
            (seq.parse().unwrap(), old.into(), new.into())
        })
        .collect()
}

struct Bin {
    child: Child,
    log: PathBuf,
}

impl Bin {
    fn start(cfg: &Path, log: PathBuf) -> Bin {
        let child = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
            .args(["run", "--config"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Bin { child, log }
    }

    /// SIGTERM, and the exit (status 0) within 10 s.
    fn stop(mut self) {
        signal(&self.child, libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "exit status {s:?}; log:\n{}", read(&self.log));
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "still running 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for init is dead too.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn the_external_record_follows_reloads_restarts_and_shutdowns() {
    let pair = PgPair::start(&PgBinaries::locate().unwrap(), PairOptions::default()).unwrap();
    let up = upstream();
    let dir = tempdir::Dir::new();
    let d = dir.path();
    let (runs_file, record, slow, child_pid) = (d.join("runs"), d.join("record"), d.join("slow"), d.join("child"));
    // The hook: logs `SEQ OLD>NEW`, then sets the external record. When
    // `slow` exists it sets it at once, leaves a child that would set it
    // again 3 s later, and hangs.
    let script = d.join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$DNS_SIDECAR_SEQ $DNS_SIDECAR_OLD_TARGET>$DNS_SIDECAR_NEW_TARGET\" >> {runs}\nif [ -e {slow} \
             ]; then\n  echo \"$DNS_SIDECAR_NEW_TARGET\" > {record}\n  (sleep 3; echo \"$DNS_SIDECAR_NEW_TARGET\" > {record}) &\n  echo $! > {child}\n  sleep 300\nfi\n\
             echo \"$DNS_SIDECAR_NEW_TARGET\" > {record}\n",
            runs = runs_file.display(),
            slow = slow.display(),
            record = record.display(),
            child = child_pid.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pw = d.join("pw");
    std::fs::write(&pw, &pair.password).unwrap();
    let dns = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let hooked = format!(
        "[admin]\nenabled = false\n\n[[aliases]]\nname = \"hooked.db.test\"\nservers = [\"a\", \"b\"]\non_change = \
         [\"{}\"]\non_change_timeout = \"600s\"\n",
        script.display()
    );
    let base = config_text(Some(&pair), up.addr, &pw, &hooked)
        .replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"{dns}\"]"));
    let state = pw.with_file_name("sidecar-state.json");
    // Server a's target renamed (its TLS name kept).
    let renamed = base.replace(
        "[servers.a]\ntarget = \"pg-a.test\"\n",
        "[servers.a]\ntarget = \"pg-c.test\"\nhost = \"pg-a.test\"\n",
    );
    assert_ne!(renamed, base);
    let cfg = d.join("config.toml");
    std::fs::write(&cfg, &base).unwrap();
    let cname = || raw::cname_of(dns, "hooked.db.test.");

    // First start: no record yet, the hook sets it.
    let bin = Bin::start(&cfg, d.join("log1"));
    wait_until("the first hook", Duration::from_secs(15), || {
        read(&record) == "pg-a.test\n"
    });
    assert_eq!(runs(&runs_file).last().map(|r| (&*r.1, &*r.2)), Some(("", "pg-a.test")));
    wait_until("the record is in the state file", Duration::from_secs(5), || {
        read(&state).contains("\"hooked\"") && read(&state).contains("\"pg-a.test.\"")
    });

    // A reload that only renames the served server's target: DNS changes, and
    // so does the external record.
    std::fs::write(&cfg, &renamed).unwrap();
    signal(&bin.child, libc::SIGHUP);
    wait_until("DNS answers the new name", Duration::from_secs(10), || {
        cname().as_deref() == Some("pg-c.test.")
    });
    wait_until("the reload's hook", Duration::from_secs(10), || {
        read(&record) == "pg-c.test\n"
    });
    assert_eq!(
        runs(&runs_file).last().map(|r| (&*r.1, &*r.2)),
        Some(("pg-a.test", "pg-c.test"))
    );
    wait_until("the new record is in the state file", Duration::from_secs(5), || {
        read(&state).contains("\"pg-c.test.\"")
    });
    bin.stop();

    // A restart whose state file holds what DNS answers: no hook.
    let before = runs(&runs_file).len();
    let bin = Bin::start(&cfg, d.join("log2"));
    wait_until("it answers", Duration::from_secs(15), || {
        cname().as_deref() == Some("pg-c.test.")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(&runs_file).len(), before, "no run: the record already holds it");
    bin.stop();

    // A restart whose state file records another target (say the external
    // record was changed while the sidecar was down): the hook runs.
    let text = read(&state);
    assert!(text.contains("\"target\": \"pg-c.test.\""), "{text}");
    std::fs::write(
        &state,
        text.replace("\"target\": \"pg-c.test.\"", "\"target\": \"pg-stale.test.\""),
    )
    .unwrap();
    let bin = Bin::start(&cfg, d.join("log3"));
    wait_until("the start's hook", Duration::from_secs(15), || {
        runs(&runs_file).len() > before
    });
    assert_eq!(
        runs(&runs_file).last().map(|r| (&*r.1, &*r.2)),
        Some(("pg-stale.test", "pg-c.test"))
    );

    // A slow hook (for a reload back to pg-a.test) has set the external
    // record and is still running when the sidecar stops: its whole group
    // dies, and the state file says the record is not known.
    std::fs::write(&slow, "").unwrap();
    std::fs::write(&cfg, &base).unwrap();
    let before = runs(&runs_file).len();
    signal(&bin.child, libc::SIGHUP);
    wait_until("the slow hook started its child", Duration::from_secs(10), || {
        runs(&runs_file).len() > before && read(&child_pid).trim().parse::<u32>().is_ok()
    });
    assert_eq!(read(&record), "pg-a.test\n");
    let pid: u32 = read(&child_pid).trim().parse().unwrap();
    let stopped = Instant::now();
    bin.stop();
    assert!(
        dead(pid),
        "the hook's child is killed with its group by the time the sidecar exits"
    );
    assert!(
        read(&state).contains("\"hook_unsure\""),
        "the state file says the record may have changed: {}",
        read(&state)
    );

    // The next start, with the rename again (DNS answers what the state
    // file's last success says): the record is not known, so the hook runs;
    // and the old hook's child never overwrites it.
    std::fs::remove_file(&slow).unwrap();
    std::fs::write(&cfg, &renamed).unwrap();
    let before = runs(&runs_file).len();
    let bin = Bin::start(&cfg, d.join("log4"));
    wait_until("the repeated hook", Duration::from_secs(15), || {
        read(&record) == "pg-c.test\n"
    });
    assert_eq!(
        runs(&runs_file)[before..]
            .iter()
            .map(|r| (&*r.1, &*r.2))
            .collect::<Vec<_>>(),
        [("pg-a.test", "pg-c.test")],
        "one run, from what the record may hold"
    );
    // Past the moment the killed child would have written.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(stopped.elapsed()));
    assert_eq!(read(&record), "pg-c.test\n", "no stale write after a newer run");
    let all = runs(&runs_file);
    assert!(
        all.windows(2).all(|w| w[1].0 > w[0].0),
        "DNS_SIDECAR_SEQ grows across runs and restarts: {all:?}"
    );
    assert!(all.iter().all(|r| r.1 != r.2), "no run has OLD = NEW: {all:?}");
    wait_until("the state file is sure again", Duration::from_secs(5), || {
        !read(&state).contains("\"hook_unsure\"")
    });
    bin.stop();
}
