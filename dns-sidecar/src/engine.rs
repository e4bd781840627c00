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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::ControlRequest;
use crate::decision::snapshot::{capture, restore, HookedTarget};
use crate::decision::{apply_override, decide, fence, lag, reconfigure_noted, Answer, Bar, Event, ReloadNote, State};
use crate::episodes::{Episodes, Line};
use crate::hook::reconcile::{Confirmed, Record, ToHooks};
use crate::metrics::{AliasLabel, AliasServer, ProbeResult, ResultLabel, ServerLabel};
use crate::observation::{format_lsn, FailureCause, Observation, ProbeReport};
use crate::routes::Routes;
use crate::shared::Shared;
use crate::statefile;
use crate::status::{AliasStatus, FenceStatus, HistoryEntry, LagStatus, ServerStatus, Status, HISTORY_LEN};
use crate::wallclock::WallClock;

/// A new config for the engine; the sender learns when it is in force.
pub struct Reconfigure {
    pub config: Arc<Config>,
    pub done: oneshot::Sender<()>,
}

/// The engine's inputs.
pub struct Inputs {
    pub observations: mpsc::Receiver<ProbeReport>,
    pub control: mpsc::Receiver<ControlRequest>,
    pub reconfigure: mpsc::Receiver<Reconfigure>,
    pub hooks: mpsc::Sender<ToHooks>,
    /// What the hook runner knows of each external record (it goes to the
    /// state file; the sender, if any, learns when it is written).
    pub hooks_confirmed: mpsc::Receiver<(Confirmed, Option<oneshot::Sender<()>>)>,
}

