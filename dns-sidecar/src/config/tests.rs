//! Table tests: TOML text in, typed config or the expected error out.

use std::path::Path;
use std::time::Duration;

use super::*;

const BASE: &str = r#"
[dns]
listen = ["127.0.0.1:5353"]

[upstream]
servers = ["127.0.0.1:5300"]

[[zones]]
name = "db.internal"

[probe]
user = "probe"
sslmode = "require"

[servers.a]
target = "pg-a.example.com"

[servers.b]
target = "pg-b.example.com"
port = 6432

[[aliases]]
name = "prod.db.internal"
servers = ["a", "b"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("test.toml"), text)
}

#[test]
fn base_config_and_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.dns.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
    assert_eq!(c.dns.max_udp_payload, 1232);
    let up = c.upstream.as_ref().unwrap();
    assert_eq!(up.timeout, Duration::from_millis(1500));
    assert_eq!(c.zones[0].name.as_str(), "db.internal.");
    assert_eq!(c.zones[0].negative_ttl, 5);
    assert_eq!(c.zones[0].nameservers[0].as_str(), "ns.db.internal.");
    assert_eq!(c.probe, ProbeTiming::default());
    assert_eq!(c.servers.len(), 2);
    let a = &c.servers[0];
    assert_eq!(a.id, "a");
    assert_eq!(a.conn.host, "pg-a.example.com");
    assert_eq!(a.conn.port, 5432);
    assert_eq!(a.conn.dbname, "postgres");
    assert_eq!(c.servers[1].conn.port, 6432);
    let alias = &c.aliases[0];
    assert_eq!(alias.ttl, 5);
    assert_eq!(alias.role, Role::ReadWrite);
    assert_eq!(alias.on_no_match, NoMatchPolicy::KeepLast);
    assert_eq!(alias.servers, vec![ServerId::new(0), ServerId::new(1)]);
    assert_eq!(alias.on_change, None);
    assert_eq!(c.admin.listen, Some("127.0.0.1:9153".parse().unwrap()));
    assert_eq!(c.admin.token, None);
}

#[test]
fn admin_and_hooks() {
    let text = format!(
        "{BASE}on_change = [\"/bin/echo\", \"changed\"]\non_change_timeout = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.aliases[0].on_change,
        Some(Hook {
            argv: vec!["/bin/echo".into(), "changed".into()],
            timeout: Duration::from_secs(5),
            env: vec!["PATH".into(), "HOME".into()]
        })
    );
    assert_eq!(c.admin.listen, Some("127.0.0.1:0".parse().unwrap()));
    let c = parse(&format!("{BASE}[admin]\nenabled = false\n")).unwrap();
    assert_eq!(c.admin.listen, None);
}

#[test]
fn overrides() {
    let text = BASE
        .replace(
            "[probe]\n",
            "[probe]\ninterval = \"150ms\"\ndeadline = \"2s\"\nfall = 5\n",
        )
        .replace(
            "servers = [\"a\", \"b\"]",
            "servers = [\"b\", \"a\"]\nrole = \"prefer-standby\"\nttl = \"10s\"\non_no_match = \"servfail\"",
        );
    let c = parse(&text).unwrap();
    assert_eq!(c.probe.interval, Duration::from_millis(150));
    assert_eq!(c.probe.deadline, Duration::from_secs(2));
    assert_eq!(c.probe.fall, 5);
    assert_eq!(c.probe.incident_interval, Duration::from_millis(10), "default");
    let a = &c.aliases[0];
    assert_eq!(
        (a.role, a.ttl, a.on_no_match, a.servers.clone()),
        (
            Role::PreferStandby,
            10,
            NoMatchPolicy::Servfail,
            vec![ServerId::new(1), ServerId::new(0)]
        )
    );
}

