//! The client's error: each variant says how far the request got and what the caller can do.
//!
//! In the manner of smithy-rs' `SdkError`: never sent / sent but no answer (for a start: *ambiguous*) /
//! answered with an error / answered but undecodable. Dependency errors (reqwest, serde, io) stay behind
//! `source()`; no variant field has a dependency's type.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::ids::{DefinitionId, FlowId, InstanceId};

/// A boxed source error (a transport, decoding or io error).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A Mint role, granted per API client and per environment in the Signicat dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Needed by every GET on flows, instances and activities.
    FlowViewer,
    /// Needed to start an instance.
    FlowEditor,
    /// Needed to download a result file.
    FlowInstanceDownload,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::FlowViewer => "Flow Viewer",
            Role::FlowEditor => "Flow Editor",
            Role::FlowInstanceDownload => "Flow Instance Download",
        })
    }
}

/// Every call this client makes, with what it costs and which role it needs: the client's own table,
/// because Mint's 403 does not name the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST` to the token endpoint.
    Token,
    /// `GET /api/flows`.
    ListFlows,
    /// `GET /api/flows/{flowId}/instances`.
    ListInstances,
    /// `POST /api/flows/{flowId}/instances` (billed).
    StartInstance,
    /// `GET /api/instances/{instanceId}`.
    GetInstance,
    /// `GET /api/instances/{instanceId}/activities`.
    Activities,
    /// `GET /api/instances/{instanceId}/result-file`.
    ResultFile,
}

impl Operation {
    /// The HTTP method.
    pub fn method(self) -> &'static str {
        match self {
            Operation::Token | Operation::StartInstance => "POST",
            _ => "GET",
        }
    }

    /// The path template (ids left as placeholders), as logged.
    pub fn path_template(self) -> &'static str {
        match self {
            Operation::Token => "/auth/open/connect/token",
            Operation::ListFlows => "/api/flows",
            Operation::ListInstances | Operation::StartInstance => "/api/flows/{flowId}/instances",
            Operation::GetInstance => "/api/instances/{instanceId}",
            Operation::Activities => "/api/instances/{instanceId}/activities",
            Operation::ResultFile => "/api/instances/{instanceId}/result-file",
        }
    }

    /// The role Mint requires for this call (`None` for the token endpoint).
    pub fn role(self) -> Option<Role> {
        match self {
            Operation::Token => None,
            Operation::StartInstance => Some(Role::FlowEditor),
            Operation::ResultFile => Some(Role::FlowInstanceDownload),
            _ => Some(Role::FlowViewer),
        }
    }

    /// Whether repeating the call cannot change anything on the server (so it may be retried blindly).
    pub fn is_idempotent(self) -> bool {
        self != Operation::StartInstance
    }

    /// A short name for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Token => "token",
            Operation::ListFlows => "list_flows",
            Operation::ListInstances => "list_instances",
            Operation::StartInstance => "start",
            Operation::GetInstance => "get_instance",
            Operation::Activities => "activities",
            Operation::ResultFile => "result_file",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method(), self.path_template())
    }
}

/// Why a request was never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotSentReason {
    /// No connection could be made (refused, DNS, TLS, connect timeout).
    Connect,
    /// The request budget did not admit it (too large for the budget, or it would wait too long).
    Budget(String),
    /// The request could not be built (bad configuration).
    Build,
}

/// Why a sent request has no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoAnswerReason {
    /// No answer within the timeout.
    Timeout,
    /// The connection broke before the answer was complete.
    ConnectionLost,
    /// An answer came but its body could not be read or decoded.
    Undecodable,
    /// The server answered with a 5xx: it may or may not have acted.
    ServerError(u16),
}

impl fmt::Display for NoAnswerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoAnswerReason::Timeout => f.write_str("no answer before the timeout"),
            NoAnswerReason::ConnectionLost => {
                f.write_str("the connection was lost before the answer")
            }
            NoAnswerReason::Undecodable => f.write_str("the answer could not be read or decoded"),
            NoAnswerReason::ServerError(s) => write!(f, "the server answered {s}"),
        }
    }
}

