//! What a request with a body (the overrides, the cache flush) must pass on
//! its headers alone, before a byte of its body is read: its method and path
//! (the router: anything else is 404/405 without reading), then [`guard`]
//! (token, `Content-Type`, `Origin`), a declared length within the limit, and
//! a place in the body budget. A request that fails any of them is answered
//! at once and its connection closed, the body unread: a client that sends
//! headers and never the body holds nothing it was not entitled to.
//!
//! A request that passes has `[admin] body_timeout` to deliver its body
//! (408 after it). At most [`body_places`] of `max_connections` (in all) and
//! of `max_connections_per_client` (per address) wait on a body at once; the
//! rest of the places are kept for requests without a body (health,
//! readiness, metrics, status), which are answered from memory at once and
//! so can always take a waiting connection's place (see [`super::conns`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::warn;

use super::{denied, guard, refused, text, AppState, MAX_BODY};

/// Of `places` connection places (in all, or per client address), how many
/// requests with a body may hold while their body arrives: a quarter, at
/// least one. The others are kept for requests without a body.
pub(super) fn body_places(places: usize) -> usize {
    (places / 4).max(1)
}

/// The requests with a body in progress, in all and per client address.
#[derive(Default)]
pub(super) struct Bodies {
    inner: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A place in [`Bodies`]; dropping it frees the place.
pub(super) struct BodyPlace {
    bodies: Arc<Bodies>,
    ip: IpAddr,
}

impl Bodies {
    fn take(self: &Arc<Self>, ip: IpAddr, total: usize, per_client: usize) -> Option<BodyPlace> {
        let ip = ip.to_canonical();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (all, by_ip) = &mut *g;
        let mine = by_ip.entry(ip).or_default();
        if *all >= total || *mine >= per_client {
            if *mine == 0 {
                by_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *all += 1;
        Some(BodyPlace {
            bodies: self.clone(),
            ip,
        })
    }
}

impl Drop for BodyPlace {
    fn drop(&mut self) {
        let mut g = self.bodies.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (all, by_ip) = &mut *g;
        *all = all.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Set on a response whose request body was read to its end; requests that
/// declared a body and do not have this get `Connection: close` (see
/// [`close_if_body_unread`]).
#[derive(Clone, Copy)]
struct BodyRead;

/// Whether the request declares a body (a length above 0, or chunked).
fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING) || declared_length(headers).is_some_and(|n| n > 0)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Adds `Connection: close` to the answer of a request whose declared body
/// was not read (refused on its headers, or an endpoint that takes none), so
/// the connection cannot be used to send that body later as a new request.
pub(super) fn close_if_body_unread(request_headers: &HeaderMap, mut resp: Response) -> Response {
    if declares_body(request_headers) && resp.extensions().get::<BodyRead>().is_none() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The name of the operation at `path`, for logs.
fn op_name(path: &str) -> &str {
    match path {
        "/cache/flush" => "flush-cache",
        p => p.trim_start_matches('/'),
    }
}

/// The middleware on every route that takes a body.
pub(super) async fn gate(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let settings = st.shared.config.load().admin.clone();
    let op = op_name(req.uri().path()).to_string();
    let headers = req.headers();
    if let Err(why) =
        guard::authorize(settings.token.as_ref(), headers, peer).and_then(|()| guard::not_from_a_browser(headers))
    {
        if op == "flush-cache" {
            warn!(op, %peer, result = %why, "cache flush refused");
        } else {
            warn!(op, %peer, result = %why, "override refused");
        }
        return denied(&why);
    }
    if declared_length(headers).is_some_and(|n| n > MAX_BODY as u64) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the limit of {MAX_BODY} bytes"),
        );
    }
    let total = body_places(settings.max_connections);
    let Some(place) = st
        .bodies
        .take(peer.ip(), total, body_places(settings.max_connections_per_client))
    else {
        refused(&st.shared, "body_busy");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many admin requests with a body in progress ({total} in all, or {} from {}); retry later",
                body_places(settings.max_connections_per_client),
                peer.ip()
            ),
        );
    };
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(settings.body_timeout, Limited::new(body, MAX_BODY).collect()).await;
    let bytes = match read {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the limit of {MAX_BODY} bytes"),
            )
        }
        Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")),
        Err(_) => {
            refused(&st.shared, "body_timeout");
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {:?} ([admin] body_timeout)",
                    settings.body_timeout
                ),
            );
        }
    };
    let mut resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(place);
    resp.extensions_mut().insert(BodyRead);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_of_the_places_at_least_one() {
        assert_eq!([2, 3, 4, 8, 32, 4096].map(body_places), [1, 1, 1, 2, 8, 1024]);
    }

    #[test]
    fn body_places_are_counted_in_all_and_per_address() {
        let b = Arc::new(Bodies::default());
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "::ffff:10.0.0.2".parse().unwrap());
        let p1 = b.take(x, 3, 2).unwrap();
        let _p2 = b.take(x, 3, 2).unwrap();
        assert!(b.take(x, 3, 2).is_none(), "per address");
        let _p3 = b.take(y, 3, 2).unwrap();
        assert!(b.take("10.0.0.9".parse().unwrap(), 3, 2).is_none(), "in all");
        drop(p1);
        assert!(b.take(x, 3, 2).is_some());
        assert!(
            b.inner.lock().unwrap().1.keys().all(|ip| *ip != y),
            "mapped addresses count as IPv4"
        );
    }

    #[test]
    fn declared_bodies() {
        let mut h = HeaderMap::new();
        assert!(!declares_body(&h));
        h.insert(header::CONTENT_LENGTH, "0".parse().unwrap());
        assert!(!declares_body(&h));
        h.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        assert!(declares_body(&h));
        let mut h = HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert!(declares_body(&h));
    }
}
