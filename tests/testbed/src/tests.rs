//! Tests of the testbed itself: if these fail, every integration test would
//! fail for reasons unrelated to the sidecar.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::*;

const T: Duration = Duration::from_secs(10);

fn start_pair() -> (PgBinaries, PgPair) {
    let bins = PgBinaries::locate().expect("PostgreSQL binaries");
    let t0 = Instant::now();
    let pair = PgPair::start(&bins, PairOptions::default()).expect("start pair");
    eprintln!(
        "PgPair::start took {:?} (dir {}, port {})",
        t0.elapsed(),
        pair.dir.display(),
        pair.port
    );
    (bins, pair)
}

#[test]
fn pair_roles_tls_freeze_thaw() {
    let (bins, pair) = start_pair();
    let (p, r) = (&pair.primary, &pair.replica);
    assert_eq!(p.port, r.port);
    assert_eq!(p.sql("SELECT pg_is_in_recovery()").unwrap(), "f");
    assert_eq!(r.sql("SELECT pg_is_in_recovery()").unwrap(), "t");

    // TLS + SCRAM as the grant-less probe role works on both, and the
    // session really is encrypted.
    for c in pair.clusters() {
        let out = bins
            .psql_client(
                &c.conninfo(&pair.probe_user),
                Some(&pair.password),
                "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                T,
            )
            .unwrap();
        assert_eq!(out, "probe|t", "{}", c.name);
    }
    let recovery = |c: &Cluster| {
        bins.psql_client(
            &c.conninfo("probe"),
            Some(&pair.password),
            "SELECT pg_is_in_recovery()",
            T,
        )
    };
    assert_eq!(recovery(r).unwrap(), "t");

    // The superuser password is the same.
    let su = bins.psql_client(&p.conninfo("postgres"), Some(&pair.password), "SELECT 1", T);
    assert_eq!(su.unwrap(), "1");

    // Wrong password, plaintext TCP and a certificate for another name are
    // all refused.
    let err = bins
        .psql_client(&p.conninfo("probe"), Some("wrong"), "SELECT 1", T)
        .unwrap_err()
        .to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    let plain = format!(
        "host={} hostaddr={} port={} user=probe dbname=postgres sslmode=disable",
        p.name, p.ip, p.port
    );
    let err = bins
        .psql_client(&plain, Some(&pair.password), "SELECT 1", T)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no pg_hba.conf entry") && err.contains("no encryption"),
        "{err}"
    );
    let wrong_name = p.conninfo("probe").replace(&p.name, &r.name);
    let err = bins
        .psql_client(&wrong_name, Some(&pair.password), "SELECT 1", T)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match host name"), "{err}");

    // Replication works.
    p.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)").unwrap();
    process::poll("replication of t", T, Duration::from_millis(5), || {
        Ok((r.sql("SELECT to_regclass('t') IS NOT NULL").unwrap() == "t").then_some(()))
    })
    .unwrap();
    assert_eq!(r.sql("SELECT x FROM t").unwrap(), "42");

    // Freeze: TCP connects still complete (listen backlog), but queries hang.
    let pm = p.pid().expect("postmaster pid");
    p.freeze().unwrap();
    assert!(matches!(process::proc_stat(pm), Some(('T', _))));
    TcpStream::connect_timeout(&p.addr(), Duration::from_secs(2)).expect("backlog accepts");
    let t0 = Instant::now();
    let err = bins
        .psql_client(
            &p.conninfo("probe"),
            Some(&pair.password),
            "SELECT 1",
            Duration::from_secs(2),
        )
        .unwrap_err();
    assert!(matches!(err, TestbedError::Timeout { .. }), "{err}");
    assert!(t0.elapsed() >= Duration::from_secs(2));
    // The replica is unaffected.
    assert_eq!(recovery(r).unwrap(), "t");

    p.thaw().unwrap();
    assert_eq!(recovery(p).unwrap(), "f");
}

