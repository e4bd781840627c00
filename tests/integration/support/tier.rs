//! A forwarder tier (issue 17): sidecar instances that probe a real
//! PostgreSQL pair and serve the alias zone, and what the tests put in front
//! of them (fleet-mode sidecars, stub resolvers). Shared by fleet.rs and
//! stub_resolvers.rs.
//!
//! Each tier instance probes with its own `application_name`
//! (`dns-sidecar-tier-<i>`), so `pg_stat_activity` tells whose probe
//! connections a server sees.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testbed::{Cluster, Dnsmasq, PairOptions, PgBinaries, PgPair};

use super::env::{tempdir, upstream};
use super::raw;
use super::sidecar::Sidecar;

/// The `application_name` tier instance `i` probes with.
pub fn app_name(i: usize) -> String {
    format!("dns-sidecar-tier-{i}")
}

/// A real primary + replica, the test upstream (dnsmasq: `pg-a.test`,
/// `pg-b.test`, `www.example.test`) and `n` tier instances serving `zone`
/// with the read-write alias `prod.<zone>`.
pub struct Tier {
    pub pair: PgPair,
    pub upstream: Dnsmasq,
    /// `None` once [`Tier::kill`]ed.
    pub instances: Vec<Option<Sidecar>>,
    /// The DNS address of each instance (kept after a kill).
    pub addrs: Vec<SocketAddr>,
    pub zone: String,
    dir: tempdir::Dir,
}

impl Tier {
    /// Starts the pair, the upstream and `n` instances (alias TTL `alias_ttl`).
    pub async fn start(n: usize, zone: &str, alias_ttl: Duration) -> Tier {
        let (pair, upstream) = tokio::task::spawn_blocking(|| {
            let bins = PgBinaries::locate().expect("PostgreSQL server binaries");
            let pair = PgPair::start(&bins, PairOptions::default()).expect("starting PostgreSQL servers");
            (pair, upstream())
        })
        .await
        .unwrap();
        let dir = tempdir::Dir::new();
        let pw_file = dir.path().join("probe.pw");
        std::fs::write(&pw_file, format!("{}\n", pair.password)).unwrap();
        let mut instances = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..n {
            let text = tier_config(&pair, upstream.addr, &pw_file, zone, i, alias_ttl);
            let s = Sidecar::start(&text).expect("starting a tier instance");
            addrs.push(s.dns);
            instances.push(Some(s));
        }
        Tier {
            pair,
            upstream,
            instances,
            addrs,
            zone: zone.trim_end_matches('.').to_string(),
            dir,
        }
    }

    /// `prod.<zone>.`
    pub fn alias(&self) -> String {
        format!("prod.{}.", self.zone)
    }

    /// Stops instance `i` (its listeners close, as when a pod dies).
    pub fn kill(&mut self, i: usize) {
        self.instances[i] = None;
    }

    /// A scratch directory living as long as the tier.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Promotes the replica in the background, returns when it was asked.
    pub fn promote(&self) -> (Instant, tokio::task::JoinHandle<Instant>) {
        let replica = self.pair.replica.clone();
        let asked = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            replica.promote(true).expect("promote");
            Instant::now()
        });
        (asked, done)
    }
}

/// The config of tier instance `i`: probes both servers (TLS verify-full,
/// SCRAM), serves `zone` with `prod.<zone>` (read-write, TTL `alias_ttl`)
/// and forwards the rest to `upstream`.
pub fn tier_config(
    pair: &PgPair,
    upstream: SocketAddr,
    pw_file: &std::path::Path,
    zone: &str,
    i: usize,
    alias_ttl: Duration,
) -> String {
    let zone = zone.trim_end_matches('.');
    let state = pw_file.with_file_name(format!("tier-{i}-state.json"));
    let mut t = format!(
        r#"
[dns]
listen = ["127.0.0.1:0"]

[state]
path = "{state}"

[upstream]
servers = ["{upstream}"]
timeout = "500ms"

[[zones]]
name = "{zone}"

[probe]
interval = "100ms"
deadline = "1s"
user = "{user}"
password_file = "{pw}"
application_name = "{app}"
sslmode = "verify-full"
sslrootcert = "{ca}"
port = {port}
"#,
        state = state.display(),
        user = pair.probe_user,
        pw = pw_file.display(),
        app = app_name(i),
        ca = pair.ca_cert.display(),
        port = pair.port,
    );
    for (id, c) in ["a", "b"].iter().zip(pair.clusters()) {
        t.push_str(&format!(
            "\n[servers.{id}]\ntarget = \"{}\"\nhostaddr = \"{}\"\n",
            c.name, c.ip
        ));
    }
    t.push_str(&format!(
        "\n[[aliases]]\nname = \"prod.{zone}\"\nttl = \"{}s\"\nservers = [\"a\", \"b\"]\n",
        alias_ttl.as_secs()
    ));
    t
}

/// The probe user's sessions on `c`, by `application_name` (client backends
/// only: the replica's WAL receiver and the walsender are not probes).
pub fn probe_sessions(c: &Cluster, probe_user: &str) -> BTreeMap<String, usize> {
    let out = c
        .sql(&format!(
            "SELECT application_name || '|' || count(*) FROM pg_stat_activity WHERE usename = '{probe_user}' AND \
             backend_type = 'client backend' GROUP BY application_name ORDER BY 1"
        ))
        .expect("reading pg_stat_activity");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (app, n) = l.rsplit_once('|').unwrap();
            (app.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// What one DNS endpoint answered for an alias while it was watched.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// When the new target was first received.
    pub first_new: Option<Instant>,
    /// When the old target was last received.
    pub last_old: Option<Instant>,
    /// Answers with neither target (lost, SERVFAIL, another target).
    pub other: u32,
    pub polls: u32,
}

impl Seen {
    /// From `t0` until the endpoint answered only the new target: the last
    /// old answer, or the first new one when no old answer came after `t0`.
    pub fn settled_after(&self, t0: Instant) -> Option<Duration> {
        let first_new = self.first_new?;
        let after = match self.last_old {
            Some(old) if old > first_new => old,
            _ => first_new,
        };
        Some(after.saturating_duration_since(t0))
    }
}

/// Polls `alias` (CNAME, one UDP query at a time, back to back with a 1 ms
/// pause) at `addr` on its own thread until stopped.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Seen>,
}

impl Watch {
    pub fn start(addr: SocketAddr, alias: &str, old: &str, new: &str) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let (alias, old, new) = (alias.to_string(), old.to_string(), new.to_string());
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Seen::default();
            while !flag.load(Ordering::Relaxed) {
                let got = raw::cname_of(addr, &alias);
                let at = Instant::now();
                seen.polls += 1;
                match got.as_deref() {
                    Some(t) if t == new => {
                        seen.first_new.get_or_insert(at);
                    }
                    Some(t) if t == old => seen.last_old = Some(at),
                    _ => seen.other += 1,
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        });
        Watch { stop, thread }
    }

    pub fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Median time of `n` UDP queries for `alias` at `addr` (one round trip).
pub fn round_trip(addr: SocketAddr, alias: &str, n: usize) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            assert!(raw::cname_of(addr, alias).is_some(), "{addr} did not answer {alias}");
            t.elapsed()
        })
        .collect();
    v.sort();
    v[n / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
