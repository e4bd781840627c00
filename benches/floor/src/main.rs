//! `floor`: a do-nothing batched UDP DNS responder, the load test's floor.
//!
//! It answers every UDP query with one fixed record, `<qname> TTL IN CNAME
//! <target>`: it copies the ID (and the RD bit), echoes the question, and
//! appends a precomputed answer whose owner is a compression pointer to the
//! question name. No parsing beyond walking the question name, no lookup, no
//! allocation, no EDNS, no TCP. Datagrams are received and sent in batches
//! with `recvmmsg`/`sendmmsg` on one blocking socket in one thread, so what
//! it costs per query is essentially the kernel's UDP path: a DNS server
//! cannot be cheaper than this on the same machine.
//!
//! Usage: `floor [--listen 127.0.0.1:5300] [--target pg-a.test.] [--ttl 5]
//! [--exit-after SECS] [--rcvbuf BYTES]`
//!
//! It only binds loopback addresses (it is a benchmark tool), and it always
//! exits by itself after `--exit-after` seconds (default 3600) via `alarm`.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::exit;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 64;
/// Receive buffer per datagram. Larger queries arrive truncated and are dropped.
const QUERY_MAX: usize = 512;
/// Room for the echoed question plus the answer record.
const ANSWER_MAX: usize = QUERY_MAX + 300;

struct Args {
    listen: SocketAddr,
    target: String,
    ttl: u32,
    exit_after: u32,
    rcvbuf: usize,
}

fn usage(msg: &str) -> ! {
    eprintln!("floor: {msg}");
    eprintln!(
        "usage: floor [--listen 127.0.0.1:5300] [--target pg-a.test.] [--ttl 5] [--exit-after SECS] [--rcvbuf BYTES]"
    );
    exit(2)
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| usage(&format!("bad value for {flag}: {value:?}")))
}

fn parse_args() -> Args {
    let mut a = Args {
        listen: "127.0.0.1:5300".parse().expect("literal"),
        target: "pg-a.test.".into(),
        ttl: 5,
        exit_after: 3600,
        rcvbuf: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            usage("a do-nothing UDP DNS responder (one fixed CNAME for every query)");
        }
        let value = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--listen" => a.listen = parse(&flag, &value),
            "--target" => a.target = value.clone(),
            "--ttl" => a.ttl = parse(&flag, &value),
            "--exit-after" => a.exit_after = parse(&flag, &value),
            "--rcvbuf" => a.rcvbuf = parse(&flag, &value),
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    if !a.listen.ip().is_loopback() {
        usage(&format!(
            "{} is not a loopback address; floor only listens on loopback",
            a.listen
        ));
    }
    if a.exit_after == 0 {
        usage("--exit-after must be at least 1 second");
    }
    a
}

/// `name` in wire format (labels, root terminator). `None` if it is not a
/// plain name of at most 255 bytes.
fn wire_name(name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

/// The answer record: owner = pointer to the question name at offset 12,
/// type CNAME, class IN, TTL, RDATA = target.
fn answer_record(target: &[u8], ttl: u32) -> Vec<u8> {
    let mut rr = vec![0xC0, 0x0C, 0x00, 0x05, 0x00, 0x01];
    rr.extend_from_slice(&ttl.to_be_bytes());
    rr.extend_from_slice(&(target.len() as u16).to_be_bytes());
    rr.extend_from_slice(target);
    rr
}

/// Writes the response to `query` into `out`; returns its length, or `None`
/// to drop the datagram (a response, not exactly one question, or malformed).
fn respond(query: &[u8], out: &mut [u8], answer: &[u8]) -> Option<usize> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    // Walk the question name (uncompressed, as in any query), then QTYPE/QCLASS.
    let mut p = 12;
    loop {
        let len = *query.get(p)? as usize;
        p += 1;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        p += len;
    }
    let qend = p + 4;
    if qend > query.len() {
        return None;
    }
    let total = qend + answer.len();
    if total > out.len() {
        return None;
    }
    out[..2].copy_from_slice(&query[..2]);
    out[2] = 0x84 | (query[2] & 0x01); // QR, AA, RD copied; opcode QUERY
    out[3] = 0x00; // RA=0, RCODE=NOERROR
    out[4..12].copy_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    out[12..qend].copy_from_slice(&query[12..qend]);
    out[qend..total].copy_from_slice(answer);
    Some(total)
}