#[test]
fn lag_limits() {
    let reader = |role: &str, lag: &str| {
        parse(&BASE.replace(
            "servers = [\"a\", \"b\"]",
            &format!("servers = [\"b\", \"a\"]\nrole = \"{role}\"\n{lag}"),
        ))
    };
    let c = reader("prefer-standby", "max_lag = \"16MiB\"\nmax_lag_time = \"5s\"").unwrap();
    assert_eq!(
        c.aliases[0].max_lag,
        MaxLag {
            bytes: Some(16 << 20),
            time: Some(Duration::from_secs(5))
        }
    );
    assert_eq!(
        reader("standby", "max_lag = 65536").unwrap().aliases[0].max_lag,
        MaxLag {
            bytes: Some(65536),
            time: None
        }
    );
    assert_eq!(
        reader("read-only", "max_lag_time = \"200ms\"").unwrap().aliases[0]
            .max_lag
            .time,
        Some(Duration::from_millis(200))
    );
    assert!(!parse(BASE).unwrap().aliases[0].max_lag.is_set(), "no limit by default");
}

#[test]
fn incident_interval() {
    let with = |probe: &str| parse(&BASE.replace("[probe]\n", &format!("[probe]\n{probe}\n")));
    let c = with("incident_interval = \"25ms\"").unwrap();
    assert_eq!(
        (c.probe.interval, c.probe.incident_interval),
        (Duration::from_millis(100), Duration::from_millis(25))
    );
    // The bounds are inclusive: 1ms, and the interval itself.
    assert_eq!(
        with("incident_interval = \"1ms\"").unwrap().probe.incident_interval,
        Duration::from_millis(1)
    );
    let c = with("interval = \"10ms\"\nincident_interval = \"10ms\"").unwrap();
    assert_eq!(c.probe.incident_interval, c.probe.interval);
    // The default (10ms) fits under the shortest allowed interval.
    assert_eq!(
        with("interval = \"10ms\"").unwrap().probe.incident_interval,
        Duration::from_millis(10)
    );
}

#[test]
fn password_sources_never_show_in_debug() {
    std::env::set_var("DNS_SIDECAR_TEST_PW", "s3cret");
    let text = BASE.replace("[probe]\n", "[probe]\npassword_env = \"DNS_SIDECAR_TEST_PW\"\n");
    let c = parse(&text).unwrap();
    let Some(crate::config::PasswordSource::Env { value, .. }) = &c.servers[0].conn.password else {
        panic!("{:?}", c.servers[0].conn.password)
    };
    assert_eq!(value.expose(), "s3cret");
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn missing_secrets_are_warnings_when_deferred_and_errors_when_required() {
    std::env::remove_var("DNS_SIDECAR_TEST_UNSET_PW");
    std::env::remove_var("DNS_SIDECAR_TEST_UNSET_TOKEN");
    /// (what, replaced, replacement, line of the secret, words, servers whose password is unset)
    type Case<'a> = (&'a str, &'a str, &'a str, usize, &'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "[probe] password_env",
            "[probe]\n",
            "[probe]\npassword_env = \"DNS_SIDECAR_TEST_UNSET_PW\"\n",
            12,
            &["`DNS_SIDECAR_TEST_UNSET_PW` is not set", "servers `a`, `b`"],
            &["a", "b"],
        ),
        (
            "server password_file",
            "port = 6432\n",
            "port = 6432\npassword_file = \"/nonexistent/pw\"\n",
            21,
            &["cannot read password_file `/nonexistent/pw`", "server `b`"],
            &["b"],
        ),
        (
            "admin token_env",
            "servers = [\"a\", \"b\"]\n",
            "servers = [\"a\", \"b\"]\n[admin]\ntoken_env = \"DNS_SIDECAR_TEST_UNSET_TOKEN\"\n",
            26,
            &["`DNS_SIDECAR_TEST_UNSET_TOKEN` is not set", "the admin token"],
            &[],
        ),
        (
            "admin token_file",
            "servers = [\"a\", \"b\"]\n",
            "servers = [\"a\", \"b\"]\n[admin]\ntoken_file = \"/nonexistent/token\"\n",
            26,
            &["cannot read token_file", "the admin token"],
            &[],
        ),
    ];
    for (what, from, to, line, words, unset) in cases {
        assert!(BASE.contains(from), "{what}");
        let text = BASE.replacen(from, to, 1);
        let (c, warnings) = Config::from_toml_with(Path::new("test.toml"), &text, Secrets::Deferred)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(warnings.len(), 1, "{what}: {warnings:?}");
        let w = warnings[0].to_string();
        assert!(
            w.starts_with(&format!("test.toml:{line}:")),
            "{what}: wrong place in {w:?}"
        );
        for needle in words.iter().chain(&["warning: ", "needed at run time", "hint: "]) {
            assert!(w.contains(needle), "{what}: {w:?} lacks {needle:?}");
        }
        for s in c.servers.iter().filter(|s| unset.contains(&s.id.as_str())) {
            assert_eq!(s.conn.password, None, "{what}: server {}", s.id);
        }
        assert_eq!(c.admin.token, None, "{what}");
        // Required (run, reload, check-config --strict): the same is an error, at the same place.
        let err = parse(&text).expect_err(what).to_string();
        assert!(
            err.starts_with(&format!("test.toml:{line}:")) && err.contains(words[0]) && !err.contains("warning"),
            "{what}: {err}"
        );
    }
    // Nothing missing: no warnings.
    assert!(Config::from_toml_with(Path::new("test.toml"), BASE, Secrets::Deferred)
        .unwrap()
        .1
        .is_empty());
}

