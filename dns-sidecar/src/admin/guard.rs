//! Who may send overrides.
//!
//! * A token is configured (`[admin] token_file` or `token_env`): every caller,
//!   loopback included, must send `Authorization: Bearer <token>`; the
//!   comparison takes the same time wherever the first difference is.
//! * No token: only loopback peers (the pod, the host itself) may send them,
//!   and not through a proxy (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`,
//!   `X-Envoy-External-Address`: a mesh sidecar relays remote requests from
//!   loopback).
//! * Always: the body must be declared `application/json` and the request
//!   must not carry `Origin`. A page in a browser can only send a
//!   cross-origin POST without a preflight as a form or plain text, and
//!   browsers add `Origin` to every cross-origin POST, so neither a form on a
//!   web page nor its script can reach the overrides through the user's
//!   browser (CSRF, DNS rebinding); `curl` and the CLI send neither.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap};

use crate::config::Secret;

/// Why an override was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denied {
    /// 401: a token is configured and the request did not carry it.
    #[error(
        "missing `Authorization: Bearer <token>` header; this admin listener requires the token from [admin] token_file/token_env"
    )]
    MissingToken,
    /// 401: a token was sent but it is not the configured one (or malformed).
    #[error("wrong admin token")]
    WrongToken,
    /// 403: no token is configured and the peer is not on loopback.
    #[error(
        "overrides from {peer} refused: without an admin token they are accepted from loopback only; to allow remote overrides set `token_file = \"/path/to/token\"` (or `token_env = \"VAR\"`) in [admin] and send `Authorization: Bearer <token>`"
    )]
    NotLoopback { peer: SocketAddr },
    /// 415: the body is not declared as JSON.
    #[error("overrides must be sent with `Content-Type: application/json`")]
    NotJson,
    /// 403: the request comes from a web page (it carries `Origin`).
    #[error("overrides are not accepted from web pages (the request carries an Origin header)")]
    FromBrowser,
}

impl Denied {
    /// The HTTP status for this refusal.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Denied::MissingToken | Denied::WrongToken => 401,
            Denied::NotLoopback { .. } | Denied::FromBrowser => 403,
            Denied::NotJson => 415,
        }
    }
}

/// Headers a proxy adds when it relays a request; without a token, a loopback
/// request carrying one is treated as remote.
const PROXY_HEADERS: [&str; 4] = ["forwarded", "x-forwarded-for", "x-real-ip", "x-envoy-external-address"];

/// Decides whether `peer` with `headers` may send an override.
pub(super) fn authorize(token: Option<&Secret>, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Denied> {
    let Some(token) = token else {
        // A proxy on the same host (a service-mesh sidecar, a reverse
        // proxy) connects from loopback on behalf of someone else; it says
        // so in these headers.
        let proxied = PROXY_HEADERS.iter().any(|h| headers.contains_key(*h));
        return if is_loopback(peer) && !proxied {
            Ok(())
        } else {
            Err(Denied::NotLoopback { peer })
        };
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Denied::MissingToken);
    };
    let value = value.as_bytes();
    // The scheme is case-insensitive (RFC 9110 §11.1); one space after it.
    let given = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii(),
        _ => return Err(Denied::WrongToken),
    };
    if constant_time_eq(given, token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Denied::WrongToken)
    }
}

/// Refuses requests a browser could have sent on a web page's behalf.
pub(super) fn not_from_a_browser(headers: &HeaderMap) -> Result<(), Denied> {
    if headers.contains_key(header::ORIGIN) {
        return Err(Denied::FromBrowser);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if json {
        Ok(())
    } else {
        Err(Denied::NotJson)
    }
}

/// Loopback, including an IPv4 loopback mapped into IPv6 (`::ffff:127.0.0.1`).
fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// Compares without an early exit: the time depends on the length of `given`
/// only, never on where it differs from `expected`.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = (given.len() != expected.len()) as u8;
    for (i, &g) in given.iter().enumerate() {
        diff |= g ^ expected[i % expected.len()];
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn token_rules() {
        let t = Secret::new("s3cret-token".into());
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let far: SocketAddr = "10.0.0.7:1".parse().unwrap();
        assert_eq!(authorize(Some(&t), &headers(None), lo), Err(Denied::MissingToken));
        assert_eq!(
            authorize(Some(&t), &headers(Some("Bearer nope")), lo),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            authorize(Some(&t), &headers(Some("Bearer s3cret-toke")), lo),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            authorize(Some(&t), &headers(Some("Bearer s3cret-token!")), lo),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            authorize(Some(&t), &headers(Some("Basic s3cret-token")), lo),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            authorize(Some(&t), &headers(Some("Bearer")), lo),
            Err(Denied::WrongToken)
        );
        assert_eq!(authorize(Some(&t), &headers(Some("Bearer s3cret-token")), far), Ok(()));
        assert_eq!(authorize(Some(&t), &headers(Some("bearer s3cret-token")), lo), Ok(()));
    }

    #[test]
    fn loopback_rules_without_token() {
        for ok in ["127.0.0.1:5", "127.3.4.5:5", "[::1]:5", "[::ffff:127.0.0.1]:5"] {
            assert_eq!(authorize(None, &headers(None), ok.parse().unwrap()), Ok(()), "{ok}");
        }
        let mut proxied = headers(None);
        proxied.insert("x-forwarded-for", "10.9.9.9".parse().unwrap());
        assert_eq!(
            authorize(None, &proxied, "127.0.0.1:5".parse().unwrap()).map_err(|e| e.status()),
            Err(403),
            "relayed by a local proxy"
        );
        for no in ["10.1.2.3:5", "[fd00::1]:5", "[::ffff:10.0.0.1]:5", "0.0.0.0:5"] {
            let peer: SocketAddr = no.parse().unwrap();
            let e = authorize(None, &headers(Some("Bearer x")), peer).unwrap_err();
            assert_eq!(e.status(), 403);
            assert!(e.to_string().contains("token_file"), "{e}");
        }
    }

    #[test]
    fn browsers_cannot_post_overrides() {
        let mut h = HeaderMap::new();
        assert_eq!(not_from_a_browser(&h), Err(Denied::NotJson));
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert_eq!(not_from_a_browser(&h), Err(Denied::NotJson));
        h.insert(header::CONTENT_TYPE, "Application/JSON; charset=utf-8".parse().unwrap());
        assert_eq!(not_from_a_browser(&h), Ok(()));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert_eq!(not_from_a_browser(&h).map_err(|e| e.status()), Err(403));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"abcabc", b"abc"));
        assert!(!constant_time_eq(b"", b""));
    }
}
