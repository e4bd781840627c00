//! A running sidecar with (optionally) a real primary + replica pair (or a
//! primary + two replicas) behind it, optionally reached through controllable
//! proxies, and a real dnsmasq as its upstream.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testbed::{Dnsmasq, DnsmasqOptions, PairOptions, PgBinaries, PgPair};

use super::proxy::Proxy;
use super::sidecar::Sidecar;
use super::{dig, raw};

/// Probe timing used by the tests (the defaults, spelled out).
pub const INTERVAL: Duration = Duration::from_millis(100);
pub const DEADLINE: Duration = Duration::from_millis(500);

pub struct Env {
    pub dns: SocketAddr,
    pub sidecar: Option<Sidecar>,
    pub pair: Option<PgPair>,
    pub upstream: Dnsmasq,
    pub config_text: String,
    /// `(server id, proxy)` for the servers in [`Options::proxied`].
    pub proxies: Vec<(String, Proxy)>,
    _dir: tempdir::Dir,
}

/// What [`Env::start_opts`] sets up beyond the defaults of [`Env::start`].
#[derive(Default)]
pub struct Options {
    /// A primary and two replicas (servers `a`, `b`, `c`; `c` is
    /// `pg-c.test` on 127.0.0.4) instead of a pair. Every alias lists all.
    pub trio: bool,
    /// Ids of servers the sidecar reaches through a [`Proxy`] (see
    /// [`Env::proxy`]) instead of directly.
    pub proxied: Vec<&'static str>,
    /// Lines added to the `[probe]` table, e.g. `"fall = 5"`; one that sets
    /// `interval` or `deadline` replaces the default ([`INTERVAL`], [`DEADLINE`]).
    pub probe: String,
    /// TOML appended to the generated config.
    pub extra: String,
    /// `(server id, latency)`: what the proxy of a server in
    /// [`Options::proxied`] adds in each direction from the start (see
    /// [`Proxy::set_latency`]): a server in a far region. Others add none.
    pub latency: Vec<(&'static str, Duration)>,
    /// The probe deadline instead of [`DEADLINE`]: for tests that need every
    /// server seen even when a fresh connection (TLS, SCRAM) is slow on a
    /// starved machine, and do not measure failure detection.
    pub deadline: Option<Duration>,
}

/// The server ids of a pair's clusters, in [`PgPair::clusters`] order.
pub const IDS: [&str; 4] = ["a", "b", "c", "d"];

/// The upstream every test uses: the servers' names, a forwarded name, a
/// name with an answer too big for UDP, and NXDOMAIN below example.test.
pub fn upstream() -> Dnsmasq {
    let mut txt = Vec::new();
    for i in 0..40 {
        txt.push(("big.example.test".to_string(), format!("{i:02}-{}", "x".repeat(180))));
    }
    Dnsmasq::start(DnsmasqOptions {
        hosts: vec![
            ("pg-a.test".into(), "127.0.0.2".parse().unwrap()),
            ("pg-b.test".into(), "127.0.0.3".parse().unwrap()),
            ("pg-c.test".into(), "127.0.0.4".parse().unwrap()),
            ("www.example.test".into(), "127.0.0.9".parse().unwrap()),
        ],
        local_domains: vec!["test".into()],
        txt_records: txt,
        local_ttl: Some(30),
    })
    .expect("starting dnsmasq")
}

/// The sidecar config for a pair (or none), with extra TOML appended. The
/// state file goes next to the password file.
pub fn config_text(pair: Option<&PgPair>, upstream: SocketAddr, pw_file: &Path, extra: &str) -> String {
    render(pair, upstream, pw_file, "", &[], extra)
}

/// [`config_text`] with `probe` lines in the `[probe]` table and the servers
/// in `via` reached at the given (proxy) address instead of their own.
pub fn render(
    pair: Option<&PgPair>,
    upstream: SocketAddr,
    pw_file: &Path,
    probe: &str,
    via: &[(String, SocketAddr)],
    extra: &str,
) -> String {
    let state = pw_file.with_file_name("sidecar-state.json");
    let mut t = format!(
        r#"
[dns]
listen = ["127.0.0.1:0"]

[state]
path = "{}"

[upstream]
servers = ["{upstream}"]
timeout = "500ms"

[[zones]]
name = "db.test"

[probe]
{}{}user = "probe"
password_file = "{}"
{probe}
"#,
        state.display(),
        default_unless_set(probe, "interval", INTERVAL),
        default_unless_set(probe, "deadline", DEADLINE),
        pw_file.display()
    );
    if let Some(p) = pair {
        t.push_str(&format!(
            "sslmode = \"verify-full\"\nsslrootcert = \"{}\"\nport = {}\n",
            p.ca_cert.display(),
            p.port
        ));
        let clusters = p.clusters();
        let ids = &IDS[..clusters.len()];
        for (id, c) in ids.iter().zip(&clusters) {
            // `host` stays the certificate's name, so TLS is verified against
            // the real server even when the bytes go through a proxy.
            t.push_str(&format!("\n[servers.{id}]\ntarget = \"{}\"\n", c.name));
            match via.iter().find(|(v, _)| v == id) {
                Some((_, addr)) => t.push_str(&format!("hostaddr = \"{}\"\nport = {}\n", addr.ip(), addr.port())),
                None => t.push_str(&format!("hostaddr = \"{}\"\n", c.ip)),
            }
        }
        let list = ids.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ");
        t.push_str(&format!(
            r#"
[[aliases]]
name = "prod.db.test"
servers = [{list}]

[[aliases]]
name = "ro.db.test"
role = "standby"
servers = [{list}]

[[aliases]]
name = "strict.db.test"
on_no_match = "servfail"
servers = [{list}]
"#
        ));
    }
    t.push_str(extra);
    t
}

/// `key = "<default>ms"` and a newline, unless the `probe` lines set `key`.
fn default_unless_set(probe: &str, key: &str, default: Duration) -> String {
    let set = probe
        .lines()
        .any(|l| l.split('=').next().is_some_and(|k| k.trim() == key));
    if set {
        String::new()
    } else {
        format!("{key} = \"{}ms\"\n", default.as_millis())
    }
}

impl Env {
    /// Starts dnsmasq, the pair (when `with_pg`) and the sidecar.
    pub async fn start(with_pg: bool, extra: &str) -> Env {
        Self::start_with(with_pg, extra, |_| {}).await
    }