/// Why the token endpoint refused (or failed) to issue a token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// `invalid_client`: wrong client id or secret.
    InvalidClient,
    /// `invalid_scope`.
    InvalidScope,
    /// Another OAuth error code (`invalid_request`, `unsupported_grant_type`, …).
    OAuth(String),
    /// The API still answered 401 right after a fresh token was fetched.
    TokenRejected,
    /// The token endpoint could not be reached or gave an unusable answer.
    Unavailable,
}

/// An error field of a Mint error body: one invalid parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParam {
    /// Parameter name.
    pub name: String,
    /// Why it is invalid.
    pub reason: String,
}

/// What a caller should do about an [`Error`], decided once by [`Error::kind`].
///
/// The first four *delay* work without counting a failed attempt (they say nothing about the work
/// itself); the others are answers about the work, or about this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Mint or its token endpoint is unreachable or failing: no connection, a timeout, a `5xx`, a
    /// cut or stalled download. Wait and retry; the work is not at fault.
    Outage,
    /// Mint answered `429` until the retries ran out (any call, the result file included), or the
    /// client's own budget would not admit the call in time. Wait ([`Error::retry_after`]) and retry.
    RateLimited,
    /// The API client lacks a role ([`Error::MissingRole`]): pause this kind of work for this
    /// environment until an operator grants it (a probe without billing can tell when).
    MissingRole,
    /// A start may or may not have run ([`Error::Ambiguous`]): reconcile before starting again.
    Ambiguous,
    /// The result file is not ready yet (`409`): check again later.
    NotReady,
    /// The token endpoint refused the credentials or the scope, or the API rejected a fresh token:
    /// a configuration error only an operator can fix.
    Refused,
    /// Mint answered `404` (the resource does not exist, or no longer: [`Error::Expired`] is a
    /// `404` on an id this process has seen), or a definition id was passed as a flow id.
    NotFound,
    /// The request was wrong: bad configuration, an invalid id, a `4xx` Mint gave for the request.
    /// Retrying the same request cannot help.
    Invalid,
    /// Mint answered something this client cannot use: a success whose body does not decode, a
    /// result file that is not a ZIP. Retry a few times (counted), then ask an operator.
    Unexpected,
    /// Writing the download on this side failed (disk full, permissions, a symlink refused).
    Local,
}

