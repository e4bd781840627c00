//! Rate limit for the "server down" / "server up" log lines.
//!
//! The decision reports a server's down *episode* once (however many probes
//! fail in it) and its recovery once. A server that flaps (a crash loop, a
//! flaky network path) would still produce a pair of lines every few hundred
//! milliseconds, burying everything else in the log at the moment the log
//! matters. So, per server: a down episode is logged at once unless another
//! one was logged less than [`WINDOW`] ago; such a *flap* is counted instead,
//! and if it is still down when the window has passed it is logged then,
//! with the count. A recovery is logged unless its down episode was a flap. When a window
//! with suppressed flaps ends with the server up, one line says how often
//! it flapped. The operator never loses the current state: the last line
//! about a server always says whether it is up or down.
//!
//! Pure (instants are passed in), so it is unit-tested without a clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// At most one "server down" line per server per window.
pub(crate) const WINDOW: Duration = Duration::from_secs(30);

/// A line to log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Line {
    /// A down episode began at `since`; `flaps` earlier short episodes
    /// were not logged (they began and ended within the window).
    Down {
        server: String,
        reason: String,
        since: Instant,
        was_up: bool,
        flaps: u32,
    },
    /// Up again after a logged down episode (`down_for`), or for the first
    /// time (`down_for` is `None`).
    Up {
        server: String,
        state: String,
        down_for: Option<Duration>,
    },
    /// The window ended with the server up after `flaps` unlogged episodes.
    Flapped {
        server: String,
        flaps: u32,
        window: Duration,
    },
}

#[derive(Debug, Default)]
struct Track {
    /// When the last "down" line was logged.
    last_down_line: Option<Instant>,
    /// A down episode not logged yet: (since, reason, was_up).
    pending: Option<(Instant, String, bool)>,
    /// Episodes not logged since `last_down_line`.
    flaps: u32,
}

/// Per-server state of the rate limit, keyed by server id (so it survives
/// reloads that reorder servers).
#[derive(Debug, Default)]
pub(crate) struct Episodes {
    servers: HashMap<String, Track>,
}

impl Episodes {
    /// A down episode began.
    pub(crate) fn down(&mut self, server: &str, reason: &str, was_up: bool, now: Instant) -> Option<Line> {
        let t = self.servers.entry(server.to_string()).or_default();
        if t.last_down_line
            .is_some_and(|last| now.saturating_duration_since(last) < WINDOW)
        {
            t.flaps += 1;
            t.pending = Some((now, reason.to_string(), was_up));
            return None;
        }
        let flaps = std::mem::take(&mut t.flaps);
        t.last_down_line = Some(now);
        t.pending = None;
        Some(Line::Down {
            server: server.to_string(),
            reason: reason.to_string(),
            since: now,
            was_up,
            flaps,
        })
    }

    /// The server is up (first time, or after a down episode of `down_for`).
    pub(crate) fn up(&mut self, server: &str, state: &str, down_for: Option<Duration>) -> Option<Line> {
        let t = self.servers.entry(server.to_string()).or_default();
        if t.pending.take().is_some() {
            // A flap: counted, said when the window ends.
            return None;
        }
        Some(Line::Up {
            server: server.to_string(),
            state: state.to_string(),
            down_for,
        })
    }

    /// Lines due because a window ended: a pending down episode still going
    /// on, or flaps that ended with the server up. Call often (every decision).
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Line> {
        let mut out = Vec::new();
        let mut servers: Vec<(&String, &mut Track)> = self.servers.iter_mut().collect();
        servers.sort_by(|a, b| a.0.cmp(b.0));
        for (server, t) in servers {
            let Some(last) = t.last_down_line else { continue };
            if now.saturating_duration_since(last) < WINDOW {
                continue;
            }
            if let Some((since, reason, was_up)) = t.pending.take() {
                let flaps = std::mem::take(&mut t.flaps).saturating_sub(1);
                t.last_down_line = Some(now);
                out.push(Line::Down {
                    server: server.clone(),
                    reason,
                    since,
                    was_up,
                    flaps,
                });
            } else if t.flaps > 0 {
                out.push(Line::Flapped {
                    server: server.clone(),
                    flaps: std::mem::take(&mut t.flaps),
                    window: WINDOW,
                });
                t.last_down_line = None;
            }
        }
        out
    }

    /// Moves each `(old, new)` server's state to its new id (a reload renamed
    /// it; swaps included), so a renamed server's rate limit carries on.
    pub(crate) fn rename(&mut self, renames: &[(&str, &str)]) {
        let moved: Vec<(&str, Option<Track>)> = renames.iter().map(|(o, n)| (*n, self.servers.remove(*o))).collect();
        for (new, track) in moved {
            if let Some(t) = track {
                self.servers.insert(new.to_string(), t);
            }
        }
    }

