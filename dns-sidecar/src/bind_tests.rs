//! [`bind_group`]: who may share the port of a DNS listener.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};

use super::bind_group;

/// A UDP bind with SO_REUSEPORT, as `dig` makes for its queries (and as an
/// explicit-port sidecar group makes).
fn reuseport_bind(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Port 0 takes an ephemeral port, the kind a later port-0 bind by the same
/// user may be given: no SO_REUSEPORT socket may join it, or a `dig` that got
/// our port would read its own query back as the answer.
#[test]
fn a_port_0_group_shares_its_port_with_nobody() {
    let (udp, tcp) = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    let addr = tcp.local_addr().unwrap();
    assert_eq!(udp.len(), 3, "one handle per worker");
    for s in &udp {
        assert_eq!(s.local_addr().unwrap(), addr, "UDP and TCP share the port");
        assert!(!SockRef::from(s).reuse_port().unwrap(), "port 0 without SO_REUSEPORT");
    }
    for ip in ["127.0.0.1", "0.0.0.0"] {
        let joiner = SocketAddr::new(ip.parse().unwrap(), addr.port());
        let e = reuseport_bind(joiner).expect_err("a SO_REUSEPORT socket joined a port-0 group");
        assert_eq!(e.kind(), ErrorKind::AddrInUse, "{joiner}: {e}");
    }
    // The workers' handles are one socket: a datagram reaches it.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"q", addr).unwrap();
    udp[2].set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = udp[2].recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"q"[..], client.local_addr().unwrap()));
}

/// An explicit port keeps one SO_REUSEPORT socket per worker, so the kernel
/// spreads clients over the workers.
#[test]
fn an_explicit_port_group_has_a_reuseport_socket_per_worker() {
    for _ in 0..20 {
        // A port that was free a moment ago (another process may take it first: try again).
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let Ok((udp, tcp)) = bind_group(SocketAddr::from(([127, 0, 0, 1], port)), 2) else {
            continue;
        };
        assert_eq!(tcp.local_addr().unwrap().port(), port);
        assert_eq!(udp.len(), 2);
        for s in &udp {
            assert_eq!(s.local_addr().unwrap().port(), port);
            assert!(SockRef::from(s).reuse_port().unwrap());
        }
        return;
    }
    panic!("no free port in 20 tries");
}
