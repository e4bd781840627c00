//! Reader aliases spread over several standbys (`spread`, `weights`,
//! `prefer`): the configured policy. The selection itself is pure and lives
//! in [`crate::decision::select`]; the per-query choice in [`crate::routes`].

use serde::Deserialize;

/// How a reader alias spreads its answers over the candidates that match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Spread {
    /// One server: the first that matches (today's behaviour; with
    /// `prefer = "nearest"`, the nearest that matches).
    #[default]
    First,
    /// Every matching candidate in turn, per query, by weight (smooth
    /// weighted round robin), like Aurora's reader endpoint.
    Rotate,
    /// One matching candidate per client address (IPv4 /32, IPv6 /64), by
    /// weighted rendezvous hashing: a client keeps its server (and its
    /// cache) while that server matches, and a server leaving moves only its
    /// own clients.
    Client,
}

impl Spread {
    pub fn as_str(self) -> &'static str {
        match self {
            Spread::First => "first",
            Spread::Rotate => "rotate",
            Spread::Client => "client",
        }
    }

    /// Whether answers go to several servers (a set), not one.
    pub fn is_set(self) -> bool {
        self != Spread::First
    }
}

/// Which matching candidates a reader alias prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Prefer {
    /// The alias's `servers` order (today's behaviour).
    #[default]
    Order,
    /// The lowest median probe round-trip time, with hysteresis; the others
    /// when the near ones do not match.
    Nearest,
}

impl Prefer {
    pub fn as_str(self) -> &'static str {
        match self {
            Prefer::Order => "order",
            Prefer::Nearest => "nearest",
        }
    }
}

/// The largest weight: keeps a rotation's schedule (the sum of the
/// weights) short enough to precompute.
pub const MAX_WEIGHT: u32 = 100;
