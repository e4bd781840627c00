//! A raw UDP DNS client: for packets `dig` will not send, and for polling
//! the alias every few milliseconds without process start-up noise.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// Sends `packet`, returns the first datagram back, or `None` on timeout.
pub fn exchange(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Builds a query for `name`/`rtype` with RD set.
pub fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.queries.push(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

/// The CNAME target in the answer for `name`, if any (lower case, with dot).
pub fn cname_of(server: SocketAddr, name: &str) -> Option<String> {
    let resp = exchange(server, &query(name, RecordType::CNAME), Duration::from_millis(500))?;
    let m = Message::from_vec(&resp).ok()?;
    m.answers.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.to_lowercase().to_ascii()),
        _ => None,
    })
}
