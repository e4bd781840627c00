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
    assert_eq!(alias.servers, vec![0, 1]);
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
    assert_eq!(c.aliases[0].on_change, Some(Hook { argv: vec!["/bin/echo".into(), "changed".into()], timeout: Duration::from_secs(5), env: vec!["PATH".into(), "HOME".into()] }));
    assert_eq!(c.admin.listen, Some("127.0.0.1:0".parse().unwrap()));
    let c = parse(&format!("{BASE}[admin]\nenabled = false\n")).unwrap();
    assert_eq!(c.admin.listen, None);
}

#[test]
fn overrides() {
    let text = BASE.replace("[probe]\n", "[probe]\ninterval = \"150ms\"\ndeadline = \"2s\"\nfall = 5\n").replace(
        "servers = [\"a\", \"b\"]",
        "servers = [\"b\", \"a\"]\nrole = \"prefer-standby\"\nttl = \"10s\"\non_no_match = \"servfail\"",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.probe.interval, Duration::from_millis(150));
    assert_eq!(c.probe.deadline, Duration::from_secs(2));
    assert_eq!(c.probe.fall, 5);
    let a = &c.aliases[0];
    assert_eq!((a.role, a.ttl, a.on_no_match, a.servers.clone()), (Role::PreferStandby, 10, NoMatchPolicy::Servfail, vec![1, 0]));
}

#[test]
fn password_sources_never_show_in_debug() {
    std::env::set_var("DNS_SIDECAR_TEST_PW", "s3cret");
    let text = BASE.replace("[probe]\n", "[probe]\npassword_env = \"DNS_SIDECAR_TEST_PW\"\n");
    let c = parse(&text).unwrap();
    assert_eq!(c.servers[0].conn.password.as_ref().unwrap().expose(), "s3cret");
    assert!(!format!("{c:?}").contains("s3cret"));
}