/// Everything that can go wrong with a Mint call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration (a missing variable, an unparsable URL).
    #[error("invalid Mint client configuration: {0}")]
    Config(String),

    /// An invalid identifier was given.
    #[error(transparent)]
    InvalidId(#[from] crate::ids::InvalidId),

    /// The request was never sent; repeating it is safe.
    #[error("{operation} was not sent: {}", not_sent_text(.reason))]
    NotSent {
        /// The call.
        operation: Operation,
        /// Why.
        reason: NotSentReason,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A safe (idempotent) call was sent but got no usable answer, after the allowed retries.
    #[error("{operation} failed after {attempts} attempt(s): {reason}")]
    NoAnswer {
        /// The call.
        operation: Operation,
        /// Why.
        reason: NoAnswerReason,
        /// How many attempts were made.
        attempts: u32,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A start was sent and may have been committed (and billed), but no usable answer came back.
    /// The client does not retry it: find out with `instances(flow_id)` whether it ran before starting
    /// again, or you may pay twice.
    #[error(
        "start of an instance of flow {flow_id} is ambiguous: {reason}; the server may have started \
         (and billed) it, so list the flow's instances to reconcile before starting again"
    )]
    Ambiguous {
        /// The flow whose start is in doubt.
        flow_id: FlowId,
        /// What happened.
        reason: NoAnswerReason,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// The token endpoint refused to issue a token, or the API rejected a fresh one.
    #[error("{message}")]
    Auth {
        /// What kind of failure.
        kind: AuthErrorKind,
        /// An actionable message.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// Mint answered 403: the API client lacks `role`, which `operation` needs.
    #[error(
        "this API client lacks the role {role}, which {operation} needs; grant it in the Signicat \
         dashboard of the {environment} account (API clients → roles; roles are granted separately \
         per environment){}", trace_suffix(.trace_id)
    )]
    MissingRole {
        /// The role the call needs (from the client's table; Mint does not say).
        role: Role,
        /// The call.
        operation: Operation,
        /// The configured environment name.
        environment: String,
        /// Mint's trace id, for support tickets.
        trace_id: Option<String>,
    },

    /// A definition id was passed where a flow id belongs.
    #[error(
        "{definition_id} is a definition id, not a flow id: Mint answered 404 \"Flow not found\", \
         and the flow list (looked up to explain the 404) shows it is the definition of flow(s) {}; \
         pass one of those flow ids instead", list(.flow_ids)
    )]
    DefinitionIdAsFlowId {
        /// The id that was passed.
        definition_id: DefinitionId,
        /// The flow ids (versions) that belong to that definition.
        flow_ids: Vec<FlowId>,
    },

    /// Mint answered 404.
    #[error("{operation}: {resource} not found{}", trace_suffix(.trace_id))]
    NotFound {
        /// The call.
        operation: Operation,
        /// What was looked up (e.g. `flow flow-1`).
        resource: String,
        /// Mint's trace id.
        trace_id: Option<String>,
    },

    /// The instance was known to this client and now answers 404: Mint deleted it (30 days after it ended).
    #[error(
        "instance {instance_id} has expired: Mint deletes instances and result files 30 days after they end"
    )]
    Expired {
        /// The instance.
        instance_id: InstanceId,
    },

    /// Mint answered 409: the result file is not ready yet.
    #[error(
        "the result file of instance {instance_id} is not ready yet (409); try again when it has finished"
    )]
    NotReady {
        /// The instance.
        instance_id: InstanceId,
        /// Mint's trace id.
        trace_id: Option<String>,
    },

    /// Mint kept answering 429 and the retries (or the retry budget) ran out.
    #[error("{operation} was rate limited (429) and the retries ran out{}", retry_after_suffix(.retry_after))]
    RateLimited {
        /// The call.
        operation: Operation,
        /// The last `Retry-After` given, if any.
        retry_after: Option<Duration>,
    },

    /// Mint answered with another error status.
    #[error("{operation} answered {status}{}{}{}", opt_suffix(.title), params_suffix(.invalid_params), trace_suffix(.trace_id))]
    Api {
        /// The call.
        operation: Operation,
        /// HTTP status.
        status: u16,
        /// `title` of the error body.
        title: Option<String>,
        /// `detail` of the error body.
        detail: Option<String>,
        /// `code` of the error body.
        code: Option<String>,
        /// `invalidParams` of the error body.
        invalid_params: Vec<InvalidParam>,
        /// Mint's trace id.
        trace_id: Option<String>,
    },

    /// A safe call was answered 2xx but the body could not be decoded.
    #[error("{operation} answered {status} with a body this client cannot decode")]
    Decode {
        /// The call.
        operation: Operation,
        /// HTTP status.
        status: u16,
        /// The decoding error.
        #[source]
        source: BoxError,
    },

    /// A result-file download failed.
    #[error("download of the result file of instance {instance_id} failed: {kind}")]
    Download {
        /// The instance.
        instance_id: InstanceId,
        /// What failed.
        kind: DownloadErrorKind,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

/// How a download failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownloadErrorKind {
    /// No answer or no first byte within the configured time (after the allowed restarts).
    FirstByteTimeout {
        /// Bytes of the file received before (kept from earlier attempts when resuming).
        bytes: u64,
        /// Restarts and resumes made.
        restarts: u32,
    },
    /// The transfer rate fell below the configured minimum (after the allowed restarts).
    Stalled {
        /// Bytes of the file received when it was given up.
        bytes: u64,
        /// Restarts and resumes made.
        restarts: u32,
    },
    /// The connection was cut; `restarts` restarts/resumes were made before giving up.
    Interrupted {
        /// Bytes received in total.
        bytes: u64,
        /// Restarts and resumes made.
        restarts: u32,
    },
    /// The body was shorter or longer than `Content-Length`.
    LengthMismatch {
        /// `Content-Length` (of the whole file).
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// A ranged answer was inconsistent (wrong `Content-Range`).
    BadRange(String),
    /// The connection was cut and the writer cannot be rewound to restart from zero (and the server
    /// does not offer ranges): use `download_result_restartable` or `download_result_to_path`.
    CannotRestart,
    /// Writing to the sink or the file failed.
    Io,
    /// The answer is not a result file (an HTML error page, a JSON problem, a truncated or
    /// corrupt ZIP): nothing of it may be kept. Retryable: a proxy's error page is often transient.
    NotAResultFile(Box<crate::result_file::InvalidResultFile>),
    /// The download target is a symbolic link (the `.part` file or the final path): refused, never
    /// followed.
    Symlink(std::path::PathBuf),
}

impl fmt::Display for DownloadErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadErrorKind::FirstByteTimeout { bytes, restarts } => write!(
                f,
                "no first byte in time (after {bytes} bytes and {restarts} restarts)"
            ),
            DownloadErrorKind::Stalled { bytes, restarts } => write!(
                f,
                "the transfer stalled below the minimum rate (after {bytes} bytes and {restarts} \
                 restarts)"
            ),
            DownloadErrorKind::Interrupted { bytes, restarts } => {
                write!(
                    f,
                    "the connection was cut (after {bytes} bytes and {restarts} restarts)"
                )
            }
            DownloadErrorKind::LengthMismatch { expected, received } => {
                write!(
                    f,
                    "Content-Length said {expected} bytes but {received} arrived"
                )
            }
            DownloadErrorKind::BadRange(s) => write!(f, "inconsistent ranged answer: {s}"),
            DownloadErrorKind::CannotRestart => f.write_str(
                "the connection was cut and this writer cannot be rewound (use \
                 download_result_restartable or download_result_to_path)",
            ),
            DownloadErrorKind::Io => f.write_str("writing the file failed"),
            DownloadErrorKind::NotAResultFile(invalid) => invalid.fmt(f),
            DownloadErrorKind::Symlink(path) => write!(
                f,
                "{} is a symbolic link; refusing to write through it",
                path.display()
            ),
        }
    }
}