/// Each bad config, the line the error must point at, and words the message must contain.
#[test]
fn bad_configs_name_line_and_fix() {
    let cases: &[(&str, &str, &str, usize, &[&str])] = &[
        (
            "unknown key",
            "[probe]\n",
            "[probe]\nintervall = \"1s\"\n",
            12,
            &["unknown field `intervall`", "hint"],
        ),
        (
            "duration without unit",
            "[probe]\n",
            "[probe]\ninterval = \"100\"\n",
            12,
            &["no unit", "100ms"],
        ),
        (
            "bare number duration",
            "[probe]\n",
            "[probe]\ninterval = 100\n",
            12,
            &["ambiguous"],
        ),
        (
            "bad role",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\nrole = \"writer\"",
            25,
            &["unknown variant `writer`", "read-write"],
        ),
        (
            "unknown server",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"c\"]",
            24,
            &["server `c`", "defined: a, b"],
        ),
        (
            "alias outside zones",
            "name = \"prod.db.internal\"",
            "name = \"prod.other.internal\"",
            23,
            &["not inside any zone", "name = \"other.internal.\""],
        ),
        (
            "alias at apex",
            "name = \"prod.db.internal\"",
            "name = \"db.internal\"",
            23,
            &["apex"],
        ),
        (
            "inline password",
            "[probe]\n",
            "[probe]\npassword = \"hunter2\"\n",
            12,
            &["inline passwords", "password_env"],
        ),
        (
            "missing env password",
            "[probe]\n",
            "[probe]\npassword_env = \"DNS_SIDECAR_SURELY_UNSET\"\n",
            12,
            &["DNS_SIDECAR_SURELY_UNSET", "not set"],
        ),
        (
            "loop to self",
            "servers = [\"127.0.0.1:5300\"]",
            "servers = [\"127.0.0.1:5353\"]",
            6,
            &["loop"],
        ),
        (
            "bad address",
            "listen = [\"127.0.0.1:5353\"]",
            "listen = [\"localhost:53\"]",
            3,
            &["not an IP address"],
        ),
        (
            "bad name",
            "target = \"pg-a.example.com\"",
            "target = \"pg a.example.com\"",
            16,
            &["contains ` `"],
        ),
        (
            "fractional ttl",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\nttl = \"1500ms\"",
            25,
            &["whole seconds"],
        ),
        ("zero fall", "[probe]\n", "[probe]\nfall = 0\n", 12, &["at least 1"]),
        (
            "interval too short",
            "[probe]\n",
            "[probe]\ninterval = \"5ms\"\n",
            12,
            &["`probe.interval`", "too short", "hint: use 10ms or more"],
        ),
        (
            "deadline too short",
            "[probe]\n",
            "[probe]\ndeadline = \"1ms\"\n",
            12,
            &["`probe.deadline`", "too short", "hint"],
        ),
        (
            "incident interval too short",
            "[probe]\n",
            "[probe]\nincident_interval = \"0.5ms\"\n",
            12,
            &["`probe.incident_interval`", "too short", "hint: use 1ms or more"],
        ),
        (
            "incident interval zero",
            "[probe]\n",
            "[probe]\nincident_interval = \"0s\"\n",
            12,
            &["`probe.incident_interval`", "too short"],
        ),
        (
            "incident interval above interval",
            "[probe]\n",
            "[probe]\ninterval = \"50ms\"\nincident_interval = \"60ms\"\n",
            13,
            &[
                "`probe.incident_interval` (60ms) is longer than `probe.interval` (50ms)",
                "hint: ",
                "at most `interval`",
            ],
        ),
        (
            "incident interval without unit",
            "[probe]\n",
            "[probe]\nincident_interval = \"10\"\n",
            12,
            &["no unit", "10ms"],
        ),
        (
            "missing target",
            "target = \"pg-b.example.com\"\n",
            "",
            18,
            &["missing field `target`"],
        ),
        (
            "lag limit on a writer",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\nmax_lag = \"1MiB\"",
            25,
            &["role `read-write`", "never chooses a standby", "hint: use max_lag"],
        ),
        (
            "lag time on any",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\nrole = \"any\"\nmax_lag_time = \"5s\"",
            26,
            &["role `any`", "lag limit"],
        ),
        (
            "zero lag",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\nrole = \"standby\"\nmax_lag = 0",
            26,
            &["`max_lag` must be more than zero", "16MiB"],
        ),
        (
            "lag in MB",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\nrole = \"standby\"\nmax_lag = \"16MB\"",
            26,
            &["unknown unit `MB`", "MiB"],
        ),
        (
            "lag time shorter than two intervals",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\nrole = \"standby\"\nmax_lag_time = \"150ms\"",
            26,
            &[
                "`max_lag_time` of 150ms is shorter than two probe intervals (200ms)",
                "hint: ",
            ],
        ),
        (
            "empty hook",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\non_change = []",
            25,
            &["empty on_change"],
        ),
        (
            "root zone",
            "name = \"db.internal\"",
            "name = \".\"",
            9,
            &["root", "db.internal"],
        ),
        (
            "overlong zone",
            "name = \"db.internal\"",
            &format!("name = \"{}.internal\"", vec!["a".repeat(60); 4].join(".")),
            9,
            &["too long", "ns."],
        ),
        (
            "public listener without allow",
            "listen = [\"127.0.0.1:5353\"]",
            "listen = [\"0.0.0.0:5353\"]",
            3,
            &["0.0.0.0:5353", "not loopback", "allow = ["],
        ),
        (
            "empty allow",
            "listen = [\"127.0.0.1:5353\"]",
            "listen = [\"127.0.0.1:5353\"]\nallow = []",
            4,
            &["allow", "empty"],
        ),
        (
            "bad network",
            "listen = [\"127.0.0.1:5353\"]",
            "listen = [\"127.0.0.1:5353\"]\nallow = [\"10.1.2.3/8\"]",
            4,
            &["10.0.0.0/8"],
        ),
        (
            "zero max_fails",
            "servers = [\"127.0.0.1:5300\"]",
            "servers = [\"127.0.0.1:5300\"]\nmax_fails = 0",
            7,
            &["at least 1"],
        ),
        (
            "in-flight too high",
            "[probe]\n",
            "[limits]\nforward_in_flight = 100000\n[probe]\n",
            12,
            &["forward_in_flight", "outside"],
        ),
        (
            "memory too small",
            "[probe]\n",
            "[limits]\nmemory = \"100KiB\"\n[probe]\n",
            12,
            &["limits.memory"],
        ),
        (
            "memory unit",
            "[probe]\n",
            "[limits]\nmemory = \"16MB\"\n[probe]\n",
            12,
            &["unknown unit"],
        ),
        (
            "unknown limit",
            "[probe]\n",
            "[limits]\nqps = 5\n[probe]\n",
            12,
            &["unknown field `qps`"],
        ),
        (
            "admin connections",
            "[probe]\n",
            "[admin]\nmax_connections = 0\n[probe]\n",
            12,
            &["max_connections"],
        ),
        (
            "admin connections per client",
            "[probe]\n",
            "[admin]\nmax_connections_per_client = 1\n[probe]\n",
            12,
            &[
                "`admin.max_connections_per_client = 1` is outside 2..=4096",
                "health checks",
            ],
        ),
        (
            "verify-full without file",
            "sslmode = \"require\"",
            "sslmode = \"verify-full\"\nsslrootcert = \"/nonexistent/ca.pem\"",
            14,
            &["not a readable file"],
        ),
        (
            "interval 9ms",
            "[probe]\n",
            "[probe]\ninterval = \"9ms\"\n",
            12,
            &["`probe.interval` of 9ms is too short", "hint: use 10ms or more"],
        ),
        (
            "deadline zero",
            "[probe]\n",
            "[probe]\ndeadline = \"0s\"\n",
            12,
            &["`probe.deadline` of 0s is too short", "hint: "],
        ),
        (
            "upstream timeout zero",
            "servers = [\"127.0.0.1:5300\"]",
            "servers = [\"127.0.0.1:5300\"]\ntimeout = \"0s\"",
            7,
            &["`upstream.timeout` must be more than zero", "hint: ", "1500ms"],
        ),
        (
            "upstream timeout too long",
            "servers = [\"127.0.0.1:5300\"]",
            "servers = [\"127.0.0.1:5300\"]\ntimeout = \"6s\"",
            7,
            &[
                "`upstream.timeout` of 6s is longer than the maximum, 5s",
                "hint: ",
                "1500ms",
            ],
        ),
        (
            "upstream timeout without unit",
            "servers = [\"127.0.0.1:5300\"]",
            "servers = [\"127.0.0.1:5300\"]\ntimeout = 2",
            7,
            &["ambiguous", "hint: durations are strings with a unit"],
        ),
        (
            "empty nameservers",
            "name = \"db.internal\"\n",
            "name = \"db.internal\"\nnameservers = []\n",
            10,
            &["empty `nameservers`", "hint: remove the key", "ns.db.internal."],
        ),
        (
            "target is the alias",
            "target = \"pg-a.example.com\"",
            "target = \"prod.db.internal\"",
            16,
            &[
                "server `a` has target `prod.db.internal.`, which is an alias",
                "hint: `target` is the server's own DNS name",
            ],
        ),
        (
            "hook timeout zero",
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\non_change = [\"/bin/true\"]\non_change_timeout = \"0s\"",
            26,
            &["on_change_timeout", "0s", "hint: "],
        ),
        (
            "admin listen host name",
            "[probe]\n",
            "[admin]\nlisten = \"localhost:9153\"\n[probe]\n",
            12,
            &["not an IP address with an optional port", "hint: ", "default port 9153"],
        ),
        (
            "password in admin",
            "[probe]\n",
            "[admin]\npassword = \"x\"\n[probe]\n",
            12,
            &[
                "unknown field `password`",
                "hint: passwords are never written",
                "token_file",
            ],
        ),
        (
            "single-bracket list",
            "[[zones]]",
            "[zones]",
            8,
            &["hint: a list of tables is written with double brackets"],
        ),
        (
            "wrong type",
            "port = 6432",
            "port = \"6432\"",
            20,
            &["invalid type", "hint: this key takes a whole number from 0 to 65535"],
        ),
        ("toml syntax", "[probe]\n", "[probe]\nuser = probe\n", 12, &["hint: "]),
        (
            "duplicate key",
            "[probe]\n",
            "[probe]\nfall = 2\nfall = 3\n",
            13,
            &["duplicate key", "hint: each key may appear once"],
        ),
        (
            "bad hostaddr",
            "port = 6432",
            "port = 6432\nhostaddr = \"db.example.com\"",
            21,
            &["hint: addresses are IP literals"],
        ),
    ];
    for (what, from, to, line, needles) in cases {
        assert!(BASE.contains(from), "{what}: base lacks {from:?}");
        let text = BASE.replacen(from, to, 1);
        let err = match parse(&text) {
            Ok(_) => panic!("{what}: config was accepted"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("test.toml:{line}:")),
            "{what}: wrong place in {msg:?}"
        );
        // Every error: file:line:col, the line itself, and a hint.
        let col = msg.split(':').nth(2).and_then(|c| c.parse::<usize>().ok());
        assert!(col.is_some_and(|c| c >= 1), "{what}: no column in {msg:?}");
        assert!(
            msg.contains(&format!("\n  {line:>4} | ")),
            "{what}: no source line in {msg:?}"
        );
        let hint = msg.split_once("\n  hint: ").map(|(_, h)| h.trim());
        assert!(hint.is_some_and(|h| h.len() > 10), "{what}: no hint in {msg:?}");
        for n in *needles {
            assert!(msg.contains(n), "{what}: {msg:?} lacks {n:?}");
        }
    }
}

#[test]
fn example_configs_parse() {
    std::env::set_var("PGPROBE_PASSWORD", "example");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = Config::from_toml(&path, &text) {
                panic!("{e}");
            }
        }
    }
}

