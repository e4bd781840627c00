//! Manual overrides for incidents, sent by the admin listener to the engine.
//!
//! A pin makes an alias answer one server whatever the probes say (the
//! operator knows something the probes do not). A drained server is never
//! chosen, not even by `keep-last`. Unfencing lifts the fences that keep a
//! writer alias off servers it left or that lost a split brain (see
//! `crate::decision::fence`). Pins and drains last until undone or until a config
//! reload removes the alias or server; every change is logged and shown in
//! `/status`.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Override {
    Pin {
        alias: String,
        server: String,
    },
    Unpin {
        alias: String,
    },
    Drain {
        server: String,
    },
    Undrain {
        server: String,
    },
    /// Lifts `alias`'s fence on `server` (and lowers its timeline floor to
    /// that server's timeline), or every fence and the floor when `server`
    /// is absent.
    Unfence {
        alias: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
    },
}

/// Why an override was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no alias named `{0}`")]
    UnknownAlias(String),
    #[error("no server with id `{0}`")]
    UnknownServer(String),
    #[error("server `{server}` is not a candidate of alias `{alias}`")]
    NotACandidate { alias: String, server: String },
    #[error("the engine is not running")]
    Stopped,
}

/// One override and where to send its outcome (a human-readable summary).
pub struct ControlRequest {
    pub op: Override,
    pub reply: oneshot::Sender<Result<String, ControlError>>,
}

/// The admin side's handle to the engine.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<ControlRequest>,
}

impl Control {
    pub fn new(tx: mpsc::Sender<ControlRequest>) -> Control {
        Control { tx }
    }

    /// Applies `op` and waits for the engine's answer.
    pub(crate) async fn apply(&self, op: Override) -> Result<String, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ControlRequest { op, reply })
            .await
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }
}
