//! The serving loop: starts the UDP workers, the TCP accept loops and the
//! upstream health checks on the listeners it is given, and on shutdown
//! drains the queries already being answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use arc_swap::ArcSwap;

use super::handler::SharedHandler;
use super::{health, prefetch, tcp, udp};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::supervise::Supervisor;

/// How long shutdown waits for queries that are already being answered.
const DRAIN: Duration = Duration::from_secs(5);
/// How often the UDP worker and relay threads are checked for an early end
/// (a panic in one of them): a dead thread is noticed within this.
const THREAD_CHECK: Duration = Duration::from_millis(200);

/// Serves until `shutdown` is true, then stops accepting and waits (at most
/// [`DRAIN`]) for queries already in progress (upstream waits, open TCP
/// exchanges) to be answered. UDP sockets are served by batched worker
/// threads (see `udp`); TCP by the runtime; upstreams taken out of use are
/// health-checked by a task of their own, off the query path. Every thread
/// and task started here is supervised by `sup`: one that ends before the
/// shutdown is reported by name.
pub(crate) async fn serve(
    sup: Supervisor,
    handler: SharedHandler,
    config: Arc<ArcSwap<Config>>,
    metrics: Arc<Metrics>,
    (udp, tcp): (Vec<std::net::UdpSocket>, Vec<TcpListener>),
    shutdown: watch::Receiver<bool>,
) {
    let guard = handler.load().forwarding().guard().clone();
    let registry = Arc::new(tcp::Registry::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = match udp::spawn(udp, handler.clone(), metrics.clone(), stop.clone()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the UDP workers; serving TCP only");
            Vec::new()
        }
    };
    let mut tasks = JoinSet::new();
    for l in tcp {
        let name = match l.local_addr() {
            Ok(a) => format!("dns tcp listener {a}"),
            Err(_) => "dns tcp listener".to_string(),
        };
        tasks.spawn(sup.watch(
            name,
            tcp::accept_loop(l, handler.clone(), metrics.clone(), registry.clone(), shutdown.clone()),
        ));
    }
    tasks.spawn(sup.watch(
        "upstream health checks",
        health::health_checks(
            handler.clone(),
            config,
            metrics.clone(),
            guard.clone(),
            registry.clone(),
            shutdown.clone(),
        ),
    ));
    tasks.spawn(sup.watch("cache prefetch", prefetch::run(handler.clone(), shutdown.clone())));
    let mut rx = shutdown.clone();
    let mut check = tokio::time::interval(THREAD_CHECK);
    loop {
        tokio::select! {
            _ = crate::shutdown::stopped(&mut rx) => break,
            _ = check.tick() => reap(&sup, &mut threads),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    while tasks.join_next().await.is_some() {}
    let drained = async {
        while guard.in_flight() > 0 || !registry.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::warn!("shutdown: some queries were still waiting on upstreams after {DRAIN:?}; dropping them");
    }
}

/// Reports (and joins) the threads that have ended: they run until the
/// shutdown, so an end here is a death (a panic, usually). A std thread's
/// panic is otherwise only seen by whoever joins it, at the shutdown.
fn reap(sup: &Supervisor, threads: &mut Vec<std::thread::JoinHandle<()>>) {
    let mut i = 0;
    while i < threads.len() {
        if threads[i].is_finished() {
            let t = threads.swap_remove(i);
            let name = format!("{} thread", t.thread().name().unwrap_or("dns"));
            sup.report_thread(&name, t.join());
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::{Cause, Health};

    #[test]
    fn a_thread_that_panics_or_returns_is_reaped_and_reported_by_name() {
        let (_stop, stop_rx) = watch::channel(false);
        let (sup, mut deaths) = Supervisor::new(stop_rx, Arc::new(Health::default()));
        let spawn = |name: &str, f: fn()| std::thread::Builder::new().name(name.into()).spawn(f).unwrap();
        let park = Arc::new(AtomicBool::new(false));
        let p = park.clone();
        let running = std::thread::Builder::new()
            .name("dns-udp-0".into())
            .spawn(move || {
                while !p.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .unwrap();
        let mut threads = vec![
            running,
            spawn("dns-relay-1", || panic!("relay broke")),
            spawn("dns-udp-1", || {}),
        ];
        while threads[1..].iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        reap(&sup, &mut threads);
        assert_eq!(threads.len(), 1, "the running one is kept");
        let mut got: Vec<_> = std::iter::from_fn(|| deaths.try_recv().ok()).collect();
        got.sort_by(|a, b| a.task.cmp(&b.task));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].task, "dns-relay-1 thread");
        assert_eq!(got[0].cause, Cause::Panicked("relay broke".into()));
        assert_eq!(
            (got[1].task.as_str(), &got[1].cause),
            ("dns-udp-1 thread", &Cause::Ended)
        );
        park.store(true, Ordering::Relaxed);
        threads.pop().unwrap().join().unwrap();
    }
}
