//! Glue between the probers and the snapshots: receives observations,
//! overrides and reloads, runs the pure decision, and publishes the results.
//! It is the only writer of the routes and status snapshots; its events become
//! log lines, metrics, `/status` history and on-change hooks.
//!
//! It also keeps the state file: the state is restored from it before the
//! first decision, and every decision that changes what must survive a
//! restart (targets, fences, timeline floors, pins, drains) is written to it
//! *before* the routes that depend on it are published. The hook runner's
//! records of the external records go to it too (before a run starts, and
//! after a success); after every decision the runner is told what each
//! alias with a hook answers.
//!
//! One file per job: [`persist`] keeps the state file, [`report`] turns
//! events into log lines, metrics and history, [`publish`] stores the
//! snapshots and gauges, [`status`] builds `/status`, [`clock`] converts
//! between `Instant` and unix time.

mod clock;
mod persist;
mod publish;
mod report;
mod status;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, warn};

use crate::config::{AliasId, Config, IdVec, ServerId};
use crate::control::ControlRequest;
use crate::decision::snapshot::{capture, HookedTarget};
use crate::decision::{apply_override, decide, reconfigure_noted, Answer, Event, State};
use crate::episodes::Episodes;
use crate::hook::reconcile::{Confirmed, Record, ToHooks};
use crate::metrics::{ProbeResult, ServerLabel};
use crate::observation::{FailureCause, Observation, ProbeReport};
use crate::shared::Shared;
use crate::statefile;
use crate::status::{HistoryEntry, HistoryKind};
use crate::wallclock::WallClock;

/// A new config for the engine; the sender learns when it is in force.
pub(crate) struct Reconfigure {
    pub(crate) config: Arc<Config>,
    pub(crate) done: oneshot::Sender<()>,
}

/// The engine's inputs.
pub(crate) struct Inputs {
    pub(crate) observations: mpsc::Receiver<ProbeReport>,
    pub(crate) control: mpsc::Receiver<ControlRequest>,
    pub(crate) reconfigure: mpsc::Receiver<Reconfigure>,
    pub(crate) hooks: mpsc::Sender<ToHooks>,
    /// What the hook runner knows of each external record (it goes to the
    /// state file; the sender, if any, learns when it is written).
    pub(crate) hooks_confirmed: mpsc::Receiver<(Confirmed, Option<oneshot::Sender<()>>)>,
}

struct Engine {
    shared: Arc<Shared>,
    config: Arc<Config>,
    state: State,
    index: HashMap<Arc<str>, ServerId>,
    last_latency: IdVec<ServerId, Option<Duration>>,
    history: VecDeque<HistoryEntry>,
    hooks: mpsc::Sender<ToHooks>,
    /// Per alias, what is known of the external record its on-change hook
    /// keeps (kept in the state file; see [`crate::hook::reconcile`]).
    hooked: BTreeMap<String, Record>,
    /// Per alias, the answer (and hook) last told the hook runner.
    hook_told: HashMap<String, (HookedTarget, crate::config::Hook)>,
    /// `Instant` <-> wall clock, for `/status` and the state file.
    epoch: WallClock,
    /// Where to persist the state, while that is allowed (not a stranger's file).
    state_file: Option<PathBuf>,
    /// Orders the state-file writes (a late one never lands over a newer one).
    writer: Arc<statefile::Writer>,
    /// The last write failed (logged once per episode).
    state_file_failing: bool,
    /// Rate limit of the "server down" / "server up" lines.
    episodes: Episodes,
    /// What each alias answered at the last publish, by alias name: a change
    /// no decision event explains (a drain of the target kept by keep-last,
    /// an undrain) still gets its log line.
    served: HashMap<String, Served>,
}

/// What DNS answers for an alias, by server id (stable across reloads).
type Served = Answer<String>;

