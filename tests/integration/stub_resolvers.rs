//! Pods without a sidecar (issue 17 item 3): a resolver that routes by zone
//! sends the alias zone to the forwarder tier, and its clients follow a
//! promote.
//!
//! The configuration shipped for that is AKS's `coredns-custom` server block
//! (deploy/kubernetes/coredns/coredns-custom.yaml). CoreDNS is not packaged
//! in Debian, so the block is parsed here, checked against the rest of what
//! is shipped (the zone the tier serves, the tier's ClusterIP Service, the
//! fleet-mode config), and then run as the two stub-zone resolvers Debian
//! does package, against a real tier instance probing a real PostgreSQL
//! pair: dnsmasq `--server=/<zone>/<addr>#<port>` and Unbound
//! `forward-zone`. The only thing the test changes is the address: the
//! block's forward target (the ClusterIP) becomes the tier instance's
//! loopback address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::support::tier::{ms, Tier, Watch};
use crate::support::{dig, raw, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

// ------------------------------------------------------------ the Corefile

/// One directive (plugin) line of a Corefile, with its block.
#[derive(Debug, Clone, PartialEq)]
struct Directive {
    name: String,
    args: Vec<String>,
    block: Vec<Directive>,
}

/// A server block: its keys (`zone[:port]`, optionally `dns://`) and directives.
#[derive(Debug, Clone, PartialEq)]
struct ServerBlock {
    keys: Vec<String>,
    directives: Vec<Directive>,
}

/// Tokens of a Corefile: words, `{`, `}` and line ends (comments dropped).
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap();
        let mut word = String::new();
        for ch in line.chars() {
            match ch {
                '{' | '}' => {
                    if !word.is_empty() {
                        out.push(std::mem::take(&mut word));
                    }
                    out.push(ch.to_string());
                }
                c if c.is_whitespace() => {
                    if !word.is_empty() {
                        out.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
        out.push("\n".into());
    }
    out
}

/// Parses a Corefile the way CoreDNS's Caddyfile lexer reads this subset:
/// server keys before `{`, then one directive per line, a directive's
/// options in a nested `{ }` block. Panics on anything else.
fn parse_corefile(text: &str) -> Vec<ServerBlock> {
    let toks = tokens(text);
    let mut i = 0;
    let mut blocks = Vec::new();
    fn skip_newlines(toks: &[String], i: &mut usize) {
        while *i < toks.len() && toks[*i] == "\n" {
            *i += 1;
        }
    }
    fn directives(toks: &[String], i: &mut usize) -> Vec<Directive> {
        let mut out = Vec::new();
        loop {
            skip_newlines(toks, i);
            assert!(*i < toks.len(), "Corefile: unclosed block");
            if toks[*i] == "}" {
                *i += 1;
                return out;
            }
            let name = toks[*i].clone();
            assert!(name != "{", "Corefile: a block without a directive");
            *i += 1;
            let mut args = Vec::new();
            let mut block = Vec::new();
            while *i < toks.len() && toks[*i] != "\n" {
                if toks[*i] == "{" {
                    *i += 1;
                    block = directives(toks, i);
                    break;
                }
                assert!(toks[*i] != "}", "Corefile: `}}` must be on its own line after {name}");
                args.push(toks[*i].clone());
                *i += 1;
            }
            out.push(Directive { name, args, block });
        }
    }
    loop {
        skip_newlines(&toks, &mut i);
        if i >= toks.len() {
            return blocks;
        }
        let mut keys = Vec::new();
        while toks[i] != "{" {
            assert!(toks[i] != "}", "Corefile: stray `}}`");
            if toks[i] != "\n" {
                keys.push(toks[i].trim_end_matches(',').to_string());
            }
            i += 1;
        }
        i += 1;
        let directives = directives(&toks, &mut i);
        blocks.push(ServerBlock { keys, directives });
    }
}

/// `zone[:port]` (with an optional `dns://`) as (zone with a trailing dot, port).
fn server_key(key: &str) -> (String, u16) {
    let key = key.strip_prefix("dns://").unwrap_or(key);
    let (zone, port) = match key.rsplit_once(':') {
        Some((z, p)) => (z, p.parse().unwrap_or_else(|_| panic!("port in server key {key:?}"))),
        None => (key, 53),
    };
    (format!("{}.", zone.trim_end_matches('.').to_lowercase()), port)
}

/// A forward target (`1.2.3.4`, `1.2.3.4:53`, `dns://1.2.3.4:53`).
fn forward_target(t: &str) -> SocketAddr {
    let t = t.strip_prefix("dns://").unwrap_or(t);
    t.parse::<SocketAddr>()
        .or_else(|_| t.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .unwrap_or_else(|_| panic!("forward target {t:?}: CoreDNS's forward takes IP[:port] (no names)"))
}

/// What the shipped block says: the zone it routes and where to.
#[derive(Debug)]
struct Stub {
    zone: String,
    targets: Vec<SocketAddr>,
}

/// The shipped `coredns-custom` ConfigMap, parsed and checked against the
/// rest of the shipped material.
fn shipped_stub() -> Stub {
    let rel = "deploy/kubernetes/coredns/coredns-custom.yaml";
    let cm = Value::deserialize(serde_norway::Deserializer::from_str(&read(rel))).unwrap();
    assert_eq!(cm["kind"], "ConfigMap", "{rel}");
    // AKS reads exactly this ConfigMap; keys ending in .server become server blocks.
    assert_eq!(cm["metadata"]["name"], "coredns-custom", "{rel}");
    assert_eq!(cm["metadata"]["namespace"], "kube-system", "{rel}");
    let data = cm["data"].as_object().expect("data");
    let servers: Vec<&str> = data
        .iter()
        .filter(|(k, _)| k.ends_with(".server"))
        .map(|(_, v)| v.as_str().unwrap())
        .collect();
    assert_eq!(
        servers.len(),
        1,
        "{rel}: one .server key (AKS ignores other suffixes but .override)"
    );
    let blocks = parse_corefile(servers[0]);
    assert_eq!(blocks.len(), 1, "{rel}: one server block: {blocks:?}");
    let b = &blocks[0];
    assert_eq!(b.keys.len(), 1, "{rel}: one zone: {:?}", b.keys);
    let (zone, port) = server_key(&b.keys[0]);
    assert_eq!(port, 53, "{rel}: CoreDNS serves pods on 53");
    let fwd: Vec<&Directive> = b.directives.iter().filter(|d| d.name == "forward").collect();
    assert_eq!(fwd.len(), 1, "{rel}: one forward");
    let fwd = fwd[0];
    assert_eq!(fwd.args[0], ".", "{rel}: forward . (the whole zone of the block)");
    let targets: Vec<SocketAddr> = fwd.args[1..].iter().map(|t| forward_target(t)).collect();
    assert!(!targets.is_empty(), "{rel}: forward without targets");
    for opt in &fwd.block {
        assert!(
            [
                "max_fails",
                "health_check",
                "expire",
                "policy",
                "prefer_udp",
                "force_tcp",
                "max_concurrent"
            ]
            .contains(&opt.name.as_str()),
            "{rel}: forward option {} is not one of CoreDNS's forward options",
            opt.name
        );
    }
    // The zone must reach the tier uncached: no cache plugin in the block
    // (a cache would hold the alias across the tier's switch).
    assert!(
        !b.directives.iter().any(|d| d.name == "cache"),
        "{rel}: a cache in the alias zone's block delays following a promote"
    );

    // The zone is what the tier serves.
    let tier: toml::Value = toml::from_str(&read("deploy/kubernetes/forwarder/config.toml")).unwrap();
    let tier_zones: Vec<String> = tier["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| format!("{}.", z["name"].as_str().unwrap().trim_end_matches('.')))
        .collect();
    assert!(
        tier_zones.contains(&zone),
        "{rel}: forwards {zone}, the tier serves {tier_zones:?}"
    );

    // The targets are the tier's ClusterIP Service.
    let svc = Value::deserialize(serde_norway::Deserializer::from_str(&read(
        "deploy/kubernetes/forwarder/service-tier.yaml",
    )))
    .unwrap();
    let ip: IpAddr = svc["spec"]["clusterIP"]
        .as_str()
        .expect("a pinned clusterIP")
        .parse()
        .unwrap();
    let ports: Vec<(u64, &str)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_u64().unwrap(), p["protocol"].as_str().unwrap_or("TCP")))
        .collect();
    for t in &targets {
        assert_eq!(t.ip(), ip, "{rel}: forwards to {t}, the tier Service is {ip}");
        for proto in ["UDP", "TCP"] {
            assert!(
                ports.contains(&(u64::from(t.port()), proto)),
                "{rel}: the tier Service lacks {}/{proto}",
                t.port()
            );
        }
    }

    // The fleet-mode sidecar of the same cluster sends the same zone to the same place.
    let fleet: toml::Value = toml::from_str(&read("deploy/kubernetes/fleet/config.toml")).unwrap();
    let fwd = fleet["forward"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| format!("{}.", f["zone"].as_str().unwrap().trim_end_matches('.')) == zone)
        .unwrap_or_else(|| panic!("deploy/kubernetes/fleet/config.toml does not forward {zone}"));
    let fleet_targets: Vec<SocketAddr> = fwd["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| forward_target(s.as_str().unwrap()))
        .collect();
    assert_eq!(fleet_targets, targets, "fleet config vs {rel}");
    assert_eq!(
        fwd["cache"].as_bool(),
        Some(false),
        "the fleet config must not cache {zone}"
    );
    Stub { zone, targets }
}

#[test]
fn the_corefile_parser_reads_what_coredns_reads() {
    let b = parse_corefile(
        "# comment\ndb.internal:53 {\n  errors\n  forward . 10.0.0.53 dns://10.0.0.54:5353 {\n    max_fails 2 # \
         two\n  }\n}\nexample.org other.org {\n whoami\n}\n",
    );
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].keys, ["db.internal:53"]);
    assert_eq!(b[0].directives[0].name, "errors");
    assert_eq!(b[0].directives[1].args, [".", "10.0.0.53", "dns://10.0.0.54:5353"]);
    assert_eq!(b[0].directives[1].block[0].args, ["2"]);
    assert_eq!(b[1].keys, ["example.org", "other.org"]);
    assert_eq!(server_key("dns://DB.internal.:5300"), ("db.internal.".into(), 5300));
    assert_eq!(forward_target("10.0.0.54:5353"), "10.0.0.54:5353".parse().unwrap());
    assert_eq!(forward_target("10.0.0.53"), "10.0.0.53:53".parse().unwrap());
}

#[test]
fn the_shipped_coredns_block_routes_the_tier_zone_to_the_tier_service() {
    let stub = shipped_stub();
    assert_eq!(stub.zone, "db.internal.");
}

// ------------------------------------------------------- the stub resolvers

/// A resolver process on `127.0.0.1:<port>`, killed on drop.
struct Resolver {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Resolver {
    fn spawn(name: &'static str, cmd: &mut Command, port: u16, log: PathBuf) -> Resolver {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Resolver {
            name,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_udp_port() -> u16 {
    testbed::free_port(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], true).expect("a free port")
}

/// dnsmasq as a stub: `--server=/<zone>/<tier>` for the zone, the test
/// upstream for the rest, nothing from /etc.
fn dnsmasq_stub(dir: &Path, zone: &str, tier: &[SocketAddr], upstream: SocketAddr) -> Resolver {
    let port = free_udp_port();
    let program = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("dnsmasq");
    let mut cmd = Command::new(program);
    cmd.args(testbed::DNSMASQ_LOOPBACK_ARGS)
        .arg("--conf-file=/dev/null")
        .arg(format!("--port={port}"))
        .arg("--log-queries");
    for t in tier {
        cmd.arg(format!(
            "--server=/{}/{}#{}",
            zone.trim_end_matches('.'),
            t.ip(),
            t.port()
        ));
    }
    cmd.arg(format!("--server={}#{}", upstream.ip(), upstream.port()));
    Resolver::spawn("dnsmasq", &mut cmd, port, dir.join("dnsmasq-stub.log"))
}

/// `unbound`, or `None` (with a note) where it is not installed.
fn unbound_program() -> Option<PathBuf> {
    ["/usr/sbin/unbound", "/sbin/unbound"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Unbound in the foreground on a loopback port with a config of its own
/// (never the system's): `forward-zone` for the zone, the test upstream for
/// the rest, no DNSSEC validation (no trust anchor), no remote control.
fn unbound_stub(program: &Path, dir: &Path, zone: &str, tier: &[SocketAddr], upstream: SocketAddr) -> Resolver {
    let port = free_udp_port();
    let mut conf = format!(
        r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 1
    log-queries: yes
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    # The forwarders are on loopback.
    do-not-query-localhost: no
    # test. is one of Unbound's default (refusing) local zones; the test
    # upstream serves it.
    local-zone: "test." nodefault
remote-control:
    control-enable: no
forward-zone:
    name: "{zone}"
"#,
        dir = dir.display()
    );
    for t in tier {
        conf.push_str(&format!("    forward-addr: {}@{}\n", t.ip(), t.port()));
    }
    conf.push_str(&format!(
        "forward-zone:\n    name: \".\"\n    forward-addr: {}@{}\n",
        upstream.ip(),
        upstream.port()
    ));
    let path = dir.join("unbound.conf");
    std::fs::write(&path, conf).unwrap();
    if let Ok(out) = Command::new(program.with_file_name("unbound-checkconf"))
        .arg(&path)
        .output()
    {
        assert!(
            out.status.success(),
            "unbound-checkconf: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cmd = Command::new(program);
    cmd.arg("-d").arg("-c").arg(&path);
    Resolver::spawn("unbound", &mut cmd, port, dir.join("unbound-stub.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stub_resolvers_with_the_coredns_block_follow_a_promote() {
    let stub = shipped_stub();
    // The alias's TTL is what a caching stub may hold it for; short here so
    // the test is quick (the shipped alias TTL is 5 s).
    let ttl = Duration::from_secs(1);
    let tier = Tier::start(1, &stub.zone, ttl).await;
    let alias = tier.alias();
    // The block's target (the tier's ClusterIP) stands for the tier
    // instance: the only substitution.
    assert_eq!(stub.targets.len(), 1);
    let targets = tier.addrs.clone();
    let dir = tier.dir();

    let mut resolvers = vec![dnsmasq_stub(&dir, &stub.zone, &targets, tier.upstream.addr)];
    match unbound_program() {
        Some(p) => resolvers.push(unbound_stub(&p, &dir, &stub.zone, &targets, tier.upstream.addr)),
        None => eprintln!("unbound not installed: only the dnsmasq stub runs (apt-get install -y unbound)"),
    }
    for r in &resolvers {
        wait_until(
            &format!("{} answers the primary through the tier", r.name),
            Duration::from_secs(10),
            || raw::cname_of(r.addr, &alias).as_deref() == Some("pg-a.test."),
        )
        .await;
        let d = dig(r.addr, &alias, "A", &[]);
        assert_eq!(d.status, "NOERROR", "{}: {}\n{}", r.name, d.raw, r.log());
        assert_eq!(d.answers("CNAME"), ["pg-a.test."], "{}: {}", r.name, d.raw);
        assert_eq!(d.answers("A"), ["127.0.0.2"], "{}: {}", r.name, d.raw);
        assert!(
            d.answer[0].ttl <= ttl.as_secs() as u32,
            "{}: TTL {}",
            r.name,
            d.answer[0].ttl
        );
        // Names outside the zone still resolve through the stub's default route.
        assert_eq!(
            dig(r.addr, "www.example.test", "A", &[]).answers("A"),
            ["127.0.0.9"],
            "{}",
            r.name
        );
    }

    let mut watches = vec![(
        "tier".to_string(),
        Watch::start(targets[0], &alias, "pg-a.test.", "pg-b.test."),
    )];
    for r in &resolvers {
        watches.push((
            r.name.to_string(),
            Watch::start(r.addr, &alias, "pg-a.test.", "pg-b.test."),
        ));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (t0, promoted) = tier.promote();
    promoted.await.unwrap();
    for r in &resolvers {
        wait_until(
            &format!("{} follows the promote", r.name),
            Duration::from_secs(10),
            || raw::cname_of(r.addr, &alias).as_deref() == Some("pg-b.test."),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen: Vec<(String, _)> = watches.into_iter().map(|(n, w)| (n, w.finish())).collect();
    let settled = |n: &str| -> Duration {
        let s = &seen.iter().find(|(x, _)| x == n).unwrap().1;
        s.settled_after(t0)
            .unwrap_or_else(|| panic!("{n} never answered the new primary: {s:?}"))
    };
    let tier_switch = settled("tier");
    // A caching stub holds the old answer at most one TTL after the tier
    // switched. dnsmasq and Unbound keep time in whole seconds (time_t), so
    // an answer stored late in one second expires up to a second later than
    // its TTL says: one more second, plus slack for a loaded machine.
    let clock = Duration::from_secs(1);
    let slack = Duration::from_millis(500);
    eprintln!(
        "MEASURED tier instance: switched {:.1} ms after the promote request",
        ms(tier_switch)
    );
    for r in &resolvers {
        let f = settled(r.name);
        eprintln!(
            "MEASURED {} stub: settled on the new primary {:.1} ms after the promote request (alias TTL {ttl:?}; \
             bound asserted: tier switch + TTL + {clock:?} (whole-second clock) + {slack:?})",
            r.name,
            ms(f)
        );
        assert!(
            f <= tier_switch + ttl + clock + slack,
            "{} followed after {:.1} ms, the tier at {:.1} ms",
            r.name,
            ms(f),
            ms(tier_switch)
        );
        let d = dig(r.addr, &alias, "A", &[]);
        assert_eq!(d.answers("CNAME"), ["pg-b.test."], "{}: {}", r.name, d.raw);
        assert_eq!(d.answers("A"), ["127.0.0.3"], "{}: {}", r.name, d.raw);
    }
}
