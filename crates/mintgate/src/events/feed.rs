//! The event feed for applications that cannot receive webhooks: `GET /v1/events?after=CURSOR
//! &limit=N&wait=SECONDS` on the operator listener, for an API key with `executions:read`.
//!
//! The cursor is an event's `seq`, which the store assigns in commit order (`store/outbox.rs`), so
//! a reader that saw cursor `n` has seen every event up to it, on any replica and after any
//! restart: the feed is at-least-once for a client that stores `nextCursor` after it has processed
//! a page. With `wait`, an empty answer is held until an event commits (the store rings
//! `outbox_wake`: this process's commits, and other replicas' through PostgreSQL's `NOTIFY`) or
//! the wait ends; nothing polls the database meanwhile.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;

use crate::config::{ApiKey, Scope};
use crate::http::{ApiError, scoped};
use crate::store::SharedStore;

/// Events one answer holds at most (and by default).
pub const FEED_LIMIT_MAX: i64 = 1000;
const FEED_LIMIT_DEFAULT: i64 = 100;

/// What the feed's handler needs.
#[derive(Clone)]
pub struct FeedState {
    pub store: SharedStore,
    pub api_keys: Arc<Vec<ApiKey>>,
    /// The longest `wait` a request may ask for (`events.feed_wait_max`).
    pub wait_max: Duration,
}

/// `GET /v1/events`, for keys with `executions:read` (events tell what became of executions).
pub fn router(state: FeedState) -> Router {
    Router::new()
        .route(
            "/v1/events",
            scoped(state.api_keys.clone(), Scope::ExecutionsRead, get(feed)),
        )
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    after: Option<String>,
    limit: Option<String>,
    wait: Option<String>,
}

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

async fn feed(
    State(state): State<FeedState>,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|_| {
        bad(
            "invalid_query",
            "the query takes `after` (a cursor), `limit` and `wait` only".to_owned(),
        )
    })?;
    // No cursor: from the oldest event kept. A cursor: from just after it, unless events after
    // it were pruned (checked after each read that does not go on right after the cursor, so a
    // prune meanwhile is caught too).
    let cursor = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    bad(
                        "invalid_cursor",
                        "`after` must be a cursor this feed gave (`nextCursor`)".to_owned(),
                    )
                })?,
        ),
    };
    let after = match cursor {
        Some(after) => after,
        None => pruned_through(&state.store).await?,
    };
    let limit = match query.limit.as_deref() {
        None => FEED_LIMIT_DEFAULT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=FEED_LIMIT_MAX).contains(n))
            .ok_or_else(|| {
                bad(
                    "invalid_limit",
                    format!("`limit` must be 1 to {FEED_LIMIT_MAX}"),
                )
            })?,
    };
    let wait_max = state.wait_max.as_secs();
    let wait = match query.wait.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= wait_max)
            .ok_or_else(|| {
                bad(
                    "invalid_wait",
                    format!("`wait` must be 0 to {wait_max} seconds"),
                )
            })?,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let wake = state.store.outbox_wake();
    let events = loop {
        // Registered before the read, so a commit between the read and the wait is not missed.
        let committed = wake.notified();
        tokio::pin!(committed);
        committed.as_mut().enable();
        let events = state
            .store
            .outbox_after(after, limit)
            .await
            .map_err(ApiError::internal)?;
        // A page that goes on right after the cursor missed nothing; otherwise (an empty page,
        // or a gap, which a rolled-back transaction also leaves) ask how far pruning went.
        let contiguous = events.first().is_some_and(|e| e.seq == after + 1);
        let pruned = if contiguous {
            0
        } else {
            pruned_through(&state.store).await?
        };
        if after < pruned {
            return Err(ApiError::new(
                StatusCode::GONE,
                "cursor_expired",
                format!(
                    "events after cursor {after} up to {pruned} were deleted (`events.retention`); \
                     ask again with after={pruned} to go on from the oldest event kept, \
                     knowing that the ones between were missed"
                ),
            ));
        }
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            break events;
        }
        tokio::select! {
            () = &mut committed => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    };
    let next = events.last().map_or(after, |e| e.seq);
    let events = events
        .into_iter()
        .map(|event| {
            let mut body: serde_json::Value =
                serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null);
            if let Some(body) = body.as_object_mut() {
                body.insert("cursor".to_owned(), event.seq.to_string().into());
            }
            body
        })
        .collect::<Vec<_>>();
    Ok(Json(serde_json::json!({
        "events": events,
        "nextCursor": next.to_string(),
    })))
}

/// The highest cursor whose events were pruned (0: none).
async fn pruned_through(store: &SharedStore) -> Result<i64, ApiError> {
    store
        .events_pruned_through()
        .await
        .map_err(ApiError::internal)
}
