//! The immutable snapshot the DNS handler reads.
//!
//! The engine builds a new [`Routes`] after each decision that changes an
//! answer and publishes it through `ArcSwap`; the query path does one atomic
//! load and never locks, waits on a probe, or talks to PostgreSQL.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::decision::{Answer, State};
use crate::name::DnsName;

/// What every alias answers right now, indexed like `Config::aliases`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    pub aliases: Vec<RouteAnswer>,
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

/// Shared handle to the current snapshot.
pub type SharedRoutes = Arc<ArcSwap<Routes>>;

impl Routes {
    /// Every alias pending: what is served before the first round.
    pub fn pending(config: &Config) -> Routes {
        Routes { aliases: vec![RouteAnswer::Pending; config.aliases.len()] }
    }

    /// The snapshot for a decision state.
    pub fn from_state(config: &Config, state: &State) -> Routes {
        let aliases = (0..config.aliases.len())
            .map(|i| match state.answer(config, i) {
                Answer::Pending => RouteAnswer::Pending,
                Answer::Target(s) => RouteAnswer::Cname(config.servers[s].target.clone()),
                Answer::NoTarget => RouteAnswer::Servfail,
            })
            .collect();
        Routes { aliases }
    }
}