#[test]
fn promote_read_only_crash_restart_drop() {
    let (bins, pair) = start_pair();
    let (p, r) = (&pair.primary, &pair.replica);

    let t0 = Instant::now();
    r.promote(true).unwrap();
    eprintln!("promote(wait=true) took {:?}", t0.elapsed());
    assert_eq!(r.sql("SELECT pg_is_in_recovery()").unwrap(), "f");
    r.sql("CREATE TABLE after_promote (x int)").unwrap();

    // Azure-style read-only: up, not in recovery, but writes refused.
    p.set_default_read_only(true).unwrap();
    let probe = |sql: &str| bins.psql_client(&p.conninfo("probe"), Some(&pair.password), sql, T);
    assert_eq!(probe("SELECT pg_is_in_recovery()").unwrap(), "f");
    assert_eq!(probe("SHOW transaction_read_only").unwrap(), "on");
    let err = p.sql("CREATE TABLE ro (x int)").unwrap_err().to_string();
    assert!(err.contains("read-only transaction"), "{err}");
    p.set_default_read_only(false).unwrap();
    assert_eq!(probe("SHOW transaction_read_only").unwrap(), "off");

    // Crash and restart.
    p.stop_immediate().unwrap();
    assert!(!p.is_running());
    assert!(TcpStream::connect_timeout(&p.addr(), Duration::from_secs(1)).is_err());
    p.stop_immediate().unwrap(); // idempotent
    p.start().unwrap();
    assert_eq!(probe("SELECT 1").unwrap(), "1");

    // Drop stops everything and removes the directory, even when frozen.
    r.freeze().unwrap();
    let dir = pair.dir.clone();
    let pids: Vec<u32> = pair.clusters().iter().filter_map(|c| c.pid()).collect();
    assert_eq!(pids.len(), 2);
    drop(pair);
    assert!(!dir.exists(), "{} still exists", dir.display());
    for pid in pids {
        assert!(!process::alive(pid), "postmaster {pid} still alive");
    }
}

#[test]
fn rejects_non_loopback() {
    let bins = PgBinaries::locate().expect("PostgreSQL binaries");
    let opts = PairOptions {
        primary_ip: Ipv4Addr::new(192, 0, 2, 1),
        ..Default::default()
    };
    let err = PgPair::start(&bins, opts).unwrap_err();
    assert!(matches!(err, TestbedError::InvalidOptions(_)), "{err}");
}

/// A DNS query (RD set, no EDNS) for `name` / `qtype`.
fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// (TC flag, RCODE, ANCOUNT) of a DNS response.
fn header(resp: &[u8]) -> (bool, u8, u16) {
    (
        resp[2] & 0x02 != 0,
        resp[3] & 0x0f,
        u16::from_be_bytes([resp[6], resp[7]]),
    )
}

