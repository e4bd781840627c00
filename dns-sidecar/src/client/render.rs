//! How `dns-sidecar status` looks: the `/status` document as tables for a
//! person at a terminal (`--json` prints the document itself).
//!
//! Pure functions of the document and the clock, so the layout is tested
//! without a listener; `now` is an argument for the same reason.

use std::fmt::Write as _;

use crate::status::{AliasStatus, HistoryEntry, ServerStatus, Status};

/// "0 B", "12.0 KiB", "3.4 MiB".
pub(crate) use crate::decision::lag::bytes;

/// How many history entries `status` shows.
const HISTORY_SHOWN: usize = 10;

/// "12s ago", "3m05s ago", "2h10m ago", "4d ago"; `-` for none.
pub(crate) fn ago(then: Option<f64>, now: f64) -> String {
    let Some(then) = then else { return "-".into() };
    let d = now - then;
    if !d.is_finite() || d < 1.0 {
        return "just now".into();
    }
    let s = d as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m{:02}s ago", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m ago", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h ago", s / 86_400, s % 86_400 / 3600),
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let n = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("  ");
        for (i, c) in cells.enumerate() {
            if i + 1 < n {
                let _ = write!(s, "{c:<w$}  ", w = width[i]);
            } else {
                s.push_str(c);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, &mut header.iter().copied());
    for r in rows {
        line(out, &mut r.iter().map(String::as_str));
    }
}

/// A cell's text, or `-` for nothing, so an empty cell still reads as one.
fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// One row per reader alias candidate: the set's members first, then the
/// excluded ones with why.
fn reader_rows(s: &Status) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for a in &s.aliases {
        let Some(spread) = &a.spread else { continue };
        let policy = match a.prefer.as_deref() {
            Some("nearest") => format!("{spread}, nearest"),
            _ => spread.clone(),
        };
        for m in &a.set {
            let share = match (m.share, m.answers) {
                (Some(f), Some(n)) => format!("{:.1}% ({n})", f * 100.0),
                (None, Some(n)) => format!("- ({n})"),
                _ => "-".into(),
            };
            rows.push(vec![
                a.name.clone(),
                policy.clone(),
                m.server.clone(),
                "yes".into(),
                m.weight.to_string(),
                share,
                m.rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms")),
                "-".into(),
            ]);
        }
        for x in &a.excluded {
            rows.push(vec![
                a.name.clone(),
                policy.clone(),
                x.server.clone(),
                "no".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                x.reason.clone(),
            ]);
        }
    }
    rows
}

/// The human-readable `status` output: a headline, then one section per
/// table (the optional ones only when they have rows).
pub(crate) fn render_status(s: &Status, addr: &str, now: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dns-sidecar at {addr}: {} (status from {})",
        if s.ready { "ready" } else { "NOT READY" },
        if s.generated_at > 0.0 {
            ago(Some(s.generated_at), now)
        } else {
            "never".into()
        }
    );
    aliases(&mut out, s, now);
    fences(&mut out, s, now);
    lagging(&mut out, s, now);
    let readers = reader_rows(s);
    if !readers.is_empty() {
        out.push_str("\nReader sets (the servers each reader alias answers, their share of answers, and why the others are out)\n");
        table(
            &mut out,
            &[
                "ALIAS", "SPREAD", "SERVER", "IN SET", "WEIGHT", "SHARE", "RTT", "WHY NOT",
            ],
            &readers,
        );
    }
    let diverged: Vec<Vec<String>> = s
        .servers
        .iter()
        .filter_map(|v| Some(vec![v.server.clone(), v.diverged.clone()?]))
        .collect();
    if !diverged.is_empty() {
        out.push_str("\nDiverged servers (no alias answers them for reads, and their lag is not measured)\n");
        table(&mut out, &["SERVER", "REASON"], &diverged);
    }
    servers(&mut out, s, now);
    history(&mut out, s, now);
    out
}

/// The aliases table: what each answers, since when, and why.
fn aliases(out: &mut String, s: &Status, now: f64) {
    out.push_str("\nAliases\n");
    if s.aliases.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let rows: Vec<Vec<String>> = s.aliases.iter().map(|a| alias_row(a, now)).collect();
    table(
        out,
        &[
            "ALIAS",
            "ROLE",
            "ANSWER",
            "SERVER (TARGET)",
            "SINCE",
            "PINNED",
            "REASON",
        ],
        &rows,
    );
}