/// Each bad config, the line the error must point at, and words the message must contain.
#[test]
fn bad_configs_name_line_and_fix() {
    let cases: &[(&str, &str, &str, usize, &[&str])] = &[
        ("unknown key", "[probe]\n", "[probe]\nintervall = \"1s\"\n", 12, &["unknown field `intervall`", "hint"]),
        ("duration without unit", "[probe]\n", "[probe]\ninterval = \"100\"\n", 12, &["no unit", "100ms"]),
        ("bare number duration", "[probe]\n", "[probe]\ninterval = 100\n", 12, &["ambiguous"]),
        ("bad role", "servers = [\"a\", \"b\"]", "servers = [\"a\", \"b\"]\nrole = \"writer\"", 25, &["unknown variant `writer`", "read-write"]),
        ("unknown server", "servers = [\"a\", \"b\"]", "servers = [\"a\", \"c\"]", 24, &["server `c`", "defined: a, b"]),
        ("alias outside zones", "name = \"prod.db.internal\"", "name = \"prod.other.internal\"", 23, &["not inside any zone", "name = \"other.internal.\""]),
        ("alias at apex", "name = \"prod.db.internal\"", "name = \"db.internal\"", 23, &["apex"]),
        ("inline password", "[probe]\n", "[probe]\npassword = \"hunter2\"\n", 12, &["inline passwords", "password_env"]),
        ("missing env password", "[probe]\n", "[probe]\npassword_env = \"DNS_SIDECAR_SURELY_UNSET\"\n", 12, &["DNS_SIDECAR_SURELY_UNSET", "not set"]),
        ("loop to self", "servers = [\"127.0.0.1:5300\"]", "servers = [\"127.0.0.1:5353\"]", 6, &["loop"]),
        ("bad address", "listen = [\"127.0.0.1:5353\"]", "listen = [\"localhost:53\"]", 3, &["not an IP address"]),
        ("bad name", "target = \"pg-a.example.com\"", "target = \"pg a.example.com\"", 16, &["contains ` `"]),
        ("fractional ttl", "servers = [\"a\", \"b\"]", "servers = [\"a\", \"b\"]\nttl = \"1500ms\"", 25, &["whole seconds"]),
        ("zero fall", "[probe]\n", "[probe]\nfall = 0\n", 12, &["at least 1"]),
        ("missing target", "target = \"pg-b.example.com\"\n", "", 18, &["missing field `target`"]),
        ("empty hook", "servers = [\"a\", \"b\"]", "servers = [\"a\", \"b\"]\non_change = []", 25, &["empty on_change"]),
        ("root zone", "name = \"db.internal\"", "name = \".\"", 9, &["root", "db.internal"]),
        ("overlong zone", "name = \"db.internal\"", &format!("name = \"{}.internal\"", vec!["a".repeat(60); 4].join(".")), 9, &["too long", "ns."]),
        ("public listener without allow", "listen = [\"127.0.0.1:5353\"]", "listen = [\"0.0.0.0:5353\"]", 3, &["0.0.0.0:5353", "not loopback", "allow = ["]),
        ("empty allow", "listen = [\"127.0.0.1:5353\"]", "listen = [\"127.0.0.1:5353\"]\nallow = []", 4, &["allow", "empty"]),
        ("bad network", "listen = [\"127.0.0.1:5353\"]", "listen = [\"127.0.0.1:5353\"]\nallow = [\"10.1.2.3/8\"]", 4, &["10.0.0.0/8"]),
        ("zero max_fails", "servers = [\"127.0.0.1:5300\"]", "servers = [\"127.0.0.1:5300\"]\nmax_fails = 0", 7, &["at least 1"]),
        ("in-flight too high", "[probe]\n", "[limits]\nforward_in_flight = 100000\n[probe]\n", 12, &["forward_in_flight", "outside"]),
        ("memory too small", "[probe]\n", "[limits]\nmemory = \"100KiB\"\n[probe]\n", 12, &["limits.memory"]),
        ("memory unit", "[probe]\n", "[limits]\nmemory = \"16MB\"\n[probe]\n", 12, &["unknown unit"]),
        ("unknown limit", "[probe]\n", "[limits]\nqps = 5\n[probe]\n", 12, &["unknown field `qps`"]),
        ("admin connections", "[probe]\n", "[admin]\nmax_connections = 0\n[probe]\n", 12, &["max_connections"]),
        ("verify-full without file", "sslmode = \"require\"", "sslmode = \"verify-full\"\nsslrootcert = \"/nonexistent/ca.pem\"", 14, &["not a readable file"]),
    ];
    for (what, from, to, line, needles) in cases {
        assert!(BASE.contains(from), "{what}: base lacks {from:?}");
        let text = BASE.replacen(from, to, 1);
        let err = match parse(&text) {
            Ok(_) => panic!("{what}: config was accepted"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("test.toml:{line}:")), "{what}: wrong place in {msg:?}");
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
fn limits_allow_and_hook_env() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.dns.allow, Cidr::loopback());
    let up = c.upstream.as_ref().unwrap();
    assert_eq!((up.max_fails, up.health_check), (5, Duration::from_secs(1)));
    assert_eq!((c.admin.header_timeout, c.admin.request_timeout, c.admin.max_connections), (Duration::from_secs(5), Duration::from_secs(10), 32));

    let text = BASE
        .replace("listen = [\"127.0.0.1:5353\"]", "listen = [\"0.0.0.0:5353\"]\nallow = [\"10.0.0.0/8\", \"fd00::/8\"]")
        .replace("[probe]\n", "[limits]\nmemory = \"8MiB\"\nforward_rate = 0\ntcp_connections = 64\ntcp_connections_per_client = 100\ntcp_write_timeout = \"2s\"\n[probe]\n")
        .replace("servers = [\"a\", \"b\"]", "servers = [\"a\", \"b\"]\non_change = [\"/bin/true\"]\non_change_env = [\"HOME\", \"AZURE_*\"]");
    let c = parse(&text).unwrap();
    assert_eq!(c.dns.allow.len(), 2);
    assert!(c.dns.allow[0].contains("10.9.8.7".parse().unwrap()));
    assert_eq!(c.limits.memory, 8 << 20);
    assert_eq!((c.limits.forward_rate, c.limits.forward_burst), (0, 0));
    assert_eq!(c.limits.tcp_connections_per_client, 64, "capped at the global cap");
    assert_eq!(c.limits.tcp_write_timeout, Duration::from_secs(2));
    assert_eq!(c.aliases[0].on_change.as_ref().unwrap().env, vec!["HOME".to_string(), "AZURE_*".to_string()]);
}

#[test]
fn hook_env_never_carries_secrets() {
    std::env::set_var("PG_HOOK_TEST_PW", "x");
    let base = BASE.replace("[probe]\n", "[probe]\npassword_env = \"PG_HOOK_TEST_PW\"\n");
    for (env, ok) in [("[\"PG_HOOK_TEST_PW\"]", false), ("[\"PG_*\"]", false), ("[\"*\"]", false), ("[\"A B\"]", false), ("[\"PGHOST\"]", true), ("[]", true)] {
        let text = base.replace("servers = [\"a\", \"b\"]", &format!("servers = [\"a\", \"b\"]\non_change = [\"/bin/true\"]\non_change_env = {env}"));
        match parse(&text) {
            Ok(_) => assert!(ok, "{env} accepted"),
            Err(e) => {
                assert!(!ok, "{env}: {e}");
                assert!(e.to_string().starts_with("test.toml:27:"), "{env}: {e}");
            }
        }
    }
}
