//! The queries a worker's batch relays, sent together at its end.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tracing::debug;

use crate::dns::mmsg::{Batch, WORKER_BATCH};

/// Largest query an [`Outbox`] slot holds; a larger one (rare: queries
/// are a few dozen bytes) is sent on its own.
const OUT_SLOT: usize = 512;

/// The queries a UDP worker relays in one batch: sent together, one
/// `sendmmsg` per upstream socket (normally one: a batch uses one socket
/// per address family), when the batch is done.
pub(crate) struct Outbox {
    batch: Batch,
    sock: Option<Arc<UdpSocket>>,
    n: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            batch: Batch::new(WORKER_BATCH, OUT_SLOT),
            sock: None,
            n: 0,
        }
    }
}

impl Outbox {
    /// Adds `query`, with upstream ID `id`, for `to` from `sock`.
    pub(super) fn push(&mut self, sock: &Arc<UdpSocket>, to: SocketAddr, query: &[u8], id: u16) {
        if query.len() > OUT_SLOT {
            let mut out = query.to_vec();
            out[..2].copy_from_slice(&id.to_be_bytes());
            if let Err(e) = sock.send_to(&out, to) {
                debug!(error = %e, upstream = %to, "relay send failed; will retry or fail at the timeout");
            }
            return;
        }
        if self.n == self.batch.capacity() || self.sock.as_ref().is_some_and(|s| !Arc::ptr_eq(s, sock)) {
            self.flush();
        }
        let buf = self.batch.buf_mut(self.n);
        buf[..query.len()].copy_from_slice(query);
        buf[..2].copy_from_slice(&id.to_be_bytes());
        self.batch.address_to(self.n, query.len(), to);
        self.n += 1;
        self.sock = Some(sock.clone());
    }

    /// Sends what was added. A failed send is a timeout later (the pending
    /// query moves to the next upstream or gets SERVFAIL).
    pub(crate) fn flush(&mut self) {
        if let Some(sock) = self.sock.take() {
            self.batch.send(sock.as_raw_fd(), self.n);
        }
        self.n = 0;
    }
}
