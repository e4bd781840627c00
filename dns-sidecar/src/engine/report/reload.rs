//! What a reload did to the decision state: one line and one history entry
//! per note (a rename, a move, a fence, pin or drain dropped).

use std::collections::HashMap;

use tracing::{info, warn};

use crate::decision::Answer;
use crate::decision::ReloadNote;
use crate::engine::Engine;
use crate::status::HistoryKind;

impl Engine {
    /// Logs (one line each) and records what a reload did to the decision
    /// state, and makes the answers remembered for [`Self::log_unexplained_answers`]
    /// follow renamed servers (a rename changes no answer).
    pub(in crate::engine) fn note_reload(&mut self, notes: &[ReloadNote]) {
        self.follow_renames(notes);
        for note in notes {
            self.note(note);
        }
    }

    /// The rate limit of the health lines and the answers remembered follow
    /// a renamed server.
    fn follow_renames(&mut self, notes: &[ReloadNote]) {
        let pairs: Vec<(&str, &str)> = notes
            .iter()
            .filter_map(|n| match n {
                ReloadNote::Renamed { old, new } => Some((old.as_str(), new.as_str())),
                _ => None,
            })
            .collect();
        self.episodes.rename(&pairs);
        let renamed: HashMap<&str, &str> = pairs.into_iter().collect();
        for served in self.served.values_mut() {
            if let Answer::Target(id) = served {
                if let Some(new) = renamed.get(id.as_str()) {
                    *id = new.to_string();
                }
            }
        }
    }

    fn note(&mut self, note: &ReloadNote) {
        let text = note.to_string();
        let (alias, server) = match note {
            ReloadNote::Renamed { old, new } => {
                info!(
                    server = new.as_str(),
                    old = old.as_str(),
                    "server renamed (same host, hostaddr and port): its health, fences, drain and pins are kept"
                );
                (None, new)
            }
            ReloadNote::Moved { server } => {
                info!(server = server.as_str(), "server's host, hostaddr or port changed: its health, fences, drain and pins are kept until its new prober reports");
                (None, server)
            }
            ReloadNote::FenceDropped {
                alias,
                server,
                kind,
                why,
            } => {
                warn!(alias = alias.as_str(), server = server.as_str(), fence = kind, reason = %why, "reload dropped a fence");
                (Some(alias), server)
            }
            ReloadNote::PinDropped { alias, server, why } => {
                warn!(alias = alias.as_str(), server = server.as_str(), reason = %why, "reload dropped a pin");
                (Some(alias), server)
            }
            ReloadNote::DrainDropped { server } => {
                warn!(
                    server = server.as_str(),
                    "reload dropped a drain: the server is no longer configured"
                );
                (None, server)
            }
        };
        self.record(HistoryKind::Reload, alias.cloned(), Some(server.clone()), text);
    }
}
