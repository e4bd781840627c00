//! benches/README.md, `loadtest --help` and `benches/loadtest.sh --help`
//! say the same, and the script's `--help` runs nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

use super::Args;

fn benches() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(benches().join("README.md")).unwrap()
}

/// The `--flags` of the README's "## Options" table (first column).
fn readme_flags(md: &str) -> BTreeSet<String> {
    let section = md
        .split("## Options")
        .nth(1)
        .expect("benches/README.md has an Options section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .flat_map(|l| {
            l.split('|')
                .nth(1)
                .unwrap()
                .split('`')
                .filter(|t| t.starts_with("--"))
                .map(|t| t.split_whitespace().next().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn clap_flags() -> BTreeSet<String> {
    let mut flags: BTreeSet<String> = Args::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    flags.insert("--help".into());
    flags
}

#[test]
fn readme_options_are_the_harness_options() {
    assert_eq!(
        readme_flags(&readme()),
        clap_flags(),
        "benches/README.md's Options table vs `loadtest --help`"
    );
}

#[test]
fn readme_names_every_default_server() {
    let servers = Args::command()
        .get_arguments()
        .find(|a| a.get_long() == Some("servers"))
        .unwrap()
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let md = readme();
    let row = md.lines().find(|l| l.starts_with("| `--servers")).unwrap();
    assert!(row.contains(&format!("`{servers}`")), "{row} vs default {servers}");
    let n = servers.split(',').count();
    let words = [
        "", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    assert!(row.contains(&format!("all {}", words[n])), "{row}: {n} servers");
    for s in servers.split(',') {
        assert!(
            md.contains(&format!("| `{s}` |")),
            "benches/README.md's \"What runs\" table lacks {s}"
        );
    }
}

#[test]
fn quick_takes_what_both_readmes_say() {
    let quick = Args::command()
        .get_arguments()
        .find(|a| a.get_long() == Some("quick"))
        .unwrap()
        .get_help()
        .unwrap()
        .to_string();
    let said = quick.split("in ").last().unwrap().trim_end_matches('.').to_string();
    assert!(said.starts_with("about "), "{quick}");
    let top = std::fs::read_to_string(benches().join("../docs/benchmarks.md")).unwrap();
    for (name, md) in [("benches/README.md", readme()), ("docs/benchmarks.md", top)] {
        let line = md
            .lines()
            .find(|l| l.contains("loadtest.sh --quick"))
            .unwrap_or_else(|| panic!("{name}: no --quick line"));
        assert!(line.contains(&said), "{name}: `{line}` vs `loadtest --help`: {said}");
    }
}

/// `benches/loadtest.sh --help` with stand-ins for everything that installs
/// or builds first on PATH: none may run, and the help names every option.
#[test]
fn script_help_runs_nothing_else() {
    let dir = std::env::temp_dir().join(format!("loadtest-help-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("ran");
    for tool in ["apt-get", "apt", "sudo", "cargo", "dpkg", "rustup", "mktemp"] {
        let p = dir.join(tool);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho {tool} \"$@\" >> {}\nexit 1\n", marker.display()),
        )
        .unwrap();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).unwrap();
    }
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    for arg in ["--help", "-h"] {
        let out = Command::new("bash")
            .arg(benches().join("loadtest.sh"))
            .args(["--quick", arg])
            .env("PATH", &path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{arg}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            !marker.exists(),
            "`loadtest.sh {arg}` ran: {}",
            std::fs::read_to_string(&marker).unwrap_or_default()
        );
        for f in clap_flags() {
            assert!(text.contains(&f), "`loadtest.sh {arg}` does not mention {f}:\n{text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
