//! Answer changes no decision event explains (a drain of the target kept by
//! keep-last, an undrain): each still gets its log line and history entry.

use tracing::{error, warn};

use crate::config::AliasId;
use crate::decision::{Answer, Event};
use crate::engine::{Engine, Served};
use crate::status::HistoryKind;

impl Engine {
    /// Logs every alias whose answer changed without a decision event of
    /// this round saying so (a target changed to what is served, a no-match
    /// or fence line, which carry the answer), and remembers every answer.
    pub(in crate::engine) fn log_unexplained_answers(&mut self, events: &[Event]) {
        let c = self.config.clone();
        for (i, a) in c.enumerate_aliases() {
            let now = self.served(i);
            let before = self
                .served
                .insert(a.name.to_string(), now.clone())
                .unwrap_or(Answer::Pending);
            if now == before || now == Answer::Pending || self.explained(events, i, &now) {
                continue;
            }
            match &now {
                Answer::NoTarget => self.answers_servfail(i),
                Answer::Target(id) => self.answers_again(i, id),
                Answer::Pending => {}
            }
        }
    }

    /// Whether one of `events` already says that alias `i` answers `now`.
    fn explained(&self, events: &[Event], i: AliasId, now: &Served) -> bool {
        events.iter().any(|e| match e {
            Event::TargetChanged { alias, new, .. } => {
                *alias == i && *now == Answer::Target(self.config.servers[*new].id.clone())
            }
            Event::NoMatch { alias, .. } | Event::FenceHeld { alias, .. } => *alias == i,
            _ => false,
        })
    }

    fn answers_servfail(&mut self, i: AliasId) {
        let c = self.config.clone();
        let name = c.aliases[i].name.as_str();
        let reason = self.state.servfail_reason(&c, i);
        error!(
            alias = name,
            answer = "servfail",
            reason = reason.as_str(),
            "alias answers SERVFAIL"
        );
        let message = format!("answers SERVFAIL: {reason}");
        self.record(HistoryKind::AnswerChanged, Some(name.into()), None, message);
    }

    fn answers_again(&mut self, i: AliasId, id: &str) {
        let c = self.config.clone();
        let name = c.aliases[i].name.as_str();
        let target = c.servers.iter().find(|s| s.id == id).map_or("", |s| s.target.as_str());
        let reason = format!(
            "answering {id} again; candidates: {}",
            self.state.candidates_summary(&c, i)
        );
        warn!(
            alias = name,
            answer = "cname",
            server = id,
            target,
            reason = reason.as_str(),
            "alias answers again"
        );
        self.record(HistoryKind::AnswerChanged, Some(name.into()), Some(id.into()), reason);
    }
}
