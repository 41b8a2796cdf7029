//! A typed async client for the Signicat Mint API for which every failure in the field guide is a
//! handled case.
//!
//! * **Tokens**: OAuth client credentials, cached, renewed ahead of the server's `expires_in` by one
//!   task at a time; a `401` renews once and retries once ([`MintClient::token_lifetime`]).
//! * **Typed ids and models**: [`FlowId`], [`DefinitionId`], [`InstanceId`]; models ignore unknown
//!   fields and keep unknown enum values. A definition id passed as a flow id is recognised
//!   ([`Error::DefinitionIdAsFlowId`]).
//! * **Roles**: a `403` names the missing role, the call and the fix ([`Error::MissingRole`]).
//! * **Budget**: every request waits for weighted units (result file = 5) from a [`Budget`], by
//!   [`Priority`]; a `429` slows everyone down.
//! * **Retries**: backoff with full jitter, `Retry-After`, a retry quota; a start is never blindly
//!   retried once it may have reached the server ([`Error::Ambiguous`]).
//! * **Streams** over both list endpoints, [`MintClient::instance_progress`], and streaming
//!   downloads with SHA-256, stall detection, restart or resume ([`MintClient::download_result_to_path`]).
//! * **Only a real result**: every download is checked ([`ResultFileValidator`]: `Content-Type`,
//!   `Content-Length`, ZIP structure, ZIP64 aware, bounded memory) before the writer is flushed.
//! * **Timestamps** ([`Timestamp`]) always decode and keep Mint's text; [`Timestamp::plausible`]
//!   gives a value safe for arithmetic, or `None`.
//! * **One classification**: [`Error::kind`] says whether to delay ([`ErrorKind::Outage`],
//!   [`ErrorKind::RateLimited`]), pause ([`ErrorKind::MissingRole`]), reconcile or fail.
//! * **Contract probe** ([`contract`]): reads every endpoint once (never a start) and reports each
//!   difference from the shapes the models expect, typed for a table or JSON.
//! * **Tracing**: one `mint.request` span per request (method, path template, status, units,
//!   attempt, latency, trace id); every exchange logged under [`HTTP_LOG_TARGET`]
//!   (`mint_client::http`: summary and Mint's error body at `debug`, headers at `trace`), tokens
//!   and secrets redacted; a [`Propagator`] adds `traceparent`/`tracestate` to every request.
//!
//! # Example
//!
//! Against the in-process simulator (the same code works against `https://api.signicat.com/mint`):
//!
//! ```
//! use futures::TryStreamExt;
//! use mint_client::{DownloadOptions, FlowId, ListFlows, MintClient, MintConfig, Progress, StartInstance};
//! use secrecy::SecretString;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = mint_sim::Simulator::builder().start().await?;
//! let cfg = MintConfig::new(sim.base_url(), sim.token_url(), "demo", SecretString::from("demo-secret"))
//!     .environment("sandbox");
//! let client = MintClient::new(cfg)?;
//!
//! let flows: Vec<_> = client.flows(ListFlows::default()).try_collect().await?;
//! assert!(flows.iter().any(|f| f.id.as_str() == "flow-kyc-basic"));
//!
//! let flow = FlowId::new("flow-kyc-basic")?;
//! let started = client.start_instance(&flow, &StartInstance::default()).await?;
//! let id = started.instance.id;
//! // "Running" alone says little; the activities tell whether Mint works or waits for the user.
//! assert_eq!(client.instance_progress(&id).await?, Progress::Processing { step: Some("Prepare session".into()) });
//!
//! // Drive the simulator: its clock past the automatic step, then the end user's part.
//! let admin = sim.admin();
//! admin.advance_clock(Duration::from_secs(2)).await?;
//! assert!(matches!(client.instance_progress(&id).await?, Progress::WaitingForUser { .. }));
//! admin.user_step(id.as_str(), mint_sim::UserStepAction::Complete).await?;
//! admin.advance_clock(Duration::from_secs(10)).await?;
//! # for _ in 0..500 {
//! #     if matches!(client.instance_progress(&id).await?, Progress::Finished { .. }) { break; }
//! #     admin.advance_clock(Duration::from_secs(1)).await?;
//! # }
//! assert!(matches!(client.instance_progress(&id).await?, Progress::Finished { .. }));
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("result.zip");
//! let download = client.download_result_to_path(&id, &path, &DownloadOptions::default()).await?;
//! let (sha256, bytes) = mint_sim::result_file_sha256(0, id.as_str(), 5 * 1024 * 1024);
//! assert_eq!((download.sha256, download.bytes), (sha256, bytes));
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod budget;
mod client;
mod config;
pub mod contract;
mod download;
mod error;
mod http_log;
mod ids;
mod model;
mod observe;
mod propagate;
mod result_file;
mod retry;
mod timestamp;
mod token;

pub use budget::{
    AdaptiveConfig, BoxFuture, Budget, BudgetClock, BudgetConfig, BudgetError, BudgetSnapshot,
    LocalBudget, ManualClock, Priority, Refusal, Ticket, TokioClock, WindowBudget,
};
pub use client::MintClient;
pub use config::{
    ClientAuth, DEFAULT_API_BASE, DEFAULT_SCOPE, DEFAULT_TOKEN_URL, MintConfig, Timeouts,
    TokenRenewal,
};
pub use download::{Download, DownloadOptions, DownloadProgress, ProgressFn, RestartableWrite};
pub use error::{
    AuthErrorKind, BoxError, DownloadErrorKind, Error, ErrorKind, InvalidParam, NoAnswerReason,
    NotSentReason, Operation, Role,
};
pub use http_log::{HTTP_LOG_TARGET, LOGGED_BODY_BYTES_MAX};
pub use ids::{DefinitionId, FlowId, ID_LENGTH_MAX_BYTES, InstanceId, InvalidId};
pub use model::{
    Activity, ActivityStatus, ActivityType, Flow, Instance, InstanceError, InstanceStatus,
    ListFlows, OrderBy, PAGE_LIMIT_MAX, Page, Progress, SortBy, StartInstance, StartedInstance,
};
pub use observe::{ClientEvent, Observer};
pub use propagate::{Propagator, TraceHeaders};
pub use result_file::{
    ContentTypeVerdict, FIRST_BYTES_KEPT, InvalidResultFile, ResultFileLimits, ResultFileProblem,
    ResultFileValidator, ZipSummary, classify_content_type,
};
pub use retry::{
    RetryConfig, RetryPermit, RetryQuota, backoff_delay, parse_retry_after, retry_delay,
};
pub use secrecy::SecretString;
pub use timestamp::{CLOCK_SKEW_MAX, Timestamp};
pub use token::{MemoryTokenStore, SharedToken, TokenInfo, TokenStore, renew_after};
