//! HTTP plumbing shared by the own API ([`crate::api`]) and the monitoring endpoints
//! ([`crate::monitor`]): the JSON error answer and the bearer API key check. It sits below both so
//! neither takes helpers from the other.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use secrecy::ExposeSecret as _;
use subtle::{Choice, ConditionallySelectable as _, ConstantTimeEq as _};

use crate::config::{ApiKey, Scope, Scopes};

/// An error answer of the own API: `{"error": code, "message": text}`, and at most one more
/// field (the missing scope of a `403`, the state of a `409`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Adds a field to the JSON answer.
    pub fn with_field(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.field = Some((name, value.into()));
        self
    }

    pub fn internal(error: anyhow::Error) -> Self {
        tracing::error!(error = format!("{error:#}"), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if let Some((name, value)) = self.field {
            body[name] = serde_json::Value::String(value);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Checks the bearer API key of a request of the own API against `api_keys` and that the key has
/// the scope `needed` (none: any valid key will do). An unknown key is `401`; a known key without
/// the scope is `403` naming the scope.
pub fn authorize_keys(
    api_keys: &[ApiKey],
    headers: &HeaderMap,
    needed: Option<Scope>,
) -> Result<Scopes, ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send an API key as `Authorization: Bearer <key>`",
        ));
    };
    // Compare with every key, in constant time each, and pick the matching key's scopes without
    // a branch on the comparison, so timing tells nothing about which key (if any) matched.
    let mut ok = Choice::from(0);
    let mut scopes = 0u8;
    for key in api_keys {
        let same = given.as_bytes().ct_eq(key.key.expose_secret().as_bytes());
        scopes = u8::conditional_select(&scopes, &key.scopes.0, same);
        ok |= same;
    }
    if !bool::from(ok) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API key is not valid",
        ));
    }
    let scopes = Scopes(scopes);
    match needed {
        Some(scope) if !scopes.allow(scope) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "missing_scope",
            format!(
                "this API key lacks the scope `{scope}` (it has: {}); use a key with `{scope}` or `admin`",
                scopes
                    .list()
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_field("scope", scope.as_str())),
        _ => Ok(scopes),
    }
}

/// A route that needs `scope`: its requests are refused (`401`/`403`) before the handler runs and
/// before any body is read.
pub fn scoped<S: Clone + Send + Sync + 'static>(
    api_keys: Arc<Vec<ApiKey>>,
    scope: Scope,
    route: MethodRouter<S>,
) -> MethodRouter<S> {
    route.route_layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let api_keys = api_keys.clone();
            async move {
                match authorize_keys(&api_keys, request.headers(), Some(scope)) {
                    Ok(_) => next.run(request).await,
                    Err(error) => error.into_response(),
                }
            }
        },
    ))
}