fn alias_row(a: &AliasStatus, now: f64) -> Vec<String> {
    let target = match (&a.server, &a.target, &a.last_server) {
        (Some(s), Some(t), _) => format!("{s} ({t})"),
        (Some(s), None, _) => s.clone(),
        (None, Some(t), _) => t.clone(),
        (None, None, Some(last)) => format!("- (last: {last})"),
        (None, None, None) => "-".into(),
    };
    // A spreading alias answers more than its lead.
    let target = match a.set.len() {
        n if n > 1 => format!("{target} +{} more", n - 1),
        _ => target,
    };
    vec![
        a.name.clone(),
        a.role.clone(),
        a.answer.clone(),
        target,
        ago(a.since, now),
        or_dash(a.pinned.as_deref()),
        or_dash(Some(&a.reason)),
    ]
}

/// The fences, when there are any.
fn fences(out: &mut String, s: &Status, now: f64) {
    let fences: Vec<Vec<String>> = s
        .aliases
        .iter()
        .flat_map(|a| {
            a.fences.iter().map(|f| {
                vec![
                    a.name.clone(),
                    f.server.clone(),
                    f.kind.clone(),
                    if f.holding { "HOLDING" } else { "-" }.into(),
                    f.since.map_or("-".into(), |t| ago(Some(t), now)),
                    f.reason.clone(),
                ]
            })
        })
        .collect();
    if !fences.is_empty() {
        out.push_str("\nFences (the alias will not move to these servers; see `dns-sidecar unfence --help`)\n");
        table(out, &["ALIAS", "SERVER", "KIND", "HOLDING", "SINCE", "REASON"], &fences);
    }
}

/// The standbys kept off for lag, when there are any.
fn lagging(out: &mut String, s: &Status, now: f64) {
    let lagging: Vec<Vec<String>> = s
        .aliases
        .iter()
        .flat_map(|a| {
            a.lagging.iter().map(|l| {
                vec![
                    a.name.clone(),
                    l.server.clone(),
                    l.good_probes.to_string(),
                    l.since.map_or("-".into(), |t| ago(Some(t), now)),
                    l.reason.clone(),
                ]
            })
        })
        .collect();
    if !lagging.is_empty() {
        out.push_str("\nLagging standbys (kept off until within the alias's lag limit for `rise` probes in a row)\n");
        table(out, &["ALIAS", "SERVER", "GOOD PROBES", "SINCE", "LAG"], &lagging);
    }
}

/// The servers table: up, drained, role seen, lag, last success and error.
fn servers(out: &mut String, s: &Status, now: f64) {
    out.push_str("\nServers\n");
    if s.servers.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let rows: Vec<Vec<String>> = s.servers.iter().map(|v| server_row(v, now)).collect();
    table(
        out,
        &[
            "SERVER",
            "UP",
            "DRAINED",
            "STATE",
            "TIMELINE",
            "LAG",
            "LAST OK",
            "LAST ERROR",
        ],
        &rows,
    );
}

fn server_row(v: &ServerStatus, now: f64) -> Vec<String> {
    let state = match (v.writable, v.in_recovery, v.read_only) {
        (Some(true), _, _) => "writable",
        (_, Some(true), _) => "standby",
        (_, _, Some(true)) => "read-only",
        _ => "unknown",
    };
    // Marked here too, so a diverged writable server (a fenced old
    // primary) does not read as a healthy one.
    let state = match v.diverged {
        Some(_) => format!("{state} (DIVERGED)"),
        None => state.to_string(),
    };
    // Behind the primary when known (what max_lag limits), else
    // received but not replayed.
    let lag = match (v.in_recovery, v.lag_bytes, v.replay_lag_bytes) {
        (Some(true), Some(l), _) => bytes(l),
        (Some(true), None, Some(l)) => format!("{} (unreplayed)", bytes(l)),
        _ => "-".into(),
    };
    let err = match (&v.last_error, v.consecutive_failures) {
        (Some(e), n) if n > 0 => format!("{e} ({n} in a row)"),
        (Some(e), _) => e.clone(),
        (None, _) => "-".into(),
    };
    vec![
        v.server.clone(),
        if v.up { "up" } else { "DOWN" }.into(),
        if v.drained { "drained" } else { "-" }.into(),
        state,
        v.timeline.map_or("-".into(), |t| t.to_string()),
        lag,
        if v.last_success.is_some() {
            ago(v.last_success, now)
        } else {
            "never".into()
        },
        err,
    ]
}

