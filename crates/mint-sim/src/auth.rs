//! The OAuth 2.0 token endpoint (client credentials only, no refresh token).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine;

use crate::api::json_response;
use crate::model;
use crate::shared::Shared;
use crate::state::Endpoint;
use crate::wire::{OAuthError, TokenResponse};

/// `POST /auth/open/connect/token`.
///
/// Order of checks: form encoding and `grant_type` present (400 `invalid_request`), client
/// authentication by HTTP Basic or form fields, not both (401 `invalid_client`), grant type
/// (400 `unsupported_grant_type`), scope (400 `invalid_scope`). Credentials are compared byte for
/// byte, so a secret with trailing whitespace is wrong.
pub(crate) async fn token(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (mut st, now) = app.current();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let basic = basic_credentials(&headers);
    let claimed_id = basic
        .as_ref()
        .map(|(id, _)| id.as_str())
        .or(field("client_id"))
        .filter(|id| st.clients.contains_key(*id))
        .map(str::to_owned);
    if let Some(id) = &claimed_id {
        st.count_request(id, Endpoint::Token);
    }

    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let both_methods = basic.is_some() && field("client_secret").is_some();
    let outcome = if !form_encoded || field("grant_type").is_none() || both_methods {
        Err((400, "invalid_request"))
    } else {
        let (id, secret) = match &basic {
            Some((id, secret)) => (Some(id.as_str()), secret.as_str()),
            None => (field("client_id"), field("client_secret").unwrap_or("")),
        };
        match id.and_then(|id| st.authenticate(id, secret).map(|life| (id, life))) {
            None => Err((401, "invalid_client")),
            Some(_) if field("grant_type") != Some(model::GRANT_TYPE) => {
                Err((400, "unsupported_grant_type"))
            }
            Some(_) if field("scope").map(str::trim) != Some(model::SCOPE) => {
                Err((400, "invalid_scope"))
            }
            Some((id, lifetime)) => {
                let id = id.to_owned();
                Ok((st.issue_token(&id, lifetime, now), lifetime))
            }
        }
    };
    let mut response = match outcome {
        Ok((access_token, expires_in)) => json_response(
            200,
            &TokenResponse {
                access_token,
                token_type: "Bearer",
                expires_in,
                scope: model::SCOPE,
            },
        ),
        Err((status, error)) => {
            let mut response = json_response(status, &OAuthError { error });
            if status == 401 && basic.is_some() {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="signicat""#),
                );
            }
            response
        }
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(id) = &claimed_id {
        st.count_status(id, response.status().as_u16());
    }
    response
}

/// `(id, secret)` from `Authorization: Basic …`, taken verbatim (no trimming).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}
