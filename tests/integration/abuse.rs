//! Hostile clients and failing upstreams: the allow list, the per-client
//! rate limit, the memory budget and in-flight limit under a flood, the
//! upstream circuit breaker, TCP connection limits and timeouts, and
//! malformed packets. Assertions are about behaviour (who gets what answer,
//! what is counted, that the alias keeps answering), never about timings.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::support::env::Env;
use crate::support::raw;
use crate::support::sidecar::Sidecar;

/// `dns_sidecar_<name>` in the sidecar's metrics (0 when absent).
pub fn metric(sidecar: &Sidecar, name: &str) -> f64 {
    let text = sidecar.shared.metrics.encode();
    let full = format!("dns_sidecar_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&full))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn limited(sidecar: &Sidecar, reason: &str) -> f64 {
    metric(sidecar, &format!("limited_total{{reason=\"{reason}\"}}"))
}

fn rcode(answer: &[u8]) -> u8 {
    answer[3] & 0x0F
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A query sent from a socket bound to `from`.
fn exchange_from(from: &str, server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(from).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 4096];
    sock.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

#[tokio::test]
async fn clients_outside_the_allow_list_get_refused() {
    let env = Env::start(false, "").await;
    drop(env.sidecar);
    let text = env.config_text.replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.2\"]",
    );
    let sidecar = Sidecar::start(&text).unwrap();
    tokio::task::spawn_blocking(move || {
        let q = raw::query("www.example.test.", RecordType::A);
        let refused = exchange_from("127.0.0.1:0", sidecar.dns, &q).expect("an answer");
        assert_eq!(rcode(&refused), 5, "REFUSED for 127.0.0.1");
        assert_eq!(refused[..2], q[..2]);
        assert!(refused.len() <= q.len(), "never larger than the query");
        let zone = exchange_from("127.0.0.1:0", sidecar.dns, &raw::query("nope.db.test.", RecordType::A)).unwrap();
        assert_eq!(rcode(&zone), 5, "zone answers are refused too");
        let allowed = exchange_from("127.0.0.2:0", sidecar.dns, &q).expect("an answer");
        assert_eq!(rcode(&allowed), 0, "NOERROR for 127.0.0.2");
        assert!(limited(&sidecar, "acl") >= 2.0);

        // TCP from a refused client: closed without an answer.
        let mut s = TcpStream::connect(sidecar.dns).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let _ = s.write_all(&framed);
        let mut buf = [0u8; 64];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "connection closed");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn forwarded_queries_are_limited_per_client_and_zone_answers_are_not() {
    let env = Env::start(false, "\n[limits]\nforward_rate = 1\nforward_burst = 3\n").await;
    let dns = env.dns;
    let (fwd, zone, cached) = tokio::task::spawn_blocking(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let ask = |name: &str| {
            sock.send_to(&raw::query(name, RecordType::A), dns).unwrap();
            let mut buf = [0u8; 1500];
            let (n, _) = sock.recv_from(&mut buf).expect("every query is answered");
            rcode(&buf[..n])
        };
        // Names the upstream is asked for (each new, so none is cached),
        // names of the zone, and a name answered from the cache.
        let fwd: Vec<u8> = (0..12)
            .map(|i| {
                ask(if i == 0 {
                    "www.example.test."
                } else {
                    Box::leak(format!("n{i}.example.test.").into_boxed_str())
                })
            })
            .collect();
        let zone: Vec<u8> = (0..12).map(|_| ask("nope.db.test.")).collect();
        let cached: Vec<u8> = (0..12).map(|_| ask("www.example.test.")).collect();
        (fwd, zone, cached)
    })
    .await
    .unwrap();
    let refused = fwd.iter().filter(|&&c| c == 5).count();
    assert!(refused >= 12 - 3 - 2, "the burst passes, the rest is REFUSED: {fwd:?}");
    assert_eq!(fwd[0], 0, "{fwd:?}");
    assert!(
        zone.iter().all(|&c| c == 3),
        "zone answers are not rate limited: {zone:?}"
    );
    assert!(
        cached.iter().all(|&c| c == 0),
        "answers from the cache are not rate limited: {cached:?}"
    );
    // Another client has its own bucket.
    let other = tokio::task::spawn_blocking(move || {
        exchange_from("127.0.0.5:0", dns, &raw::query("n1.example.test.", RecordType::A))
    })
    .await
    .unwrap();
    assert_ne!(rcode(&other.unwrap()), 5);
    assert!(limited(env.sidecar(), "rate") >= refused as f64);
}

/// An upstream that reads and never answers until told to, then echoes
/// every query back as a NOERROR answer; counts what it received.
struct BlackHole {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    answer: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let (received, answer, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (r, a, s) = (received.clone(), answer.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::Relaxed);
                    if a.load(Ordering::Relaxed) && n >= 12 {
                        buf[2] |= 0x80;
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            }
        });
        BlackHole {
            addr,
            received,
            answer,
            stop,
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends `n` forwarded queries as fast as possible, each for a name of its
/// own (names asked once: neither the cache, nor the per-name memory of
/// timeouts, nor coalescing spares the upstream any), and collects what
/// comes back within `wait` after the last one: (answers per rcode, IDs
/// answered twice).
fn flood(dns: SocketAddr, n: u16, pause: Duration, wait: Duration) -> ([usize; 16], usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut seen = vec![0u8; 65536];
    let mut codes = [0usize; 16];
    let mut twice = 0;
    let mut buf = [0u8; 1500];
    let mut take = |sock: &UdpSocket, codes: &mut [usize; 16]| {
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
            seen[id] += 1;
            if seen[id] > 1 {
                twice += 1;
            }
            codes[rcode(&buf[..len]) as usize] += 1;
            if len == 0 {
                break;
            }
        }
    };
    sock.set_nonblocking(true).unwrap();
    for id in 0..n {
        let mut q = raw::query(&format!("f{id}.flood.example.test."), RecordType::A);
        q[..2].copy_from_slice(&id.to_be_bytes());
        let _ = sock.send_to(&q, dns);
        if id % 100 == 99 {
            take(&sock, &mut codes);
            // Paced, so a debug build on a loaded CI core receives it
            // without kernel drops and the flood outlasts the upstream timeout.
            std::thread::sleep(pause);
        }
    }
    sock.set_nonblocking(false).unwrap();
    let end = Instant::now() + wait;
    while Instant::now() < end {
        take(&sock, &mut codes);
    }
    (codes, twice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_upstream_under_a_flood_costs_bounded_memory_and_the_alias_keeps_answering() {
    let hole = BlackHole::start();
    let extra = "\n[limits]\nforward_in_flight = 200\nforward_rate = 0\n";
    let env = Env::start(true, extra).await;
    env.wait_for_target("prod.db.test.", "pg-a.test.", Duration::from_secs(5))
        .await;
    drop(env.sidecar);
    let text = env
        .config_text
        .replace(
            &format!("servers = [\"{}\"]", env.upstream.addr),
            &format!("servers = [\"{}\"]\nmax_fails = 3\nhealth_check = \"200ms\"", hole.addr),
        )
        .replace("timeout = \"500ms\"", "timeout = \"300ms\"");
    let sidecar = Sidecar::start(&text).unwrap();
    let dns = sidecar.dns;
    wait_until("the alias answers", Duration::from_secs(5), || {
        raw::cname_of(dns, "prod.db.test.").as_deref() == Some("pg-a.test.")
    });

    // The flood, with the alias asked all along from another client.
    let alias_answers = Arc::new(AtomicUsize::new(0));
    let flooding = Arc::new(AtomicBool::new(true));
    let (a, f) = (alias_answers.clone(), flooding.clone());
    let asker = std::thread::spawn(move || {
        let mut misses = 0;
        while f.load(Ordering::Relaxed) {
            match raw::cname_of(dns, "prod.db.test.") {
                Some(t) if t == "pg-a.test." => {
                    a.fetch_add(1, Ordering::Relaxed);
                }
                _ => misses += 1,
            }
        }
        misses
    });
    let (codes, twice) =
        // Paced to outlast `max_fails` failed health checks (each up to the
        // 200 ms `health_check`), which take the upstream out of use.
        tokio::task::spawn_blocking(move || flood(dns, 8_000, Duration::from_millis(25), Duration::from_secs(1)))
            .await
            .unwrap();
    flooding.store(false, Ordering::Relaxed);
    let misses = asker.join().unwrap();
    assert_eq!(twice, 0, "no query is answered twice");
    assert!(
        codes[2] > 4_000,
        "most of the flood gets SERVFAIL at once (rcodes {codes:?})"
    );
    assert!(
        hole.received.load(Ordering::Relaxed) < 4_000,
        "the dead upstream does not get the full load: {}",
        hole.received.load(Ordering::Relaxed)
    );
    assert!(limited(&sidecar, "in_flight") > 0.0 || limited(&sidecar, "upstream_down") > 0.0);
    assert!(limited(&sidecar, "upstream_down") > 0.0, "the breaker opened");
    assert!(
        alias_answers.load(Ordering::Relaxed) > 0,
        "the alias answered during the flood ({misses} misses)"
    );
    assert!(metric(&sidecar, "memory_budget_used_bytes") <= (16 << 20) as f64);
    let up = format!("upstream_up{{upstream=\"{}\",zone=\".\"}}", hole.addr);
    assert_eq!(metric(&sidecar, &up), 0.0, "the upstream is out of use");
    assert_eq!(
        raw::cname_of(dns, "prod.db.test.").as_deref(),
        Some("pg-a.test."),
        "answering after the flood"
    );

    // The upstream comes back: a health check notices, forwarding resumes.
    hole.answer.store(true, Ordering::Relaxed);
    wait_until("the upstream is back in use", Duration::from_secs(5), || {
        metric(&sidecar, &up) == 1.0
    });
    let a = raw::exchange(
        dns,
        &raw::query("www.example.test.", RecordType::A),
        Duration::from_secs(2),
    )
    .expect("an answer");
    assert_eq!(rcode(&a), 0, "forwarded again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_refuses_before_it_grows() {
    let hole = BlackHole::start();
    let text = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\ntimeout = \"2s\"\nmax_fails = \
            1000000\n[limits]\nmemory = \"1MiB\"\nforward_in_flight = 16384\nforward_rate = 0\n",
        hole.addr
    );
    let sidecar = Sidecar::start(&text).unwrap();
    let dns = sidecar.dns;
    let (codes, twice) =
        tokio::task::spawn_blocking(move || flood(dns, 10_000, Duration::from_millis(2), Duration::from_millis(300)))
            .await
            .unwrap();
    assert_eq!(twice, 0);
    assert!(codes[2] > 0, "SERVFAIL at once when the budget is used up: {codes:?}");
    assert!(limited(&sidecar, "memory") > 0.0);
    let used = metric(&sidecar, "memory_budget_used_bytes");
    assert!(used <= (1 << 20) as f64, "{used}");
    assert!(hole.received.load(Ordering::Relaxed) < 10_000);
}

#[tokio::test]
async fn malformed_packets_get_exactly_one_answer() {
    let env = Env::start(false, "").await;
    let dns = env.dns;
    tokio::task::spawn_blocking(move || {
        let hdr = |ar: u8| vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, ar];
        let mut cases: Vec<(&str, Vec<u8>, u8)> = Vec::new();
        let mut p = hdr(0);
        p.extend_from_slice(&[0xC0, 0x0E, 0xC0, 0x0C, 0, 1, 0, 1]);
        cases.push(("pointer loop", p, 1));
        let mut p = hdr(0);
        p.extend_from_slice(&[0xC0, 0x04, 0, 1, 0, 1]);
        cases.push(("pointer into the header", p, 1));
        for name in [&b"\x04nope\x02db\x04test\x00"[..], b"\x03www\x07example\x04test\x00"] {
            let mut p = hdr(1);
            p.extend_from_slice(name);
            p.extend_from_slice(b"\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x64");
            cases.push(("EDNS option longer than its OPT", p, 1));
        }
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
        for (what, packet, want) in cases {
            sock.send_to(&packet, dns).unwrap();
            let mut answers = Vec::new();
            let mut buf = [0u8; 1500];
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                answers.push(buf[..n].to_vec());
            }
            assert_eq!(answers.len(), 1, "{what}: {answers:02x?}");
            assert_eq!(
                rcode(&answers[0]),
                want,
                "{what}: FORMERR expected, got {:02x?}",
                answers[0]
            );
        }
    })
    .await
    .unwrap();
}

fn framed(q: &[u8]) -> Vec<u8> {
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(q);
    f
}

/// Whether the server closed `s` (EOF or reset) within the read timeout.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn tcp_query(s: &mut TcpStream, q: &[u8]) -> Option<Vec<u8>> {
    s.write_all(&framed(q)).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connection_caps_evict_the_idle_and_refuse_the_excess() {
    let env = Env::start(
        false,
        "\n[limits]\ntcp_connections = 3\ntcp_connections_per_client = 2\n",
    )
    .await;
    let dns = env.dns;
    let sidecar = env.sidecar();
    let q = raw::query("nope.db.test.", RecordType::A);
    let connect = |from: &str| {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&from.parse::<SocketAddr>().unwrap().into()).unwrap();
        sock.connect(&dns.into()).unwrap();
        let s: TcpStream = sock.into();
        // Only awaited events are read for (an answer, a close): a generous
        // timeout costs nothing when they come, and a loaded machine's
        // sidecar may take more than half a second to get to them.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let mut a1 = connect("127.0.0.1:0");
    assert!(tcp_query(&mut a1, &q).is_some());
    // The sidecar marks a connection idle just after sending its answer; a
    // loaded machine may preempt it in between while the other runtime
    // thread serves the next connections (seen: a1 marked idle after b1, so
    // b1 was the longest idle). A pause keeps a1 the longest idle by far.
    std::thread::sleep(Duration::from_millis(300));
    let mut a2 = connect("127.0.0.1:0");
    assert!(tcp_query(&mut a2, &q).is_some());
    // A third from the same client: over its share, closed at once.
    let mut a3 = connect("127.0.0.1:0");
    assert!(closed(&mut a3), "per-client cap");
    assert!(limited(sidecar, "tcp_per_client") >= 1.0);
    // Another client fills the last place; the next one evicts the
    // longest-idle connection (a1) rather than being refused.
    let mut b1 = connect("127.0.0.2:0");
    assert!(tcp_query(&mut b1, &q).is_some());
    assert!(tcp_query(&mut a2, &q).is_some(), "a2 is now less idle than a1");
    let mut b2 = connect("127.0.0.2:0");
    assert!(tcp_query(&mut b2, &q).is_some(), "the new connection is served");
    if !closed(&mut a1) {
        for s in [&a2, &b1] {
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        }
        panic!(
            "the longest-idle connection was not closed (instead: a2 {}, b1 {})",
            closed(&mut a2),
            closed(&mut b1)
        );
    }
    assert!(limited(sidecar, "tcp_evicted") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_idle_time_is_per_connection_and_clients_that_never_read_are_closed() {
    let env = Env::start(
        false,
        "\n[limits]\ntcp_idle_timeout = \"400ms\"\ntcp_write_timeout = \"300ms\"\n",
    )
    .await;
    let dns = env.dns;
    // Trickling a query one byte at a time does not keep the connection:
    // the idle time runs from the last answer to the complete next query.
    let q = framed(&raw::query("nope.db.test.", RecordType::A));
    let mut s = TcpStream::connect(dns).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut got_answer = false;
    let mut was_closed = false;
    for b in q.iter().chain(q.iter()) {
        if s.write_all(&[*b]).is_err() {
            was_closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => {
                was_closed = true;
                break;
            }
            Ok(_) => got_answer = true,
            Err(_) => {}
        }
    }
    assert!(
        was_closed && !got_answer,
        "closed before a trickled query completed (answer: {got_answer})"
    );

    // A client that pipelines queries and never reads its answers is closed
    // once the kernel buffers are full and an answer cannot be written.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&dns.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let big = framed(&raw::query("db.test.", RecordType::ANY));
    let all: Vec<u8> = (0..100_000).flat_map(|_| big.clone()).collect();
    let _ = s.write_all(&all);
    wait_until(
        "the write timeout closes the connection",
        Duration::from_secs(20),
        || limited(env.sidecar(), "tcp_write_timeout") >= 1.0,
    );
    let a = raw::exchange(dns, &raw::query("nope.db.test.", RecordType::A), Duration::from_secs(2))
        .expect("UDP still answers");
    assert_eq!(rcode(&a), 3);
}
