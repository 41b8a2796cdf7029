//! [`MintClient`]: one send path for every call (budget → token → send → classify → retry or not).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::Stream;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

use crate::budget::{Budget, LocalBudget, Priority};
use crate::config::MintConfig;
use crate::error::{
    AuthErrorKind, BoxError, Error, InvalidParam, NoAnswerReason, NotSentReason, Operation,
};
use crate::http_log;
use crate::ids::{DefinitionId, FlowId, InstanceId};
use crate::model::{
    Activity, Flow, Instance, ListFlows, PAGE_LIMIT_MAX, Page, Progress, StartInstance,
    StartedInstance,
};
use crate::observe::ClientEvent;
use crate::retry::{RetryPermit, RetryQuota, parse_retry_after, retry_delay};
use crate::token::{TokenInfo, TokenManager, TokenStore};

/// How many instance ids the client remembers to tell "expired" from "never existed" on a 404.
const KNOWN_INSTANCES_MAX: usize = 100_000;
/// Most flows scanned when explaining a 404 as a definition id passed as a flow id.
const DEFINITION_LOOKUP_FLOWS_MAX: u64 = 1_000;
/// Largest error body read (error bodies are small; a proxy's HTML page need not be read whole).
const ERROR_BODY_MAX_BYTES: usize = 64 * 1024;

/// A typed, budgeted, retrying Mint client. Cheap to clone; clones share the token, budget and retry
/// quota. Use [`MintClient::at`] for a handle with another [`Priority`].
#[derive(Clone)]
pub struct MintClient {
    pub(crate) inner: Arc<Inner>,
    pub(crate) priority: Priority,
}

impl std::fmt::Debug for MintClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintClient")
            .field("api_base", &self.inner.api_base.as_str())
            .field("client_id", &self.inner.cfg.client_id)
            .field("environment", &self.inner.cfg.environment)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: MintConfig,
    api_base: Url,
    pub(crate) http: reqwest::Client,
    tokens: TokenManager,
    budget: Arc<dyn Budget>,
    quota: RetryQuota,
    known: Mutex<KnownInstances>,
}

#[derive(Default)]
struct KnownInstances {
    set: HashSet<InstanceId>,
    order: VecDeque<InstanceId>,
}

impl KnownInstances {
    fn insert(&mut self, id: &InstanceId) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id.clone());
            if self.order.len() > KNOWN_INSTANCES_MAX
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// What a call wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// The whole (small, JSON) body, read under the request timeout.
    Body,
    /// Only the headers: the caller streams the body (downloads; no total timeout).
    Headers,
}

/// One request, rebuilt for each attempt.
pub(crate) struct Req<'a> {
    pub(crate) op: Operation,
    /// The operation's method, except for a `HEAD` probe of the result file.
    pub(crate) method: reqwest::Method,
    pub(crate) segments: Vec<&'a str>,
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) json: Option<Vec<u8>>,
    pub(crate) headers: HeaderMap,
    /// For a start: which flow (for `Ambiguous`).
    pub(crate) flow_id: Option<&'a FlowId>,
    /// For an instance call: which instance (for `Expired`, `NotReady`).
    pub(crate) instance_id: Option<&'a InstanceId>,
    /// What a 404 means, e.g. `flow flow-1`.
    pub(crate) resource: String,
    /// For `Want::Headers`: longest wait for the answer headers (time to first byte).
    pub(crate) send_timeout: Option<Duration>,
}

pub(crate) enum Reply {
    Body {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        /// The path requested (no query), for the contract probe's raw answers.
        path: String,
    },
    Stream(reqwest::Response),
}

