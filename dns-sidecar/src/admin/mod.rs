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
//! | POST | `/override` `{"op":"pin",..}` | any of the above, as a tagged `Override` |
//! | POST | `/cache/flush` `{}` or `{"name":..}` | empty the cache of forwarded answers, or drop a name and the names below it |
//!
//! Overrides and the cache flush are guarded by `guard`: with `[admin] token_file`/`token_env`
//! set, every caller needs `Authorization: Bearer <token>`; without a token,
//! only loopback peers may send them. Either way an override must be sent as
//! `Content-Type: application/json` and must not carry an `Origin` header,
//! so a web page in a browser on the same host cannot post one (a form can
//! only send form or text bodies, and browsers always add `Origin`).
//!
//! The listener is our own accept loop on hyper (axum's `serve` has no
//! header-read timeout): at most `[admin] max_connections` connections (when
//! full, the one waiting longest for a request is closed to make room; if all
//! are busy answering, the new one is closed), `header_timeout` to send a
//! request's headers (which also bounds idle keep-alive connections) and
//! `request_timeout` from the headers to the answer (a slow body gets 408).

mod conns;
mod flush;
mod gate;
mod guard;
mod overrides;

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
    /// Requests with a body in progress (see [`gate`]).
    bodies: Arc<gate::Bodies>,
}

/// The routes, without a listener (so tests can drive them directly).
///
/// Routes without a body are answered from memory and never read one; the
/// routes that take a body are behind [`gate::gate`], which checks their
/// headers before reading it.
fn router(shared: Arc<Shared>, control: Control) -> Router {
    let state = AppState {
        shared: shared.clone(),
        control,
        bodies: Arc::default(),
    };
    // On each POST handler, not on the paths: a wrong method is 405 at once.
    let gate = axum::middleware::from_fn_with_state(state.clone(), gate::gate);
    let with_body = Router::new()
        .route("/pin", post(overrides::pin).route_layer(gate.clone()))
        .route("/unpin", post(overrides::unpin).route_layer(gate.clone()))
        .route("/drain", post(overrides::drain).route_layer(gate.clone()))
        .route("/undrain", post(overrides::undrain).route_layer(gate.clone()))
        .route("/unfence", post(overrides::unfence).route_layer(gate.clone()))
        .route("/override", post(overrides::any).route_layer(gate.clone()))
        .route("/cache/flush", post(flush::flush).route_layer(gate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .merge(with_body)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(shared, request_timeout))
        .with_state(state)
}

/// Answers 408 (and closes the connection) when a request takes longer than
/// `[admin] request_timeout` from its headers to its answer; closes the
/// connection after any answer whose request body was left unread.
async fn request_timeout(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let limit = shared.config.load().admin.request_timeout;
    let headers = req.headers().clone();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => gate::close_if_body_unread(&headers, r),
        Err(_) => {
            refused(&shared, "request_timeout");
            let mut r = text(
                StatusCode::REQUEST_TIMEOUT,
                format!("request not completed within {limit:?}"),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

/// Serves until `shutdown` is true. Requests in flight are finished; idle
/// keep-alive connections are closed.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, control: Control, mut shutdown: watch::Receiver<bool>) {
    let local = listener.local_addr().ok();
    info!(listen = ?local, "admin listener started");
    let app = router(shared.clone(), control);
    let conns = Arc::new(conns::Conns::default());
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
        let place = match conns.admit(peer.ip(), settings.max_connections, settings.max_connections_per_client) {
            Ok((place, evicted)) => {
                match evicted {
                    Some(conns::Evicted::Oldest) => refused(&shared, "evicted"),
                    Some(conns::Evicted::SameClient) => refused(&shared, "client_evicted"),
                    None => {}
                }
                place
            }
            Err(conns::Refused::MaxConnections) => {
                refused(&shared, "max_connections");
                debug!(%peer, "admin connection cap reached and every connection is busy; closing a new one");
                continue;
            }
            Err(conns::Refused::PerClient) => {
                refused(&shared, "per_client");
                debug!(%peer, "admin per-client connection cap reached and all of its connections are busy; closing a new one");
                continue;
            }
        };
        let app = app.clone();
        let (c, id) = (conns.clone(), place.id);
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = conns::Busy::new(c.clone(), id);
            let call = tower_service::Service::call(&mut app.clone(), req);
            async move {
                let r = call.await;
                drop(busy);
                r
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_timeout)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = place.close.notified() => {}
            }
            drop(place);
        });
    }
    if tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        debug!("admin: connections still open after 5s of shutdown; dropping them");
    }
}

/// Counts a refused or evicted connection or request in
/// `dns_sidecar_admin_refused_total{result}`.
fn refused(shared: &Shared, result: &str) {
    shared
        .metrics
        .admin_refused
        .get_or_create(&ResultLabel { result: result.into() })
        .inc();
}

/// The answer to a request [`guard`] refused: its status (with a
/// `WWW-Authenticate` header on 401) and the reason.
fn denied(why: &Denied) -> Response {
    let code = StatusCode::from_u16(why.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = text(code, why.to_string());
    if code == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
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
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting, no probe round done yet",
        )
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the first probe round of every server",
        )
    }
}

async fn metrics(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    // Several Accept headers mean the same as one with the values joined.
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let format = crate::metrics::Exposition::negotiate((!accept.is_empty()).then(|| accept.join(",")).as_deref());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        st.shared.metrics.render(format),
    )
        .into_response()
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
    text(
        StatusCode::NOT_FOUND,
        "not found; endpoints: GET /healthz /readyz /metrics /status, POST /pin /unpin /drain /undrain /override",
    )
}
