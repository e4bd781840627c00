//! `dns-sidecar check-config`: a bad config exits non-zero naming the file,
//! the line and the fix; the shipped examples pass.

use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .arg("check-config")
        .arg(path)
        .env("PGPROBE_PASSWORD", "x")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let (code, out, err) = check(&p);
            assert_eq!(code, 0, "{}: {out}{err}", p.display());
            assert!(out.contains("OK"), "{out}");
            n += 1;
        }
    }
    assert!(n >= 1, "config/ should hold the example config");
}

#[test]
fn the_shipped_fleet_config_forwards_the_example_alias_zone_uncached() {
    // config/fleet.toml is fleet mode: nothing of its own to probe, and the
    // alias zone of config/example.toml (what a tier instance runs) forwarded
    // uncached to two or more tier instances.
    use dns_sidecar::config::{Config, Secrets};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let load = |name: &str| {
        let (c, _warnings) = Config::load_with(&dir.join(name), Secrets::Deferred).unwrap_or_else(|e| panic!("{e}"));
        c
    };
    let fleet = load("fleet.toml");
    let tier = load("example.toml");
    assert!(fleet.servers.is_empty() && fleet.aliases.is_empty() && fleet.zones.is_empty());
    let zone = &tier.zones[0].name;
    let f = fleet
        .forward
        .iter()
        .find(|f| &f.zone == zone)
        .unwrap_or_else(|| panic!("config/fleet.toml does not forward {}", zone.as_str()));
    assert!(!f.cache, "the alias zone must not be cached");
    assert!(f.upstream.servers.len() >= 2, "two or more tier instances");
    assert!(fleet.upstream.is_some(), "everything else needs an upstream");
}

/// `dns-sidecar check-config ARGS` from the repository's root, with no
/// secrets in the environment.
fn check_without_secrets(args: &[&str]) -> (i32, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .args(args)
        .current_dir(root)
        .env_remove("PGPROBE_PASSWORD")
        .env_remove("DNS_SIDECAR_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_examples_validate_with_line_works_without_the_secret() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read_to_string(root.join("config/example.toml")).unwrap();
    let line = example
        .lines()
        .find_map(|l| l.strip_prefix("# Validate with:"))
        .expect("config/example.toml says how to validate it")
        .trim();
    // The line as printed, run by this build's binary instead of `cargo run`.
    let args: Vec<&str> = line
        .strip_prefix("cargo run --")
        .unwrap_or_else(|| panic!("unexpected command {line:?}"))
        .split_whitespace()
        .collect();
    assert_eq!(args, ["check-config", "config/example.toml"]);
    let (code, out, err) = check_without_secrets(&args);
    assert_eq!(code, 0, "{line}: {out}{err}");
    assert!(
        out.contains("config/example.toml: OK") && out.contains("1 warning(s)"),
        "{out}"
    );
    assert!(
        err.contains("config/example.toml:")
            && err.contains("warning: environment variable `PGPROBE_PASSWORD` is not set")
            && err.contains("needed at run time"),
        "{err}"
    );

    // --strict: the missing secret is an error, as it is for `run`.
    let (code, out, err) = check_without_secrets(&["check-config", "--strict", "config/example.toml"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("PGPROBE_PASSWORD") && !err.contains("warning"), "{err}");
}

#[test]
fn run_still_needs_the_secret() {
    // Loopback only: if it did start it would probe 127.0.0.1, not the internet.
    let dir = std::env::temp_dir().join(format!("dns-sidecar-run-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("run.toml");
    std::fs::write(
        &p,
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nenabled = false\n[[zones]]\nname = \"db.test\"\n[probe]\nuser \
            = \"probe\"\nsslmode = \"disable\"\npassword_env = \"DNS_SIDECAR_TEST_SURELY_UNSET\"\n[servers.a]\ntarget \
                = \"a.test\"\nhostaddr = \"127.0.0.1\"\n[[aliases]]\nname = \"prod.db.test\"\nservers = [\"a\"]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .arg("run")
        .arg("--config")
        .arg(&p)
        .env_remove("DNS_SIDECAR_TEST_SURELY_UNSET")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("`run` started without the password");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("run.toml:10:16") && err.contains("`DNS_SIDECAR_TEST_SURELY_UNSET` is not set"),
        "{err}"
    );
    let (code, out, err) = check_without_secrets(&["check-config", p.to_str().unwrap()]);
    assert_eq!(code, 0, "check-config only warns: {out}{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_configs_exit_2_with_file_line_and_fix() {
    let dir = std::env::temp_dir().join(format!("dns-sidecar-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "typo.toml",
            "[dns]\nlisten = [\"127.0.0.1:53\"]\nlisen = []\n",
            &[
                "typo.toml:3:1",
                "unknown field \
            `lisen`",
                "hint",
            ],
        ),
        (
            "ttl.toml",
            "[dns]\nlisten = [\"127.0.0.1:53\"]\n[[zones]]\nname = \"z.test\"\nttl = \
            300\n",
            &["ttl.toml:5:7", "ambiguous", "\"300s\""],
        ),
        ("syntax.toml", "[dns\nlisten = 1\n", &["syntax.toml:1:"]),
        (
            "orphan.toml",
            "[dns]\nlisten = [\"127.0.0.1:53\"]\n[[zones]]\nname = \"db.test\"\n[[aliases]]\nname \
                = \"prod.db.test\"\nservers = [\"pg1\"]\n",
            &["orphan.toml:7:", "server `pg1`", "none are defined"],
        ),
    ];
    for (file, text, needles) in cases {
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap();
        let (code, _, err) = check(&p);
        assert_eq!(code, 2, "{file}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{file}: {err:?} lacks {n:?}");
        }
    }
    let (code, _, err) = check(&dir.join("missing.toml"));
    assert_eq!(code, 2);
    assert!(err.contains("cannot read config file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