fn udp(addr: std::net::SocketAddr, q: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(q, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn tcp(addr: std::net::SocketAddr, q: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(q).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn dnsmasq_records_nxdomain_truncation() {
    let long = "x".repeat(200);
    let t0 = Instant::now();
    let dns = Dnsmasq::start(DnsmasqOptions {
        hosts: vec![
            ("www.example.test".into(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10))),
            ("www.example.test".into(), "::1".parse().unwrap()),
        ],
        local_domains: vec!["example.test".into()],
        txt_records: (0..40)
            .map(|i| ("big.example.test".into(), format!("{i:02}{long}")))
            .chain([("odd.example.test".into(), r#"a,b "q" \ # end"#.into())])
            .collect(),
        local_ttl: Some(5),
    })
    .unwrap();
    eprintln!("Dnsmasq::start took {:?} ({})", t0.elapsed(), dns.addr);
    assert!(dns.addr.ip().is_loopback());

    let resp = udp(dns.addr, &dns_query(1, "www.example.test", 1));
    assert_eq!(header(&resp), (false, 0, 1));
    assert_eq!(&resp[resp.len() - 4..], &[127, 0, 0, 10]);
    let resp = udp(dns.addr, &dns_query(2, "www.example.test", 28));
    assert_eq!(header(&resp), (false, 0, 1));

    let resp = udp(dns.addr, &dns_query(3, "nope.example.test", 1));
    assert_eq!(header(&resp).1, 3, "NXDOMAIN");

    let resp = udp(dns.addr, &dns_query(4, "big.example.test", 16));
    assert!(header(&resp).0, "UDP answer should be truncated");
    let resp = tcp(dns.addr, &dns_query(5, "big.example.test", 16));
    assert_eq!(header(&resp), (false, 0, 40));
    assert!(resp.len() > 8000);

    // Commas, quotes, backslashes and '#' survive verbatim as one string.
    let resp = udp(dns.addr, &dns_query(6, "odd.example.test", 16));
    assert_eq!(header(&resp), (false, 0, 1));
    let odd = br#"a,b "q" \ # end"#;
    assert!(resp.ends_with(&[&[odd.len() as u8][..], odd].concat()), "{resp:?}");

    let (dir, pid) = (dns.dir.clone(), dns.pid());
    drop(dns);
    assert!(!dir.exists());
    assert!(!process::alive(pid));
}

/// Waits until `c` has replayed everything `primary` wrote so far.
fn caught_up(primary: &Cluster, c: &Cluster) {
    let lsn = primary.sql("SELECT pg_current_wal_lsn()").unwrap();
    process::poll("replay to catch up", T, Duration::from_millis(5), || {
        Ok((c.sql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"))? == "t").then_some(()))
    })
    .unwrap();
}

fn has_table(c: &Cluster, table: &str) -> bool {
    c.sql(&format!("SELECT to_regclass('{table}') IS NOT NULL")).unwrap() == "t"
}

/// The fault-sequence operations on a primary and two replicas: replay
/// paused and resumed, the probe's sessions ended from the server, then the
/// classic split-brain lineage: primary killed, replica promoted (timeline
/// 2), old primary back writable on timeline 1 with a diverged write,
/// rewound as a standby of the new primary, third server rebuilt from a
/// fresh base backup.
#[test]
fn trio_replay_pause_terminate_diverge_rewind_rebuild() {
    let bins = PgBinaries::locate().expect("PostgreSQL binaries");
    let t0 = Instant::now();
    let pair = PgPair::start(&bins, PairOptions::trio()).expect("start trio");
    eprintln!("PgPair::start (trio) took {:?}", t0.elapsed());
    let (a, b, c) = (&pair.primary, &pair.replica, &pair.extra[0]);
    assert_eq!((c.name.as_str(), c.ip), ("pg-c.test", Ipv4Addr::new(127, 0, 0, 4)));
    assert_eq!(pair.clusters().len(), 3);
    for s in [b, c] {
        assert!(s.is_in_recovery().unwrap());
        // TLS with its own name, SCRAM, the probe role.
        let out = bins
            .psql_client(
                &s.conninfo(&pair.probe_user),
                Some(&pair.password),
                "SELECT pg_is_in_recovery()",
                T,
            )
            .unwrap();
        assert_eq!(out, "t", "{}", s.name);
    }
    for s in pair.clusters() {
        assert_eq!(s.timeline().unwrap(), 1, "{}", s.name);
    }

    // Replay paused on c: it receives WAL but does not apply it.
    c.pause_replay().unwrap();
    a.sql("CREATE TABLE while_paused (x int)").unwrap();
    caught_up(a, b);
    assert!(has_table(b, "while_paused"));
    process::poll(
        "c to receive WAL it does not replay",
        T,
        Duration::from_millis(5),
        || {
            let lag = c.sql("SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())")?;
            Ok((lag.parse::<f64>().unwrap() > 0.0).then_some(()))
        },
    )
    .unwrap();
    assert!(!has_table(c, "while_paused"));
    c.resume_replay().unwrap();
    caught_up(a, c);
    assert!(has_table(c, "while_paused"));
    assert!(a.pause_replay().is_err(), "a primary has no replay to pause");

    // A client session ended from the server side.
    let conninfo = format!("{} application_name=holder", a.conninfo(&pair.probe_user));
    let (bins2, pw) = (bins.clone(), pair.password.clone());
    let holder = std::thread::spawn(move || {
        bins2.psql_client(&conninfo, Some(&pw), "SELECT pg_sleep(60)", Duration::from_secs(90))
    });
    process::poll("the holder session", T, Duration::from_millis(5), || {
        Ok((a.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'holder'")? == "1").then_some(()))
    })
    .unwrap();
    assert_eq!(a.terminate_backends("holder").unwrap(), 1);
    let err = holder.join().unwrap().unwrap_err().to_string();
    assert!(
        err.contains("terminating connection due to administrator command"),
        "{err}"
    );
    assert_eq!(a.terminate_backends("holder").unwrap(), 0);

    // Kill the primary, promote b: timeline 2.
    a.stop_immediate().unwrap();
    b.promote(true).unwrap();
    assert_eq!(b.timeline().unwrap(), 2);
    b.sql("CREATE TABLE on_b (x int)").unwrap();
    // The old primary comes back as it was: writable, on timeline 1.
    assert!(b.start_writable().is_err(), "start_writable refuses a running server");
    a.start_writable().unwrap();
    assert!(!a.is_in_recovery().unwrap());
    assert_eq!(a.timeline().unwrap(), 1);
    a.sql("CREATE TABLE diverged (x int)").unwrap();
    assert!(!has_table(a, "on_b"));

    // Rewound as a standby of b: b's history, not its own diverged write.
    let t1 = Instant::now();
    a.rebuild_as_standby_of(b, Rebuild::Rewind).unwrap();
    eprintln!("rebuild_as_standby_of(Rewind) took {:?}", t1.elapsed());
    assert!(a.is_in_recovery().unwrap());
    assert_eq!(a.timeline().unwrap(), 2);
    assert!(has_table(a, "on_b"));
    assert!(!has_table(a, "diverged"));
    // It still answers on its own address with its own certificate.
    let out = bins
        .psql_client(
            &a.conninfo(&pair.probe_user),
            Some(&pair.password),
            "SELECT pg_is_in_recovery()",
            T,
        )
        .unwrap();
    assert_eq!(out, "t");

    // c followed a's timeline 1 (and its diverged write); a fresh base
    // backup of b makes it b's standby.
    let t1 = Instant::now();
    c.rebuild_as_standby_of(b, Rebuild::BaseBackup).unwrap();
    eprintln!("rebuild_as_standby_of(BaseBackup) took {:?}", t1.elapsed());
    assert_eq!(c.timeline().unwrap(), 2);
    b.sql("CREATE TABLE after_rebuild (x int)").unwrap();
    for s in [a, c] {
        caught_up(b, s);
        assert!(has_table(s, "after_rebuild"), "{}", s.name);
        assert!(!has_table(s, "diverged"), "{}", s.name);
    }
    assert_eq!(
        b.sql(
            "SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_replication WHERE \
            state = 'streaming'"
        )
        .unwrap(),
        "pg-a.test,pg-c.test"
    );

    let dir = pair.dir.clone();
    let pids: Vec<u32> = pair.clusters().iter().filter_map(|c| c.pid()).collect();
    assert_eq!(pids.len(), 3);
    drop(pair);
    assert!(!dir.exists());
    for pid in pids {
        assert!(!process::alive(pid), "postmaster {pid} still alive");
    }
}

/// The libc lookups that replaced `id`, `/etc/passwd` and `df`: root exists
/// on every Unix, an unknown name is `None` (not an error or a panic).
#[test]
fn users_groups_and_free_space_from_libc() {
    use crate::{scratch, users};
    assert_eq!(users::user_name(0).as_deref(), Some("root"));
    assert_eq!(users::user_ids("root"), Some((0, 0)));
    assert_eq!(users::group_name(0).as_deref(), Some("root"));
    assert_eq!(users::user_ids("no-such-user-dns-sidecar-testbed"), None);
    assert_eq!(users::user_ids("nul\0in-name"), None);
    let me = users::user_name(users::effective_uid()).expect("our own user has a name");
    assert_eq!(users::user_ids(&me).map(|(uid, _)| uid), Some(users::effective_uid()));

    assert!(scratch::shm_free_kib(std::path::Path::new("/")).is_some());
    assert_eq!(scratch::shm_free_kib(std::path::Path::new("/no/such/dir")), None);
}

/// `kill(2)` through [`process::signal`]: stop, continue and kill a real
/// child; a pid that would mean a process group or every process is refused
/// without sending anything.
#[test]
fn signals_through_libc() {
    use crate::process::Signal;
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    process::signal(&[pid], Signal::Stop).unwrap();
    process::poll("the child to stop", T, Duration::from_millis(1), || {
        Ok(matches!(process::proc_stat(pid), Some(('T', _))).then_some(()))
    })
    .unwrap();
    process::signal(&[pid], Signal::Cont).unwrap();
    process::poll("the child to continue", T, Duration::from_millis(1), || {
        Ok(matches!(process::proc_stat(pid), Some(('S' | 'R', _))).then_some(()))
    })
    .unwrap();
    process::signal(&[pid], Signal::Kill).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));

    for bad in [0, u32::MAX, u32::MAX - 1] {
        let err = process::signal(&[bad], Signal::Cont).unwrap_err();
        assert!(matches!(err, TestbedError::Io { .. }), "{err}");
        assert!(err.to_string().contains(&format!("pid {bad}")), "{err}");
    }
}