fn set_rcvbuf(fd: i32, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: plain setsockopt with a pointer to a local c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn main() {
    let args = parse_args();
    let target =
        wire_name(&args.target).unwrap_or_else(|| usage(&format!("{:?} is not a plain DNS name", args.target)));
    let answer = answer_record(&target, args.ttl);
    // SAFETY: alarm has no memory effects; SIGALRM's default action ends the process.
    unsafe { libc::alarm(args.exit_after) };

    let sock = UdpSocket::bind(args.listen).unwrap_or_else(|e| {
        eprintln!("floor: cannot bind {}: {e}", args.listen);
        exit(1)
    });
    let fd = sock.as_raw_fd();
    if args.rcvbuf > 0 {
        if let Err(e) = set_rcvbuf(fd, args.rcvbuf) {
            eprintln!("floor: SO_RCVBUF: {e}");
        }
    }
    eprintln!(
        "floor: answering on udp {} (CNAME {}, exits after {} s)",
        sock.local_addr().map_or(args.listen, |a| a),
        args.target,
        args.exit_after
    );

    // All buffers and headers are allocated once; the kernel writes into them.
    let mut qbufs = vec![[0u8; QUERY_MAX]; BATCH];
    let mut abufs = vec![[0u8; ANSWER_MAX]; BATCH];
    // SAFETY (zeroed): sockaddr_storage, iovec and mmsghdr are plain C structs
    // for which all-zero is a valid value.
    let mut peers: Vec<libc::sockaddr_storage> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut qiov: Vec<libc::iovec> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut aiov: Vec<libc::iovec> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut qmsgs: Vec<libc::mmsghdr> = vec![unsafe { mem::zeroed() }; BATCH];
    let mut amsgs: Vec<libc::mmsghdr> = vec![unsafe { mem::zeroed() }; BATCH];
    for i in 0..BATCH {
        qiov[i].iov_base = qbufs[i].as_mut_ptr().cast();
        qiov[i].iov_len = QUERY_MAX;
        qmsgs[i].msg_hdr.msg_iov = &mut qiov[i];
        qmsgs[i].msg_hdr.msg_iovlen = 1;
        aiov[i].iov_base = abufs[i].as_mut_ptr().cast();
        amsgs[i].msg_hdr.msg_iov = &mut aiov[i];
        amsgs[i].msg_hdr.msg_iovlen = 1;
    }
    let storage_len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

    loop {
        for i in 0..BATCH {
            qmsgs[i].msg_hdr.msg_name = (&mut peers[i] as *mut libc::sockaddr_storage).cast();
            qmsgs[i].msg_hdr.msg_namelen = storage_len;
            qmsgs[i].msg_hdr.msg_flags = 0;
            qmsgs[i].msg_len = 0;
        }
        // SAFETY: every mmsghdr points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                qmsgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("floor: recvmmsg: {e}");
            exit(1);
        }
        let mut m = 0;
        for i in 0..n as usize {
            let hdr = &qmsgs[i].msg_hdr;
            if hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let len = qmsgs[i].msg_len as usize;
            if let Some(alen) = respond(&qbufs[i][..len], &mut abufs[m], &answer) {
                aiov[m].iov_len = alen;
                amsgs[m].msg_hdr.msg_name = hdr.msg_name;
                amsgs[m].msg_hdr.msg_namelen = hdr.msg_namelen;
                m += 1;
            }
        }
        let mut sent = 0;
        while sent < m {
            // SAFETY: as above; entries [sent, m) were filled in this round.
            let r = unsafe { libc::sendmmsg(fd, amsgs[sent..].as_mut_ptr(), (m - sent) as libc::c_uint, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // ENOBUFS/EAGAIN etc.: drop the rest of this batch, like a
                // real server would under overload.
                break;
            }
            sent += r as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_query_with_the_fixed_cname() {
        // ID 0xbeef, RD, one question: prod.db.test. A IN
        let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let qname = wire_name("prod.db.test.").unwrap();
        q.extend_from_slice(&qname);
        q.extend_from_slice(&[0, 1, 0, 1]);
        let target = wire_name("pg-a.test").unwrap();
        let answer = answer_record(&target, 5);
        let mut out = [0u8; ANSWER_MAX];
        let n = respond(&q, &mut out, &answer).unwrap();
        assert_eq!(&out[..2], &[0xbe, 0xef]);
        assert_eq!(out[2], 0x85);
        assert_eq!(&out[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&out[12..q.len()], &q[12..]);
        assert_eq!(&out[q.len()..n], &answer[..]);
        assert_eq!(n, q.len() + 12 + target.len());
    }

    #[test]
    fn drops_responses_and_malformed_queries() {
        let answer = answer_record(&wire_name("t.").unwrap(), 5);
        let mut out = [0u8; ANSWER_MAX];
        let mut q = vec![0, 1, 0x81, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1];
        assert!(respond(&q, &mut out, &answer).is_none(), "QR set");
        q[2] = 0x01;
        assert!(respond(&q, &mut out, &answer).is_some());
        assert!(
            respond(&q[..q.len() - 1], &mut out, &answer).is_none(),
            "short question"
        );
        q[12] = 0xC0;
        assert!(respond(&q, &mut out, &answer).is_none(), "compressed qname");
        assert!(respond(&[0; 5], &mut out, &answer).is_none(), "short header");
    }
}
