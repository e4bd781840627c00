//! Glue between the probers and the snapshot: receives observations, runs the
//! pure decision, logs its events and publishes a new [`Routes`] when an
//! answer changes. It is the only writer of the snapshot.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::decision::{decide, Event, State};
use crate::observation::Observation;
use crate::routes::{Routes, SharedRoutes};

/// Runs until `shutdown` is true or every prober is gone.
pub async fn run(config: Arc<Config>, mut rx: mpsc::Receiver<Observation>, routes: SharedRoutes, mut shutdown: watch::Receiver<bool>) {
    let mut state = State::new(&config, Instant::now());
    let first_round = tokio::time::sleep(config.probe.deadline);
    tokio::pin!(first_round);
    let mut batch = Vec::new();
    loop {
        batch.clear();
        tokio::select! {
            n = rx.recv_many(&mut batch, 64) => if n == 0 { break },
            _ = &mut first_round, if !state.first_round_done => {}
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        }
        let (next, events) = decide(&state, &batch, &config, Instant::now());
        state = next;
        for e in &events {
            log_event(&config, e);
        }
        let new = Routes::from_state(&config, &state);
        if **routes.load() != new {
            routes.store(Arc::new(new));
        }
    }
}

fn log_event(config: &Config, e: &Event) {
    let server = |s: usize| config.servers[s].id.as_str();
    let alias = |a: usize| config.aliases[a].name.as_str();
    match e {
        Event::FirstRound { missing } if missing.is_empty() => info!("first probe round complete; answering aliases"),
        Event::FirstRound { missing } => warn!(
            servers = ?missing.iter().map(|s| server(*s)).collect::<Vec<_>>(),
            "first probe round closed at the probe deadline without these servers reporting; answering with what is known"
        ),
        Event::TargetChanged { alias: a, old, new, reason } => warn!(
            alias = alias(*a),
            old = old.map_or("-", server),
            new = server(*new),
            target = config.servers[*new].target.as_str(),
            reason = reason.as_str(),
            "alias target changed"
        ),
        Event::NoMatch { alias: a, kept, policy } => error!(
            alias = alias(*a),
            role = config.aliases[*a].role.as_str(),
            kept = kept.map_or("-", server),
            policy = ?policy,
            "no candidate server matches the alias's role"
        ),
        Event::SplitBrain { alias: a, writable, chosen, by_timeline } => error!(
            alias = alias(*a),
            writable = ?writable.iter().map(|s| server(*s)).collect::<Vec<_>>(),
            chosen = server(*chosen),
            by = if *by_timeline { "newest timeline" } else { "no timeline data: kept the current target" },
            "SPLIT BRAIN: more than one candidate is writable"
        ),
        Event::ServerUp { server: s, state } => info!(server = server(*s), state = state.as_str(), "server up"),
        Event::ServerDown { server: s, error } => warn!(server = server(*s), error = error.as_str(), "server down"),
    }
}
