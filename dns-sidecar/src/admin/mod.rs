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
//! header-read timeout), on a thread of its own, so that no client can keep
//! a health check, readiness check or metrics scrape from being answered:
//! `accept` (silent connections wait apart; probes are served on that
//! thread), `conns` (at most `[admin] max_connections`, and
//! `max_connections_per_client` per address; the connection waiting longest
//! makes room), `gate` (requests with a body are checked on their headers
//! before the body is read, hold at most a quarter of the places, and have
//! `body_timeout` to send it). `header_timeout` bounds the headers (and idle
//! keep-alive connections), `request_timeout` a whole request (408).

mod accept;
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

pub(crate) use guard::Denied;

/// Connections the kernel queues for the accept loop.
const ACCEPT_BACKLOG: i32 = 1024;

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
///
/// The accept loop runs on a thread of its own (a one-thread runtime) and
/// serves health checks, readiness checks and metrics scrapes there (see
/// [`accept`]); every other connection is handed to the caller's runtime
/// once its first bytes are in. So however much work a flood has queued on
/// the caller's runtime, a probe is accepted and answered without waiting
/// behind it.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, control: Control, shutdown: watch::Receiver<bool>) {
    let local = listener.local_addr().ok();
    // A longer queue of connections not yet accepted than std's 128 (Linux
    // caps it at net.core.somaxconn): a burst of connects then waits for the
    // accept loop instead of having its SYNs dropped, which would delay a
    // health check's connect by a whole SYN retransmission (1 s).
    if let Err(e) = socket2::SockRef::from(&listener).listen(ACCEPT_BACKLOG) {
        debug!(error = %e, "admin listener: cannot lengthen the accept queue");
    }
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener: cannot take it off the runtime");
            return;
        }
    };
    info!(listen = ?local, "admin listener started");
    let opener = Arc::new(Opener {
        app: router(shared.clone(), control),
        conns: Arc::new(conns::Conns::default()),
        pending: Arc::new(accept::Pending::default()),
        graceful: std::sync::Mutex::new(Some(hyper_util::server::graceful::GracefulShutdown::new())),
        shared,
        main: tokio::runtime::Handle::current(),
    });
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name("admin-accept".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "admin listener: cannot start its runtime");
                return;
            }
        };
        rt.block_on(accept_loop(listener, opener, shutdown));
        let _ = done.send(());
    });
    if let Err(e) = thread {
        tracing::error!(error = %e, "admin listener: cannot start its thread");
        return;
    }
    if finished.await.is_err() {
        tracing::error!("the admin listener's thread ended without being asked to (a panic)");
    }
}

/// Accepts until `shutdown`, health checks first; then waits (at most 5 s)
/// for the requests in flight.
async fn accept_loop(listener: std::net::TcpListener, opener: Arc<Opener>, mut shutdown: watch::Receiver<bool>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener: cannot register it");
            return;
        }
    };
    loop {
        let first = tokio::select! {
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
        opener.open(first.0, first.1);
    }
    let graceful = opener.graceful.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(g) = graceful {
        if tokio::time::timeout(std::time::Duration::from_secs(5), g.shutdown())
            .await
            .is_err()
        {
            debug!("admin: connections still open after 5s of shutdown; dropping them");
        }
    }
}

/// What a new connection needs to be served.
struct Opener {
    app: Router,
    conns: Arc<conns::Conns>,
    /// Connections that have not sent a byte yet.
    pending: Arc<accept::Pending>,
    /// Taken at shutdown; connections that start later are closed.
    graceful: std::sync::Mutex<Option<hyper_util::server::graceful::GracefulShutdown>>,
    shared: Arc<Shared>,
    /// The runtime [`serve`] was called on.
    main: tokio::runtime::Handle,
}

impl Opener {
    /// Holds the new connection until its first bytes are in (closing it
    /// after `header_timeout` of silence, or when [`accept::PENDING`] newer
    /// silent ones need room), then [`Opener::start`]s it.
    fn open(self: &Arc<Self>, stream: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let (ticket, evicted) = self.pending.enter();
        if evicted {
            refused(&self.shared, "silent_evicted");
        }
        let me = self.clone();
        tokio::spawn(async move {
            let header_timeout = me.shared.config.load().admin.header_timeout;
            tokio::select! {
                r = tokio::time::timeout(header_timeout, accept::first_bytes(&stream)) => {
                    if !matches!(r, Ok(Ok(()))) {
                        return;
                    }
                }
                _ = ticket.closed() => return,
            }
            drop(ticket);
            me.start(stream, peer).await;
        });
    }

    /// Gives the connection a place (or closes it) and serves it: here, at
    /// once, if it is a health check; on the main runtime if not.
    async fn start(&self, stream: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let shared = &self.shared;
        let settings = shared.config.load().admin.clone();
        let place = match self
            .conns
            .admit(peer.ip(), settings.max_connections, settings.max_connections_per_client)
        {
            Ok((place, evicted)) => {
                match evicted {
                    Some(conns::Evicted::Oldest) => refused(shared, "evicted"),
                    Some(conns::Evicted::SameClient) => refused(shared, "client_evicted"),
                    None => {}
                }
                place
            }
            Err(conns::Refused::MaxConnections) => {
                refused(shared, "max_connections");
                debug!(%peer, "admin connection cap reached and every connection is busy; closing a new one");
                return;
            }
            Err(conns::Refused::PerClient) => {
                refused(shared, "per_client");
                debug!(%peer, "admin per-client connection cap reached and all of its connections are busy; closing a new one");
                return;
            }
        };
        let app = self.app.clone();
        let (c, id) = (self.conns.clone(), place.id);
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
        let builder = {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(settings.header_timeout);
            b
        };
        let Some(watcher) = self
            .graceful
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|g| g.watcher())
        else {
            return;
        };
        let serve = async move |stream: tokio::net::TcpStream| {
            let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), svc));
            tokio::select! {
                _ = conn => {}
                _ = place.close.notified() => {}
            }
            drop(place);
        };
        if accept::is_health_check(&stream) {
            // In this task's first poll hyper reads the request (its bytes
            // are in) and marks the connection busy: no newer connection can
            // take its place before it is answered.
            serve(stream).await;
            return;
        }
        // Moved from this thread's reactor to the main runtime's.
        let Ok(stream) = stream.into_std() else { return };
        self.main.spawn(async move {
            if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                serve(stream).await;
            }
        });
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
