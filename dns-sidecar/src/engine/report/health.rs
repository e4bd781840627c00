//! The rate-limited lines about a server's health ([`crate::episodes`]
//! decides which are logged): down, up, flapped.

use std::time::Duration;

use tracing::{info, warn};

use crate::engine::Engine;
use crate::episodes::Line;
use crate::status::HistoryKind;

impl Engine {
    /// One rate-limited line about a server's health.
    pub(in crate::engine) fn log_episode(&mut self, line: Line) {
        match line {
            Line::Down {
                server,
                reason,
                was_up,
                flaps,
                ..
            } => self.server_down(server, reason, was_up, flaps),
            Line::Up {
                server,
                state,
                down_for,
            } => self.server_up(server, state, down_for),
            Line::Flapped { server, flaps, window } => self.server_flapped(server, flaps, window),
        }
    }

    fn server_down(&mut self, server: String, reason: String, was_up: bool, flaps: u32) {
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
                "{what}; it also went down {flaps} more time(s) in the last 30s (short episodes not logged one by one)"
            );
        } else {
            warn!(server = server.as_str(), error = reason.as_str(), "{what}");
        }
        self.record(HistoryKind::ServerDown, None, Some(server), reason);
    }

    fn server_up(&mut self, server: String, state: String, down_for: Option<Duration>) {
        let Some(d) = down_for else {
            info!(server = server.as_str(), state = state.as_str(), "server up");
            self.record(HistoryKind::ServerUp, None, Some(server), state);
            return;
        };
        let down_for = format!("{:.1}s", d.as_secs_f64());
        info!(
            server = server.as_str(),
            state = state.as_str(),
            down_for = down_for.as_str(),
            "server up"
        );
        let message = format!("{state} (down for {down_for})");
        self.record(HistoryKind::ServerUp, None, Some(server), message);
    }

    fn server_flapped(&mut self, server: String, flaps: u32, window: Duration) {
        warn!(
            server = server.as_str(),
            flaps,
            "server flapped: {flaps} short down episode(s) in the last {}s, not logged one by one; it is up now",
            window.as_secs()
        );
        let message = format!("{flaps} short down episodes in {}s", window.as_secs());
        self.record(HistoryKind::ServerFlapped, None, Some(server), message);
    }
}
