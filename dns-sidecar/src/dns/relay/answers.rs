//! Upstream answers back to their clients: matched to their pending query,
//! relayed to it and to every client waiting on the same question, and kept
//! in the cache.

use std::os::fd::AsRawFd;
use std::time::Duration;

use super::Relay;
use crate::dns::admission;
use crate::dns::coalesce;
use crate::dns::forward::same_question;
use crate::dns::forwarding::Forwarding;
use crate::dns::mmsg::{sockaddr_to_std, Batch};
use crate::dns::question::question;
use crate::metrics::{rcode_index, QueryKind};

impl Relay {
    /// Relays the `n` datagrams in `batch`, received on socket `serial`, to
    /// their client and every client waiting on the same question, and keeps
    /// them in the cache; when the upstream answered SERVFAIL or REFUSED, a
    /// stale answer from the cache goes to a client instead when it has one.
    pub(super) fn answers(&self, batch: &mut Batch, n: usize, serial: u64, tx: &mut Batch) {
        // The cache's clock, read once per batch (the cache is process-wide:
        // every pending query's forwarding context holds the same one).
        let mut now = None;
        let mut counts = [0u64; 8];
        let mut out = 0;
        // One latency observation per batch (as the UDP workers do): the
        // longest wait in it. The histogram takes a lock per observation.
        let mut longest: Option<Duration> = None;
        for i in 0..n {
            let Some(from) = sockaddr_to_std(batch.addr(i)) else {
                continue;
            };
            let truncated = batch.truncated(i);
            let answer = batch.data(i);
            if answer.len() < 12 {
                continue;
            }
            let id = u16::from_be_bytes([answer[0], answer[1]]);
            let p = {
                let mut st = self.lock();
                match st.pending.get(&id) {
                    Some(p)
                        if p.sock == serial && p.upstreams[p.tried].addr == from && same_question(&p.query, answer) =>
                    {
                        let p = st.pending.remove(&id).expect("present above");
                        st.deadlines.remove(&(p.deadline, id));
                        Some(p)
                    }
                    _ => None,
                }
            };
            let Some(p) = p else { continue };
            let u = &p.upstreams[p.tried];
            let fwd = p.forwarder();
            fwd.record(u, true);
            let caches = fwd.caches();
            let waiters = p.key.as_ref().map(|k| self.coalesce.take(k)).unwrap_or_default();
            // A stale answer instead of the upstream's failure only from a
            // zone whose answers are cached.
            let failed = !truncated && caches && admission::stale_instead(answer[3]);
            let mut leader_stale = false;
            let recipients = std::iter::once((&p.query, p.client, p.started))
                .chain(waiters.iter().map(|w| (&w.query, w.client, w.started)));
            for (k, (query, client, started)) in recipients.enumerate() {
                if out == tx.capacity() {
                    tx.send(self.client.as_raw_fd(), out);
                    out = 0;
                }
                let Some(len) = self.deliver(&p.forwarding, query, answer, truncated, failed, tx.buf_mut(out)) else {
                    continue;
                };
                leader_stale |= k == 0 && failed && len.1;
                tx.address_to(out, len.0, client);
                counts[rcode_index((tx.buf_mut(out)[3] & 0x0F) as u16)] += 1;
                out += 1;
                longest = longest.max(Some(started.elapsed()));
            }
            if !truncated && !leader_stale && caches {
                if let Some(qn) = question(&p.query, p.forwarding.encoder().max_udp()) {
                    let cache = p.forwarding.cache();
                    let now = *now.get_or_insert_with(|| cache.now());
                    cache.insert(&p.query, &qn, answer, now);
                }
            }
        }
        // Every answer of the batch with one sendmmsg.
        tx.send(self.client.as_raw_fd(), out);
        if let Some(l) = longest {
            self.metrics.latency(QueryKind::Forwarded, l.as_secs_f64());
        }
        for (r, c) in counts.iter().enumerate() {
            if *c > 0 {
                self.metrics.answered_n(QueryKind::Forwarded, r, *c);
            }
        }
    }

    /// Writes into `buf` the answer to `query` from the upstream's `answer`
    /// (to that query or an identical one): a TC answer when it was too big
    /// for UDP, a stale answer when it `failed` and the cache has one, else
    /// the answer with the query's ID, question case and RD. Returns its
    /// length and whether it came from the cache.
    fn deliver(
        &self,
        fwd: &Forwarding,
        query: &[u8],
        answer: &[u8],
        truncated: bool,
        failed: bool,
        buf: &mut [u8],
    ) -> Option<(usize, bool)> {
        // Too big to relay, or larger than this recipient takes over UDP
        // (the cache keeps it whole for its TCP retry): TC.
        if truncated || answer.len() > fwd.encoder().udp_limit_of(query) {
            return Some((truncated_into(fwd, query, buf)?, false));
        }
        if failed {
            if let Some(n) = self.stale(fwd, query, buf) {
                return Some((n, true));
            }
        }
        let qn = question(query, fwd.encoder().max_udp());
        let out = buf.get_mut(..answer.len())?;
        out.copy_from_slice(answer);
        match qn {
            Some(qn) => {
                if !coalesce::adapt(out, query, &qn) {
                    return None;
                }
            }
            None => out[..2].copy_from_slice(&query[..2]),
        }
        Some((answer.len(), false))
    }
}

/// The TC answer to `query` written into `buf`; its length.
fn truncated_into(fwd: &Forwarding, query: &[u8], buf: &mut [u8]) -> Option<usize> {
    let b = fwd.encoder().truncated(query)?;
    buf.get_mut(..b.len())?.copy_from_slice(&b);
    Some(b.len())
}