/// Runs until `shutdown` is true.
pub(crate) async fn run(shared: Arc<Shared>, mut inputs: Inputs, mut shutdown: watch::Receiver<bool>) {
    let mut e = Engine::new(shared, inputs.hooks.clone(), Instant::now());
    // With no servers (fleet mode: a sidecar that only forwards) there is
    // no probe round to wait for: ready at once.
    let first_wait = if e.config.servers.is_empty() {
        Duration::ZERO
    } else {
        e.config.probe.deadline
    };
    let first_round = tokio::time::sleep(first_wait);
    tokio::pin!(first_round);
    let mut batch = Vec::new();
    loop {
        #[cfg(feature = "testing")]
        crate::failpoint::check("engine");
        batch.clear();
        tokio::select! {
            n = inputs.observations.recv_many(&mut batch, 64) => {
                if n == 0 { break }
                let obs: Vec<Observation> = batch.drain(..).filter_map(|r| e.resolve(r)).collect();
                let (next, events) = decide(&e.state, &obs, &e.config, Instant::now());
                e.commit(next, events).await;
            }
            _ = &mut first_round, if !e.state.first_round_done => {
                let (next, events) = decide(&e.state, &[], &e.config, Instant::now());
                e.commit(next, events).await;
            }
            Some(req) = inputs.control.recv() => {
                let result = apply_override(&e.state, &e.config, &req.op, Instant::now());
                let reply = match result {
                    Ok((next, events, summary)) => {
                        e.commit(next, events).await;
                        Ok(summary)
                    }
                    Err(err) => Err(err),
                };
                let _ = req.reply.send(reply);
            }
            Some(r) = inputs.reconfigure.recv() => {
                e.reconfigure(r.config).await;
                let _ = r.done.send(());
            }
            Some((c, ack)) = inputs.hooks_confirmed.recv() => {
                e.hook_confirmed(c).await;
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        }
    }
}

/// The `dns_sidecar_probe_connects_total` label of a probe's new connection.
fn connect_result(connect: Result<(), FailureCause>) -> &'static str {
    match connect {
        Ok(()) => "ok",
        Err(FailureCause::Refused) => "refused",
        Err(FailureCause::Closed) => "closed",
        Err(FailureCause::Timeout) => "timeout",
        Err(_) => "error",
    }
}

fn index(config: &Config) -> HashMap<Arc<str>, ServerId> {
    config
        .enumerate_servers()
        .map(|(i, s)| (Arc::from(s.id.as_str()), i))
        .collect()
}

impl Engine {
    /// The engine at the start: the state restored from the state file (if
    /// any) and published, so `/status` and the routes exist before the
    /// first decision.
    fn new(shared: Arc<Shared>, hooks: mpsc::Sender<ToHooks>, now: Instant) -> Engine {
        let config = shared.config.load_full();
        let mut e = Engine {
            state: State::new(&config, now),
            index: index(&config),
            last_latency: IdVec::filled(None, config.servers.len()),
            history: VecDeque::new(),
            hooks,
            hooked: BTreeMap::new(),
            hook_told: HashMap::new(),
            epoch: WallClock::new(now, SystemTime::now()),
            state_file: config.state.path.clone(),
            writer: Arc::default(),
            state_file_failing: false,
            episodes: Episodes::default(),
            served: HashMap::new(),
            config,
            shared,
        };
        e.restore(now);
        e.publish();
        e
    }

    /// Puts a new config in force: carries the state over (and reports what
    /// that dropped or renamed), then decides under the new config.
    async fn reconfigure(&mut self, config: Arc<Config>) {
        let remembered = capture(&self.state, &self.config, |t| self.unix(t));
        let (carried, notes) = reconfigure_noted(&self.state, &self.config, &config);
        self.note_reload(&notes);
        self.shared.metrics.prepare(&config);
        self.shared.metrics.forget(&self.config, &config);
        self.episodes.retain(|id| config.servers.iter().any(|s| s.id == id));
        self.served
            .retain(|name, _| config.aliases.iter().any(|a| a.name.as_str() == name));
        self.config = config;
        self.index = index(&self.config);
        self.last_latency = IdVec::filled(None, self.config.servers.len());
        self.record(HistoryKind::Reload, None, None, "configuration reloaded".to_string());
        if self.config.state.path != self.state_file {
            warn!("state file path changed in the config; it applies at the next restart");
        }
        let (next, events) = decide(&carried, &[], &self.config, Instant::now());
        self.state = carried;
        // What the reload itself dropped or renamed (fences of a removed
        // server, a renamed server's fences) is written now, not at the
        // next decision that happens to change the state (once: by
        // `commit` when the decision changes it too).
        if capture(&self.state, &self.config, |t| self.unix(t)) != remembered && !self.state.kept_differs(&next) {
            self.persist().await;
        }
        self.commit(next, events).await;
    }

