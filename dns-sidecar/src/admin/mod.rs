//! The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/status` and
//! the manual overrides. Off the DNS query path: it only reads snapshots from
//! [`Shared`] and sends overrides to the engine through [`Control`].
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | 200 `ok` while the process runs |
//! | GET | `/readyz` | 200 `ready` once the first probe round is done, else 503 with the reason |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/status` | [`Status`](crate::status::Status) as pretty JSON |
//! | POST | `/pin` `{"alias":..,"server":..}` | pin an alias to a server |
//! | POST | `/unpin` `{"alias":..}` | remove a pin |
//! | POST | `/drain` `{"server":..}` | never choose this server |
//! | POST | `/undrain` `{"server":..}` | undo a drain |
//! | POST | `/override` `{"op":"pin",..}` | any of the four, as a tagged [`Override`] |
//!
//! Overrides are guarded by [`guard`]: with `[admin] token_file`/`token_env`
//! set, every caller needs `Authorization: Bearer <token>`; without a token,
//! only loopback peers may send them. Either way an override must be sent as
//! `Content-Type: application/json` and must not carry an `Origin` header,
//! so a web page in a browser on the same host cannot post one (a form can
//! only send form or text bodies, and browsers always add `Origin`).
//!
//! The listener is our own accept loop on hyper (axum's `serve` has no
//! header-read timeout): at most `[admin] max_connections` connections (more
//! are closed at once), `header_timeout` to send a request's headers (which
//! also bounds idle keep-alive connections) and `request_timeout` from the
//! headers to the answer (a slow body gets 408).

mod guard;
mod overrides;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::metrics::ResultLabel;

use crate::control::Control;
use crate::shared::Shared;

pub use guard::{authorize, Denied};

/// The content type Prometheus expects for the text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
        .route("/override", post(overrides::any))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), request_timeout))
        .with_state(AppState { shared, control })
}

/// Answers 408 (and closes the connection) when a request takes longer than
/// `[admin] request_timeout` from its headers to its answer.
async fn request_timeout(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let limit = shared.config.load().admin.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            shared.metrics.admin_refused.get_or_create(&ResultLabel { result: "request_timeout".into() }).inc();
            let mut r = text(StatusCode::REQUEST_TIMEOUT, format!("request not completed within {limit:?}"));
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

/// Counts open connections; dropping it frees the place.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves until `shutdown` is true. Requests in flight are finished; idle
/// keep-alive connections are closed.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, control: Control, mut shutdown: watch::Receiver<bool>) {
    let local = listener.local_addr().ok();
    info!(listen = ?local, "admin listener started");
    let app = router(shared.clone(), control);
    let open = Arc::new(AtomicUsize::new(0));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "admin accept error");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        };
        let settings = shared.config.load().admin.clone();
        if open.fetch_add(1, Ordering::Relaxed) >= settings.max_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            shared.metrics.admin_refused.get_or_create(&ResultLabel { result: "max_connections".into() }).inc();
            debug!(%peer, "admin connection cap reached; closing a new connection");
            continue;
        }
        let place = Open(open.clone());
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            tower_service::Service::call(&mut app.clone(), req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_timeout)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(place);
        });
    }
    if tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await.is_err() {
        debug!("admin: connections still open after 5s of shutdown; dropping them");
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

async fn metrics(State(st): State<AppState>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], st.shared.metrics.encode()).into_response()
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