/// The last [`HISTORY_SHOWN`] history entries.
fn history(out: &mut String, s: &Status, now: f64) {
    let shown = s.history.len().min(HISTORY_SHOWN);
    let _ = writeln!(out, "\nHistory (last {shown} of {})", s.history.len());
    if s.history.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let rows: Vec<Vec<String>> = s.history[s.history.len() - shown..]
        .iter()
        .map(|h: &HistoryEntry| {
            let subject = match (&h.alias, &h.server) {
                (Some(a), Some(v)) => format!("{a} ({v})"),
                (Some(a), None) => a.clone(),
                (None, Some(v)) => v.clone(),
                (None, None) => "-".into(),
            };
            vec![ago(Some(h.at), now), h.kind.clone(), subject, h.message.clone()]
        })
        .collect();
    table(out, &["WHEN", "KIND", "SUBJECT", "MESSAGE"], &rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{HistoryKind, LagStatus};

    #[test]
    fn relative_times_and_sizes() {
        assert_eq!(ago(None, 100.0), "-");
        assert_eq!(ago(Some(99.5), 100.0), "just now");
        assert_eq!(ago(Some(200.0), 100.0), "just now");
        assert_eq!(ago(Some(88.0), 100.0), "12s ago");
        assert_eq!(ago(Some(0.0), 185.0), "3m05s ago");
        assert_eq!(ago(Some(0.0), 7800.0), "2h10m ago");
        assert_eq!(ago(Some(0.0), 3.0 * 86_400.0 + 7200.0), "3d02h ago");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(12 * 1024), "12.0 KiB");
        assert_eq!(bytes(3_565_158), "3.4 MiB");
    }

    #[test]
    fn status_tables() {
        let s = Status {
            ready: true,
            generated_at: 1000.0,
            aliases: vec![
                AliasStatus {
                    name: "prod.db.internal.".into(),
                    role: "read-write".into(),
                    answer: "cname".into(),
                    server: Some("westus2".into()),
                    target: Some("pg-westus2.example.".into()),
                    since: Some(988.0),
                    reason: "westus2 is writable".into(),
                    pinned: Some("westus2".into()),
                    ..Default::default()
                },
                AliasStatus {
                    name: "ro.db.internal.".into(),
                    role: "prefer-standby".into(),
                    lagging: vec![LagStatus {
                        server: "centralus".into(),
                        reason: "20.0 MiB behind westus2 (max_lag 16.0 MiB)".into(),
                        since: Some(990.0),
                        good_probes: 1,
                    }],
                    ..Default::default()
                },
            ],
            servers: vec![
                ServerStatus {
                    server: "eastus".into(),
                    up: false,
                    drained: true,
                    last_error: Some("connection refused".into()),
                    consecutive_failures: 4,
                    ..Default::default()
                },
                ServerStatus {
                    server: "westus2".into(),
                    up: true,
                    writable: Some(false),
                    in_recovery: Some(true),
                    timeline: Some(2),
                    replay_lag_bytes: Some(2048),
                    last_success: Some(999.5),
                    ..Default::default()
                },
                ServerStatus {
                    server: "centralus".into(),
                    up: true,
                    in_recovery: Some(true),
                    replay_lag_bytes: Some(0),
                    lag_bytes: Some(20 << 20),
                    last_success: Some(999.5),
                    ..Default::default()
                },
            ],
            history: (0..15)
                .map(|i| HistoryEntry {
                    at: 900.0 + i as f64,
                    kind: HistoryKind::ServerUp.as_str().into(),
                    server: Some(format!("s{i}")),
                    message: format!("m{i}"),
                    ..Default::default()
                })
                .collect(),
        };
        let t = render_status(&s, "127.0.0.1:9153", 1000.0);
        assert!(t.starts_with("dns-sidecar at 127.0.0.1:9153: ready"), "{t}");
        assert!(
            t.contains(
                "prod.db.internal.  read-write      cname   westus2 (pg-westus2.example.)  12s ago  westus2  westus2 is writable"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "eastus     DOWN  drained  unknown  -         -                     never     connection refused (4 in a row)"
            ),
            "{t}"
        );
        assert!(
            t.contains("westus2    up    -        standby  2         2.0 KiB (unreplayed)  just now  -"),
            "{t}"
        );
        assert!(
            t.contains("centralus  up    -        standby  -         20.0 MiB              just now  -"),
            "{t}"
        );
        assert!(
            t.contains("ro.db.internal.  centralus  1            10s ago  20.0 MiB behind westus2 (max_lag 16.0 MiB)"),
            "{t}"
        );
        assert!(t.contains("History (last 10 of 15)"), "{t}");
        assert!(
            !t.contains(" m4\n") && t.contains(" m5\n") && t.contains(" m14\n"),
            "{t}"
        );
        let empty = render_status(&Status::default(), "x:1", 5.0);
        assert!(
            empty.contains("NOT READY (status from never)") && empty.contains("(none)"),
            "{empty}"
        );
    }

    /// A diverged server gets a marker in the servers table and a row with
    /// its reason in "Diverged servers"; the others neither.
    #[test]
    fn diverged_servers() {
        let s = Status {
            ready: true,
            generated_at: 1000.0,
            servers: vec![
                ServerStatus {
                    server: "eastus".into(),
                    up: true,
                    writable: Some(true),
                    timeline: Some(1),
                    diverged: Some("fenced by prod.db.internal.: superseded by westus2".into()),
                    last_success: Some(999.5),
                    ..Default::default()
                },
                ServerStatus {
                    server: "westus2".into(),
                    up: true,
                    writable: Some(true),
                    timeline: Some(2),
                    last_success: Some(999.5),
                    ..Default::default()
                },
                ServerStatus {
                    server: "centralus".into(),
                    up: true,
                    in_recovery: Some(true),
                    timeline: Some(1),
                    diverged: Some("it receives WAL on timeline 1, another branch than timeline 2".into()),
                    last_success: Some(999.5),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let t = render_status(&s, "127.0.0.1:9153", 1000.0);
        assert!(
            t.contains("eastus     up  -        writable (DIVERGED)  1         -    just now  -"),
            "{t}"
        );
        assert!(
            t.contains("westus2    up  -        writable             2         -    just now  -"),
            "{t}"
        );
        assert!(
            t.contains("centralus  up  -        standby (DIVERGED)   1         -    just now  -"),
            "{t}"
        );
        let table = t
            .split("\nDiverged servers (")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap_or_else(|| panic!("no diverged table: {t}"));
        assert!(
            table.contains("\n  SERVER     REASON\n")
                && table.contains("\n  eastus     fenced by prod.db.internal.: superseded by westus2\n")
                && table.contains("\n  centralus  it receives WAL on timeline 1, another branch than timeline 2")
                && !table.contains("westus2 "),
            "{t}"
        );
        // Nothing diverged, no table.
        let healthy = Status {
            servers: vec![s.servers[1].clone()],
            ..s
        };
        assert!(!render_status(&healthy, "x:1", 1000.0).contains("Diverged"));
    }

    #[test]
    fn reader_sets() {
        use crate::status::{Excluded, SetMember};
        let member = |server: &str, answers: u64, share: f64, rtt: f64| SetMember {
            server: server.into(),
            target: format!("pg-{server}.example."),
            weight: 1,
            answers: Some(answers),
            share: Some(share),
            rtt_ms: Some(rtt),
        };
        let s = Status {
            aliases: vec![AliasStatus {
                name: "ro.db.internal.".into(),
                role: "standby".into(),
                answer: "cname".into(),
                server: Some("b".into()),
                target: Some("pg-b.example.".into()),
                spread: Some("rotate".into()),
                prefer: Some("nearest".into()),
                set: vec![member("b", 600, 0.6, 0.41), member("c", 400, 0.4, 0.52)],
                excluded: vec![Excluded {
                    server: "a".into(),
                    reason: "not standby (writable, timeline 1)".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = render_status(&s, "x", 0.0);
        assert!(t.contains("b (pg-b.example.) +1 more"), "{t}");
        assert!(t.contains("Reader sets"), "{t}");
        assert!(
            t.contains("ro.db.internal.  rotate, nearest  b       yes     1       60.0% (600)  0.41 ms  -"),
            "{t}"
        );
        assert!(
            t.contains("ro.db.internal.  rotate, nearest  a       no      -       -            -        not standby (writable, timeline 1)"),
            "{t}"
        );
    }
}