    /// Like [`Env::start`], running `setup` on the pair before the sidecar starts.
    pub async fn start_with(with_pg: bool, extra: &str, setup: impl FnOnce(&PgPair) + Send + 'static) -> Env {
        Self::build(
            with_pg,
            Options {
                extra: extra.into(),
                ..Default::default()
            },
            setup,
        )
        .await
    }

    /// A pair (or trio) with the sidecar configured as `opts` says.
    pub async fn start_opts(opts: Options) -> Env {
        Self::build(true, opts, |_| {}).await
    }

    async fn build(with_pg: bool, opts: Options, setup: impl FnOnce(&PgPair) + Send + 'static) -> Env {
        let trio = opts.trio;
        let pair = if with_pg {
            Some(
                tokio::task::spawn_blocking(move || {
                    let bins = PgBinaries::locate().expect("PostgreSQL server binaries");
                    let pair_opts = if trio {
                        PairOptions::trio()
                    } else {
                        PairOptions::default()
                    };
                    let pair = PgPair::start(&bins, pair_opts).expect("starting PostgreSQL servers");
                    setup(&pair);
                    pair
                })
                .await
                .unwrap(),
            )
        } else {
            None
        };
        let upstream = tokio::task::spawn_blocking(upstream).await.unwrap();
        let dir = tempdir::Dir::new();
        let pw_file = dir.path().join("probe.pw");
        std::fs::write(
            &pw_file,
            format!("{}\n", pair.as_ref().map_or("unused", |p| p.password.as_str())),
        )
        .unwrap();
        let mut proxies = Vec::new();
        if let Some(p) = &pair {
            for id in &opts.proxied {
                let i = IDS
                    .iter()
                    .position(|x| x == id)
                    .unwrap_or_else(|| panic!("no server {id}"));
                let latency = (opts.latency.iter())
                    .find(|(x, _)| x == id)
                    .map_or(Duration::ZERO, |(_, l)| *l);
                proxies.push((id.to_string(), Proxy::with_latency(p.clusters()[i].addr(), latency)));
            }
        }
        let via: Vec<(String, SocketAddr)> = proxies.iter().map(|(id, p)| (id.clone(), p.addr)).collect();
        let mut config_text = render(pair.as_ref(), upstream.addr, &pw_file, &opts.probe, &via, &opts.extra);
        if let Some(d) = opts.deadline {
            let default = format!("deadline = \"{}ms\"\n", DEADLINE.as_millis());
            assert!(config_text.contains(&default), "{config_text}");
            config_text = config_text.replace(&default, &format!("deadline = \"{}ms\"\n", d.as_millis()));
        }
        let sidecar = Sidecar::start(&config_text).expect("starting the sidecar");
        Env {
            dns: sidecar.dns,
            sidecar: Some(sidecar),
            pair,
            upstream,
            config_text,
            proxies,
            _dir: dir,
        }
    }

    /// Stops the sidecar (as a crash or a rolling update would); see
    /// [`Env::start_sidecar`].
    pub fn stop_sidecar(&mut self) {
        self.sidecar = None;
    }

    /// Starts the sidecar again on the same config, and so the same state
    /// file, as a process restart does.
    pub fn start_sidecar(&mut self) {
        self.sidecar = None;
        let s = Sidecar::start(&self.config_text).expect("starting the sidecar again");
        self.dns = s.dns;
        self.sidecar = Some(s);
    }

