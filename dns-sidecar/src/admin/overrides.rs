//! `POST /pin`, `/unpin`, `/drain`, `/undrain`, `/unfence` and `/override`.
//!
//! Each request has passed [`super::gate`] (token, content type, `Origin`,
//! checked before its body was read); it is parsed, its alias name
//! canonicalised (any case, with or without the trailing dot), and handed to
//! the engine; the engine's one-line summary is the answer. Every attempt,
//! refused ones included, is logged at WARN with the op, the peer and the
//! result.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tracing::warn;

use super::{text, AppState};
use crate::control::{ControlError, Override};
use crate::name::DnsName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    alias: String,
    server: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    alias: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerBody {
    server: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnfenceBody {
    alias: String,
    #[serde(default)]
    server: Option<String>,
}

pub(super) async fn pin(st: State<AppState>, peer: ConnectInfo<SocketAddr>, body: Bytes) -> Response {
    handle(st, peer, "pin", || {
        parse::<PinBody>(&body, r#"{"alias":"prod.db.internal","server":"westus2"}"#).map(|b| Override::Pin {
            alias: b.alias,
            server: b.server,
        })
    })
    .await
}

pub(super) async fn unpin(st: State<AppState>, peer: ConnectInfo<SocketAddr>, body: Bytes) -> Response {
    handle(st, peer, "unpin", || {
        parse::<AliasBody>(&body, r#"{"alias":"prod.db.internal"}"#).map(|b| Override::Unpin { alias: b.alias })
    })
    .await
}

pub(super) async fn drain(st: State<AppState>, peer: ConnectInfo<SocketAddr>, body: Bytes) -> Response {
    handle(st, peer, "drain", || {
        parse::<ServerBody>(&body, r#"{"server":"eastus"}"#).map(|b| Override::Drain { server: b.server })
    })
    .await
}

pub(super) async fn undrain(st: State<AppState>, peer: ConnectInfo<SocketAddr>, body: Bytes) -> Response {
    handle(st, peer, "undrain", || {
        parse::<ServerBody>(&body, r#"{"server":"eastus"}"#).map(|b| Override::Undrain { server: b.server })
    })
    .await
}

pub(super) async fn unfence(st: State<AppState>, peer: ConnectInfo<SocketAddr>, body: Bytes) -> Response {
    handle(st, peer, "unfence", || {
        parse::<UnfenceBody>(&body, r#"{"alias":"prod.db.internal","server":"eastus"}"#).map(|b| Override::Unfence {
            alias: b.alias,
            server: b.server,
        })
    })
    .await
}

/// `POST /override` with a tagged [`Override`]: `{"op":"pin","alias":..,"server":..}`.
pub(super) async fn any(st: State<AppState>, peer: ConnectInfo<SocketAddr>, body: Bytes) -> Response {
    handle(st, peer, "override", || {
        parse::<Override>(&body, r#"{"op":"pin","alias":"prod.db.internal","server":"westus2"}"#)
    })
    .await
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8], example: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}; send JSON like {example}"))
}

/// The name of an op, for logs.
fn op_name(op: &Override) -> &'static str {
    match op {
        Override::Pin { .. } => "pin",
        Override::Unpin { .. } => "unpin",
        Override::Drain { .. } => "drain",
        Override::Undrain { .. } => "undrain",
        Override::Unfence { .. } => "unfence",
    }
}

/// Canonical alias names (`prod.db.internal.`), trimmed server ids.
fn canonical(op: Override) -> Result<Override, String> {
    let alias = |a: String| {
        DnsName::parse(a.trim())
            .map(|n| n.as_str().to_string())
            .map_err(|e| format!("bad alias name: {e}"))
    };
    Ok(match op {
        Override::Pin { alias: a, server } => Override::Pin {
            alias: alias(a)?,
            server: server.trim().to_string(),
        },
        Override::Unpin { alias: a } => Override::Unpin { alias: alias(a)? },
        Override::Drain { server } => Override::Drain {
            server: server.trim().to_string(),
        },
        Override::Undrain { server } => Override::Undrain {
            server: server.trim().to_string(),
        },
        Override::Unfence { alias: a, server } => Override::Unfence {
            alias: alias(a)?,
            server: server.map(|s| s.trim().to_string()),
        },
    })
}

