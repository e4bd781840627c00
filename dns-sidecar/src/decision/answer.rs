//! What an alias answers: the one encoding of it ([`Answer`], labelled by
//! [`AnswerKind`]) that the routes snapshot, `/status`, the logs and the
//! metrics derive theirs from.

use super::{fence, truth, State};
use crate::config::{AliasId, Config, NoMatchPolicy, ServerId};

/// What the DNS side should answer for an alias right now. The server is
/// named by its [`ServerId`] in the decision, and by its id (a name, which
/// survives a reload) where the engine remembers what was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer<S = ServerId> {
    /// First probe round not finished.
    Pending,
    Target(S),
    /// No server matches and the policy (or the lack of any earlier target) says SERVFAIL.
    NoTarget,
}

/// The kind of an answer, as logs and `/status` label it (`answer =
/// "cname"`). The routes snapshot's answers have the same kinds
/// ([`crate::routes::RouteAnswer::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerKind {
    /// Nothing yet: SERVFAIL until the first probe round closes.
    Pending,
    /// A CNAME to a server (one, or one of a spreading alias's set).
    Cname,
    /// SERVFAIL: no server may be answered.
    Servfail,
}

impl AnswerKind {
    /// The label: `pending`, `cname` or `servfail`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            AnswerKind::Pending => "pending",
            AnswerKind::Cname => "cname",
            AnswerKind::Servfail => "servfail",
        }
    }
}

impl<S> Answer<S> {
    pub(crate) fn kind(&self) -> AnswerKind {
        match self {
            Answer::Pending => AnswerKind::Pending,
            Answer::Target(_) => AnswerKind::Cname,
            Answer::NoTarget => AnswerKind::Servfail,
        }
    }

    /// The same answer with its server named by `f`.
    pub(crate) fn map<T>(self, f: impl FnOnce(S) -> T) -> Answer<T> {
        match self {
            Answer::Pending => Answer::Pending,
            Answer::Target(s) => Answer::Target(f(s)),
            Answer::NoTarget => Answer::NoTarget,
        }
    }
}

impl State {
    /// The answer for alias `i` under `config`'s policy.
    pub(crate) fn answer(&self, config: &Config, i: AliasId) -> Answer {
        let a = &self.aliases[i];
        if let Some(p) = self.pins[i] {
            return Answer::Target(p);
        }
        // Writers never answer a fenced server; readers never a diverged one
        // (`keep-last` included).
        let barred = |t: ServerId| match fence::is_writer(config.aliases[i].role) {
            true => self.barred(config, i, t).is_some(),
            false => truth::diverged(self, config, t).is_some(),
        };
        match a.target {
            _ if !self.first_round_done => Answer::Pending,
            Some(t) if self.drained[t] || barred(t) => Answer::NoTarget,
            Some(t) if a.matched || config.aliases[i].on_no_match == NoMatchPolicy::KeepLast => Answer::Target(t),
            _ => Answer::NoTarget,
        }
    }

    /// The servers alias `i` answers with their weights, when
    /// [`State::answer`] is a target: that one alone, unless the alias
    /// spreads (`rotate`, `client`) and matched at the last decision (not
    /// pinned, not keeping its last target): then its whole set.
    pub(crate) fn answer_set(&self, config: &Config, i: AliasId) -> Vec<(ServerId, u32)> {
        let Answer::Target(t) = self.answer(config, i) else {
            return Vec::new();
        };
        let alias = &config.aliases[i];
        let a = &self.aliases[i];
        if self.pins[i].is_some() || !alias.spread.is_set() || !a.matched || !a.set.contains(&t) {
            return vec![(t, 1)];
        }
        let weight = |s: ServerId| {
            let k = alias.servers.iter().position(|&x| x == s);
            k.and_then(|k| alias.weights.get(k).copied()).unwrap_or(1)
        };
        (a.set.iter().copied())
            .filter(|&s| !self.drained[s] && truth::diverged(self, config, s).is_none())
            .map(|s| (s, weight(s)))
            .collect()
    }
}