struct Engine {
    shared: Arc<Shared>,
    config: Arc<Config>,
    state: State,
    index: HashMap<Arc<str>, usize>,
    last_latency: Vec<Option<Duration>>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
enum Served {
    Pending,
    Server(String),
    Servfail,
}

/// How long a decision waits for its state-file write before publishing
/// anyway (a hung disk must not stop the alias from following a failover).
const STATE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs until `shutdown` is true.
pub async fn run(shared: Arc<Shared>, mut inputs: Inputs, mut shutdown: watch::Receiver<bool>) {
    let config = shared.config.load_full();
    let now = Instant::now();
    let mut e = Engine {
        state: State::new(&config, now),
        index: index(&config),
        last_latency: vec![None; config.servers.len()],
        history: VecDeque::new(),
        hooks: inputs.hooks.clone(),
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
                let remembered = capture(&e.state, &e.config, |t| e.unix(t));
                let (carried, notes) = reconfigure_noted(&e.state, &e.config, &r.config);
                e.note_reload(&notes);
                e.shared.metrics.prepare(&r.config);
                e.shared.metrics.forget(&e.config, &r.config);
                e.episodes.retain(|id| r.config.servers.iter().any(|s| s.id == id));
                e.served.retain(|name, _| r.config.aliases.iter().any(|a| a.name.as_str() == name));
                e.config = r.config;
                e.index = index(&e.config);
                e.last_latency = vec![None; e.config.servers.len()];
                e.record(None, None, "reload", "configuration reloaded".to_string());
                if e.config.state.path != e.state_file {
                    warn!("state file path changed in the config; it applies at the next restart");
                }
                let (next, events) = decide(&carried, &[], &e.config, Instant::now());
                e.state = carried;
                // What the reload itself dropped or renamed (fences of a removed
                // server, a renamed server's fences) is written now, not at the
                // next decision that happens to change the state (once: by
                // `commit` when the decision changes it too).
                if capture(&e.state, &e.config, |t| e.unix(t)) != remembered && !e.state.kept_differs(&next) {
                    e.persist().await;
                }
                e.commit(next, events).await;
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

fn index(config: &Config) -> HashMap<Arc<str>, usize> {
    config
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| (Arc::from(s.id.as_str()), i))
        .collect()
}

impl Engine {
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

    /// Restores the state file's content, if there is one, before anything
    /// is decided.
    fn restore(&mut self, now: Instant) {
        let Some(path) = self.state_file.clone() else {
            warn!(
                "no [state] path configured: fences and timelines seen are kept in memory only and forgotten at a \
                restart (see README: state file)"
            );
            return;
        };
        match statefile::load(&path) {
            Ok(None) => info!(path = %path.display(), "no state file yet; starting fresh"),
            Ok(Some(remembered)) => {
                let (state, notes) = restore(&self.config, &remembered, now, |u| self.instant(u));
                for note in &notes {
                    warn!(path = %path.display(), "state file: {note}");
                }
                self.hooked = remembered
                    .aliases
                    .iter()
                    .filter(|(name, _)| self.config.aliases.iter().any(|a| a.name.as_str() == name.as_str()))
                    .map(|(name, a)| {
                        let r = Record {
                            hooked: a.hooked.clone(),
                            unsure: a.hook_unsure.clone(),
                        };
                        (name.clone(), r)
                    })
                    .filter(|(_, r)| *r != Record::default())
                    .collect();
                let records = self.hooked.iter().map(|(a, t)| (a.clone(), t.clone())).collect();
                // The first message: the runner reads it before any answer.
                let _ = self.hooks.try_send(ToHooks::Restored(records));
                let fences: usize = state.aliases.iter().map(|a| a.fences.len()).sum();
                info!(path = %path.display(), fences, "state restored from the state file");
                self.record(
                    None,
                    None,
                    "state_file",
                    format!("restored from {} ({fences} fences)", path.display()),
                );
                self.state = state;
            }
            Err(err) => {
                error!(error = %err, "state file ignored");
                self.record(None, None, "state_file", err.to_string());
                if !err.may_overwrite() {
                    self.state_file = None;
                }
            }
        }
    }

    /// Logs (one line each) and records what a reload did to the decision
    /// state, and makes the answers remembered for [`Self::log_unexplained_answers`]
    /// follow renamed servers (a rename changes no answer).
    fn note_reload(&mut self, notes: &[ReloadNote]) {
        let pairs: Vec<(&str, &str)> = notes
            .iter()
            .filter_map(|n| match n {
                ReloadNote::Renamed { old, new } => Some((old.as_str(), new.as_str())),
                _ => None,
            })
            .collect();
        self.episodes.rename(&pairs);
        let renamed: HashMap<&str, &str> = pairs.into_iter().collect();
        for served in self.served.values_mut() {
            if let Served::Server(id) = served {
                if let Some(new) = renamed.get(id.as_str()) {
                    *id = new.to_string();
                }
            }
        }
        for note in notes {
            let text = note.to_string();
            match note {
                ReloadNote::Renamed { old, new } => {
                    info!(
                        server = new.as_str(),
                        old = old.as_str(),
                        "server renamed (same host, hostaddr and port): its health, fences, drain and pins are kept"
                    );
                    self.record(None, Some(new.clone()), "reload", text);
                }
                ReloadNote::Moved { server } => {
                    info!(server = server.as_str(), "server's host, hostaddr or port changed: its health, fences, drain and pins are kept until its new prober reports");
                    self.record(None, Some(server.clone()), "reload", text);
                }
                ReloadNote::FenceDropped {
                    alias,
                    server,
                    kind,
                    why,
                } => {
                    warn!(alias = alias.as_str(), server = server.as_str(), fence = kind, reason = %why, "reload dropped a fence");
                    self.record(Some(alias.clone()), Some(server.clone()), "reload", text);
                }
                ReloadNote::PinDropped { alias, server, why } => {
                    warn!(alias = alias.as_str(), server = server.as_str(), reason = %why, "reload dropped a pin");
                    self.record(Some(alias.clone()), Some(server.clone()), "reload", text);
                }
                ReloadNote::DrainDropped { server } => {
                    warn!(
                        server = server.as_str(),
                        "reload dropped a drain: the server is no longer configured"
                    );
                    self.record(None, Some(server.clone()), "reload", text);
                }
            }
        }
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

    async fn persist(&mut self) {
        let Some(path) = self.state_file.clone() else { return };
        let mut remembered = capture(&self.state, &self.config, |t| self.unix(t));
        for (name, a) in remembered.aliases.iter_mut() {
            let r = self.hooked.get(name).cloned().unwrap_or_default();
            (a.hooked, a.hook_unsure) = (r.hooked, r.unsure);
        }
        let at = self.unix(Instant::now());
        // Taken here, in decision order: a write given up on below may still
        // land later, but never over this one's successors.
        let (writer, generation) = (self.writer.clone(), self.writer.generation());
        let write = tokio::task::spawn_blocking(move || writer.store(&path, generation, &remembered, at).map(|_| ()));
        let result = match tokio::time::timeout(STATE_WRITE_TIMEOUT, write).await {
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
            Ok(Err(join)) => Err(format!("state file writer failed: {join}")),
            Err(_) => Err(format!(
                "state file write did not finish within {STATE_WRITE_TIMEOUT:?}; answering anyway"
            )),
        };
        let label = if result.is_ok() { "ok" } else { "error" };
        self.shared
            .metrics
            .state_writes
            .get_or_create(&ResultLabel { result: label.into() })
            .inc();
        match result {
            Ok(()) if self.state_file_failing => {
                self.state_file_failing = false;
                info!("state file written again");
            }
            Ok(()) => {}
            Err(msg) if !self.state_file_failing => {
                self.state_file_failing = true;
                error!(error = %msg, "cannot persist the decision state; a restart would forget fences and timelines");
                self.record(None, None, "state_file", msg);
            }
            Err(_) => {}
        }
    }

    fn instant(&self, unix: f64) -> Instant {
        self.epoch.instant(unix)
    }

    /// The servers to probe at the incident interval: every candidate of a
    /// writer alias that has no matching candidate, or whose target's last
    /// probe failed.
    fn incident_servers(&self) -> BTreeSet<String> {
        let st = &self.state;
        let mut set = BTreeSet::new();
        if !st.first_round_done {
            return set;
        }
        for (i, a) in self.config.aliases.iter().enumerate() {
            let s = &st.aliases[i];
            let target_failing = s
                .target
                .is_some_and(|t| !st.servers[t].up || st.servers[t].consecutive_fail > 0);
            // Writer aliases only: the cadence exists to follow a promote. A
            // reader alias without a standby (replay paused for hours, the
            // replica down for maintenance) must not keep its servers at
            // 100 probes per second.
            if fence::is_writer(a.role) && st.pins[i].is_none() && (!s.matched || target_failing) {
                set.extend(a.servers.iter().map(|&x| self.config.servers[x].id.clone()));
            }
        }
        set
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
        for (i, a) in c.aliases.iter().enumerate() {
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

    /// The hook runner's knowledge of an external record changed (a run
    /// starts, or succeeded): it goes to the state file.
    async fn hook_confirmed(&mut self, c: Confirmed) {
        if !self.config.aliases.iter().any(|a| a.name.as_str() == c.alias) {
            return;
        }
        if self.hooked.insert(c.alias, c.record.clone()).as_ref() != Some(&c.record) {
            self.persist().await;
        }
    }

    /// What alias `i` answers now.
    fn served(&self, i: usize) -> Served {
        match self.state.answer(&self.config, i) {
            Answer::Pending => Served::Pending,
            Answer::Target(s) => Served::Server(self.config.servers[s].id.clone()),
            Answer::NoTarget => Served::Servfail,
        }
    }

    /// Logs every alias whose answer changed without a decision event of
    /// this round saying so (a target changed to what is served, a no-match
    /// or fence line, which carry the answer), and remembers every answer.
    fn log_unexplained_answers(&mut self, events: &[Event]) {
        let c = self.config.clone();
        for (i, a) in c.aliases.iter().enumerate() {
            let now = self.served(i);
            let before = self
                .served
                .insert(a.name.to_string(), now.clone())
                .unwrap_or(Served::Pending);
            if now == before || now == Served::Pending {
                continue;
            }
            let explained = events.iter().any(|e| match e {
                Event::TargetChanged { alias, new, .. } => {
                    *alias == i && now == Served::Server(c.servers[*new].id.clone())
                }
                Event::NoMatch { alias, .. } | Event::FenceHeld { alias, .. } => *alias == i,
                _ => false,
            });
            if explained {
                continue;
            }
            let name = a.name.as_str();
            match &now {
                Served::Servfail => {
                    let reason = self.state.servfail_reason(&c, i);
                    error!(
                        alias = name,
                        answer = "servfail",
                        reason = reason.as_str(),
                        "alias answers SERVFAIL"
                    );
                    self.record(
                        Some(name.into()),
                        None,
                        "answer_changed",
                        format!("answers SERVFAIL: {reason}"),
                    );
                }
                Served::Server(id) => {
                    let target = c.servers.iter().find(|s| &s.id == id).map_or("", |s| s.target.as_str());
                    let reason = format!(
                        "answering {id} again; candidates: {}",
                        self.state.candidates_summary(&c, i)
                    );
                    warn!(
                        alias = name,
                        answer = "cname",
                        server = id.as_str(),
                        target,
                        reason = reason.as_str(),
                        "alias answers again"
                    );
                    self.record(Some(name.into()), Some(id.clone()), "answer_changed", reason);
                }
                Served::Pending => {}
            }
        }
    }

    /// One rate-limited line about a server's health.
    fn log_episode(&mut self, line: Line) {
        match line {
            Line::Down {
                server,
                reason,
                was_up,
                flaps,
                ..
            } => {
                let what = if was_up {
                    "server down"
                } else {
                    "server down (not up since the start)"
                };
                if flaps > 0 {
                    warn!(
                        server = server.as_str(),
                        error = reason.as_str(),
                        flaps,
                        "{what}; it also went down {flaps} more time(s) in the last 30s (short episodes not logged one \
                        by one)"
                    );
                } else {
                    warn!(server = server.as_str(), error = reason.as_str(), "{what}");
                }
                self.record(None, Some(server), "server_down", reason);
            }
            Line::Up {
                server,
                state,
                down_for: Some(d),
            } => {
                let down_for = format!("{:.1}s", d.as_secs_f64());
                info!(
                    server = server.as_str(),
                    state = state.as_str(),
                    down_for = down_for.as_str(),
                    "server up"
                );
                self.record(
                    None,
                    Some(server),
                    "server_up",
                    format!("{state} (down for {down_for})"),
                );
            }
            Line::Up {
                server,
                state,
                down_for: None,
            } => {
                info!(server = server.as_str(), state = state.as_str(), "server up");
                self.record(None, Some(server), "server_up", state);
            }
            Line::Flapped { server, flaps, window } => {
                warn!(
                    server = server.as_str(),
                    flaps,
                    "server flapped: {flaps} short down episode(s) in the last {}s, not logged one by one; \
                    it is up now",
                    window.as_secs()
                );
                self.record(
                    None,
                    Some(server),
                    "server_flapped",
                    format!("{flaps} short down episodes in {}s", window.as_secs()),
                );
            }
        }
    }

    /// The `answer`, `server` and `target` of alias `i` for a log line.
    fn answer_fields(&self, i: usize) -> (&'static str, String, String) {
        match self.state.answer(&self.config, i) {
            Answer::Target(s) => (
                "cname",
                self.config.servers[s].id.clone(),
                self.config.servers[s].target.to_string(),
            ),
            Answer::NoTarget => ("servfail", "-".into(), "-".into()),
            Answer::Pending => ("pending", "-".into(), "-".into()),
        }
    }

    /// Publishes routes (when changed), status and gauges.
    fn publish(&mut self) {
        let routes = Routes::from_state(&self.config, &self.state);
        let status = self.status(&routes);
        if **self.shared.routes.load() != routes {
            self.shared.routes.store(Arc::new(routes));
        }
        let m = &self.shared.metrics;
        for (i, s) in self.config.servers.iter().enumerate() {
            let h = &self.state.servers[i];
            let l = ServerLabel { server: s.id.clone() };
            m.server_up.get_or_create(&l).set(h.up as i64);
            m.server_writable
                .get_or_create(&l)
                .set(h.last_state.as_ref().is_some_and(|st| st.writable()) as i64);
        }
        for (i, a) in self.config.aliases.iter().enumerate() {
            // What DNS answers: an alias answering SERVFAIL (drained or
            // fenced target, `servfail` policy, before the first round) has
            // no target, so `sum by (alias) (dns_sidecar_alias_target) == 0`.
            let answered = match self.state.answer(&self.config, i) {
                Answer::Target(s) => Some(s),
                Answer::Pending | Answer::NoTarget => None,
            };
            for &s in &a.servers {
                m.alias_target
                    .get_or_create(&AliasServer {
                        alias: a.name.to_string(),
                        server: self.config.servers[s].id.clone(),
                    })
                    .set((answered == Some(s)) as i64);
            }
        }
        crate::status_reader::set_sizes(&self.config, &self.state, m);
        for (i, a) in self.config.aliases.iter().enumerate() {
            for &s in &a.servers {
                let fenced = self.state.barred(&self.config, i, s).is_some();
                m.fenced
                    .get_or_create(&AliasServer {
                        alias: a.name.to_string(),
                        server: self.config.servers[s].id.clone(),
                    })
                    .set(fenced as i64);
            }
        }
        let incident = self.incident_servers();
        self.shared.incident.send_if_modified(|cur| {
            let differs = **cur != incident;
            if differs {
                *cur = Arc::new(incident);
            }
            differs
        });
        let overrides =
            self.state.pins.iter().filter(|p| p.is_some()).count() + self.state.drained.iter().filter(|d| **d).count();
        m.overrides.set(overrides as i64);
        m.ready.set(self.state.first_round_done as i64);
        self.shared.status.store(Arc::new(status));
    }

    fn unix(&self, at: Instant) -> f64 {
        self.epoch.unix(at)
    }

    fn status(&self, routes: &Routes) -> Status {
        let c = &self.config;
        let st = &self.state;
        let now = Instant::now();
        let aliases = c
            .aliases
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let s = &st.aliases[i];
                // Exactly what the published routes answer.
                let route = routes.get(a.name.as_str()).map(|r| &r.answer);
                let servfail = matches!(route, Some(crate::routes::RouteAnswer::Servfail));
                let (answer, served) = match route {
                    Some(crate::routes::RouteAnswer::Cname(_) | crate::routes::RouteAnswer::Spread(_)) => (
                        "cname",
                        match st.answer(c, i) {
                            Answer::Target(t) => Some(t),
                            _ => None,
                        },
                    ),
                    Some(crate::routes::RouteAnswer::Servfail) => ("servfail", None),
                    _ => ("pending", None),
                };
                AliasStatus {
                    name: a.name.to_string(),
                    role: a.role.as_str().into(),
                    ttl: a.ttl,
                    answer: answer.into(),
                    server: served.map(|t| c.servers[t].id.clone()),
                    target: served.map(|t| c.servers[t].target.to_string()),
                    last_server: s.target.filter(|_| servfail).map(|t| c.servers[t].id.clone()),
                    since: s.since.map(|t| self.unix(t)),
                    reason: s.reason.clone(),
                    pinned: st.pins[i].map(|p| c.servers[p].id.clone()),
                    candidates: a.servers.iter().map(|&x| c.servers[x].id.clone()).collect(),
                    timeline_floor: s.timeline_floor,
                    fences: self.fence_status(i),
                    max_lag_bytes: a.max_lag.bytes,
                    max_lag_seconds: a.max_lag.time.map(|t| t.as_secs_f64()),
                    lagging: s
                        .lagging
                        .iter()
                        .map(|l| LagStatus {
                            server: c.servers[l.server].id.clone(),
                            reason: l.reason.clone(),
                            since: Some(self.unix(l.since)),
                            good_probes: l.good,
                        })
                        .collect(),
                    ..crate::status_reader::reader(c, st, i, &self.shared.metrics)
                }
            })
            .collect();
        let servers = c
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let h = &st.servers[i];
                let ls = h.last_state.as_ref();
                let lag = lag::measure(st, c, i, now);
                ServerStatus {
                    server: s.id.clone(),
                    target: s.target.to_string(),
                    host: s.conn.host.clone(),
                    port: s.conn.port,
                    up: h.up,
                    drained: st.drained[i],
                    writable: ls.map(|x| x.writable()),
                    in_recovery: ls.map(|x| x.in_recovery),
                    read_only: ls.map(|x| x.read_only),
                    timeline: ls.and_then(|x| x.timeline),
                    replay_lag_bytes: ls.and_then(|x| x.replay_lag_bytes),
                    wal_lsn: ls.and_then(|x| x.wal_lsn).map(format_lsn),
                    lag_primary: lag.as_ref().and_then(|l| l.primary).map(|p| c.servers[p].id.clone()),
                    lag_bytes: lag.as_ref().and_then(|l| l.bytes),
                    lag_seconds: lag
                        .as_ref()
                        .and_then(|l| l.time)
                        .map(|t| t.unwrap_or_else(|more| more).as_secs_f64()),
                    diverged: crate::decision::truth::diverged(st, c, i),
                    last_error: h.last_error.clone(),
                    last_success: h.last_success.map(|t| self.unix(t)),
                    last_probe_ms: self.last_latency[i].map(|d| d.as_secs_f64() * 1000.0),
                    consecutive_failures: h.consecutive_fail,
                }
            })
            .collect();
        Status {
            ready: st.first_round_done,
            generated_at: self.unix(now),
            aliases,
            servers,
            history: self.history.iter().cloned().collect(),
        }
    }

    /// Alias `i`'s fences and floor-barred servers, for `/status`.
    fn fence_status(&self, i: usize) -> Vec<FenceStatus> {
        let (c, st) = (&self.config, &self.state);
        let a = &st.aliases[i];
        c.aliases[i]
            .servers
            .iter()
            .filter_map(|&s| {
                let bar = st.barred(c, i, s)?;
                let (kind, timeline, since) = match bar {
                    Bar::Fenced(f) => (f.reason.kind(), f.timeline, Some(self.unix(f.since))),
                    Bar::OlderTimeline { timeline, .. } => ("older-timeline", Some(timeline), None),
                };
                Some(FenceStatus {
                    server: c.servers[s].id.clone(),
                    kind: kind.into(),
                    reason: bar.describe(c),
                    timeline,
                    since,
                    holding: a.held.contains(&s),
                })
            })
            .collect()
    }

    fn record(&mut self, alias: Option<String>, server: Option<String>, kind: &str, message: String) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        let at = self.unix(Instant::now());
        self.history.push_back(HistoryEntry {
            at,
            kind: kind.into(),
            alias,
            server,
            message,
        });
    }

