//! `[[forward]]`: zones sent to their own resolvers instead of `[upstream]`.
//!
//! Each zone takes the keys `[upstream]` takes (checked by the same code,
//! [`super::upstream::settings`]) plus `cache`. A zone must not be the root
//! (that is `[upstream]`), nor declared twice, nor inside (or equal to) one
//! of the sidecar's own `[[zones]]`: own zones win, so none of its names
//! would ever be forwarded. A forward zone that *contains* an own zone is
//! fine: the own zone's names are answered here, the rest forwarded.

use std::net::SocketAddr;

use super::ctx::Ctx;
use super::upstream::{settings, Fields};
use crate::config::raw::RawForward;
use crate::config::{ConfigError, ForwardZone, Zone};

pub(super) fn check(
    cx: &Ctx<'_>,
    raw: Vec<RawForward>,
    listen: &[SocketAddr],
    own: &[Zone],
) -> Result<Vec<ForwardZone>, ConfigError> {
    let mut zones: Vec<ForwardZone> = Vec::new();
    for f in raw {
        let zone = f.zone.get_ref().clone();
        let span = Some(f.zone.span());
        if zone.label_count() == 0 {
            return cx.err(
                span,
                "forward zone `.` (the root) is what [upstream] is for",
                "move these servers to [upstream] servers = [...]: it is the default for every name no [[forward]] zone matches",
            );
        }
        if zones.iter().any(|z| z.zone == zone) {
            return cx.err(
                span,
                format!("forward zone `{zone}` is declared twice"),
                "merge the two [[forward]] tables: one zone has one list of servers, tried in order",
            );
        }
        if let Some(o) = own.iter().find(|o| zone.is_within(&o.name)) {
            let what = if o.name == zone {
                format!(
                    "forward zone `{zone}` is a zone this sidecar serves itself ([[zones]] name = \"{}\")",
                    o.name
                )
            } else {
                format!(
                    "forward zone `{zone}` is inside `{}`, a zone this sidecar serves itself",
                    o.name
                )
            };
            return cx.err(
                span,
                format!("{what}; its names would never be forwarded"),
                "the sidecar's own zones are answered before any forwarding: remove this [[forward]], or forward a zone that is not one of [[zones]] (a forward zone may contain an own zone, not the reverse)",
            );
        }
        let fields = Fields {
            table: "forward",
            servers: &f.servers,
            timeout: &f.timeout,
            max_fails: &f.max_fails,
            health_check: &f.health_check,
        };
        let upstream = settings(
            cx,
            &fields,
            listen,
            &format!(
                "name at least one resolver for `{zone}`, e.g. servers = [\"10.1.0.4\"], or remove this [[forward]] to send its names to [upstream]"
            ),
        )?;
        zones.push(ForwardZone {
            zone,
            upstream,
            cache: f.cache.unwrap_or(true),
        });
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Config;

    /// Line 1 `[dns]`, 2 listen, 3 `[upstream]`, 4 servers, 5 `[[zones]]`,
    /// 6 name; `[[forward]]` tables follow from line 7.
    const BASE: &str = "[dns]\nlisten = [\"127.0.0.1:5353\"]\n[upstream]\nservers = [\"127.0.0.1:5300\"]\n\
        [[zones]]\nname = \"db.internal\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::from_toml(Path::new("f.toml"), &format!("{BASE}{extra}")).map_err(|e| e.to_string())
    }

    /// The error names file, line, the line itself and a hint; `needles`
    /// are in it.
    fn fails_at(extra: &str, line: usize, needles: &[&str]) {
        let msg = parse(extra).expect_err("the config was accepted");
        assert!(msg.starts_with(&format!("f.toml:{line}:")), "wrong place: {msg}");
        assert!(msg.contains(&format!("\n  {line:>4} | ")), "no source line: {msg}");
        let hint = msg.split_once("\n  hint: ").map(|(_, h)| h.trim());
        assert!(hint.is_some_and(|h| h.len() > 10), "no hint: {msg}");
        for n in needles {
            assert!(msg.contains(n), "{msg:?} lacks {n:?}");
        }
    }

    #[test]
    fn forward_zones_with_their_own_settings_and_defaults() {
        let c = parse(
            "[[forward]]\nzone = \"Corp.Example.com\"\nservers = [\"10.1.0.4\", \"10.1.0.5:5353\"]\n\
            timeout = \"1s\"\nmax_fails = 2\nhealth_check = \"500ms\"\ncache = false\n\
            [[forward]]\nzone = \"db.example.com.\"\nservers = [\"127.0.0.1:5301\"]\n",
        )
        .unwrap();
        assert_eq!(c.forward.len(), 2);
        let corp = &c.forward[0];
        assert_eq!(corp.zone.as_str(), "corp.example.com.");
        assert_eq!(
            corp.upstream.servers,
            vec!["10.1.0.4:53".parse().unwrap(), "10.1.0.5:5353".parse().unwrap()]
        );
        assert_eq!(corp.upstream.timeout, Duration::from_secs(1));
        assert_eq!((corp.upstream.max_fails, corp.cache), (2, false));
        assert_eq!(corp.upstream.health_check, Duration::from_millis(500));
        let db = &c.forward[1];
        assert!(db.cache, "cached by default");
        assert_eq!(
            db.upstream.timeout,
            Duration::from_millis(1500),
            "[upstream]'s defaults"
        );
        assert_eq!(db.upstream.max_fails, 5);
        let zones: Vec<&str> = c.upstreams().map(|(z, _)| z).collect();
        assert_eq!(zones, [".", "corp.example.com.", "db.example.com."]);
    }

    #[test]
    fn a_forward_zone_may_contain_an_own_zone() {
        // Own zones win (longest match, authoritative first): `db.internal.`
        // is answered here, the rest of `internal.` forwarded.
        let c = parse("[[forward]]\nzone = \"internal\"\nservers = [\"127.0.0.1:5301\"]\n").unwrap();
        assert_eq!(c.forward[0].zone.as_str(), "internal.");
    }

    #[test]
    fn fleet_mode_no_servers_no_aliases_no_zones() {
        let c = Config::from_toml(
            Path::new("f.toml"),
            "[dns]\nlisten = [\"127.0.0.1:5353\"]\n[upstream]\nservers = [\"127.0.0.1:5300\"]\n\
            [[forward]]\nzone = \"db.internal\"\nservers = [\"127.0.0.1:5301\", \"127.0.0.1:5302\"]\ncache = false\n",
        )
        .unwrap();
        assert!(c.servers.is_empty() && c.aliases.is_empty() && c.zones.is_empty());
        assert!(!c.forward[0].cache);
    }

    #[test]
    fn each_bad_forward_zone_names_line_and_fix() {
        fails_at(
            "[[forward]]\nzone = \"x.db.internal\"\nservers = [\"127.0.0.1:5301\"]\n",
            8,
            &[
                "forward zone `x.db.internal.` is inside `db.internal.`",
                "never be forwarded",
                "remove this",
            ],
        );
        fails_at(
            "[[forward]]\nzone = \"DB.internal.\"\nservers = [\"127.0.0.1:5301\"]\n",
            8,
            &[
                "`db.internal.` is a zone this sidecar serves itself",
                "never be forwarded",
            ],
        );
        fails_at(
            "[[forward]]\nzone = \"corp.example.com\"\nservers = [\"127.0.0.1:5301\"]\n\
            [[forward]]\nzone = \"Corp.example.com.\"\nservers = [\"127.0.0.1:5302\"]\n",
            11,
            &["forward zone `corp.example.com.` is declared twice", "merge the two"],
        );
        fails_at(
            "[[forward]]\nzone = \"corp.example.com\"\nservers = [\"127.0.0.1:5353\"]\n",
            9,
            &[
                "forward 127.0.0.1:5353 is one of this sidecar's own listeners",
                "would loop",
            ],
        );
        fails_at(
            "[[forward]]\nzone = \"corp.example.com\"\nservers = []\n",
            9,
            &["`forward.servers` is empty", "for `corp.example.com.`"],
        );
        fails_at(
            "[[forward]]\nzone = \".\"\nservers = [\"127.0.0.1:5301\"]\n",
            8,
            &["the root", "[upstream]"],
        );
        fails_at(
            "[[forward]]\nzone = \"corp.example.com\"\nservers = [\"127.0.0.1:5301\"]\ntimeout = \"6s\"\n",
            10,
            &["`forward.timeout` of 6s is longer than the maximum, 5s"],
        );
        fails_at(
            "[[forward]]\nzone = \"corp.example.com\"\nservers = [\"127.0.0.1:5301\"]\ncahce = false\n",
            10,
            &["unknown field `cahce`"],
        );
    }
}
