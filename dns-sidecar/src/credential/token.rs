//! The token endpoints' JSON answers: an access token with its lifetime,
//! or an OAuth error. Errors never carry the token.

use std::time::Duration;

use serde_json::Value;

use crate::config::Secret;

/// A token and how long it lives from when it was received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) secret: Secret,
    pub(crate) lifetime: Duration,
}

/// Seconds as the endpoints write them: IMDS sends strings (`"86399"`),
/// the v2.0 token endpoint numbers.
fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses a 2xx answer; `now_unix` is the wall clock, for `expires_on`.
pub(crate) fn parse(body: &[u8], now_unix: u64) -> Result<Token, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_string())?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the answer has no access_token")?;
    let lifetime = match (
        v.get("expires_in").and_then(seconds),
        v.get("expires_on").and_then(seconds),
    ) {
        (Some(s), _) => s,
        (None, Some(on)) => on.saturating_sub(now_unix),
        (None, None) => return Err("the answer has neither expires_in nor expires_on".into()),
    };
    if lifetime == 0 {
        return Err("the token has already expired".into());
    }
    Ok(Token {
        secret: Secret::new(token.to_string()),
        lifetime: Duration::from_secs(lifetime),
    })
}

/// Seconds since the Unix epoch, for `expires_on`.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Describes an error answer: `error: error_description` when it is OAuth
/// JSON, else the start of the body.
pub(crate) fn describe_error(status: u16, body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let detail = match (field("error"), field("error_description")) {
        (Some(e), Some(d)) => format!("{e}: {}", first_line(&d, 300)),
        (Some(e), None) => e,
        (None, Some(d)) => first_line(&d, 300),
        (None, None) => first_line(&String::from_utf8_lossy(body), 200),
    };
    if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    }
}

/// The first line of `s`, at most `max` characters.
pub(crate) fn first_line(s: &str, max: usize) -> String {
    let line = s.trim().lines().next().unwrap_or("");
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imds_strings_and_v2_numbers() {
        let imds = br#"{"access_token":"eyJ0","refresh_token":"","expires_in":"86399","expires_on":"1700086399",
            "not_before":"1700000000","resource":"https://ossrdbms-aad.database.windows.net","token_type":"Bearer"}"#;
        let t = parse(imds, 1_700_000_000).unwrap();
        assert_eq!((t.secret.expose(), t.lifetime), ("eyJ0", Duration::from_secs(86_399)));
        let v2 = br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"abc"}"#;
        assert_eq!(parse(v2, 0).unwrap().lifetime, Duration::from_secs(3599));
        // Only expires_on: counted from the wall clock.
        let on = br#"{"access_token":"x","expires_on":"1000"}"#;
        assert_eq!(parse(on, 400).unwrap().lifetime, Duration::from_secs(600));
        assert!(parse(on, 1000).unwrap_err().contains("expired"));
        assert!(parse(br#"{"access_token":"x"}"#, 0).unwrap_err().contains("expires_in"));
        assert!(parse(br#"{"expires_in":"5"}"#, 0).unwrap_err().contains("access_token"));
        assert!(parse(b"<html>", 0).unwrap_err().contains("JSON"));
        assert!(parse(br#"{"access_token":"x","expires_in":"soon"}"#, 0).is_err());
    }

    #[test]
    fn errors_name_the_oauth_error_and_never_echo_a_token() {
        let e = describe_error(
            400,
            br#"{"error":"invalid_request","error_description":"Identity not found"}"#,
        );
        assert_eq!(e, "HTTP 400: invalid_request: Identity not found");
        assert_eq!(describe_error(503, b""), "HTTP 503");
        assert_eq!(describe_error(500, b"oops\nmore"), "HTTP 500: oops");
        // A parse failure of a success answer does not include the body.
        let err = parse(br#"{"access_token":"SECRET-TOKEN"}"#, 0).unwrap_err();
        assert!(!err.contains("SECRET-TOKEN"), "{err}");
    }
}
