//! Batched datagram I/O (`recvmmsg`/`sendmmsg`): the buffers, the batch
//! size of the UDP workers, and the conversion of the kernel's socket
//! addresses. Shared by the UDP workers and the forwarding relay, so that
//! neither imports the other's internals (the workers use the relay; the
//! relay uses nothing of the workers).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use tracing::debug;

/// Datagrams per `recvmmsg` of a UDP worker; also the most queries one
/// worker batch can hand to its relay.
pub(super) const WORKER_BATCH: usize = 64;

/// `count` datagram slots of `size` bytes each, with the C structures that
/// point into them. The pointers target the Vecs' heap storage, which never
/// moves (nothing is pushed or resized after `new`), so a `Batch` may itself
/// be moved.
pub(super) struct Batch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// The raw pointers only point into the Batch's own heap buffers.
unsafe impl Send for Batch {}

impl Batch {
    pub(super) fn new(count: usize, size: usize) -> Batch {
        // One zeroed allocation each (not clones), so pages only become
        // resident once a datagram has used them.
        let mut bufs: Vec<Box<[u8]>> = (0..count).map(|_| vec![0u8; size].into_boxed_slice()).collect();
        // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which
        // all-zero is a valid value.
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; count];
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: size,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; count];
        for i in 0..count {
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        }
        Batch { bufs, addrs, iov, msgs }
    }

    /// Receives up to a batch of datagrams: blocks for the first (up to the
    /// socket's read timeout), then takes whatever else is already queued
    /// (`MSG_WAITFORONE`). Returns how many arrived (0 on timeout or error).
    #[inline]
    pub(super) fn recv(&mut self, fd: RawFd) -> usize {
        self.recv_flags(fd, libc::MSG_WAITFORONE)
    }

    /// Like [`Batch::recv`], but never blocks (for sockets found readable by `poll`).
    #[inline]
    pub(super) fn recv_nowait(&mut self, fd: RawFd) -> usize {
        self.recv_flags(fd, libc::MSG_DONTWAIT)
    }

    /// One `recvmmsg` into the whole batch with `flags`.
    #[inline]
    fn recv_flags(&mut self, fd: RawFd, flags: libc::c_int) -> usize {
        for (m, iov) in self.msgs.iter_mut().zip(&mut self.iov) {
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
            iov.iov_len = self.bufs[0].len();
        }
        // SAFETY: the arrays are valid for `len()` entries and live in `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.msgs.len() as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    /// Whether the `i`-th datagram was larger than its slot (cut off).
    pub(super) fn truncated(&self, i: usize) -> bool {
        self.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// The `i`-th received datagram as far as it fit in its slot.
    pub(super) fn data(&mut self, i: usize) -> &mut [u8] {
        let len = (self.msgs[i].msg_len as usize).min(self.bufs[i].len());
        &mut self.bufs[i][..len]
    }

    /// The `i`-th received datagram; `None` if it did not fit its slot.
    pub(super) fn received(&mut self, i: usize) -> Option<&mut [u8]> {
        let m = &self.msgs[i];
        if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = m.msg_len as usize;
        Some(&mut self.bufs[i][..len])
    }

    /// The sender of the `i`-th datagram.
    pub(super) fn addr(&self, i: usize) -> &libc::sockaddr_storage {
        &self.addrs[i]
    }

    /// Slot `i`'s whole buffer, to write an answer into.
    pub(super) fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i]
    }

    /// Makes slot `i` an outgoing datagram of `len` bytes to the sender of
    /// datagram `j` of `from`.
    pub(super) fn address_reply(&mut self, i: usize, len: usize, from: &Batch, j: usize) {
        self.iov[i].iov_len = len;
        self.addrs[i] = from.addrs[j];
        self.msgs[i].msg_hdr.msg_namelen = from.msgs[j].msg_hdr.msg_namelen;
    }

    /// Makes slot `i` an outgoing datagram of `len` bytes to `to`.
    pub(super) fn address_to(&mut self, i: usize, len: usize, to: std::net::SocketAddr) {
        self.iov[i].iov_len = len;
        let sa = socket2::SockAddr::from(to);
        // SAFETY: a SockAddr's storage is a sockaddr_storage of `len()` valid bytes.
        self.addrs[i] = unsafe { std::ptr::read(sa.as_ptr().cast::<libc::sockaddr_storage>()) };
        self.msgs[i].msg_hdr.msg_namelen = sa.len();
    }

    /// Slots in the batch.
    pub(super) fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Sends slots `0..count` with `sendmmsg`, retrying briefly while the
    /// send buffer is full and skipping a destination that errors.
    pub(super) fn send(&mut self, fd: RawFd, count: usize) {
        let mut sent = 0;
        let mut retries = 0;
        while sent < count {
            // SAFETY: entries sent..count were set up by `address_reply` and point into `self`.
            let r = unsafe { libc::sendmmsg(fd, self.msgs[sent..].as_mut_ptr(), (count - sent) as u32, 0) };
            if r > 0 {
                sent += r as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock && retries < 100 {
                retries += 1;
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 10) };
                continue;
            }
            if err.kind() != io::ErrorKind::WouldBlock {
                // One bad destination (e.g. unreachable) must not block the rest.
                debug!(error = %err, "udp send error");
                sent += 1;
                continue;
            }
            debug!("udp send buffer full; dropping {} answers", count - sent);
            return;
        }
    }
}

/// The kernel's address of a datagram's sender, as a [`std::net::SocketAddr`].
// Per datagram on the UDP hot path; `#[inline]` keeps it inlinable into
// the worker, as when it lived in udp.rs.
#[inline]
pub(super) fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::from((
                u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::from((a.sin6_addr.s6_addr, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}
