//! Managed identity: `GET {IMDS}/metadata/identity/oauth2/token` with the
//! `Metadata: true` header (which the service requires, so a request
//! forwarded by a server-side request forgery is refused).

use super::endpoint::Imds;
use super::http::{self, Request};
use super::token::{self, Token};

/// Asks the metadata service for a token.
pub(crate) async fn fetch(imds: &Imds) -> Result<Token, String> {
    let r = http::send(
        &imds.url,
        Request {
            method: "GET",
            target: imds.target(),
            headers: &[("Metadata", "true")],
            form: None,
        },
    )
    .await
    .map_err(|e| format!("instance metadata service: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "instance metadata service: {}",
            token::describe_error(r.status, &r.body)
        ));
    }
    token::parse(&r.body, token::unix_now()).map_err(|e| format!("instance metadata service: {e}"))
}
