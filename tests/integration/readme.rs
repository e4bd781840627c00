//! The README and every page of docs/, walked as a new user would: every
//! code block is found by parsing README.md and then each page of [`PAGES`]
//! in that order (commands may depend on earlier ones), and every command in
//! them is run, in order, against a real sidecar (started by the README's own
//! `dns-sidecar run` command) on a real PostgreSQL primary + replica with a
//! real dnsmasq upstream. So a new example is covered the day it is written,
//! and the docs cannot drift from the binary. A page in docs/ that is not in
//! [`PAGES`] fails the walk, and every relative link and `#anchor` of the
//! pages must resolve.
//!
//! The sidecar uses the README's names (zone `db.internal`, alias
//! `prod.db.internal`, servers `eastus` and `westus2`) and the probe role the
//! README's SQL creates. Commands run verbatim through `bash` with the
//! built `dns-sidecar` first on `PATH`, except for [`substitute`]'s
//! replacements (ports and paths that cannot be the documented ones in a
//! test). Commands that cannot run in a test are in [`NOT_RUN`], each with
//! its reason; a command that is neither run nor listed fails the test.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use testbed::{PairOptions, PgBinaries, PgPair};

use crate::logs::{free_port, wait_until};
use crate::support::env::{tempdir, upstream};
use crate::support::links::check_links;
use crate::support::raw;

/// Commands the walk does not run, by prefix, and why. Keep it short: each
/// entry is a command a reader may copy that no test proves.
const NOT_RUN: &[(&str, &str)] = &[
    // This very test suite: running it from inside itself would recurse.
    ("cargo test --workspace --locked", "runs the suite this test is part of"),
    // Installs system packages; instead the walk checks that the list is
    // exactly what .ci/run installs (see `apt_line_matches_ci`).
    ("apt-get install", "installs system packages"),
    // Needs an Azure subscription; deploy.rs runs the hook script with a
    // stand-in `az`.
    ("az network private-dns", "needs Azure"),
    // The load test installs packages, builds in release mode and runs for
    // minutes; its `--help` (which runs nothing else) is checked against
    // benches/README.md by the loadtest crate's tests.
    (
        "benches/loadtest.sh",
        "installs packages, builds, runs for 2-10 minutes",
    ),
    // The abuse benchmark floods a release build for minutes with CPUs
    // pinned; its behaviour under each flood is tested in abuse.rs.
    ("benches/abuse.sh", "a release build flooded for minutes"),
    // Criterion in release mode: minutes of CPU on a 2-core CI.
    ("cargo bench", "a release build and minutes of measuring"),
];

/// One fenced code block of a Markdown file.
#[derive(Debug, Clone)]
pub struct Block {
    pub lang: String,
    pub text: String,
    /// 1-based line of the opening fence.
    pub line: usize,
}

pub fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, l) in md.lines().enumerate() {
        match (&mut open, l.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_string(),
                    text: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some(_)) => out.push(open.take().unwrap()),
            (Some(b), None) => {
                b.text.push_str(l);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "unclosed code block");
    out
}

