//! `GET /v1/executions/{id}/result`: the archived result file, streamed from the archive (decrypted
//! when client-side encryption is on), never held in memory whole.
//!
//! The answer carries `Content-Length`, the SHA-256 of the result as Mint served it (`Repr-Digest`,
//! RFC 9530, and `Mintgate-Result-Sha256` in hex; it is the manifest's, so it describes the whole
//! file even in a `206`), a strong `ETag` (that hash), `Accept-Ranges: bytes` and
//! `Cache-Control: no-store` (personal data). One range (`Range: bytes=a-b`, `a-`, `-n`) is answered
//! `206` with `Content-Range`; an unsatisfiable one `416` with `Content-Range: bytes */size`;
//! several ranges, a malformed header or an `If-Range` that does not match the `ETag` get the
//! whole file (`200`), as RFC 9110 allows.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use futures::StreamExt as _;
use uuid::Uuid;

use super::ApiState;
use crate::archive::{Manifest, ManifestFile};
use crate::http::ApiError;
use crate::model::ExecutionState;

/// The header with the result's SHA-256 in hex (beside the standard `Repr-Digest`).
pub const SHA256_HEADER: &str = "mintgate-result-sha256";

/// How much of the file is buffered between the archive and the connection.
const PIPE_BYTES: usize = 64 * 1024;

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range (or one to ignore: several ranges, a malformed header): the whole file.
    Whole,
    /// One satisfiable range: these bytes.
    Part(Range<u64>),
    /// One range that no byte of the file satisfies.
    Unsatisfiable,
}

/// Reads a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`) against a file of `size`
/// bytes. An end past the file is cut to it (RFC 9110 §14.1.2).
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => RangeRequest::Whole,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Part(size.saturating_sub(n)..size),
        },
        (first, "") => match number(first) {
            None => RangeRequest::Whole,
            Some(start) if start >= size => RangeRequest::Unsatisfiable,
            Some(start) => RangeRequest::Part(start..size),
        },
        (first, last) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Part(start..end.saturating_add(1).min(size))
                }
            }
            _ => RangeRequest::Whole,
        },
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no execution with this id",
    )
}

/// The execution's archived manifest, or why there is none.
async fn manifest_of(state: &ApiState, id: Uuid) -> Result<Manifest, ApiError> {
    let execution = state
        .store
        .execution(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    if let Some(erasure) = state.store.erasure(id).await.map_err(ApiError::internal)? {
        return Err(erased(&erasure.kind, erasure.at));
    }
    match execution.state {
        ExecutionState::Archived => {}
        ExecutionState::Erased => return Err(erased("erased", execution.updated_at)),
        ExecutionState::Failed | ExecutionState::Expired => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_result",
                format!(
                    "the execution is {}: it has no result and never will",
                    execution.state.as_str()
                ),
            )
            .with_field("state", execution.state.as_str()));
        }
        other => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_archived",
                format!(
                    "the result is not archived yet: the execution is {}; ask again once it is archived",
                    other.as_str()
                ),
            )
            .with_field("state", other.as_str()));
        }
    }
    let location = execution.archive_path.ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "execution {id} is archived but has no archive location"
        ))
    })?;
    let key = state.archive.key_of(&location).ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "{location} is not in the configured archive ({}); after `mintgate archive migrate`, set `archive.url` to the target",
            state.archive.describe()
        ))
    })?;
    match state
        .archive
        .read_manifest(&key)
        .await
        .map_err(ApiError::internal)?
    {
        Some(ManifestFile::Intact(manifest)) => Ok(*manifest),
        Some(ManifestFile::Tombstone(tombstone)) => {
            Err(erased(&tombstone.removed, tombstone.removed_at))
        }
        None => Err(ApiError::internal(anyhow::anyhow!(
            "the manifest beside {location} is missing: the archive is damaged"
        ))),
    }
}

fn erased(kind: &str, at: chrono::DateTime<chrono::Utc>) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "result_erased",
        format!(
            "the result was {kind} on {}; it is no longer kept",
            at.format("%Y-%m-%d")
        ),
    )
}

pub(super) async fn get_result(
    State(state): State<std::sync::Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let manifest = manifest_of(&state, id).await?;
    let size = manifest.bytes;
    let etag = format!("\"{}\"", manifest.sha256);
    // `If-Range` with another validator: the file changed since the client's part, so the whole.
    let if_range_holds = headers
        .get(header::IF_RANGE)
        .is_none_or(|value| value.as_bytes() == etag.as_bytes());
    let request = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if if_range_holds => parse_range(value, size),
        _ => RangeRequest::Whole,
    };
    let mut response = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "private, no-store");
    if let Ok(sha256) = hex::decode(&manifest.sha256) {
        response = response.header(
            "repr-digest",
            format!(
                "sha-256=:{}:",
                base64::engine::general_purpose::STANDARD.encode(sha256)
            ),
        );
    }
    response = response.header(SHA256_HEADER, &manifest.sha256);
    let range = match request {
        RangeRequest::Unsatisfiable => {
            return response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({
                        "error": "range_not_satisfiable",
                        "message": format!("the result has {size} bytes"),
                    })
                    .to_string(),
                ))
                .map_err(|e| ApiError::internal(e.into()));
        }
        RangeRequest::Whole => {
            response = response.status(StatusCode::OK);
            0..size
        }
        RangeRequest::Part(range) => {
            response = response.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", range.start, range.end - 1),
            );
            range
        }
    };
    let content_type = manifest
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/zip"));
    let response = response
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, range.end - range.start)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{id}.zip\""),
        );
    if range.is_empty() {
        return response
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.into()));
    }
    // The archive writes into one end of a bounded pipe while the connection reads the other:
    // memory stays at the pipe's size whatever the file's, and a slow client slows the read.
    let (reader, mut writer) = tokio::io::duplex(PIPE_BYTES);
    let archive = state.archive.clone();
    let copy = tokio::spawn(async move {
        let copied = archive
            .copy_result_range(&manifest, range, &mut writer)
            .await;
        if let Err(error) = &copied {
            tracing::error!(
                execution_id = %id,
                error = format!("{error:#}"),
                "streaming an archived result failed"
            );
        }
        copied
    });
    // When the pipe ends, the copy's outcome decides: a failed copy ends the body with an error,
    // so the connection is cut instead of ending cleanly with fewer or damaged bytes.
    let outcome = futures::stream::once(async move {
        match copy.await {
            Ok(Ok(())) => None,
            _ => Some(Err(std::io::Error::other(
                "the archived result could not be read",
            ))),
        }
    })
    .filter_map(std::future::ready);
    let body = tokio_util::io::ReaderStream::new(reader).chain(outcome);
    response
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::internal(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_range_is_read_in_each_of_its_three_forms_and_cut_to_the_file() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeRequest::Part(0..10));
        assert_eq!(parse_range("bytes=90-", 100), RangeRequest::Part(90..100));
        assert_eq!(parse_range("bytes=-10", 100), RangeRequest::Part(90..100));
        assert_eq!(parse_range("bytes=-500", 100), RangeRequest::Part(0..100));
        assert_eq!(
            parse_range("bytes=95-500", 100),
            RangeRequest::Part(95..100)
        );
        assert_eq!(parse_range("bytes=99-99", 100), RangeRequest::Part(99..100));
    }

    #[test]
    fn a_range_past_the_end_is_unsatisfiable() {
        assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=100-200", 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn several_ranges_and_malformed_headers_get_the_whole_file() {
        for value in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse_range(value, 100), RangeRequest::Whole, "{value}");
        }
    }
}
