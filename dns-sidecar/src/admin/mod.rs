//! The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/status` and
//! the manual overrides. Off the DNS query path: it only reads snapshots from
//! [`Shared`] and sends overrides to the engine through [`Control`].
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | 200 `ok` while the process runs |
//! | GET | `/readyz` | 200 `ready` once the first probe round is done, else 503 with the reason |
//! | GET | `/metrics` | OpenMetrics or classic Prometheus text, as the `Accept` header asks |
//! | GET | `/status` | [`Status`](crate::status::Status) as pretty JSON |
//! | POST | `/pin` `{"alias":..,"server":..}` | pin an alias to a server |
//! | POST | `/unpin` `{"alias":..}` | remove a pin |
//! | POST | `/drain` `{"server":..}` | never choose this server |
//! | POST | `/undrain` `{"server":..}` | undo a drain |
//! | POST | `/unfence` `{"alias":..,"server":..}` | lift a writer alias's fence on a server (or all, without `server`) |
//! | POST | `/override` `{"op":"pin",..}` | any of the above, as a tagged [`Override`] |
//!
//! Overrides are guarded by [`guard`]: with `[admin] token_file`/`token_env`
//! set, every caller needs `Authorization: Bearer <token>`; without a token,
//! only loopback peers may send them.

mod guard;
mod overrides;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info};

use crate::control::Control;
use crate::shared::Shared;

pub use guard::{authorize, Denied};

/// The content type of `/metrics` for clients that ask for OpenMetrics
/// (Prometheus does); others get the classic text format (see
/// [`crate::metrics::Exposition`]).
pub const METRICS_CONTENT_TYPE: &str = crate::metrics::CONTENT_TYPE;

/// Largest override body accepted (they are a few dozen bytes).
const MAX_BODY: usize = 16 * 1024;

/// What every handler can reach.
#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    control: Control,
}

/// The routes, without a listener (so tests can drive them directly).
fn router(shared: Arc<Shared>, control: Control) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/pin", post(overrides::pin))
        .route("/unpin", post(overrides::unpin))
        .route("/drain", post(overrides::drain))
        .route("/undrain", post(overrides::undrain))
        .route("/unfence", post(overrides::unfence))
        .route("/override", post(overrides::any))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(AppState { shared, control })
}

/// Serves until `shutdown` is true. Requests in flight are finished; idle
/// keep-alive connections are closed.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, control: Control, mut shutdown: watch::Receiver<bool>) {
    let local = listener.local_addr().ok();
    info!(listen = ?local, "admin listener started");
    let app = router(shared, control).into_make_service_with_connect_info::<SocketAddr>();
    let stop = async move { crate::shutdown::stopped(&mut shutdown).await };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        error!(listen = ?local, error = %e, "admin listener failed");
    }
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok")
}

async fn readyz(State(st): State<AppState>) -> Response {
    let status = st.shared.status.load();
    if status.ready {
        text(StatusCode::OK, "ready")
    } else if status.generated_at == 0.0 {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready: starting, no probe round done yet")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for the first probe round of every server")
    }
}

async fn metrics(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    // Several Accept headers mean the same as one with the values joined.
    let accept: Vec<&str> = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect();
    let format = crate::metrics::Exposition::negotiate((!accept.is_empty()).then(|| accept.join(",")).as_deref());
    (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], st.shared.metrics.render(format)).into_response()
}

async fn status(State(st): State<AppState>) -> Response {
    let status = st.shared.status.load();
    match serde_json::to_string_pretty(&**status) {
        Ok(mut json) => {
            json.push('\n');
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode status: {e}")),
    }
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found; endpoints: GET /healthz /readyz /metrics /status, POST /pin /unpin /drain /undrain /override")
}
