//! Faults a failover tool must survive without moving an alias: a network
//! black hole to one server (played by a proxy, since a frozen server still
//! accepts connects), and the server ending the probe's session.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::support::proxy::{Mode, Proxy};

/// A TCP echo server on 127.0.0.1 (one thread per connection).
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect through the proxy");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(got, msg);
}

/// Reads until EOF or an error; true if the connection ended within 2 s.
fn ended(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn proxy_plays_a_black_hole_and_resets() {
    let proxy = Proxy::start(echo_server());
    let mut old = connect(proxy.addr);
    echo(&mut old, b"hello");

    // Black hole: a new connect does not complete (a frozen server's kernel
    // would complete it), and bytes on the open connection go nowhere.
    proxy.set_mode(Mode::BlackHole);
    let t0 = Instant::now();
    let err = TcpStream::connect_timeout(&proxy.addr, Duration::from_millis(300)).expect_err("connect completed inside a black hole");
    assert!(matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock), "{err}");
    assert!(t0.elapsed() >= Duration::from_millis(290));
    old.write_all(b"held").unwrap();
    old.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 4];
    let err = old.read(&mut buf).expect_err("bytes crossed a black hole");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");

    // Healed: held bytes arrive, new connections work, our queue fillers
    // were never forwarded.
    proxy.set_mode(Mode::Pass);
    old.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    old.read_exact(&mut buf).expect("held bytes after the black hole");
    assert_eq!(&buf, b"held");
    let mut new = connect(proxy.addr);
    echo(&mut new, b"again");
    assert_eq!(proxy.accepted(), 2);

    // Reset: open connections are reset, new ones too.
    proxy.set_mode(Mode::Reset);
    assert!(ended(&mut new), "connection survived Reset");
    assert!(ended(&mut old), "connection survived Reset");
    // The reset may even beat connect() to reporting the handshake.
    match TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(2)) {
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            assert!(ended(&mut s), "new connection survived Reset");
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    proxy.set_mode(Mode::Pass);
    echo(&mut connect(proxy.addr), b"back");
}
