//! `POST /cache/flush`: empties the cache of forwarded answers, or, with
//! `{"name": "example.com"}`, drops the answers for that name and every name
//! below it (a record fixed upstream, a negative answer to forget at once).
//! Guarded like the overrides ([`super::gate`], before the body is read); every attempt is logged
//! at WARN with the peer and the result.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tracing::warn;

use super::{text, AppState};
use crate::dns::names::wire;
use crate::name::DnsName;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FlushBody {
    /// Drop this name and the names below it; absent: everything.
    #[serde(default)]
    name: Option<String>,
}

pub(super) async fn flush(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let parsed: Result<FlushBody, String> = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(FlushBody::default())
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| format!("bad request body: {e}; send {{}} or JSON like {{\"name\":\"example.com\"}}"))
    };
    let name = match parsed.and_then(|b| {
        b.name
            .map(|n| DnsName::parse(n.trim()).map_err(|e| format!("bad name: {e}")))
            .transpose()
    }) {
        Ok(n) => n,
        Err(msg) => {
            warn!(op = "flush-cache", %peer, result = %msg, "cache flush refused");
            return text(StatusCode::BAD_REQUEST, msg);
        }
    };
    let Some(cache) = st.shared.cache.get() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the DNS side has not started; there is no cache yet",
        );
    };
    let removed = cache.flush(name.as_ref().map(|n| wire(n.as_str())).as_deref());
    let summary = match &name {
        Some(n) => format!("flushed {removed} cached answer(s) for {n} and the names below it"),
        None => format!("flushed {removed} cached answer(s)"),
    };
    warn!(op = "flush-cache", name = name.as_ref().map(|n| n.as_str()), %peer, result = %summary, "cache flushed");
    text(StatusCode::OK, summary)
}