    /// Forgets servers no longer configured.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.servers.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn one_episode_is_one_down_and_one_up() {
        let t0 = Instant::now();
        let mut e = Episodes::default();
        assert_eq!(
            e.up("a", "writable", None),
            Some(Line::Up {
                server: "a".into(),
                state: "writable".into(),
                down_for: None
            })
        );
        let down = e.down("a", "connection refused", true, at(t0, 100));
        assert!(
            matches!(down, Some(Line::Down { ref reason, flaps: 0, was_up: true, .. }) if reason == "connection refused"),
            "{down:?}"
        );
        let up = e.up("a", "writable", Some(Duration::from_secs(5)));
        assert_eq!(
            up,
            Some(Line::Up {
                server: "a".into(),
                state: "writable".into(),
                down_for: Some(Duration::from_secs(5))
            })
        );
        assert!(e.tick(at(t0, 60_000)).is_empty());
    }

    #[test]
    fn a_server_never_up_is_logged_down_with_its_reason() {
        let t0 = Instant::now();
        let mut e = Episodes::default();
        let down = e.down("b", "certificate verify failed", false, t0).unwrap();
        assert!(matches!(down, Line::Down { ref server, was_up: false, .. } if server == "b"));
        // Its first recovery says how long it was down.
        assert!(matches!(
            e.up("b", "standby", Some(Duration::from_secs(3))),
            Some(Line::Up { down_for: Some(_), .. })
        ));
    }

    #[test]
    fn flapping_is_summarised_not_logged_per_episode() {
        let t0 = Instant::now();
        let mut e = Episodes::default();
        assert!(e.down("a", "refused", true, t0).is_some());
        assert!(e.up("a", "writable", Some(Duration::from_millis(300))).is_some());
        // Ten more short episodes within the window: nothing logged.
        for i in 1..=10 {
            assert_eq!(e.down("a", "refused", true, at(t0, i * 500)), None);
            assert_eq!(e.up("a", "writable", Some(Duration::from_millis(300))), None);
            assert!(e.tick(at(t0, i * 500 + 1)).is_empty());
        }
        // The window ends with the server up: one summary line.
        assert_eq!(
            e.tick(at(t0, 30_001)),
            vec![Line::Flapped {
                server: "a".into(),
                flaps: 10,
                window: WINDOW
            }]
        );
        assert!(e.tick(at(t0, 90_000)).is_empty());
        // The next episode is logged at once again.
        assert!(e.down("a", "refused", true, at(t0, 100_000)).is_some());
    }

    #[test]
    fn a_suppressed_episode_that_lasts_is_logged_when_the_window_ends() {
        let t0 = Instant::now();
        let mut e = Episodes::default();
        assert!(e.down("a", "refused", true, t0).is_some());
        assert!(e.up("a", "writable", Some(Duration::from_millis(300))).is_some());
        assert_eq!(e.down("a", "refused", true, at(t0, 1000)), None);
        assert_eq!(e.up("a", "writable", Some(Duration::from_millis(300))), None);
        assert_eq!(e.down("a", "timeout", true, at(t0, 2000)), None);
        // Still down when the window ends: logged, with the earlier flap counted.
        let lines = e.tick(at(t0, 30_000));
        assert!(
            matches!(&lines[..], [Line::Down { reason, flaps: 1, .. }] if reason == "timeout"),
            "{lines:?}"
        );
        // ... and so its recovery is logged too.
        assert!(matches!(
            e.up("a", "writable", Some(Duration::from_secs(40))),
            Some(Line::Up { down_for: Some(_), .. })
        ));
    }

    #[test]
    fn servers_are_independent() {
        let t0 = Instant::now();
        let mut e = Episodes::default();
        assert!(e.down("a", "refused", true, t0).is_some());
        assert!(e.down("b", "refused", true, t0).is_some());
        e.retain(|s| s == "b");
        assert!(e.down("a", "refused", true, at(t0, 10)).is_some(), "a was forgotten");
    }

    #[test]
    fn a_rename_carries_the_rate_limit() {
        let t0 = Instant::now();
        let mut e = Episodes::default();
        assert!(e.down("a", "refused", true, t0).is_some());
        // a and b swap ids: a's track is b's now, and a has none.
        e.rename(&[("a", "b"), ("b", "a")]);
        assert_eq!(
            e.down("b", "refused", true, at(t0, 10)),
            None,
            "b is a's track: within the window"
        );
        assert!(e.down("a", "refused", true, at(t0, 10)).is_some());
    }
}
