//! The admin listener's endpoints as typed calls: what `/status`, `/readyz`
//! and the overrides answer, independent of how the bytes travel
//! (`transport.rs`) and of how the answer is shown (`render.rs`).

use super::{Client, ClientError};
use crate::control::Override;
use crate::status::Status;

impl Client {
    /// `GET /status`, parsed, plus the raw JSON.
    pub fn status(&self) -> Result<(Status, String), ClientError> {
        let r = self.get("/status")?.ok()?;
        let s = serde_json::from_str(&r.body).map_err(|source| ClientError::Json {
            addr: self.addr.clone(),
            source,
        })?;
        Ok((s, r.body))
    }

    /// `GET /readyz`: whether the sidecar is ready, and what it said.
    pub(crate) fn ready(&self) -> Result<(bool, String), ClientError> {
        let r = self.get("/readyz")?;
        match r.status {
            200 => Ok((true, r.body)),
            503 => Ok((false, r.body)),
            _ => Err(ClientError::Refused {
                status: r.status,
                reason: r.reason,
                body: r.body,
            }),
        }
    }

    /// Sends an override; returns the engine's summary.
    pub fn apply(&self, op: &Override) -> Result<String, ClientError> {
        let body = serde_json::to_value(op).expect("an Override serialises");
        let path = match op {
            Override::Pin { .. } => "/pin",
            Override::Unpin { .. } => "/unpin",
            Override::Drain { .. } => "/drain",
            Override::Undrain { .. } => "/undrain",
            Override::Unfence { .. } => "/unfence",
        };
        let mut body = body;
        if let Some(m) = body.as_object_mut() {
            m.remove("op");
        }
        Ok(self.post_json(path, &body)?.ok()?.body)
    }
}
