//! Reader aliases spread over several standbys (`spread`, `weights`,
//! `prefer`): the configured policy. The selection itself is pure and lives
//! in [`crate::decision::select`]; the per-query choice in [`crate::routes`].

use serde::Deserialize;

/// How a reader alias spreads its answers over the candidates that match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Spread {
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Spread::First => "first",
            Spread::Rotate => "rotate",
            Spread::Client => "client",
        }
    }

    /// Whether answers go to several servers (a set), not one.
    pub(crate) fn is_set(self) -> bool {
        self != Spread::First
    }
}

/// Which matching candidates a reader alias prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Prefer {
    /// The alias's `servers` order (today's behaviour).
    #[default]
    Order,
    /// The lowest median probe round-trip time, with hysteresis; the others
    /// when the near ones do not match.
    Nearest,
}

impl Prefer {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Prefer::Order => "order",
            Prefer::Nearest => "nearest",
        }
    }
}

/// The largest weight: keeps a rotation's schedule (the sum of the
/// weights) short enough to precompute.
pub(crate) const MAX_WEIGHT: u32 = 100;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Prefer, Spread};

    /// Servers a, b, c; one alias (line 12 on) with `lines` appended.
    fn parse(lines: &str) -> Result<Config, String> {
        let text = format!(
            "[dns]\nlisten = [\"127.0.0.1:5353\"]\n[[zones]]\nname = \"db.internal\"\n[probe]\nuser = \"p\"\n\
            [servers.a]\ntarget = \"pg-a.test\"\n[servers.b]\ntarget = \"pg-b.test\"\n[servers.c]\ntarget = \"pg-c.test\"\n\
            [[aliases]]\nname = \"ro.db.internal\"\nservers = [\"a\", \"b\", \"c\"]\n{lines}\n"
        );
        Config::from_toml(Path::new("t.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_values() {
        let a = &parse("role = \"standby\"").unwrap().aliases[0];
        assert_eq!(
            (a.spread, a.prefer, a.weights.clone()),
            (Spread::First, Prefer::Order, vec![1, 1, 1])
        );
        let a = &parse("role = \"read-only\"\nspread = \"client\"\nprefer = \"nearest\"\nweights = { c = 3, a = 0 }")
            .unwrap()
            .aliases[0];
        assert_eq!(
            (a.spread, a.prefer, a.weights.clone()),
            (Spread::Client, Prefer::Nearest, vec![0, 1, 3])
        );
        let a = &parse("role = \"prefer-standby\"\nprefer = \"nearest\"")
            .unwrap()
            .aliases[0];
        assert_eq!((a.spread, a.prefer), (Spread::First, Prefer::Nearest));
    }

    #[test]
    fn located_errors() {
        for (lines, line, words) in [
            (
                "spread = \"rotate\"",
                16,
                "role `read-write`: spread, weights and prefer apply only to reader",
            ),
            ("role = \"primary\"\nprefer = \"nearest\"", 17, "role `primary`"),
            (
                "role = \"any\"\nspread = \"client\"",
                17,
                "must answer exactly one server",
            ),
            (
                "role = \"standby\"\nweights = { a = 2 }",
                17,
                "spread = \"first\", which answers one server",
            ),
            (
                "role = \"standby\"\nspread = \"rotate\"\nweights = { a = 2, d = 1 }",
                18,
                "`d`, which is not one of",
            ),
            (
                "role = \"standby\"\nspread = \"rotate\"\nweights = { a = 101 }",
                18,
                "more than 100",
            ),
            (
                "role = \"standby\"\nspread = \"rotate\"\nweights = { a = 0, b = 0, c = 0 }",
                18,
                "weight 0 for every",
            ),
            (
                "role = \"standby\"\nspread = \"round-robin\"",
                17,
                "unknown variant `round-robin`",
            ),
            ("role = \"standby\"\nprefer = \"near\"", 17, "unknown variant `near`"),
        ] {
            let err = parse(lines).expect_err(lines);
            assert!(
                err.starts_with(&format!("t.toml:{line}:")) && err.contains(words),
                "{lines}: {err}"
            );
        }
    }
}