#[test]
fn expected_keys_name_only_accepted_keys() {
    let err = parse(&BASE.replacen("[probe]\n", "[probe]\npasswrd = \"x\"\n", 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `passwrd`, expected one of"), "{err}");
    assert!(
        err.contains("`password_env`") && err.contains("`password_file`") && err.contains("`application_name`"),
        "{err}"
    );
    assert!(
        !err.contains("`password`"),
        "`password` is always rejected, so it is not offered: {err}"
    );
    let err = parse(&BASE.replacen("port = 6432", "port = 6432\nsecret = 1", 1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown field `secret`") && !err.contains("`password`,") && err.contains("`application_name`"),
        "{err}"
    );
}

#[test]
fn admin_listen_port_is_optional() {
    for (listen, want) in [
        ("127.0.0.1", "127.0.0.1:9153"),
        ("127.0.0.1:9000", "127.0.0.1:9000"),
        ("::1", "[::1]:9153"),
        ("[::1]", "[::1]:9153"),
        ("[::1]:9001", "[::1]:9001"),
    ] {
        let c = parse(&format!("{BASE}[admin]\nlisten = \"{listen}\"\n")).unwrap_or_else(|e| panic!("{listen}: {e}"));
        assert_eq!(c.admin.listen, Some(want.parse().unwrap()), "{listen}");
    }
}

#[test]
fn explicit_nameservers_are_kept() {
    let c = parse(&BASE.replacen(
        "name = \"db.internal\"\n",
        "name = \"db.internal\"\nnameservers = [\"ns1.example.com\", \"ns2.example.com.\"]\n",
        1,
    ))
    .unwrap();
    let ns: Vec<&str> = c.zones[0].nameservers.iter().map(|n| n.as_str()).collect();
    assert_eq!(ns, ["ns1.example.com.", "ns2.example.com."]);
}

#[test]
fn unreadable_file_says_what_to_check() {
    let err = Config::load(Path::new("/nonexistent/dns-sidecar.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot read config file /nonexistent/dns-sidecar.toml: "),
        "{err}"
    );
    assert!(err.contains("\n  hint: check the path"), "{err}");
}

#[test]
fn limits_allow_and_hook_env() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.dns.allow, Cidr::loopback());
    let up = c.upstream.as_ref().unwrap();
    assert_eq!((up.max_fails, up.health_check), (5, Duration::from_secs(1)));
    assert_eq!(
        (c.admin.header_timeout, c.admin.request_timeout, c.admin.max_connections),
        (Duration::from_secs(5), Duration::from_secs(10), 32)
    );
    assert_eq!(
        (c.admin.body_timeout, c.admin.max_connections_per_client),
        (Duration::from_secs(2), 8)
    );

    let text = BASE
        .replace(
            "listen = [\"127.0.0.1:5353\"]",
            "listen = [\"0.0.0.0:5353\"]\nallow = [\"10.0.0.0/8\", \"fd00::/8\"]",
        )
        .replace(
            "[probe]\n",
            "[limits]\nmemory = \"8MiB\"\nforward_rate = 0\ntcp_connections = 64\ntcp_connections_per_client = 100\ntcp_write_timeout = \"2s\"\n[probe]\n",
        )
        .replace(
            "servers = [\"a\", \"b\"]",
            "servers = [\"a\", \"b\"]\non_change = [\"/bin/true\"]\non_change_env = [\"HOME\", \"AZURE_*\"]",
        );
    let c = parse(&text).unwrap();
    assert_eq!(c.dns.allow.len(), 2);
    assert!(c.dns.allow[0].contains("10.9.8.7".parse().unwrap()));
    assert_eq!(c.limits.memory, 8 << 20);
    assert_eq!((c.limits.forward_rate, c.limits.forward_burst), (0, 0));
    assert_eq!(c.limits.tcp_connections_per_client, 64, "capped at the global cap");
    assert_eq!(c.limits.tcp_write_timeout, Duration::from_secs(2));
    assert_eq!(
        c.aliases[0].on_change.as_ref().unwrap().env,
        vec!["HOME".to_string(), "AZURE_*".to_string()]
    );
}

#[test]
fn cache_settings() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.cache, CacheSettings::default());
    assert!(c.cache.enabled && c.cache.serve_stale);
    assert_eq!(
        (
            c.cache.max_entries,
            c.cache.max_bytes,
            c.cache.max_ttl,
            c.cache.max_negative_ttl,
            c.cache.servfail_ttl
        ),
        (10_000, 4 << 20, 3600, 300, 5)
    );
    assert_eq!(c.cache.max_stale, Duration::from_secs(86_400));
    let text = format!(
        "{BASE}[cache]\nmax_entries = 500\nmax_bytes = \"256KiB\"\nmax_ttl = \"5m\"\nmax_negative_ttl = \"0s\"\nservfail_ttl = \"2s\"\nmax_stale = \"3d\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.cache,
        CacheSettings {
            enabled: true,
            max_entries: 500,
            max_bytes: 256 << 10,
            max_ttl: 300,
            max_negative_ttl: 0,
            servfail_ttl: 2,
            serve_stale: true,
            max_stale: Duration::from_secs(3 * 86_400),
            prefetch: true,
            prefetch_hits: 3,
        }
    );
    let c = parse(&format!("{BASE}[cache]\nenabled = false\nserve_stale = false\n")).unwrap();
    assert!(!c.cache.enabled && !c.cache.serve_stale);
    let c = parse(&format!("{BASE}[cache]\nprefetch = false\n")).unwrap();
    assert!(!c.cache.prefetch);
    let c = parse(&format!("{BASE}[cache]\nprefetch_hits = 1\n")).unwrap();
    assert_eq!((c.cache.prefetch, c.cache.prefetch_hits), (true, 1));
    // The bounds are inclusive.
    let c = parse(&format!(
        "{BASE}[cache]\nmax_entries = 1\nmax_bytes = \"64KiB\"\nmax_ttl = \"1s\"\nservfail_ttl = \"30s\"\nmax_stale = \"7d\"\n"
    ))
    .unwrap();
    assert_eq!(
        (
            c.cache.max_entries,
            c.cache.max_bytes,
            c.cache.max_ttl,
            c.cache.servfail_ttl,
            c.cache.max_stale.as_secs()
        ),
        (1, 64 << 10, 1, 30, 7 * 86_400)
    );
}

