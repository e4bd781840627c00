//! The UDP workers' slow path: the rare query that must wait on an
//! upstream outside the relay (an alias whose target's records of the asked
//! type are neither in the background snapshot nor in the cache) is handed
//! to the tokio runtime, admitted like any forwarded query, and answered
//! through the runtime's own handle on the worker's socket. The worker
//! never waits on it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::debug;

use super::admission;
use super::forward::SLOW_COST;
use super::forwarding::Forwarding;
use super::guard::Ticket;
use super::message::Transport;
use super::plan::{Chase, Plan, Request};
use super::reply::Reply;
use crate::metrics::Metrics;

/// A query handed to the runtime because it waits on an upstream.
pub(super) struct SlowJob {
    plan: Plan,
    raw: Vec<u8>,
    peer: SocketAddr,
    started: Instant,
    forwarding: Arc<Forwarding>,
    _ticket: Ticket,
}

/// Answers the jobs of one worker as they come, each on a task of its own.
pub(super) async fn slow_answers(
    mut rx: mpsc::UnboundedReceiver<SlowJob>,
    sock: Arc<UdpSocket>,
    metrics: Arc<Metrics>,
) {
    while let Some(job) = rx.recv().await {
        let (sock, metrics) = (sock.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Some(reply) = job.forwarding.complete(job.plan, &job.raw, Transport::Udp).await {
                let _ = sock.send_to(&reply.bytes, job.peer);
                reply.count(&metrics, job.started.elapsed().as_secs_f64());
            }
        });
    }
}

/// Hands a query that waits on an upstream to the runtime (a chased alias
/// target), if [`admission::admit`] lets it (the client's rate, the
/// budget); otherwise returns the refusal to send at once.
pub(super) fn slow(
    tx: &mpsc::UnboundedSender<SlowJob>,
    fwd: &Arc<Forwarding>,
    plan: Plan,
    q: &[u8],
    peer: SocketAddr,
    started: Instant,
) -> Option<Reply> {
    match admission::admit(fwd, peer.ip(), SLOW_COST + q.len() as u64) {
        Ok(ticket) => {
            let job = SlowJob {
                plan,
                raw: q.to_vec(),
                peer,
                started,
                forwarding: fwd.clone(),
                _ticket: ticket,
            };
            if tx.send(job).is_err() {
                debug!("the runtime is gone; dropping a query");
            }
            None
        }
        Err(why) => match plan {
            Plan::Forward(Request(req)) => admission::refusal(fwd, &req, q, why, Transport::Udp),
            Plan::Chase(Chase { req, .. }) => fwd.encoder().refuse(&req, why.rcode(), Transport::Udp),
            _ => None,
        },
    }
}