    /// Resolves a prober's report to the current config's server index and
    /// records its metrics. Reports from a server no longer configured (a
    /// prober being stopped by a reload) are dropped.
    fn resolve(&mut self, r: ProbeReport) -> Option<Observation> {
        let &i = self.index.get(&r.server)?;
        let m = &self.shared.metrics;
        let result = match &r.outcome {
            Ok(_) => "ok",
            Err(f) if f.cause == FailureCause::Timeout => "timeout",
            Err(_) => "error",
        };
        m.probes
            .get_or_create(&ProbeResult {
                server: r.server.to_string(),
                result: result.into(),
            })
            .inc();
        if let Some(connect) = r.connect {
            m.probe_connects
                .get_or_create(&ProbeResult {
                    server: r.server.to_string(),
                    result: connect_result(connect).into(),
                })
                .inc();
        }
        m.probe_latency
            .get_or_create(&ServerLabel {
                server: r.server.to_string(),
            })
            .observe(r.latency.as_secs_f64());
        self.last_latency[i] = Some(r.latency);
        Some(r.observation(i))
    }

    /// Takes a decision's result: persists what must survive a restart (when
    /// it changed), then logs, records and publishes.
    async fn commit(&mut self, next: State, events: Vec<Event>) {
        let changed = self.state.kept_differs(&next);
        self.state = next;
        if changed {
            self.persist().await;
        }
        self.handle(&events);
    }

    fn handle(&mut self, events: &[Event]) {
        let now = Instant::now();
        for ev in events {
            self.log_event(ev, now);
        }
        for line in self.episodes.tick(now) {
            self.log_episode(line);
        }
        self.log_unexplained_answers(events);
        self.publish();
        self.tell_hooks(events);
    }

    /// Tells the hook runner what each alias with an `on_change` hook answers
    /// now, when that changed (server, its target name, or the hook): the
    /// runner runs the hook when its record differs.
    fn tell_hooks(&mut self, events: &[Event]) {
        let c = self.config.clone();
        self.hook_told.retain(|name, _| {
            let kept = c
                .aliases
                .iter()
                .any(|a| a.name.as_str() == name && a.on_change.is_some());
            // Full channel: told again at the next decision.
            kept || self.hooks.try_send(ToHooks::Forget(name.clone())).is_err()
        });
        for (i, a) in c.enumerate_aliases() {
            let (Some(hook), Answer::Target(s)) = (&a.on_change, self.state.answer(&c, i)) else {
                continue;
            };
            let name = a.name.as_str();
            let new = HookedTarget {
                server: c.servers[s].id.clone(),
                target: c.servers[s].target.to_string(),
            };
            let before = self.hook_told.get(name);
            if before.is_some_and(|(t, h)| *t == new && h == hook) {
                continue;
            }
            let reason = events
                .iter()
                .find_map(|e| match e {
                    Event::TargetChanged { alias, reason, .. } if *alias == i => Some(reason.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| match before {
                    Some((t, _)) if t.server == new.server => {
                        format!("the target of server {} changed (reload)", new.server)
                    }
                    Some(_) => format!("answering {} again", new.server),
                    None => "the external record is not known to hold what DNS answers".to_string(),
                });
            let msg = ToHooks::Want {
                alias: name.to_string(),
                hook: hook.clone(),
                new: new.clone(),
                reason,
            };
            if self.hooks.try_send(msg).is_err() {
                error!(
                    alias = name,
                    "on_change hook queue is full; the hook is told again at the next decision"
                );
                continue;
            }
            self.hook_told.insert(name.to_string(), (new, hook.clone()));
        }
    }

    /// What alias `i` answers now.
    fn served(&self, i: AliasId) -> Served {
        (self.state.answer(&self.config, i)).map(|s| self.config.servers[s].id.clone())
    }
}