    fn log_event(&mut self, e: &Event, now: Instant) {
        let c = self.config.clone();
        let server = |s: usize| c.servers[s].id.as_str();
        let alias = |a: usize| c.aliases[a].name.as_str();
        let m = &self.shared.metrics;
        match e {
            Event::FirstRound { missing } if missing.is_empty() => {
                info!("first probe round complete; answering aliases");
                self.record(None, None, "first_round", "first probe round complete".into());
            }
            Event::FirstRound { missing } => {
                let names: Vec<&str> = missing.iter().map(|s| server(*s)).collect();
                warn!(
                    servers = ?names,
                    "first probe round closed at the probe deadline without these servers reporting; \
                    answering with what is known"
                );
                self.record(
                    None,
                    None,
                    "first_round",
                    format!("first round closed at the deadline; not reported: {}", names.join(", ")),
                );
            }
            Event::TargetChanged {
                alias: a,
                old,
                new,
                reason,
            } => {
                let target = c.servers[*new].target.as_str();
                let old_target = old.map_or("-", |o| c.servers[o].target.as_str());
                warn!(
                    alias = alias(*a),
                    server = server(*new),
                    target,
                    old_server = old.map_or("-", server),
                    old_target,
                    reason = reason.as_str(),
                    "alias target changed"
                );
                m.target_changes
                    .get_or_create(&AliasLabel {
                        alias: alias(*a).into(),
                    })
                    .inc();
                self.record(
                    Some(alias(*a).into()),
                    Some(server(*new).into()),
                    "target_changed",
                    format!("{} -> {}: {reason}", old.map_or("-", server), server(*new)),
                );
            }
            Event::NoMatch { alias: a, policy, .. } => {
                // Says what DNS answers now, not what the policy would like.
                let served = self.state.answer(&c, *a);
                let (answer, srv, target) = self.answer_fields(*a);
                let reason = match served {
                    Answer::NoTarget => self.state.servfail_reason(&c, *a),
                    _ => format!(
                        "keep-last keeps {srv}; candidates: {}",
                        self.state.candidates_summary(&c, *a)
                    ),
                };
                error!(
                    alias = alias(*a),
                    role = c.aliases[*a].role.as_str(),
                    answer,
                    server = srv.as_str(),
                    target = target.as_str(),
                    policy = policy.as_str(),
                    reason = reason.as_str(),
                    "no candidate server matches the alias's role"
                );
                m.no_match
                    .get_or_create(&AliasLabel {
                        alias: alias(*a).into(),
                    })
                    .inc();
                let said = match served {
                    Answer::NoTarget => "answering SERVFAIL".to_string(),
                    _ => format!("answering {srv}"),
                };
                self.record(
                    Some(alias(*a).into()),
                    matches!(served, Answer::Target(_)).then_some(srv),
                    "no_match",
                    format!("no candidate is {}; {said}: {reason}", c.aliases[*a].role.as_str()),
                );
            }
            Event::SplitBrain {
                alias: a,
                writable,
                chosen,
                by_timeline,
            } => {
                let names: Vec<&str> = writable.iter().map(|s| server(*s)).collect();
                let by = if *by_timeline {
                    "newest timeline"
                } else {
                    "no timeline data: kept the current target"
                };
                error!(
                    alias = alias(*a),
                    writable = ?names,
                    chosen = server(*chosen),
                    by,
                    "SPLIT BRAIN: more than one candidate is writable"
                );
                m.split_brain
                    .get_or_create(&AliasLabel {
                        alias: alias(*a).into(),
                    })
                    .inc();
                self.record(
                    Some(alias(*a).into()),
                    Some(server(*chosen).into()),
                    "split_brain",
                    format!("writable: {}; chose {} by {by}", names.join(", "), server(*chosen)),
                );
            }
            Event::ServerUp {
                server: s,
                state,
                down_for,
            } => {
                if let Some(line) = self.episodes.up(server(*s), state, *down_for) {
                    self.log_episode(line);
                }
            }
            Event::ServerDown {
                server: s,
                error,
                was_up,
            } => {
                if let Some(line) = self.episodes.down(server(*s), error, *was_up, now) {
                    self.log_episode(line);
                }
            }
            Event::Fenced {
                alias: a,
                server: s,
                reason,
            } => {
                warn!(
                    alias = alias(*a),
                    server = server(*s),
                    reason = reason.as_str(),
                    "server fenced: the alias will not move to it"
                );
                m.fences
                    .get_or_create(&AliasLabel {
                        alias: alias(*a).into(),
                    })
                    .inc();
                self.record(
                    Some(alias(*a).into()),
                    Some(server(*s).into()),
                    "fenced",
                    reason.clone(),
                );
            }
            Event::FenceHeld {
                alias: a,
                server: s,
                reason,
            } => {
                // `server` is the fenced one; `serving` what DNS answers instead.
                let (answer, serving, _) = self.answer_fields(*a);
                error!(
                    alias = alias(*a),
                    server = server(*s),
                    reason = reason.as_str(),
                    answer,
                    serving = serving.as_str(),
                    "FENCED: the alias is kept off a server that matches its role, because it has diverged; \
                    run `dns-sidecar unfence` only once it was rebuilt or the cluster recreated"
                );
                m.fence_holds
                    .get_or_create(&AliasLabel {
                        alias: alias(*a).into(),
                    })
                    .inc();
                self.record(
                    Some(alias(*a).into()),
                    Some(server(*s).into()),
                    "fence_held",
                    reason.clone(),
                );
            }
            Event::Unfenced {
                alias: a,
                server: s,
                reason,
            } => {
                info!(
                    alias = alias(*a),
                    server = server(*s),
                    reason = reason.as_str(),
                    "fence lifted"
                );
                self.record(
                    Some(alias(*a).into()),
                    Some(server(*s).into()),
                    "unfenced",
                    reason.clone(),
                );
            }
            Event::LagExceeded {
                alias: a,
                server: s,
                reason,
            } => {
                warn!(
                    alias = alias(*a),
                    server = server(*s),
                    lag = reason.as_str(),
                    "standby too far behind the primary: the alias will not choose it until it is within the limit for \
                    `rise` probes"
                );
                self.record(
                    Some(alias(*a).into()),
                    Some(server(*s).into()),
                    "lag_exceeded",
                    reason.clone(),
                );
            }
            Event::LagRecovered {
                alias: a,
                server: s,
                reason,
            } => {
                info!(
                    alias = alias(*a),
                    server = server(*s),
                    lag = reason.as_str(),
                    "standby within the alias's lag limit again"
                );
                self.record(
                    Some(alias(*a).into()),
                    Some(server(*s).into()),
                    "lag_recovered",
                    reason.clone(),
                );
            }
            Event::SetChanged { alias: a, old, new } => {
                let ids = |v: &[usize]| v.iter().map(|&s| server(s)).collect::<Vec<_>>().join(", ");
                let (old, new) = (ids(old), ids(new));
                info!(
                    alias = alias(*a),
                    set = new.as_str(),
                    old_set = old.as_str(),
                    "reader set changed"
                );
                self.record(
                    Some(alias(*a).into()),
                    None,
                    "set_changed",
                    format!("[{old}] -> [{new}]"),
                );
            }
            Event::Override { summary } => {
                warn!(summary = summary.as_str(), "manual override");
                self.record(None, None, "override", summary.clone());
            }
        }
    }
}
