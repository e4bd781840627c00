//! AKS workload identity: the projected service-account token (read afresh
//! at every fetch, as the kubelet rotates it) is exchanged at
//! `{AZURE_AUTHORITY_HOST}{tenant}/oauth2/v2.0/token` for an access token
//! (client credentials with a JWT-bearer client assertion).

use super::endpoint::{encode, Workload, SCOPE};
use super::http::{self, Request};
use super::token::{self, Token};

/// The form body of the exchange.
pub(crate) fn form(w: &Workload, assertion: &str) -> String {
    [
        ("grant_type", "client_credentials"),
        ("client_id", w.client_id.as_str()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
        ("scope", SCOPE),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", encode(v)))
    .collect::<Vec<_>>()
    .join("&")
}

/// Exchanges the federated token for an access token.
pub(crate) async fn fetch(w: &Workload) -> Result<Token, String> {
    let assertion = std::fs::read_to_string(&w.token_file).map_err(|e| {
        format!(
            "cannot read AZURE_FEDERATED_TOKEN_FILE `{}`: {e}",
            w.token_file.display()
        )
    })?;
    let assertion = assertion.trim();
    if assertion.is_empty() {
        return Err(format!(
            "AZURE_FEDERATED_TOKEN_FILE `{}` is empty",
            w.token_file.display()
        ));
    }
    let r = http::send(
        &w.url,
        Request {
            method: "POST",
            target: w.url.path.clone(),
            headers: &[],
            form: Some(form(w, assertion)),
        },
    )
    .await
    .map_err(|e| format!("Entra ID token endpoint: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "Entra ID token endpoint: {}",
            token::describe_error(r.status, &r.body)
        ));
    }
    token::parse(&r.body, token::unix_now()).map_err(|e| format!("Entra ID token endpoint: {e}"))
}
