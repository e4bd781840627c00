//! Timeouts: a pending query past its deadline moves to its zone's next
//! upstream in use, or is answered (stale, else SERVFAIL).

use std::time::Instant;

use super::{ForwardError, Relay};
use crate::dns::admission;
use crate::metrics::QueryKind;

impl Relay {
    /// Moves timed-out queries to the next upstream in use, or answers them
    /// and those waiting on them (stale from the cache, else SERVFAIL, which
    /// the name is remembered by: see [`admission::remember_timeout`]).
    pub(super) fn sweep(&self, scratch: &mut [u8]) {
        let now = Instant::now();
        let mut failed = Vec::new();
        let mut resend = Vec::new();
        {
            let mut st = self.lock();
            while let Some(&(deadline, id)) = st.deadlines.first() {
                if deadline > now {
                    break;
                }
                st.deadlines.pop_first();
                let Some(p) = st.pending.get(&id) else { continue };
                let u = p.upstreams[p.tried].clone();
                let fwd = p.forwarder();
                let timeout = fwd.timeout();
                let err = ForwardError::Timeout { addr: u.addr, timeout };
                fwd.record(&u, false);
                let next = admission::next_upstream(&p.upstreams, p.tried);
                let v6 = next.map(|i| p.upstreams[i].addr.is_ipv6());
                let sock = v6.and_then(|v6| st.socket(v6).ok());
                match (next, sock) {
                    (Some(i), Some((sock, serial))) => {
                        let p = st.pending.get_mut(&id).expect("present above");
                        p.tried = i;
                        p.sock = serial;
                        p.deadline = now + timeout;
                        let mut out = p.query.to_vec();
                        out[..2].copy_from_slice(&id.to_be_bytes());
                        resend.push((sock, out, p.upstreams[i].addr, p.forwarding.clone(), p.route, err));
                        let d = p.deadline;
                        st.deadlines.insert((d, id));
                    }
                    _ => {
                        if let Some(p) = st.pending.remove(&id) {
                            failed.push((p, err));
                        }
                    }
                }
            }
        }
        for (sock, out, to, fwd, route, err) in resend {
            fwd.count_upstream_error(fwd.zones().get(route).zone(), &err);
            let _ = sock.send_to(&out, to);
        }
        for (p, err) in failed {
            let waiters = p.key.as_ref().map(|k| self.coalesce.take(k)).unwrap_or_default();
            let fwd = p.forwarder();
            p.forwarding.count_upstream_error(fwd.zone(), &err);
            let caches = fwd.caches();
            let recipients = std::iter::once((&p.query, p.client)).chain(waiters.iter().map(|w| (&w.query, w.client)));
            let mut remembered = false;
            for (query, client) in recipients {
                let stale = if caches {
                    self.stale(&p.forwarding, query, scratch)
                } else {
                    None
                };
                let servfail;
                let bytes: &[u8] = match stale {
                    Some(n) => &scratch[..n],
                    None => match p.forwarding.encoder().servfail(query) {
                        Some(b) => {
                            servfail = b;
                            if !remembered {
                                admission::remember_timeout(&p.forwarding, query, &servfail);
                                remembered = true;
                            }
                            &servfail
                        }
                        None => continue,
                    },
                };
                let _ = self.client.send_to(bytes, client);
                self.metrics.answered(QueryKind::Forwarded, (bytes[3] & 0x0F) as u16);
            }
        }
    }
}