#[test]
fn bad_cache_settings_name_line_and_fix() {
    // (what, [cache] body, line of the error, words)
    let cases: &[(&str, &str, usize, &[&str])] = &[
        ("unknown key", "size = 5", 26, &["unknown field `size`", "max_entries"]),
        (
            "zero entries",
            "max_entries = 0",
            26,
            &["`cache.max_entries = 0` is outside 1..=1000000", "enabled = false"],
        ),
        (
            "too many entries",
            "max_entries = 2000000",
            26,
            &["outside 1..=1000000"],
        ),
        (
            "bytes too small",
            "max_bytes = \"1KiB\"",
            26,
            &[
                "`cache.max_bytes` of 1024 bytes is outside 64KiB..=1GiB",
                "[limits] memory",
            ],
        ),
        ("bytes unit", "max_bytes = \"4MB\"", 26, &["unknown unit `MB`"]),
        (
            "zero max_ttl",
            "max_ttl = \"0s\"",
            26,
            &["`cache.max_ttl` of 0s is outside 1s..=86400s", "enabled = false"],
        ),
        ("fractional max_ttl", "max_ttl = \"1.5s\"", 26, &["whole seconds"]),
        ("max_ttl without unit", "max_ttl = 300", 26, &["ambiguous"]),
        (
            "long servfail",
            "servfail_ttl = \"1m\"",
            26,
            &["`cache.servfail_ttl` of 60s is outside 0s..=30s", "a few seconds"],
        ),
        (
            "long negative",
            "max_negative_ttl = \"2d\"",
            26,
            &["longer than one day"],
        ),
        (
            "stale too long",
            "max_stale = \"8d\"",
            26,
            &["`cache.max_stale` of 691200s is outside 1s..=7d", "RFC 8767"],
        ),
        (
            "stale zero",
            "max_stale = \"0s\"",
            26,
            &["`cache.max_stale` of 0s is outside", "serve_stale = false"],
        ),
        (
            "stale without serving it",
            "serve_stale = false\nmax_stale = \"1h\"",
            27,
            &["serve_stale = false", "never apply"],
        ),
        (
            "prefetch_hits zero",
            "prefetch_hits = 0",
            26,
            &["`cache.prefetch_hits = 0` is outside 1..=1000000", "prefetch = false"],
        ),
        (
            "prefetch_hits without prefetching",
            "prefetch = false\nprefetch_hits = 5",
            27,
            &["prefetch = false", "never apply"],
        ),
        (
            "enabled as string",
            "enabled = \"yes\"",
            26,
            &["invalid type", "true or false"],
        ),
    ];
    for (what, body, line, needles) in cases {
        let text = format!("{BASE}[cache]\n{body}\n");
        let msg = parse(&text).map(|_| ()).expect_err(what).to_string();
        assert!(
            msg.starts_with(&format!("test.toml:{line}:")),
            "{what}: wrong place in {msg:?}"
        );
        assert!(
            msg.contains(&format!("\n  {line:>4} | ")),
            "{what}: no source line in {msg:?}"
        );
        assert!(
            msg.split_once("\n  hint: ").is_some_and(|(_, h)| h.trim().len() > 10),
            "{what}: no hint in {msg:?}"
        );
        for n in *needles {
            assert!(msg.contains(n), "{what}: {msg:?} lacks {n:?}");
        }
    }
}

#[test]
fn hook_env_never_carries_secrets() {
    std::env::set_var("PG_HOOK_TEST_PW", "x");
    let base = BASE.replace("[probe]\n", "[probe]\npassword_env = \"PG_HOOK_TEST_PW\"\n");
    for (env, ok) in [
        ("[\"PG_HOOK_TEST_PW\"]", false),
        ("[\"PG_*\"]", false),
        ("[\"*\"]", false),
        ("[\"A B\"]", false),
        ("[\"PGHOST\"]", true),
        ("[]", true),
    ] {
        let text = base.replace(
            "servers = [\"a\", \"b\"]",
            &format!("servers = [\"a\", \"b\"]\non_change = [\"/bin/true\"]\non_change_env = {env}"),
        );
        match parse(&text) {
            Ok(_) => assert!(ok, "{env} accepted"),
            Err(e) => {
                assert!(!ok, "{env}: {e}");
                assert!(e.to_string().starts_with("test.toml:27:"), "{env}: {e}");
            }
        }
    }
}
