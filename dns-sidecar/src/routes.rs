//! The immutable snapshot the DNS handler reads.
//!
//! The engine builds a new [`Routes`] after each decision that changes an
//! answer and publishes it through `ArcSwap`; the query path does one atomic
//! load and one hash lookup, and never locks, waits on a probe, or talks to
//! PostgreSQL. Aliases are keyed by canonical name (not by position), so a
//! snapshot and a DNS handler built from different config generations during
//! a reload still agree on what each name means.

use std::collections::HashMap;

use crate::config::Config;
use crate::decision::{Answer, State};
use crate::name::DnsName;

/// What every alias answers right now, by canonical name (`prod.db.internal.`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routes {
    pub aliases: HashMap<String, AliasRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRoute {
    pub ttl: u32,
    pub answer: RouteAnswer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAnswer {
    /// The first probe round has not finished: SERVFAIL rather than a guess.
    Pending,
    /// CNAME to this name.
    Cname(DnsName),
    /// No server matches and the policy says SERVFAIL.
    Servfail,
}

impl Routes {
    /// Every alias pending: what is served before the first round.
    pub fn pending(config: &Config) -> Routes {
        let aliases = config
            .aliases
            .iter()
            .map(|a| {
                (
                    a.name.as_str().to_string(),
                    AliasRoute {
                        ttl: a.ttl,
                        answer: RouteAnswer::Pending,
                    },
                )
            })
            .collect();
        Routes { aliases }
    }

    /// The snapshot for a decision state.
    pub fn from_state(config: &Config, state: &State) -> Routes {
        let aliases = config
            .aliases
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let answer = match state.answer(config, i) {
                    Answer::Pending => RouteAnswer::Pending,
                    Answer::Target(s) => RouteAnswer::Cname(config.servers[s].target.clone()),
                    Answer::NoTarget => RouteAnswer::Servfail,
                };
                (a.name.as_str().to_string(), AliasRoute { ttl: a.ttl, answer })
            })
            .collect();
        Routes { aliases }
    }

    /// The answer for `name` (canonical form).
    pub fn get(&self, name: &str) -> Option<&AliasRoute> {
        self.aliases.get(name)
    }
}
