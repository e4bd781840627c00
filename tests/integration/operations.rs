//! Running it as a service: SIGHUP reload, SIGTERM shutdown, on-change hooks.
//! These start the real binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{PairOptions, PgBinaries, PgPair};

use crate::support::env::{config_text, tempdir, upstream, Env};
use crate::support::{dig, raw, signal};

/// A port free on 127.0.0.1 for UDP and TCP, outside the ephemeral range
/// (see [`testbed::free_port`]); a small race with other processes remains.
fn free_port() -> u16 {
    testbed::free_port(&[std::net::Ipv4Addr::LOCALHOST.into()], true).expect("a free port")
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn probe_backends(pair: &PgPair) -> String {
    pair.primary
        .sql(
            "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE application_name = \
        'dns-sidecar'",
        )
        .unwrap()
}

#[test]
fn sighup_reloads_keeps_connections_rejects_bad_configs_and_sigterm_exits_cleanly() {
    let pair = PgPair::start(&PgBinaries::locate().unwrap(), PairOptions::default()).unwrap();
    let up = upstream();
    let dir = tempdir::Dir::new();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, &pair.password).unwrap();
    let port = free_port();
    let dns = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let base = config_text(Some(&pair), up.addr, &pw, "[admin]\nenabled = false\n")
        .replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"{dns}\"]"))
        .replace("[probe]\n", "[probe]\nfresh_connection_interval = \"1h\"\n");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, &base).unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the alias answers", Duration::from_secs(10), || {
        raw::cname_of(dns, "prod.db.test.").as_deref() == Some("pg-a.test.")
    });
    let backends = probe_backends(&pair);
    assert!(!backends.is_empty(), "the probe holds a connection to the primary");

    // An invalid file is rejected with its reason; the old config keeps serving.
    std::fs::write(&cfg, base.replace("[probe]\n", "[probe]\nintervall = \"1s\"\n")).unwrap();
    signal(&child, libc::SIGHUP);
    wait_until("the rejection is logged", Duration::from_secs(5), || {
        read_log().contains("reload rejected")
    });
    let l = read_log();
    assert!(
        l.contains("unknown field `intervall`") && l.contains("config.toml:"),
        "{l}"
    );
    assert_eq!(raw::cname_of(dns, "prod.db.test.").as_deref(), Some("pg-a.test."));

    // A valid change (a new alias) is swapped in; the unchanged servers keep
    // their probe connections.
    let extra = "\n[[aliases]]\nname = \"reporting.db.test\"\nrole = \"standby\"\nservers = [\"a\", \"b\"]\n";
    std::fs::write(&cfg, format!("{base}{extra}")).unwrap();
    signal(&child, libc::SIGHUP);
    wait_until("the new alias answers", Duration::from_secs(5), || {
        raw::cname_of(dns, "reporting.db.test.").as_deref() == Some("pg-b.test.")
    });
    assert_eq!(probe_backends(&pair), backends, "probe connections survived the reload");
    assert_eq!(dig(dns, "prod.db.test", "A", &[]).answers("A"), ["127.0.0.2"]);

    // SIGTERM: exit 0, probe connections closed.
    signal(&child, libc::SIGTERM);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}; log:\n{}", read_log());
    wait_until("probe connections are closed", Duration::from_secs(3), || {
        probe_backends(&pair).is_empty()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_change_hook_runs_with_old_and_new_target() {
    let dir = tempdir::Dir::new();
    let out = dir.path().join("hook.env");
    let hook = format!(
        "\n[[aliases]]\nname = \"hooked.db.test\"\nservers = [\"a\", \"b\"]\non_change = [\"/bin/sh\", \"-c\", \"env \
            | grep ^DNS_SIDECAR_ | sort > {}\"]\non_change_timeout = \"5s\"\n",
        out.display()
    );
    let env = Env::start(true, &hook).await;
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    wait_until("the first decision's hook", Duration::from_secs(5), || {
        read().contains("DNS_SIDECAR_NEW_SERVER=a")
    });
    assert!(read().contains("DNS_SIDECAR_OLD_SERVER=\n"), "{}", read());
    assert!(read().contains("DNS_SIDECAR_ALIAS=hooked.db.test\n"), "{}", read());
    let replica = env.pair().replica.clone();
    tokio::task::spawn_blocking(move || replica.promote(true))
        .await
        .unwrap()
        .unwrap();
    wait_until("the failover's hook", Duration::from_secs(5), || {
        read().contains("DNS_SIDECAR_NEW_SERVER=b")
    });
    let env_text = read();
    for line in [
        "DNS_SIDECAR_OLD_SERVER=a",
        "DNS_SIDECAR_OLD_TARGET=pg-a.test",
        "DNS_SIDECAR_NEW_TARGET=pg-b.test",
        "DNS_SIDECAR_REASON=split brain",
    ] {
        assert!(env_text.contains(line), "{line} missing in:\n{env_text}");
    }
}

/// A config with unusable zone names is rejected on SIGHUP (an error with
/// its line, never a panic), and the process keeps serving.
#[test]
fn sighup_with_a_root_or_overlong_zone_is_rejected_and_serving_goes_on() {
    let up = upstream();
    let dir = tempdir::Dir::new();
    let dns = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let base = format!(
        "[dns]\nlisten = [\"{dns}\"]\n[upstream]\nservers = [\"{}\"]\n[[zones]]\nname \
        = \"db.test\"\n[admin]\nenabled = false\n",
        up.addr
    );
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, &base).unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let nx = || dig(dns, "nope.db.test", "A", &[]).status;
    wait_until("it answers", Duration::from_secs(10), || nx() == "NXDOMAIN");
    let long = vec!["a".repeat(62); 4].join(".");
    for (i, (zone, words)) in [(".", "root"), (long.as_str(), "too long")].into_iter().enumerate() {
        std::fs::write(&cfg, base.replace("name = \"db.test\"", &format!("name = \"{zone}\""))).unwrap();
        signal(&child, libc::SIGHUP);
        wait_until("the rejection is logged", Duration::from_secs(5), || {
            read_log().matches("reload rejected").count() > i
        });
        assert!(read_log().contains(words), "{}", read_log());
        assert!(child.try_wait().unwrap().is_none(), "still running");
        assert_eq!(nx(), "NXDOMAIN", "the old config keeps serving");
    }
    assert!(!read_log().contains("panicked"), "{}", read_log());
    signal(&child, libc::SIGTERM);
    let _ = child.wait();
}

/// Waits for `path` to hold at least `lines` lines; returns them.
fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_see_only_their_variables_and_die_with_their_group() {
    std::env::set_var("HOOKTEST_VISIBLE", "yes");
    std::env::set_var("HOOKTEST2_HIDDEN", "no");
    std::env::set_var("DNS_SIDECAR_HOOKTEST_HIDDEN", "no");
    let dir = tempdir::Dir::new();
    let env_out = dir.path().join("env");
    let pid_out = dir.path().join("pid");
    let hooks = format!(
        "\n[[aliases]]\nname = \"env.db.test\"\nservers = [\"a\", \"b\"]\non_change = [\"/bin/sh\", \"-c\", \"env > \
            {}\"]\non_change_env = [\"PATH\", \"HOOKTEST_*\"]\n\
         \n[[aliases]]\nname = \"group.db.test\"\nservers = [\"a\", \"b\"]\non_change = [\"/bin/sh\", \"-c\", \"sleep \
             300 & echo $! > {}; wait\"]\non_change_timeout = \"500ms\"\n",
        env_out.display(),
        pid_out.display()
    );
    let _env = Env::start(true, &hooks).await;
    let env_text = tokio::task::spawn_blocking(move || {
        wait_until("the env hook ran", Duration::from_secs(10), || {
            std::fs::read_to_string(&env_out).is_ok_and(|t| t.contains("DNS_SIDECAR_NEW_SERVER=a"))
        });
        std::fs::read_to_string(&env_out).unwrap()
    })
    .await
    .unwrap();
    for present in ["DNS_SIDECAR_ALIAS=env.db.test", "PATH=", "HOOKTEST_VISIBLE=yes"] {
        assert!(
            env_text.lines().any(|l| l.starts_with(present)),
            "{present} missing:\n{env_text}"
        );
    }
    for absent in ["HOOKTEST2_HIDDEN", "DNS_SIDECAR_HOOKTEST_HIDDEN", "HOME=", "CARGO"] {
        assert!(
            !env_text.lines().any(|l| l.starts_with(absent)),
            "{absent} passed:\n{env_text}"
        );
    }

    // The group hook left a grandchild (`sleep 300`) behind; at the timeout
    // the whole group is killed.
    let pid: u32 = tokio::task::spawn_blocking(move || {
        wait_until("the group hook started its child", Duration::from_secs(10), || {
            lines(&pid_out).first().is_some_and(|l| l.parse::<u32>().is_ok())
        });
        lines(&pid_out)[0].parse().unwrap()
    })
    .await
    .unwrap();
    wait_until("the grandchild is killed", Duration::from_secs(10), || {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // A zombie waiting for init is dead too.
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    });
}

/// POSTs an override to the admin listener.
fn admin_post(admin: std::net::SocketAddr, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \
        {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piled_up_changes_run_the_hook_once_with_the_latest_target() {
    let dir = tempdir::Dir::new();
    let log = dir.path().join("runs");
    let hook = format!(
        "\n[[aliases]]\nname = \"hooked.db.test\"\nservers = [\"a\", \"b\"]\non_change = [\"/bin/sh\", \"-c\", \"echo \
            $DNS_SIDECAR_OLD_SERVER-$DNS_SIDECAR_NEW_SERVER >> {}; sleep 1\"]\n",
        log.display()
    );
    let env = Env::start(true, &hook).await;
    let admin = env.sidecar().admin.expect("admin listener");
    let log2 = log.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the first decision's hook is running", Duration::from_secs(10), || {
            lines(&log2) == ["-a"]
        });
        // Three changes while it runs: a->b, b->a, a->b.
        for (path, body) in [
            ("/pin", r#"{"alias":"hooked.db.test","server":"b"}"#),
            ("/unpin", r#"{"alias":"hooked.db.test"}"#),
            ("/pin", r#"{"alias":"hooked.db.test","server":"b"}"#),
        ] {
            let r = admin_post(admin, path, body);
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        }
        wait_until("the coalesced run", Duration::from_secs(10), || lines(&log2).len() >= 2);
        std::thread::sleep(Duration::from_millis(1500));
    })
    .await
    .unwrap();
    assert_eq!(raw::cname_of(env.dns, "hooked.db.test.").as_deref(), Some("pg-b.test."));
    assert_eq!(
        lines(&log),
        ["-a", "a-b"],
        "one run for the three changes, from what the last run set to the latest"
    );
}