/// The commands of a shell block: continuation lines joined, comments
/// (whole lines, or after two spaces) removed.
pub fn commands(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .map(|l| l.split("  #").next().unwrap().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The walked pages, in walk order: the README first (it starts the
/// sidecar), then docs/ as a reader would follow the README's links.
const PAGES: &[&str] = &[
    "README.md",
    "docs/design.md",
    "docs/dns.md",
    "docs/cache.md",
    "docs/operations.md",
    "docs/testing.md",
    "docs/benchmarks.md",
    "docs/architecture.md",
];

/// Every page of [`PAGES`] with its text; fails if docs/ holds a Markdown
/// page the walk does not know (it would go unchecked).
fn pages() -> Vec<(&'static str, String)> {
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".md"))
        .collect();
    on_disk.sort();
    let mut walked: Vec<String> = PAGES
        .iter()
        .filter(|p| p.starts_with("docs/"))
        .map(|p| p.to_string())
        .collect();
    walked.sort();
    assert_eq!(on_disk, walked, "docs/*.md vs the pages the README walk knows (PAGES)");
    PAGES
        .iter()
        .map(|p| (*p, std::fs::read_to_string(root().join(p)).unwrap()))
        .collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Everything the walk needs: servers, upstream, files, ports.
struct World {
    pair: PgPair,
    _upstream: testbed::Dnsmasq,
    dir: tempdir::Dir,
    bin_dir: PathBuf,
    config: PathBuf,
    token: PathBuf,
    dns: SocketAddr,
    admin: SocketAddr,
    sidecar: Option<Child>,
    log: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(c) = &mut self.sidecar {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The one place where a README command is changed before it runs.
fn substitute(w: &World, cmd: &str) -> String {
    cmd
        // The test binary, not a cargo build; stdin is not a terminal, so
        // the promote is scripted; free ports, not 5353 and 9153.
        .replace("cargo run --release -- demo", "cargo run -- demo")
        .replace(
            "cargo run -- demo",
            &format!(
                "dns-sidecar demo --port {} --admin-port {} --promote-after 4 --exit-after-promote 2",
                free_port(),
                free_port()
            ),
        )
        // The walk's config, not /etc.
        .replace("/etc/dns-sidecar/config.toml", w.config.to_str().unwrap())
        .replace("PGPROBE_PASSWORD=...", &format!("PGPROBE_PASSWORD={}", w.pair.password))
        // The walk's admin listener and DNS port, not the defaults (tests
        // run in parallel).
        .replace("localhost:9153", &w.admin.to_string())
        .replace("dig @127.0.0.1 ", &format!("dig @127.0.0.1 -p {} ", w.dns.port()))
        .replace("/run/secrets/dns-sidecar-admin-token", w.token.to_str().unwrap())
        // An HTTP error must fail the command, not print an error body.
        .replace("curl -s ", "curl -s --fail-with-body ")
}

fn bash(w: &World, cmd: &str) -> Output {
    Command::new("bash")
        .args(["-o", "pipefail", "-c", cmd])
        .env(
            "PATH",
            format!("{}:{}", w.bin_dir.display(), std::env::var("PATH").unwrap_or_default()),
        )
        // The CLI's default admin address is 127.0.0.1:9153 (as documented);
        // the walk's listener is elsewhere.
        .env("DNS_SIDECAR_ADMIN", w.admin.to_string())
        .env_remove("DNS_SIDECAR_ADMIN_TOKEN")
        .env_remove("DNS_SIDECAR_ADMIN_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs one README command; returns its output for command-specific checks.
fn run(w: &mut World, cmd: &str) -> String {
    let c = substitute(w, cmd);
    if c.contains("dns-sidecar run ") {
        // The README's way of starting it; kept running for what follows.
        let (env, rest): (Vec<&str>, Vec<&str>) = c
            .split_whitespace()
            .partition(|t| t.contains('=') && !t.starts_with('-'));
        let mut child = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"));
        child
            .args(&rest[1..])
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&w.log).unwrap());
        for kv in env {
            let (k, v) = kv.split_once('=').unwrap();
            child.env(k, v);
        }
        w.sidecar = Some(child.spawn().unwrap());
        let dns = w.dns;
        wait_until("the sidecar answers the alias", Duration::from_secs(10), || {
            raw::cname_of(dns, "prod.db.internal.").is_some()
        });
        return String::new();
    }
    if c.starts_with("dns-sidecar demo") {
        return demo(w, &c);
    }
    let o = bash(w, &c);
    let out = text(&o);
    assert!(o.status.success(), "README command failed: {cmd}\n(ran: {c})\n{out}");
    out
}

/// The demo, as the README says to use it: it prints `dig` commands to try
/// in another terminal, which are run (each must answer with the alias's
/// CNAME) before its scripted promote; then it must show the flip and exit 0.
fn demo(w: &World, cmd: &str) -> String {
    let out_path = w.dir.path().join("demo.out");
    let mut child = Command::new("bash")
        .args(["-c", &format!("exec {cmd}")])
        .env(
            "PATH",
            format!("{}:{}", w.bin_dir.display(), std::env::var("PATH").unwrap_or_default()),
        )
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&out_path).unwrap_or_default();
    wait_until("the demo prints its dig commands", Duration::from_secs(20), || {
        read().contains("Press Enter") || read().contains("will be promoted")
    });
    let digs: Vec<String> = read()
        .lines()
        .filter(|l| l.contains("dig @"))
        .map(|l| l.trim().trim_start_matches("watch -n 0.5 ").to_string())
        .collect();
    assert!(digs.len() >= 2, "the demo printed no dig commands:\n{}", read());
    wait_until("the demo answers", Duration::from_secs(5), || {
        read().contains("-> CNAME")
    });
    for d in &digs {
        let o = bash(w, d);
        let got = text(&o);
        assert!(
            o.status.success() && (got.contains("CNAME") || got.contains(".servers.demo.")),
            "the demo's `{d}` printed:\n{got}"
        );
    }
    let status = child.wait().unwrap();
    let out = read();
    assert!(status.success(), "`{cmd}` exited {status}:\n{out}");
    out
}

/// The README's `apt-get install` line names exactly the packages .ci/run
/// installs when missing.
fn apt_line_matches_ci(cmd: &str) {
    let readme: BTreeSet<&str> = cmd.split_whitespace().skip(3).collect();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let installed: BTreeSet<String> = ci
        .lines()
        .filter_map(|l| l.split("missing+=(").nth(1))
        .map(|r| r.trim_end_matches(')').to_string())
        .map(|p| {
            if p == "postgresql" {
                "postgresql-15".to_string()
            } else {
                p
            }
        })
        .collect();
    let installed: BTreeSet<&str> = installed.iter().map(String::as_str).collect();
    assert_eq!(readme, installed, "README's apt-get line vs .ci/run");
}

/// The README's example of a config error is what check-config prints for
/// a file with that line.
fn error_example(w: &World, example: &str) {
    let first = example.lines().next().unwrap();
    let (place, _) = first.split_once(": ").unwrap();
    let mut parts = place.split(':');
    let (file, line, col): (&str, usize, usize) = (
        parts.next().unwrap(),
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap().parse().unwrap(),
    );
    let bad = example.lines().nth(1).unwrap().split_once(" | ").unwrap().1;
    let head = "[dns]\nlisten = [\"127.0.0.1:53\"]\n[[zones]]\nname = \"db.internal\"\n[probe]\nuser \
        = \"probe\"\nsslmode = \"disable\"\n[servers.eastus]\ntarget = \"pg-eastus.example.com\"\n";
    let alias = "[[aliases]]\nname = \"prod.db.internal\"\nservers = [\"eastus\"]\n";
    let pad = line - 1 - head.lines().count() - alias.lines().count();
    let text = format!("{head}{}{alias}{bad}\n", "# padding\n".repeat(pad));
    let path = w.dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    let o = bash(w, &format!("dns-sidecar check-config {}", path.display()));
    assert_eq!(o.status.code(), Some(2));
    let got = String::from_utf8_lossy(&o.stderr).replace(&path.display().to_string(), file);
    assert_eq!(
        got.trim_end(),
        example.trim_end(),
        "README's config error example (line {line}, column {col})"
    );
}

/// A TOML example parses and validates, inside a config that defines what
/// it refers to.
fn toml_example(w: &World, toml: &str) {
    let toml = toml.replace("/run/secrets/dns-sidecar-admin-token", w.token.to_str().unwrap());
    let mut text = String::from(
        "[dns]\nlisten = [\"127.0.0.1:53\"]\n[[zones]]\nname = \"db.internal\"\n[probe]\nuser \
        = \"probe\"\nsslmode = \"disable\"\n[servers.eastus]\ntarget \
            = \"pg-eastus.example.com\"\n[servers.westus2]\ntarget = \"pg-westus2.example.com\"\n",
    );
    if !toml.contains("[[aliases]]") {
        text.push_str("[[aliases]]\nname = \"prod.db.internal\"\nservers = [\"eastus\", \"westus2\"]\n");
    }
    text.push_str(&toml);
    let path = w.dir.path().join("example.toml");
    std::fs::write(&path, &text).unwrap();
    let o = bash(w, &format!("dns-sidecar check-config {}", path.display()));
    assert!(
        o.status.success(),
        "README TOML example does not validate:\n{toml}\n{}",
        text_of(&o)
    );
}

fn text_of(o: &Output) -> String {
    text(o)
}

/// The example log line has the fields of the real one.
fn log_example(w: &World, example: &str) {
    let keys = |l: &str| -> BTreeSet<String> {
        l.split_whitespace()
            .filter_map(|t| t.split_once('='))
            .map(|(k, _)| k.to_string())
            .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect()
    };
    let message = example
        .split_whitespace()
        .skip(1)
        .take_while(|t| !t.contains('='))
        .collect::<Vec<_>>()
        .join(" ");
    let log = std::fs::read_to_string(&w.log).unwrap();
    let real = log
        .lines()
        .find(|l| l.contains(&message))
        .unwrap_or_else(|| panic!("no `{message}` line in the sidecar's log:\n{log}"));
    assert_eq!(
        keys(example),
        keys(real),
        "README example vs real line:\n{example}\n{real}"
    );
}

/// The layout block names paths that exist.
fn layout(block: &str) {
    for l in block.lines() {
        let path = l.split_whitespace().next().unwrap_or("");
        if path.contains('/') || path.ends_with(".toml") || path.ends_with(".md") {
            let p = if path.starts_with("src/") {
                root().join("dns-sidecar").join(path)
            } else {
                root().join(path)
            };
            assert!(p.exists(), "README layout names {path}, which does not exist");
        }
    }
}

#[test]
fn every_readme_command_and_example_runs() {
    let all: Vec<(&str, Block)> = pages()
        .into_iter()
        .flat_map(|(page, md)| blocks(&md).into_iter().map(move |b| (page, b)))
        .collect();
    assert!(all.len() >= 10, "{} blocks", all.len());

    // The world: a primary (eastus) and its streaming replica (westus2),
    // dnsmasq as the upstream, the config the README's commands point at.
    let pair = PgPair::start(&PgBinaries::locate().unwrap(), PairOptions::default()).unwrap();
    let up = upstream();
    let dir = tempdir::Dir::new();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_dns-sidecar"), bin_dir.join("dns-sidecar")).unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "not-configured-so-ignored-on-loopback\n").unwrap();
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let clusters = pair.clusters();
    let config = format!(
        "[dns]\nlisten = [\"{dns}\"]\n\n[upstream]\nservers = [\"{}\"]\n\n[[zones]]\nname \
            = \"db.internal\"\n\n[state]\npath = \"{}\"\n\n[probe]\nuser = \"dns_sidecar_probe\"\npassword_env \
                = \"PGPROBE_PASSWORD\"\nsslrootcert = \"{}\"\nport = {}\n\n[servers.eastus]\ntarget \
                    = \"{}\"\nhostaddr = \"{}\"\n\n[servers.westus2]\ntarget = \"{}\"\nhostaddr \
                        = \"{}\"\n\n[[aliases]]\nname = \"prod.db.internal\"\nservers = \
                            [\"eastus\", \"westus2\"]\n\n[admin]\nlisten = \"{admin}\"\n",
        up.addr,
        dir.path().join("state.json").display(),
        pair.ca_cert.display(),
        pair.port,
        clusters[0].name,
        clusters[0].ip,
        clusters[1].name,
        clusters[1].ip,
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.path().join("sidecar.log");
    let mut w = World {
        pair,
        _upstream: up,
        dir,
        bin_dir,
        config: config_path,
        token,
        dns,
        admin,
        sidecar: None,
        log,
    };

    // Setup first, as an operator would before deploying: the README's SQL
    // creating the probe role (the config above logs in as it).
    let sql: Vec<&(&str, Block)> = all.iter().filter(|(_, b)| b.lang == "sql").collect();
    assert_eq!(sql.len(), 1, "one SQL block (the probe role)");
    let (sql_page, sql) = sql[0];
    let statements = sql.text.replace("'...'", &format!("'{}'", w.pair.password));
    w.pair
        .primary
        .sql(&statements)
        .unwrap_or_else(|e| panic!("{sql_page} SQL (line {}): {e}", sql.line));

    let mut ran = 0;
    for (page, b) in &all {
        match b.lang.as_str() {
            "sh" => {
                for cmd in commands(&b.text) {
                    if let Some((_, why)) = NOT_RUN.iter().find(|(p, _)| cmd.starts_with(p)) {
                        eprintln!("{page}:{}: not run ({why}): {cmd}", b.line);
                        if cmd.starts_with("apt-get install") {
                            apt_line_matches_ci(&cmd);
                        }
                        continue;
                    }
                    eprintln!("{page}:{}: {cmd}", b.line);
                    let out = run(&mut w, &cmd);
                    ran += 1;
                    check_output(&w, &cmd, &out);
                }
            }
            "toml" => toml_example(&w, &b.text),
            // The alert rules, shown verbatim: one source of truth.
            "yaml" => {
                let file = std::fs::read_to_string(root().join("deploy/prometheus/dns-sidecar.rules.yml")).unwrap();
                let differs = b.text.lines().zip(file.lines()).position(|(a, f)| a != f);
                assert!(
                    differs.is_none() && b.text.lines().count() == file.lines().count(),
                    "{page}:{}: the alert rules block differs from deploy/prometheus/dns-sidecar.rules.yml at its line \
                        {:?} (copy the file into {page})",
                    b.line,
                    differs.map(|i| i + 1)
                );
            }
            "sql" => {}                                    // ran above
            "" if b.text.contains("+-------------+") => {} // the diagram
            "" if b.text.starts_with("config.toml:") => error_example(&w, &b.text),
            "" if b.text.starts_with("WARN ") || b.text.starts_with("INFO ") || b.text.starts_with("ERROR ") => {
                assert!(
                    w.sidecar.is_some(),
                    "{page}:{}: a log example before the sidecar was started",
                    b.line
                );
                log_example(&w, b.text.trim());
            }
            "" if b.text.starts_with("Cargo.toml") => layout(&b.text),
            other => panic!(
                "{page}:{}: a ```{other} block the walk does not know; add a check for it",
                b.line
            ),
        }
    }
    assert!(
        w.sidecar.is_some(),
        "the README never started the sidecar (`dns-sidecar run`)"
    );
    assert!(ran >= 15, "only {ran} commands ran");
}

/// What a command's output must show beyond its exit status.
fn check_output(w: &World, cmd: &str, out: &str) {
    let has = |needle: &str| assert!(out.contains(needle), "`{cmd}` printed no {needle:?}:\n{out}");
    if cmd.contains("-- demo") {
        // The promote is followed.
        has("prod.demo.internal. -> CNAME pg-east.servers.demo.");
        has("prod.demo.internal. -> CNAME pg-west.servers.demo.");
    } else if cmd.contains("dns-sidecar check-config") {
        has("OK");
    } else if cmd.starts_with("dig ") {
        has("CNAME");
        has(&w.pair.clusters()[0].name);
    } else if cmd.contains("/metrics") {
        has("dns_sidecar_alias_target{alias=\"prod.db.internal.\",server=\"eastus\"} 1");
    } else if cmd.contains("/readyz") {
        has("ready");
    } else if cmd.contains("jq ") {
        // Status and log field names agree: `target` is the DNS name.
        has(&format!("\"target\": \"{}.\"", w.pair.clusters()[0].name));
        has("\"server\": \"eastus\"");
    } else if cmd.contains("/pin") {
        has("pinned to westus2");
    } else if cmd == "dns-sidecar status" {
        has("prod.db.internal.");
        has("eastus");
    } else if cmd == "dns-sidecar health" {
        has("ready");
    }
}

#[test]
fn command_parsing() {
    let c = commands("a --x  # comment\n# whole line\nb \\\n  --y z\n\n");
    assert_eq!(c, ["a --x", "b --y z"]);
    let b = blocks("x\n```sh\none\n```\n```\ntwo\n```\n");
    assert_eq!(
        (b[0].lang.as_str(), b[0].text.as_str(), b[0].line, b[1].lang.as_str()),
        ("sh", "one\n", 2, "")
    );
}

/// The inline code of the README (outside code blocks), in order.
fn inline_code(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for l in md.lines() {
        if l.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            out.extend(l.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    out
}

/// Every `dns-sidecar SUBCOMMAND` and every `--flag` the README's prose
/// mentions exists in the binary's `--help` (the load test's flags are
/// checked against its own help, in the loadtest crate).
#[test]
fn every_command_and_flag_the_readme_mentions_exists() {
    let help = |args: &[&str]| -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?} --help");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let top = help(&[]);
    let subcommands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(
        subcommands.contains(&"status".to_string()) && subcommands.contains(&"run".to_string()),
        "{subcommands:?}"
    );
    let all_help: String = std::iter::once(top.clone())
        .chain(subcommands.iter().map(|s| help(&[s])))
        .collect();
    // Every page but the benchmarks, whose flags are the load test's (checked
    // against its own help in the loadtest crate).
    let prose: String = pages()
        .into_iter()
        .filter(|(page, _)| *page != "docs/benchmarks.md")
        .map(|(_, md)| md)
        .collect::<Vec<_>>()
        .join("\n");
    let mut checked = 0;
    for span in inline_code(&prose) {
        let words: Vec<&str> = span.split_whitespace().collect();
        if words.first() == Some(&"dns-sidecar") {
            if let Some(sub) = words.get(1).filter(|w| !w.starts_with('-')) {
                assert!(
                    subcommands.iter().any(|s| s == sub),
                    "README mentions `{span}`: no subcommand {sub}"
                );
                let h = help(&[sub]);
                for f in words.iter().filter(|w| w.starts_with("--")) {
                    assert!(
                        h.contains(*f) || top.contains(*f),
                        "README mentions `{span}`: `dns-sidecar {sub}` has no {f}"
                    );
                }
                checked += 1;
            }
        } else if let Some(flag) = words.first().filter(|w| w.starts_with("--") && w.len() > 2) {
            assert!(
                all_help.contains(flag),
                "README mentions `{span}`, which no dns-sidecar command accepts"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} mentions checked");
}

/// Every relative link of the README and docs/ (`[text](path#anchor)`,
/// outside code blocks) names a file that exists and, with an anchor, a
/// heading of it; `(#anchor)` alone, a heading of the same page.
#[test]
fn every_link_of_the_readme_and_docs_resolves() {
    let mut n = 0;
    for (page, md) in pages() {
        n += check_links(page, &root().join(page), &md);
    }
    assert!(n >= 40, "only {n} links");
}
