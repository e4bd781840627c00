//! `Instant` <-> unix time, for `/status` and the state file.

use std::time::Instant;

use super::Engine;

impl Engine {
    pub(super) fn instant(&self, unix: f64) -> Instant {
        self.epoch.instant(unix)
    }

    pub(super) fn unix(&self, at: Instant) -> f64 {
        self.epoch.unix(at)
    }
}