fn not_sent_text(reason: &NotSentReason) -> String {
    match reason {
        NotSentReason::Connect => "no connection could be made".into(),
        NotSentReason::Budget(s) => format!("the request budget refused it: {s}"),
        NotSentReason::Build => "the request could not be built".into(),
    }
}

fn trace_suffix(trace_id: &Option<String>) -> String {
    trace_id
        .as_ref()
        .map(|t| format!(" (trace id {t})"))
        .unwrap_or_default()
}

fn opt_suffix(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!(": {s}")).unwrap_or_default()
}

fn retry_after_suffix(d: &Option<Duration>) -> String {
    d.map(|d| format!(" (Retry-After {} s)", d.as_secs_f64()))
        .unwrap_or_default()
}

fn params_suffix(p: &[InvalidParam]) -> String {
    if p.is_empty() {
        return String::new();
    }
    let parts: Vec<_> = p
        .iter()
        .map(|p| format!("{}: {}", p.name, p.reason))
        .collect();
    format!(" [{}]", parts.join("; "))
}

fn list(ids: &[FlowId]) -> String {
    let parts: Vec<_> = ids.iter().map(|i| i.as_str()).collect();
    parts.join(", ")
}

impl Error {
    /// What the caller should do about this error: the one classification to branch on (see
    /// [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::InvalidId(_) => ErrorKind::Invalid,
            Error::NotSent { reason, .. } => match reason {
                NotSentReason::Connect => ErrorKind::Outage,
                NotSentReason::Budget(_) => ErrorKind::RateLimited,
                NotSentReason::Build => ErrorKind::Invalid,
            },
            Error::NoAnswer { .. } => ErrorKind::Outage,
            Error::Ambiguous { .. } => ErrorKind::Ambiguous,
            Error::Auth { kind, .. } => match kind {
                AuthErrorKind::Unavailable => ErrorKind::Outage,
                AuthErrorKind::InvalidClient
                | AuthErrorKind::InvalidScope
                | AuthErrorKind::OAuth(_)
                | AuthErrorKind::TokenRejected => ErrorKind::Refused,
            },
            Error::MissingRole { .. } => ErrorKind::MissingRole,
            Error::DefinitionIdAsFlowId { .. } | Error::NotFound { .. } | Error::Expired { .. } => {
                ErrorKind::NotFound
            }
            Error::NotReady { .. } => ErrorKind::NotReady,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::Api { status, .. } => match status {
                408 | 500.. => ErrorKind::Outage,
                _ => ErrorKind::Invalid,
            },
            Error::Decode { .. } => ErrorKind::Unexpected,
            Error::Download { kind, .. } => match kind {
                DownloadErrorKind::FirstByteTimeout { .. }
                | DownloadErrorKind::Stalled { .. }
                | DownloadErrorKind::Interrupted { .. }
                | DownloadErrorKind::CannotRestart => ErrorKind::Outage,
                DownloadErrorKind::LengthMismatch { .. }
                | DownloadErrorKind::BadRange(_)
                | DownloadErrorKind::NotAResultFile(_) => ErrorKind::Unexpected,
                DownloadErrorKind::Io | DownloadErrorKind::Symlink(_) => ErrorKind::Local,
            },
        }
    }

    /// For a failed download, the bytes of the file received before it was given up (0 when it was
    /// refused before any byte, e.g. by a `403`).
    pub fn received_bytes(&self) -> Option<u64> {
        match self {
            Error::Download { kind, .. } => Some(match kind {
                DownloadErrorKind::FirstByteTimeout { bytes, .. }
                | DownloadErrorKind::Stalled { bytes, .. }
                | DownloadErrorKind::Interrupted { bytes, .. } => *bytes,
                DownloadErrorKind::LengthMismatch { received, .. } => *received,
                DownloadErrorKind::NotAResultFile(invalid) => invalid.received_bytes,
                _ => 0,
            }),
            _ => None,
        }
    }

    /// Whether repeating the same call later may succeed and is safe. `Ambiguous` is not: reconcile first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotSent { reason, .. } => !matches!(reason, NotSentReason::Build),
            Error::NoAnswer { .. } | Error::RateLimited { .. } | Error::NotReady { .. } => true,
            Error::Api { status, .. } => *status >= 500,
            Error::Auth { kind, .. } => matches!(kind, AuthErrorKind::Unavailable),
            Error::Download { kind, .. } => {
                !matches!(kind, DownloadErrorKind::Io | DownloadErrorKind::Symlink(_))
            }
            _ => false,
        }
    }

    /// How long the server asked to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Mint's trace id, when the error came with one.
    pub fn trace_id(&self) -> Option<&str> {
        match self {
            Error::MissingRole { trace_id, .. }
            | Error::NotFound { trace_id, .. }
            | Error::NotReady { trace_id, .. }
            | Error::Api { trace_id, .. } => trace_id.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status Mint answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::MissingRole { .. } => Some(403),
            Error::NotFound { .. } | Error::Expired { .. } | Error::DefinitionIdAsFlowId { .. } => {
                Some(404)
            }
            Error::NotReady { .. } => Some(409),
            Error::RateLimited { .. } => Some(429),
            Error::Api { status, .. } | Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_role_message_names_role_call_and_fix() {
        let e = Error::MissingRole {
            role: Role::FlowInstanceDownload,
            operation: Operation::ResultFile,
            environment: "production".into(),
            trace_id: Some("t-1".into()),
        };
        let m = e.to_string();
        assert!(m.contains("lacks the role Flow Instance Download"), "{m}");
        assert!(
            m.contains("GET /api/instances/{instanceId}/result-file"),
            "{m}"
        );
        assert!(
            m.contains("grant it in the Signicat dashboard of the production account"),
            "{m}"
        );
        assert!(m.contains("trace id t-1"), "{m}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn role_table_matches_the_contract() {
        assert_eq!(Operation::ListFlows.role(), Some(Role::FlowViewer));
        assert_eq!(Operation::ListInstances.role(), Some(Role::FlowViewer));
        assert_eq!(Operation::GetInstance.role(), Some(Role::FlowViewer));
        assert_eq!(Operation::Activities.role(), Some(Role::FlowViewer));
        assert_eq!(Operation::StartInstance.role(), Some(Role::FlowEditor));
        assert_eq!(
            Operation::ResultFile.role(),
            Some(Role::FlowInstanceDownload)
        );
        assert!(!Operation::StartInstance.is_idempotent());
        assert!(Operation::ResultFile.is_idempotent());
    }

    #[test]
    fn classification_of_errors() {
        let flow = FlowId::new("f").unwrap();
        let ambiguous = Error::Ambiguous {
            flow_id: flow,
            reason: NoAnswerReason::Timeout,
            source: None,
        };
        assert!(!ambiguous.is_retryable());
        assert!(ambiguous.to_string().contains("reconcile"));
        let limited = Error::RateLimited {
            operation: Operation::ListFlows,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(limited.status(), Some(429));
        let api = |status| Error::Api {
            operation: Operation::GetInstance,
            status,
            title: None,
            detail: None,
            code: None,
            invalid_params: vec![],
            trace_id: None,
        };
        assert!(api(503).is_retryable());
        assert!(!api(400).is_retryable());
        let not_sent = Error::NotSent {
            operation: Operation::StartInstance,
            reason: NotSentReason::Connect,
            source: None,
        };
        assert!(not_sent.is_retryable());
    }

    #[test]
    fn each_error_has_one_kind_the_caller_can_branch_on() {
        let id = InstanceId::new("i-1").unwrap();
        let download = |kind| Error::Download {
            instance_id: id.clone(),
            kind,
            source: None,
        };
        let auth = |kind| Error::Auth {
            kind,
            message: String::new(),
            source: None,
        };
        let api = |status| Error::Api {
            operation: Operation::GetInstance,
            status,
            title: None,
            detail: None,
            code: None,
            invalid_params: vec![],
            trace_id: None,
        };
        let cases = [
            (auth(AuthErrorKind::Unavailable), ErrorKind::Outage),
            (auth(AuthErrorKind::InvalidClient), ErrorKind::Refused),
            (auth(AuthErrorKind::TokenRejected), ErrorKind::Refused),
            (api(503), ErrorKind::Outage),
            (api(400), ErrorKind::Invalid),
            (
                Error::NotSent {
                    operation: Operation::ResultFile,
                    reason: NotSentReason::Budget("full".into()),
                    source: None,
                },
                ErrorKind::RateLimited,
            ),
            (
                Error::RateLimited {
                    operation: Operation::ResultFile,
                    retry_after: None,
                },
                ErrorKind::RateLimited,
            ),
            (
                Error::MissingRole {
                    role: Role::FlowEditor,
                    operation: Operation::StartInstance,
                    environment: "production".into(),
                    trace_id: None,
                },
                ErrorKind::MissingRole,
            ),
            (
                download(DownloadErrorKind::Stalled {
                    bytes: 10,
                    restarts: 3,
                }),
                ErrorKind::Outage,
            ),
            (
                download(DownloadErrorKind::Interrupted {
                    bytes: 7,
                    restarts: 3,
                }),
                ErrorKind::Outage,
            ),
            (download(DownloadErrorKind::Io), ErrorKind::Local),
            (
                Error::Expired {
                    instance_id: id.clone(),
                },
                ErrorKind::NotFound,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
        let stalled = download(DownloadErrorKind::Stalled {
            bytes: 10,
            restarts: 3,
        });
        assert_eq!(stalled.received_bytes(), Some(10));
        assert!(stalled.to_string().contains("after 10 bytes"), "{stalled}");
        assert_eq!(api(503).received_bytes(), None);
    }

    #[test]
    fn definition_id_error_names_the_flow_ids() {
        let e = Error::DefinitionIdAsFlowId {
            definition_id: DefinitionId::new("def-kyc").unwrap(),
            flow_ids: vec![
                FlowId::new("flow-1").unwrap(),
                FlowId::new("flow-2").unwrap(),
            ],
        };
        let m = e.to_string();
        assert!(
            m.contains("def-kyc is a definition id, not a flow id"),
            "{m}"
        );
        assert!(m.contains("flow-1, flow-2"), "{m}");
    }

    #[test]
    fn api_error_lists_invalid_params() {
        let e = Error::Api {
            operation: Operation::ListFlows,
            status: 400,
            title: Some("Bad Request".into()),
            detail: None,
            code: None,
            invalid_params: vec![InvalidParam {
                name: "limit".into(),
                reason: "1-100".into(),
            }],
            trace_id: None,
        };
        assert_eq!(
            e.to_string(),
            "GET /api/flows answered 400: Bad Request [limit: 1-100]"
        );
    }
}