enum Outcome {
    Done(Reply),
    Unauthorized,
    Throttled(Option<Duration>),
    Failed {
        error: Error,
        retry: RetryClass,
        retry_after: Option<Duration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryClass {
    /// Nothing reached the server: safe to retry any call.
    NotSent,
    /// Sent, no (good) answer: retry only idempotent calls.
    Transient { timeout: bool },
    /// Retrying cannot help (or is unsafe).
    Never,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    invalid_params: Vec<WireInvalidParam>,
}

#[derive(Deserialize)]
struct WireInvalidParam {
    #[serde(default)]
    name: String,
    #[serde(default)]
    reason: String,
}

impl MintClient {
    /// A client with its own in-process budget built from `cfg.budget`.
    pub fn new(cfg: MintConfig) -> Result<Self, Error> {
        let budget: Arc<dyn Budget> = Arc::new(LocalBudget::new(cfg.budget.clone()));
        Self::with_budget(cfg, budget)
    }

    /// A client spending from a given (possibly shared) budget.
    pub fn with_budget(cfg: MintConfig, budget: Arc<dyn Budget>) -> Result<Self, Error> {
        Self::with_shared(cfg, budget, None)
    }

    /// A client spending from a given budget and sharing its token through `tokens` (when several
    /// processes use one API client: one token, renewed by one of them at a time).
    pub fn with_shared(
        cfg: MintConfig,
        budget: Arc<dyn Budget>,
        tokens: Option<Arc<dyn TokenStore>>,
    ) -> Result<Self, Error> {
        let mut api_base = Url::parse(&cfg.api_base)
            .map_err(|e| Error::Config(format!("api base {:?} is not a URL: {e}", cfg.api_base)))?;
        Url::parse(&cfg.token_url).map_err(|e| {
            Error::Config(format!("token URL {:?} is not a URL: {e}", cfg.token_url))
        })?;
        if api_base.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "api base {:?} cannot be a base URL",
                cfg.api_base
            )));
        }
        if !api_base.path().ends_with('/') {
            let p = format!("{}/", api_base.path());
            api_base.set_path(&p);
        }
        if cfg.client_id.trim().is_empty() {
            return Err(Error::Config("the client id is empty".into()));
        }
        if cfg.secret_has_stray_whitespace() {
            tracing::warn!(
                client_id = %cfg.client_id,
                "the Mint client secret starts or ends with whitespace; the token endpoint will likely answer invalid_client"
            );
        }
        // No total timeout on the client: it would kill multi-GB downloads. JSON calls set a per-request
        // timeout; downloads have their own stall detection.
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.timeouts.connect)
            .user_agent(cfg.user_agent.clone())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let tokens = TokenManager::new(http.clone(), &cfg, tokens);
        let quota = RetryQuota::new(cfg.retry.clone());
        tracing::debug!(config = %cfg.redacted_summary(), "mint client configured");
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                api_base,
                http,
                tokens,
                budget,
                quota,
                known: Mutex::new(KnownInstances::default()),
            }),
            priority: Priority::Interactive,
        })
    }

    /// A handle on the same client (token, budget, quota) whose calls use another budget priority.
    pub fn at(&self, priority: Priority) -> MintClient {
        MintClient {
            inner: self.inner.clone(),
            priority,
        }
    }

    /// The priority this handle's calls use.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The budget every call spends from.
    pub fn budget(&self) -> &Arc<dyn Budget> {
        &self.inner.budget
    }

    /// The configuration.
    pub fn config(&self) -> &MintConfig {
        &self.inner.cfg
    }

    /// Tokens left in the retry quota (for metrics).
    pub fn retry_quota_available(&self) -> u32 {
        self.inner.quota.available()
    }

    /// The current token's information without fetching one (`None` before the first call), for
    /// metrics.
    pub fn token_info(&self) -> Option<TokenInfo> {
        self.inner.tokens.current_info()
    }

    /// The lifetime of the current token (fetching one if there is none), for `doctor`.
    pub async fn token_lifetime(&self) -> Result<TokenInfo, Error> {
        self.inner.tokens.info().await
    }

    /// Fetches a new token now (for `doctor`: proves the credentials and shows `expires_in`).
    pub async fn fetch_token(&self) -> Result<TokenInfo, Error> {
        self.inner.tokens.fetch_now().await
    }

    /// One page of `GET /api/flows`.
    pub async fn list_flows(&self, query: &ListFlows) -> Result<Page<Flow>, Error> {
        let req = Req {
            query: query.query(),
            resource: "flows".into(),
            ..Req::new(Operation::ListFlows, vec!["flows"])
        };
        self.json(&req).await
    }

    /// All flows matching `query`, page by page (from `query.offset`), as a stream. It ends after the
    /// first error. Offset paging: flows created meanwhile may shift pages.
    pub fn flows(
        &self,
        query: ListFlows,
    ) -> impl Stream<Item = Result<Flow, Error>> + Send + 'static {
        let client = self.clone();
        paginate(query.offset, query.limit, move |offset, limit| {
            let client = client.clone();
            let mut q = query.clone();
            q.offset = offset;
            q.limit = Some(limit);
            async move { client.list_flows(&q).await }
        })
    }

    /// One page of `GET /api/flows/{flowId}/instances`. A 404 for an id that is really a definition id
    /// becomes [`Error::DefinitionIdAsFlowId`].
    pub async fn list_instances(
        &self,
        flow_id: &FlowId,
        offset: u64,
        limit: u32,
    ) -> Result<Page<Instance>, Error> {
        let req = Req {
            query: vec![("offset", offset.to_string()), ("limit", limit.to_string())],
            flow_id: Some(flow_id),
            resource: format!("flow {flow_id}"),
            ..Req::new(
                Operation::ListInstances,
                vec!["flows", flow_id.as_str(), "instances"],
            )
        };
        match self.json::<Page<Instance>>(&req).await {
            Ok(page) => {
                self.remember(page.items.iter().map(|i| &i.id));
                Ok(page)
            }
            Err(e @ Error::NotFound { .. }) => Err(self.explain_flow_404(flow_id, e).await),
            Err(e) => Err(e),
        }
    }

    /// All instances of a flow, page by page, as a stream (ends after the first error).
    pub fn instances(
        &self,
        flow_id: &FlowId,
    ) -> impl Stream<Item = Result<Instance, Error>> + Send + 'static {
        let client = self.clone();
        let flow_id = flow_id.clone();
        paginate(0, None, move |offset, limit| {
            let client = client.clone();
            let flow_id = flow_id.clone();
            async move { client.list_instances(&flow_id, offset, limit).await }
        })
    }

    /// Starts (and pays for) an instance: `POST /api/flows/{flowId}/instances`.
    ///
    /// Retried automatically only when it certainly did not run: not sent (no connection, no budget) or
    /// answered 429 (Mint checks the rate before executing, and a 429 consumes nothing). Once it may
    /// have reached the server without a usable answer (timeout, cut connection, 5xx, undecodable
    /// 201), the result is [`Error::Ambiguous`]: reconcile with [`MintClient::instances`] before
    /// starting again.
    pub async fn start_instance(
        &self,
        flow_id: &FlowId,
        start: &StartInstance,
    ) -> Result<StartedInstance, Error> {
        let json = serde_json::to_vec(start).map_err(|e| Error::NotSent {
            operation: Operation::StartInstance,
            reason: NotSentReason::Build,
            source: Some(Box::new(e)),
        })?;
        let req = Req {
            json: Some(json),
            flow_id: Some(flow_id),
            resource: format!("flow {flow_id}"),
            ..Req::new(
                Operation::StartInstance,
                vec!["flows", flow_id.as_str(), "instances"],
            )
        };
        match self.json::<StartedInstance>(&req).await {
            Ok(started) => {
                self.remember([&started.instance.id]);
                Ok(started)
            }
            Err(e @ Error::NotFound { .. }) => Err(self.explain_flow_404(flow_id, e).await),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/instances/{instanceId}`. A 404 on an instance this client has seen is [`Error::Expired`].
    pub async fn get_instance(&self, id: &InstanceId) -> Result<Instance, Error> {
        let req = Req {
            instance_id: Some(id),
            resource: format!("instance {id}"),
            ..Req::new(Operation::GetInstance, vec!["instances", id.as_str()])
        };
        let instance: Instance = self.json(&req).await?;
        self.remember([&instance.id]);
        Ok(instance)
    }

    /// `GET /api/instances/{instanceId}/activities` (a partial list while the instance runs).
    pub async fn activities(&self, id: &InstanceId) -> Result<Vec<Activity>, Error> {
        let req = Req {
            instance_id: Some(id),
            resource: format!("instance {id}"),
            ..Req::new(
                Operation::Activities,
                vec!["instances", id.as_str(), "activities"],
            )
        };
        // Accept both a bare array and a page-shaped answer.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Activities {
            List(Vec<Activity>),
            Page { items: Vec<Activity> },
        }
        Ok(match self.json::<Activities>(&req).await? {
            Activities::List(l) | Activities::Page { items: l } => l,
        })
    }

    /// What an instance is doing: its status, and while `Running` whether Mint is working or waiting
    /// for the end user (from the activities). A 404 on an instance this client has seen is
    /// [`Progress::Expired`]. Costs 1 unit, 2 while running.
    pub async fn instance_progress(&self, id: &InstanceId) -> Result<Progress, Error> {
        let instance = match self.get_instance(id).await {
            Ok(i) => i,
            Err(Error::Expired { .. }) => return Ok(Progress::Expired),
            Err(e) => return Err(e),
        };
        if instance.status != crate::model::InstanceStatus::Running {
            return Ok(Progress::classify(&instance, &[]));
        }
        match self.activities(id).await {
            Ok(activities) => Ok(Progress::classify(&instance, &activities)),
            Err(Error::Expired { .. }) => Ok(Progress::Expired),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn remember<'a>(&self, ids: impl IntoIterator<Item = &'a InstanceId>) {
        let mut known = self.inner.known.lock().unwrap();
        for id in ids {
            known.insert(id);
        }
    }

    pub(crate) fn is_known(&self, id: &InstanceId) -> bool {
        self.inner.known.lock().unwrap().set.contains(id)
    }

    /// A 404 on a flow id: is it really a definition id? Looks the flows up to find out.
    pub(crate) async fn explain_flow_404(&self, flow_id: &FlowId, original: Error) -> Error {
        use futures::StreamExt;
        let definition_id = DefinitionId::from_flow_id(flow_id);
        let query = ListFlows {
            all_versions: Some(true),
            ..Default::default()
        };
        let mut flows =
            std::pin::pin!(self.flows(query).take(DEFINITION_LOOKUP_FLOWS_MAX as usize));
        let mut flow_ids = vec![];
        while let Some(flow) = flows.next().await {
            match flow {
                Ok(f) if f.definition_id.as_ref() == Some(&definition_id) => flow_ids.push(f.id),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "could not list flows to explain a 404");
                    return original;
                }
            }
        }
        if flow_ids.is_empty() {
            return original;
        }
        Error::DefinitionIdAsFlowId {
            definition_id,
            flow_ids,
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: &Req<'_>) -> Result<T, Error> {
        let Reply::Body { status, body, .. } = self.execute(req, Want::Body).await? else {
            unreachable!("Want::Body answers with a body")
        };
        serde_json::from_slice(&body).map_err(|e| match req.flow_id {
            Some(flow_id) if req.op == Operation::StartInstance => Error::Ambiguous {
                flow_id: flow_id.clone(),
                reason: NoAnswerReason::Undecodable,
                source: Some(Box::new(e)),
            },
            _ => Error::Decode {
                operation: req.op,
                status,
                source: Box::new(e),
            },
        })
    }

    fn units(&self, op: Operation) -> u32 {
        let b = &self.inner.cfg.budget;
        if op == Operation::ResultFile {
            b.result_file_units
        } else {
            b.request_units
        }
    }

    /// The send path: budget → token → send → classify, with retries where safe.
    pub(crate) async fn execute(&self, req: &Req<'_>, want: Want) -> Result<Reply, Error> {
        let op = req.op;
        let units = self.units(op);
        let retry = &self.inner.cfg.retry;
        let mut attempt: u32 = 0;
        let mut retries: u32 = 0;
        let mut renewed = false;
        let mut permit: Option<RetryPermit> = None;
        loop {
            attempt += 1;
            let ticket = match self.inner.budget.acquire(units, self.priority).await {
                Ok(t) => t,
                Err(e) => {
                    return Err(Error::NotSent {
                        operation: op,
                        reason: NotSentReason::Budget(e.to_string()),
                        source: Some(Box::new(e)),
                    });
                }
            };
            let token = match self.inner.tokens.bearer().await {
                Ok(t) => t,
                Err(e) => {
                    self.inner.budget.refund(ticket).await;
                    return Err(e);
                }
            };
            let span = tracing::info_span!(
                "mint.request",
                method = req.method.as_str(),
                path = op.path_template(),
                operation = op.name(),
                units,
                attempt,
                priority = ?self.priority,
                status = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            let outcome = self
                .attempt(req, &token.value, want)
                .instrument(span.clone())
                .await;
            let (charged, status) = match &outcome {
                Outcome::Done(Reply::Body { status, .. }) => (units, Some(*status)),
                Outcome::Done(Reply::Stream(resp)) => (units, Some(resp.status().as_u16())),
                Outcome::Unauthorized => (0, Some(401)),
                Outcome::Throttled(_) => (0, Some(429)),
                Outcome::Failed { retry, error, .. } => (
                    if *retry == RetryClass::NotSent {
                        0
                    } else {
                        units
                    },
                    error.status(),
                ),
            };
            self.observe(ClientEvent::Request {
                operation: op,
                priority: self.priority,
                units: charged,
                status,
            });
            let (error, class, retry_after) = match outcome {
                Outcome::Done(reply) => {
                    // Headers (and for JSON calls the body) arrived: the server has seen it.
                    self.inner.budget.answered(ticket).await;
                    self.inner.quota.on_success(permit);
                    return Ok(reply);
                }
                Outcome::Unauthorized => {
                    // A 401 consumed no units (the token is checked before the rate).
                    self.inner.budget.refund(ticket).await;
                    if renewed {
                        return Err(Error::Auth {
                            kind: AuthErrorKind::TokenRejected,
                            message: format!(
                                "{op} answered 401 even with a freshly issued token: the token endpoint \
                                 ({}) and the API base ({}) may belong to different environments",
                                self.inner.cfg.token_url, self.inner.cfg.api_base
                            ),
                            source: None,
                        });
                    }
                    span.in_scope(|| {
                        tracing::info!("token rejected (401): renewing once and retrying")
                    });
                    self.inner.tokens.invalidate(&token).await;
                    renewed = true;
                    continue;
                }
                Outcome::Throttled(retry_after) => {
                    // A 429 consumed no units, but it says we are too fast: slow down for everyone.
                    self.inner.budget.refund(ticket).await;
                    self.inner.budget.on_throttled(retry_after).await;
                    self.observe(ClientEvent::Throttled {
                        operation: op,
                        priority: self.priority,
                    });
                    let error = Error::RateLimited {
                        operation: op,
                        retry_after,
                    };
                    (error, RetryClass::NotSent, retry_after)
                }
                Outcome::Failed {
                    error,
                    retry: class,
                    retry_after,
                } => {
                    if class == RetryClass::NotSent {
                        self.inner.budget.refund(ticket).await;
                    } else {
                        self.inner.budget.answered(ticket).await;
                    }
                    (error, class, retry_after)
                }
            };
            let may_retry = match class {
                RetryClass::NotSent => true,
                RetryClass::Transient { .. } => op.is_idempotent(),
                RetryClass::Never => false,
            };
            if !may_retry || retries + 1 >= retry.max_attempts.max(1) {
                return Err(self.exhausted(error, attempt));
            }
            let timeout = matches!(class, RetryClass::Transient { timeout: true });
            let Some(p) = self.inner.quota.try_acquire(timeout) else {
                self.observe(ClientEvent::RetryQuotaExhausted { operation: op });
                span.in_scope(
                    || tracing::warn!(error = %error, "retry quota exhausted; not retrying"),
                );
                return Err(self.exhausted(error, attempt));
            };
            permit = Some(p);
            retries += 1;
            self.observe(ClientEvent::Retry { operation: op });
            let delay = retry_delay(retries, retry_after, retry, rand::random());
            span.in_scope(
                || tracing::warn!(error = %error, delay_ms = delay.as_millis() as u64, "retrying"),
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Tells the configured observer, if any.
    pub(crate) fn observe(&self, event: ClientEvent) {
        if let Some(observer) = &self.inner.cfg.observer {
            observer.observe(&event);
        }
    }

    fn exhausted(&self, error: Error, attempts: u32) -> Error {
        match error {
            Error::NoAnswer {
                operation,
                reason,
                source,
                ..
            } => Error::NoAnswer {
                operation,
                reason,
                attempts,
                source,
            },
            e => e,
        }
    }

    fn no_answer(&self, req: &Req<'_>, reason: NoAnswerReason, source: Option<BoxError>) -> Error {
        match req.flow_id {
            Some(flow_id) if req.op == Operation::StartInstance => Error::Ambiguous {
                flow_id: flow_id.clone(),
                reason,
                source,
            },
            _ => Error::NoAnswer {
                operation: req.op,
                reason,
                attempts: 1,
                source,
            },
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.api_base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("checked in with_budget: a base URL");
            path.pop_if_empty();
            path.push("api");
            for s in segments {
                // `push` percent-encodes, so even an unchecked id stays one segment.
                path.push(s);
            }
        }
        url
    }

    async fn attempt(&self, req: &Req<'_>, token: &secrecy::SecretString, want: Want) -> Outcome {
        let span = tracing::Span::current();
        let op = req.op;
        let url = self.url(&req.segments);
        let mut rb = self
            .inner
            .http
            .request(req.method.clone(), url.clone())
            .bearer_auth(token.expose_secret())
            .headers(req.headers.clone());
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(json) = &req.json {
            rb = rb
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .body(json.clone());
        }
        if want == Want::Body {
            rb = rb.header(header::ACCEPT, HeaderValue::from_static("application/json"));
            rb = rb.timeout(self.inner.cfg.timeouts.request);
        }
        let mut request = match rb.build() {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed {
                    error: Error::NotSent {
                        operation: op,
                        reason: NotSentReason::Build,
                        source: Some(Box::new(e)),
                    },
                    retry: RetryClass::Never,
                    retry_after: None,
                };
            }
        };
        if let Some(propagator) = &self.inner.cfg.propagator {
            crate::propagate::apply(propagator.as_ref(), request.headers_mut());
        }
        let method = req.method.as_str();
        http_log::request(method, &url, request.headers());
        let started = Instant::now();
        let latency = |span: &tracing::Span| {
            let elapsed = started.elapsed();
            span.record("latency_ms", elapsed.as_millis() as u64);
            elapsed
        };
        let send = self.inner.http.execute(request);
        let sent = match req.send_timeout {
            Some(limit) => match tokio::time::timeout(limit, send).await {
                Ok(r) => r,
                Err(elapsed) => {
                    http_log::no_answer(method, &url, latency(&span), &elapsed);
                    return Outcome::Failed {
                        error: self.no_answer(
                            req,
                            NoAnswerReason::Timeout,
                            Some(Box::new(elapsed)),
                        ),
                        retry: RetryClass::Transient { timeout: true },
                        retry_after: None,
                    };
                }
            },
            None => send.await,
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                http_log::no_answer(method, &url, latency(&span), &e);
                // A connect error means no byte of the request left this machine.
                if e.is_connect() {
                    return Outcome::Failed {
                        error: Error::NotSent {
                            operation: op,
                            reason: NotSentReason::Connect,
                            source: Some(Box::new(e)),
                        },
                        retry: RetryClass::NotSent,
                        retry_after: None,
                    };
                }
                let timeout = e.is_timeout();
                let reason = if timeout {
                    NoAnswerReason::Timeout
                } else {
                    NoAnswerReason::ConnectionLost
                };
                return Outcome::Failed {
                    error: self.no_answer(req, reason, Some(Box::new(e))),
                    retry: RetryClass::Transient { timeout },
                    retry_after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let trace_id = http_log::trace_id_of(resp.headers());
        span.record("status", status);
        if let Some(t) = &trace_id {
            span.record("trace_id", t.as_str());
        }
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                parse_retry_after(v, SystemTime::now(), self.inner.cfg.retry.retry_after_max)
            });
        if (200..300).contains(&status) {
            if want == Want::Headers {
                let elapsed = latency(&span);
                http_log::response(
                    method,
                    &url,
                    status,
                    elapsed,
                    trace_id.as_deref(),
                    resp.headers(),
                    None,
                );
                return Outcome::Done(Reply::Stream(resp));
            }
            let headers = resp.headers().clone();
            let body = resp.bytes().await;
            let elapsed = latency(&span);
            return match body {
                Ok(body) => {
                    http_log::response(
                        method,
                        &url,
                        status,
                        elapsed,
                        trace_id.as_deref(),
                        &headers,
                        None,
                    );
                    Outcome::Done(Reply::Body {
                        status,
                        headers,
                        body,
                        path: url.path().to_owned(),
                    })
                }
                Err(e) => {
                    http_log::no_answer(method, &url, elapsed, &e);
                    let timeout = e.is_timeout();
                    let reason = if timeout {
                        NoAnswerReason::Timeout
                    } else {
                        NoAnswerReason::ConnectionLost
                    };
                    Outcome::Failed {
                        error: self.no_answer(req, reason, Some(Box::new(e))),
                        retry: RetryClass::Transient { timeout },
                        retry_after: None,
                    }
                }
            };
        }
        let headers = resp.headers().clone();
        // A 401 or a 429 is handled from its status alone: its body is read only for the log.
        let quiet = matches!(status, 401 | 429);
        let body = if quiet && !http_log::debug_enabled() {
            drop(resp);
            Vec::new()
        } else {
            // Bounded in size and time: a download's answer has no request timeout of its own.
            tokio::time::timeout(
                self.inner.cfg.timeouts.request,
                read_capped(resp, ERROR_BODY_MAX_BYTES),
            )
            .await
            .unwrap_or_default()
        };
        let elapsed = latency(&span);
        let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let trace_id = trace_id.or(parsed.trace_id.clone());
        if let Some(t) = &trace_id {
            span.record("trace_id", t.as_str());
        }
        http_log::response(
            method,
            &url,
            status,
            elapsed,
            trace_id.as_deref(),
            &headers,
            Some(&body),
        );
        match status {
            401 => return Outcome::Unauthorized,
            429 => {
                tracing::warn!(
                    retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                    "rate limited (429)"
                );
                return Outcome::Throttled(retry_after);
            }
            _ => {}
        }
        tracing::debug!(
            status,
            title = parsed.title.as_deref(),
            "answered with an error"
        );
        let never = |error| Outcome::Failed {
            error,
            retry: RetryClass::Never,
            retry_after: None,
        };
        match status {
            403 => never(Error::MissingRole {
                role: op.role().unwrap_or(crate::error::Role::FlowViewer),
                operation: op,
                environment: self.inner.cfg.environment.clone(),
                trace_id,
            }),
            404 => match req.instance_id {
                Some(id) if self.is_known(id) => never(Error::Expired {
                    instance_id: id.clone(),
                }),
                _ => never(Error::NotFound {
                    operation: op,
                    resource: req.resource.clone(),
                    trace_id,
                }),
            },
            409 if req.instance_id.is_some() && op == Operation::ResultFile => {
                never(Error::NotReady {
                    instance_id: req.instance_id.cloned().expect("checked"),
                    trace_id,
                })
            }
            s if s >= 500 && op == Operation::StartInstance => {
                never(self.no_answer(req, NoAnswerReason::ServerError(s), None))
            }
            s => {
                let error = Error::Api {
                    operation: op,
                    status: s,
                    title: parsed.title,
                    detail: parsed.detail,
                    code: parsed.code.map(|c| match c {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    }),
                    invalid_params: parsed
                        .invalid_params
                        .into_iter()
                        .map(|p| InvalidParam {
                            name: p.name,
                            reason: p.reason,
                        })
                        .collect(),
                    trace_id,
                };
                let retry = if matches!(s, 500 | 502 | 503 | 504) {
                    RetryClass::Transient { timeout: false }
                } else {
                    RetryClass::Never
                };
                Outcome::Failed {
                    error,
                    retry,
                    retry_after,
                }
            }
        }
    }
}

impl<'a> Req<'a> {
    pub(crate) fn new(op: Operation, segments: Vec<&'a str>) -> Self {
        let method = if op.method() == "POST" {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        Self {
            op,
            method,
            segments,
            query: vec![],
            json: None,
            headers: HeaderMap::new(),
            flow_id: None,
            instance_id: None,
            resource: String::new(),
            send_timeout: None,
        }
    }

    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

async fn read_capped(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = max - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= max {
            break;
        }
    }
    buf
}

/// Offset pagination as a stream: fetches pages of `limit` (default 100) until the total is reached.
fn paginate<T, F, Fut>(
    start: u64,
    limit: Option<u32>,
    fetch: F,
) -> impl Stream<Item = Result<T, Error>> + Send + 'static
where
    T: Send + 'static,
    F: Fn(u64, u32) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Page<T>, Error>> + Send + 'static,
{
    struct State<T, F> {
        fetch: F,
        offset: u64,
        limit: u32,
        buffer: VecDeque<T>,
        done: bool,
    }
    let state = State {
        fetch,
        offset: start,
        limit: limit.unwrap_or(PAGE_LIMIT_MAX).clamp(1, PAGE_LIMIT_MAX),
        buffer: VecDeque::new(),
        done: false,
    };
    futures::stream::try_unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.buffer.pop_front() {
                return Ok(Some((item, st)));
            }
            if st.done {
                return Ok(None);
            }
            let page = (st.fetch)(st.offset, st.limit).await?;
            let n = page.items.len() as u64;
            st.offset += n;
            st.done = n == 0
                || if page.total_count > 0 {
                    st.offset >= page.total_count
                } else {
                    n < u64::from(st.limit)
                };
            st.buffer.extend(page.items);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn pagination_follows_total_count() {
        let pages = paginate(0, Some(2), |offset, limit| async move {
            let total = 5u64;
            let items: Vec<u64> = (offset..(offset + u64::from(limit)).min(total)).collect();
            Ok(Page {
                items,
                total_count: total,
                offset,
                limit: u64::from(limit),
            })
        });
        let all: Vec<u64> = pages.try_collect().await.unwrap();
        assert_eq!(all, [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn pagination_without_total_stops_on_a_short_page_and_ends_after_an_error() {
        let pages = paginate(0, Some(3), |offset, _| async move {
            let items: Vec<u64> = (offset..(offset + 3).min(7)).collect();
            Ok(Page {
                items,
                total_count: 0,
                offset,
                limit: 3,
            })
        });
        let all: Vec<u64> = pages.try_collect().await.unwrap();
        assert_eq!(all, [0, 1, 2, 3, 4, 5, 6]);
        let failing = paginate(0, None, |_, _| async move {
            Err::<Page<u8>, _>(Error::Config("boom".into()))
        });
        let items: Vec<_> = futures::StreamExt::collect::<Vec<_>>(failing).await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }
}
