//! Events become log lines, metrics, `/status` history entries.

use super::*;

impl Engine {
    /// Logs (one line each) and records what a reload did to the decision
    /// state, and makes the answers remembered for [`Self::log_unexplained_answers`]
    /// follow renamed servers (a rename changes no answer).
    pub(super) fn note_reload(&mut self, notes: &[ReloadNote]) {
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

    /// Logs every alias whose answer changed without a decision event of
    /// this round saying so (a target changed to what is served, a no-match
    /// or fence line, which carry the answer), and remembers every answer.
    pub(super) fn log_unexplained_answers(&mut self, events: &[Event]) {
        let c = self.config.clone();
        for (i, a) in c.enumerate_aliases() {
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
    pub(super) fn log_episode(&mut self, line: Line) {
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
    pub(super) fn answer_fields(&self, i: AliasId) -> (&'static str, String, String) {
        let answer = self.state.answer(&self.config, i);
        match answer {
            Answer::Target(s) => (
                answer.kind().label(),
                self.config.servers[s].id.clone(),
                self.config.servers[s].target.to_string(),
            ),
            Answer::NoTarget | Answer::Pending => (answer.kind().label(), "-".into(), "-".into()),
        }
    }

    pub(super) fn record(&mut self, alias: Option<String>, server: Option<String>, kind: &str, message: String) {
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

    pub(super) fn log_event(&mut self, e: &Event, now: Instant) {
        let c = self.config.clone();
        let server = |s: ServerId| c.servers[s].id.as_str();
        let alias = |a: AliasId| c.aliases[a].name.as_str();
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
                let ids = |v: &[ServerId]| v.iter().map(|&s| server(s)).collect::<Vec<_>>().join(", ");
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