    /// The running sidecar.
    pub fn sidecar(&self) -> &Sidecar {
        self.sidecar.as_ref().expect("the sidecar is running")
    }

    /// Another sidecar instance on the same servers, with its own state file
    /// (a second pod, started later).
    pub fn another_sidecar(&self, name: &str) -> Sidecar {
        let text = self
            .config_text
            .replace("sidecar-state.json", &format!("{name}-state.json"));
        Sidecar::start(&text).expect("starting another sidecar")
    }

    /// The `/status` document of the running sidecar.
    pub fn status(&self) -> dns_sidecar::status::Status {
        self.client().status().expect("GET /status").0
    }

    /// Sends an override through the admin listener, as the CLI does.
    pub fn apply(&self, op: dns_sidecar::control::Override) -> String {
        self.client().apply(&op).unwrap_or_else(|e| panic!("{op:?}: {e}"))
    }

    fn client(&self) -> dns_sidecar::client::Client {
        let admin = self.sidecar().admin.expect("the test sidecar has an admin listener");
        dns_sidecar::client::Client::new(&admin.to_string(), None)
    }

    /// The state file of this env's sidecar.
    pub fn state_file(&self) -> PathBuf {
        self._dir.path().join("sidecar-state.json")
    }

    /// The proxy in front of server `id` (see [`Options::proxied`]).
    pub fn proxy(&self, id: &str) -> &Proxy {
        self.proxies
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("server {id} has no proxy"))
    }

    /// The value of one sample in the sidecar's `/metrics` text, e.g.
    /// `dns_sidecar_probes_total{server="a",result="ok"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.sidecar().shared.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// `dns_sidecar_probes_total` of server `id` with `result` (ok, timeout, error).
    pub fn probes(&self, id: &str, result: &str) -> u64 {
        self.metric(&format!(
            "dns_sidecar_probes_total{{server=\"{id}\",result=\"{result}\"}}"
        )) as u64
    }

    pub fn pair(&self) -> &PgPair {
        self.pair.as_ref().expect("this env has a PostgreSQL pair")
    }

    /// Waits until `alias` answers a CNAME to `target`; returns how long it took.
    pub async fn wait_for_target(&self, alias: &str, target: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let got = raw::cname_of(self.dns, alias);
            if got.as_deref() == Some(target) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{alias} did not point at {target} within {within:?} (last answer: {got:?})"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Asserts that `alias` keeps answering `target` for `period`.
    pub async fn assert_stays(&self, alias: &str, target: &str, period: Duration) {
        let start = Instant::now();
        while start.elapsed() < period {
            assert_eq!(
                raw::cname_of(self.dns, alias).as_deref(),
                Some(target),
                "{alias} moved away from {target}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that `alias` never answers `target` during `period` (other
    /// answers, SERVFAIL included, are fine).
    pub async fn assert_never(&self, alias: &str, target: &str, period: Duration) {
        let start = Instant::now();
        while start.elapsed() < period {
            assert_ne!(
                raw::cname_of(self.dns, alias).as_deref(),
                Some(target),
                "{alias} answered {target}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Connects like an application: resolves `alias` through the sidecar
    /// (CNAME + A in one answer), then opens a TLS (verify-full against the
    /// CNAME target, which is what the certificate names) + SCRAM connection
    /// and proves it can write. Returns the server address it reached.
    pub async fn app_connect(&self, alias: &str) -> Result<IpAddr, String> {
        let pair = self.pair();
        let d = dig(self.dns, alias, "A", &[]);
        let target = d
            .answers("CNAME")
            .first()
            .cloned()
            .ok_or_else(|| format!("no CNAME in {}", d.raw))?;
        let ip: IpAddr = d
            .answers("A")
            .first()
            .ok_or_else(|| format!("no A in {}", d.raw))?
            .parse()
            .unwrap();
        let pem = std::fs::read(&pair.ca_cert).unwrap();
        let tls = native_tls::TlsConnector::builder()
            .add_root_certificate(native_tls::Certificate::from_pem(&pem).unwrap())
            .disable_built_in_roots(true)
            .build()
            .unwrap();
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(target.trim_end_matches('.'))
            .hostaddr(ip)
            .port(pair.port)
            .user(&pair.probe_user)
            .password(&pair.password)
            .dbname("postgres")
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .connect_timeout(Duration::from_secs(5));
        let (client, conn) = cfg
            .connect(postgres_native_tls::MakeTlsConnector::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        // txid_current() assigns a transaction id: it fails on a standby and
        // on a read-only primary, so it proves the connection can write.
        let row = client
            .query_one("SELECT inet_server_addr()::text, txid_current()", &[])
            .await
            .map_err(|e| e.to_string())?;
        let server: String = row.get(0);
        Ok(server.trim_end_matches("/32").parse().unwrap())
    }
}

/// A private scratch directory, removed on drop.
pub mod tempdir {
    use super::*;

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "dns-sidecar-test-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
