//! `dns-sidecar check-config`: a bad config exits non-zero naming the file,
//! the line and the fix; the shipped examples pass.

use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dns-sidecar")).arg("check-config").arg(path).env("PGPROBE_PASSWORD", "x").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
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
fn bad_configs_exit_2_with_file_line_and_fix() {
    let dir = std::env::temp_dir().join(format!("dns-sidecar-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        ("typo.toml", "[dns]\nlisten = [\"127.0.0.1:53\"]\nlisen = []\n", &["typo.toml:3:1", "unknown field `lisen`", "hint"]),
        ("ttl.toml", "[dns]\nlisten = [\"127.0.0.1:53\"]\n[[zones]]\nname = \"z.test\"\nttl = 300\n", &["ttl.toml:5:7", "ambiguous", "\"300s\""]),
        ("syntax.toml", "[dns\nlisten = 1\n", &["syntax.toml:1:"]),
        (
            "orphan.toml",
            "[dns]\nlisten = [\"127.0.0.1:53\"]\n[[zones]]\nname = \"db.test\"\n[[aliases]]\nname = \"prod.db.test\"\nservers = [\"pg1\"]\n",
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
