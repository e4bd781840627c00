//! The sockets a sidecar serves on, bound before it starts: so that a port
//! 0 can be learned, and privileged ports bound before dropping
//! privileges. One UDP socket per worker thread on each address, and a TCP
//! listener on the same port.

use std::net::SocketAddr;

use crate::config::Config;
use crate::RunError;

/// Sockets bound before the server starts (so a port 0 can be learned, and
/// privileged ports bound before dropping privileges).
pub struct Listeners {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds the DNS listeners (UDP and TCP on each address) and the admin
    /// listener of `config`. Port 0 picks a free port (one port for UDP and
    /// TCP together).
    pub fn bind(config: &Config) -> Result<Listeners, RunError> {
        let mut l = Listeners::bind_dns(&config.dns.listen)?;
        if let Some(addr) = config.admin.listen {
            l.admin = Some(std::net::TcpListener::bind(addr).map_err(|source| RunError::Bind {
                addr,
                proto: "tcp (admin)",
                source,
            })?);
        }
        Ok(l)
    }

    /// Binds DNS listeners only (no admin listener), with one UDP socket
    /// per worker thread on each address (see `udp_workers`).
    pub fn bind_dns(addrs: &[SocketAddr]) -> Result<Listeners, RunError> {
        let mut l = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            admin: None,
        };
        for &addr in addrs {
            let (mut u, t) = bind_group(addr, udp_workers())?;
            l.udp.append(&mut u);
            l.tcp.push(t);
        }
        Ok(l)
    }

    /// The DNS addresses actually bound (UDP and TCP share them).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp.iter().filter_map(|s| s.local_addr().ok()).collect()
    }

    /// The admin listener's address actually bound, when there is one.
    pub(crate) fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }
}

/// UDP worker threads (and sockets) per listen address: one per CPU this
/// process may run on (so `taskset -c 1` gives one), at most 8.
pub(crate) fn udp_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // Room for bursts; the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds `n` UDP sockets on one port and a TCP listener on the same port.
/// Port 0 picks a port free for both.
///
/// An explicit port gets `n` sockets with SO_REUSEPORT, so the kernel spreads
/// clients over the workers. Port 0 gets one socket *without* it, which the
/// `n` workers share (`try_clone`): Linux hands a port held only by
/// SO_REUSEPORT sockets to a later port-0 bind with SO_REUSEPORT by the same
/// user, which then shares the port. `dig` binds its query socket that way: a
/// `dig` given our port sent its query to itself and read it back as the
/// answer (QR clear); another sidecar's group would take a share of our
/// queries. Port 0 always yields such an ephemeral port; an explicit port
/// outside `net.ipv4.ip_local_port_range` (53, 5353) is never handed out so.
pub(crate) fn bind_group(
    addr: SocketAddr,
    n: usize,
) -> Result<(Vec<std::net::UdpSocket>, std::net::TcpListener), RunError> {
    let explicit = addr.port() != 0;
    let attempts = if explicit { 1 } else { 50 };
    let mut last = None;
    for _ in 0..attempts {
        let first = udp_socket(addr, explicit).map_err(|source| RunError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        let bound = first.local_addr().map_err(|source| RunError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        let tcp = match std::net::TcpListener::bind(bound) {
            Ok(t) => t,
            Err(source) => {
                last = Some(RunError::Bind {
                    addr: bound,
                    proto: "tcp",
                    source,
                });
                continue;
            }
        };
        let mut udp = vec![first];
        for _ in 1..n {
            let more = if explicit {
                udp_socket(bound, true)
            } else {
                udp[0].try_clone()
            };
            udp.push(more.map_err(|source| RunError::Bind {
                addr: bound,
                proto: "udp",
                source,
            })?);
        }
        return Ok((udp, tcp));
    }
    Err(last.expect("at least one attempt"))
}

pub(crate) type Bound = (
    Vec<std::net::UdpSocket>,
    Vec<tokio::net::TcpListener>,
    Option<tokio::net::TcpListener>,
);

/// Hands the TCP listeners to tokio; UDP sockets stay with the worker threads.
pub(crate) fn to_tokio(listeners: Listeners) -> Result<Bound, RunError> {
    fn convert(t: std::net::TcpListener, proto: &'static str) -> Result<tokio::net::TcpListener, RunError> {
        let addr = t.local_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let err = |source| RunError::Bind { addr, proto, source };
        t.set_nonblocking(true).map_err(err)?;
        tokio::net::TcpListener::from_std(t).map_err(err)
    }
    let tcp = listeners
        .tcp
        .into_iter()
        .map(|t| convert(t, "tcp"))
        .collect::<Result<Vec<_>, _>>()?;
    let admin = listeners.admin.map(|a| convert(a, "tcp (admin)")).transpose()?;
    Ok((listeners.udp, tcp, admin))
}
