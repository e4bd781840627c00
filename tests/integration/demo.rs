//! `dns-sidecar demo`, the README's first command, run as the real binary:
//! scripted (promote and exit) it follows the promote and exits 0; with the
//! default ports taken it still starts, and the commands it prints work; a
//! port given on the command line that is taken is an error naming the flag.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dns_sidecar::demo::{DEFAULT_ADMIN_PORT, DEFAULT_PORT};

fn demo(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("DNS_SIDECAR_LOG", "warn")
        .spawn()
        .expect("starting dns-sidecar demo")
}

/// Holds `port` on 127.0.0.1 (TCP, which both the DNS and the admin
/// listener need) unless something else already does; either way it is taken.
fn occupy(port: u16) -> Option<TcpListener> {
    TcpListener::bind(("127.0.0.1", port)).ok()
}

/// Stdout lines as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, pred: impl Fn(&str) -> bool) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => {
                seen.push(l.clone());
                if pred(&l) {
                    return l;
                }
            }
            Err(e) => panic!("demo output ended or stalled ({e}); so far:\n{}", seen.join("\n")),
        }
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn demo_with_default_ports_taken_prints_working_commands_and_follows_the_promote() {
    let _dns = occupy(DEFAULT_PORT);
    let _admin = occupy(DEFAULT_ADMIN_PORT);
    let mut child = demo(&["--promote-after", "3", "--exit-after-promote", "2"]);
    let rx = lines(&mut child);
    let mut seen = Vec::new();

    let serving = wait_line(&rx, &mut seen, |l| l.starts_with("Serving DNS on "));
    let dns: SocketAddr = serving["Serving DNS on ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(dns.port(), DEFAULT_PORT, "5353 is taken: {serving}");
    let admin_line = wait_line(&rx, &mut seen, |l| l.starts_with("Admin listener"));
    let admin: SocketAddr = admin_line
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('.')
        .parse()
        .unwrap();
    assert_ne!(admin.port(), DEFAULT_ADMIN_PORT, "9153 is taken: {admin_line}");
    assert!(seen.iter().any(|l| l.contains("admin port 9153 is taken")), "{seen:#?}");

    // The commands it printed, run as printed, once the first round is in.
    wait_line(&rx, &mut seen, |l| l.contains("prod.demo.internal. -> CNAME pg-east"));
    let dig_cmd = seen
        .iter()
        .find(|l| l.trim_start().starts_with("dig ") && l.contains("prod.demo.internal A"))
        .unwrap()
        .trim()
        .to_string();
    assert!(dig_cmd.contains(&format!("-p {}", dns.port())), "{dig_cmd}");
    let answer = sh(&dig_cmd);
    assert!(answer.contains("CNAME\tpg-east.servers.demo."), "{dig_cmd}:\n{answer}");
    let status_cmd = seen
        .iter()
        .map(|l| l.trim())
        .find(|l| l.contains("dns-sidecar status"))
        .unwrap()
        .to_string();
    assert!(status_cmd.ends_with(&format!("status --admin {admin}")), "{status_cmd}");
    let table = sh(&status_cmd);
    assert!(
        table.contains("prod.demo.internal") && table.contains("east"),
        "{status_cmd}:\n{table}"
    );

    wait_line(&rx, &mut seen, |l| l.contains("prod.demo.internal. -> CNAME pg-west"));
    wait_line(&rx, &mut seen, |l| l.starts_with(">>> OK"));
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exited with {status}:\n{}", seen.join("\n"));
}

#[test]
fn a_taken_port_given_on_the_command_line_is_an_error_naming_the_flag() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    for (flag, words) in [("--admin-port", "for the admin listener"), ("--port", "for DNS")] {
        let out = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
            .args(["demo", flag, &port, "--promote-after", "1", "--exit-after-promote", "1"])
            .stdin(Stdio::null())
            .env("DNS_SIDECAR_LOG", "warn")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag}: {err}");
        assert!(
            err.contains(&format!("127.0.0.1:{port} {words}")) && err.contains(&format!("with {flag} PORT")),
            "{flag}: {err}"
        );
    }
}
