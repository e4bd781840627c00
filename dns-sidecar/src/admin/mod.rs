//! The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/status` and
//! the manual overrides. Off the DNS query path: it only reads snapshots from
//! [`Shared`] and sends overrides to the engine through [`Control`].
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | 200 `ok` while the process runs; 503 once a task died or while stopping |
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

mod flush;
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
        .route("/cache/flush", post(flush::flush))
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
            shared
                .metrics
                .admin_refused
                .get_or_create(&ResultLabel {
                    result: "request_timeout".into(),
                })
                .inc();
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

/// The open admin connections. When all places are taken, the connection
/// that has waited longest for a request (headers not sent yet, or idle
/// between requests) is closed to make room, so clients that trickle their
/// headers (slowloris) cannot keep a quick request such as a health check
/// out; only connections that are all busy answering refuse a new one.
#[derive(Default)]
struct Conns {
    inner: std::sync::Mutex<(ConnMap, u64)>,
}

/// Per connection: since when it waits for a request (`None` while busy),
/// and how to close it.
type ConnMap = std::collections::HashMap<u64, (Option<std::time::Instant>, Arc<tokio::sync::Notify>)>;

/// A connection's place; dropping it frees the place.
struct Place {
    id: u64,
    conns: Arc<Conns>,
    close: Arc<tokio::sync::Notify>,
}

impl Conns {
    fn admit(self: &Arc<Self>, cap: usize) -> Option<Place> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, next) = &mut *g;
        if map.len() >= cap {
            let victim = map
                .iter()
                .filter_map(|(id, (since, _))| since.map(|t| (t, *id)))
                .min()?;
            if let Some((_, close)) = map.remove(&victim.1) {
                close.notify_one();
            }
        }
        *next += 1;
        let close = Arc::new(tokio::sync::Notify::new());
        map.insert(*next, (Some(std::time::Instant::now()), close.clone()));
        Some(Place {
            id: *next,
            conns: self.clone(),
            close,
        })
    }

    /// Marks a connection busy (a request is being answered) or waiting.
    fn set_waiting(&self, id: u64, waiting: bool) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = g.0.get_mut(&id) {
            e.0 = waiting.then(std::time::Instant::now);
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut g = self.conns.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.remove(&self.id);
    }
}

/// Marks its connection busy while it lives (the request being answered).
struct Busy(Arc<Conns>, u64);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set_waiting(self.1, true);
    }
}

/// Serves until `shutdown` is true. Requests in flight are finished; idle
/// keep-alive connections are closed.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, control: Control, mut shutdown: watch::Receiver<bool>) {
    let local = listener.local_addr().ok();
    info!(listen = ?local, "admin listener started");
    let app = router(shared.clone(), control);
    let conns = Arc::new(Conns::default());
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
        let Some(place) = conns.admit(settings.max_connections) else {
            shared
                .metrics
                .admin_refused
                .get_or_create(&ResultLabel {
                    result: "max_connections".into(),
                })
                .inc();
            debug!(%peer, "admin connection cap reached and every connection is busy; closing a new one");
            continue;
        };
        let app = app.clone();
        let (c, id) = (conns.clone(), place.id);
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            c.set_waiting(id, false);
            let busy = Busy(c.clone(), id);
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
        let m = shared.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = place.close.notified() => {
                    m.metrics.admin_refused.get_or_create(&ResultLabel { result: "evicted".into() }).inc();
                }
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

async fn healthz(State(st): State<AppState>) -> Response {
    // 503 from a task's death (or a stop) until the process exits.
    match st.shared.health.check() {
        Ok(()) => text(StatusCode::OK, "ok"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
    }
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