fn control_status(e: &ControlError) -> StatusCode {
    match e {
        ControlError::UnknownAlias(_) | ControlError::UnknownServer(_) => StatusCode::NOT_FOUND,
        ControlError::NotACandidate { .. } => StatusCode::BAD_REQUEST,
        ControlError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn handle(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    endpoint: &'static str,
    parse: impl FnOnce() -> Result<Override, String>,
) -> Response {
    let op = match parse().and_then(canonical) {
        Ok(op) => op,
        Err(msg) => {
            warn!(op = endpoint, %peer, result = %msg, "override refused");
            return text(StatusCode::BAD_REQUEST, msg);
        }
    };
    let name = op_name(&op);
    let (alias, server) = match &op {
        Override::Pin { alias, server } => (Some(alias.clone()), Some(server.clone())),
        Override::Unpin { alias } => (Some(alias.clone()), None),
        Override::Drain { server } | Override::Undrain { server } => (None, Some(server.clone())),
        Override::Unfence { alias, server } => (Some(alias.clone()), server.clone()),
    };
    match st.control.apply(op).await {
        Ok(summary) => {
            warn!(op = name, alias = alias.as_deref(), server = server.as_deref(), %peer, result = %summary, "override applied");
            text(StatusCode::OK, summary)
        }
        Err(e) => {
            warn!(op = name, alias = alias.as_deref(), server = server.as_deref(), %peer, result = %e, "override refused");
            text(control_status(&e), e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_are_canonicalised() {
        let op = canonical(Override::Pin {
            alias: " Prod.DB.Internal ".into(),
            server: " b ".into(),
        })
        .unwrap();
        assert_eq!(
            op,
            Override::Pin {
                alias: "prod.db.internal.".into(),
                server: "b".into()
            }
        );
        let op = canonical(Override::Unpin {
            alias: "prod.db.internal.".into(),
        })
        .unwrap();
        assert_eq!(
            op,
            Override::Unpin {
                alias: "prod.db.internal.".into()
            }
        );
        assert!(canonical(Override::Unpin { alias: "a b".into() })
            .unwrap_err()
            .contains("bad alias name"));
        assert!(canonical(Override::Unpin { alias: "".into() })
            .unwrap_err()
            .contains("bad alias name"));
    }

    #[test]
    fn bodies_parse_or_explain() {
        let b: PinBody = parse(br#"{"alias":"x","server":"y"}"#, "").unwrap();
        assert_eq!((b.alias.as_str(), b.server.as_str()), ("x", "y"));
        let e = parse::<PinBody>(br#"{"alias":"x"}"#, "EXAMPLE").err().unwrap();
        assert!(e.contains("missing field `server`") && e.contains("EXAMPLE"), "{e}");
        assert!(parse::<ServerBody>(br#"{"server":"y","extra":1}"#, "").is_err());
        assert!(parse::<Override>(br#"{"op":"explode"}"#, "").is_err());
        assert_eq!(
            parse::<Override>(br#"{"op":"drain","server":"a"}"#, "").unwrap(),
            Override::Drain { server: "a".into() }
        );
        assert!(parse::<AliasBody>(b"\xff\xfe", "").is_err());
        let u: UnfenceBody = parse(br#"{"alias":"x"}"#, "").unwrap();
        assert_eq!((u.alias.as_str(), u.server), ("x", None));
        assert_eq!(
            parse::<Override>(br#"{"op":"unfence","alias":"x","server":"a"}"#, "").unwrap(),
            Override::Unfence {
                alias: "x".into(),
                server: Some("a".into())
            }
        );
    }
}
