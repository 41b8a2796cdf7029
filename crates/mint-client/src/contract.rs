//! Contract probe: where Mint's real answers differ from what this client expects.
//!
//! Why: mint-client and mint-sim were written from the same guesses (`shared/mint-api.md` marks
//! them [model] and [field]), so they agree with each other, not necessarily with Mint. The first
//! answers of the real API must say precisely where it differs, before a customer's instance does.
//! Two halves:
//!
//! * [`check`]: a pure check of one endpoint's raw answer (headers and JSON body) against the shapes
//!   the client's models decode. Each difference is a [`Finding`]: endpoint, field path
//!   (`items[].createdAt`), what was expected, what was found, a [`Severity`] and what it means for
//!   the client. Unknown extra fields are not findings (the models ignore them).
//! * The fetchers ([`MintClient::raw_list_flows`], [`MintClient::raw_list_instances`],
//!   [`MintClient::raw_instance`], [`MintClient::raw_activities`],
//!   [`MintClient::raw_result_file_headers`]) that get those raw answers through the ordinary send
//!   path (budget, token, retries), and [`MintClient::probe_contract`], which chains them into a
//!   [`ContractReport`]. They never start an instance, so nothing is billed.
//!
//! Costs in rate units (Signicat's weights, as the budget counts them; retries cost again): each
//! JSON read 1; the result file's headers 5, because the gateway counts the request, not the bytes.
//! With [`HeaderProbe::Head`] no byte of the file is sent (mint-sim serves and bills no download for
//! a `HEAD` and counts it as `resultFileHeads` [model]); with [`HeaderProbe::Get`] the file's
//! transfer starts and the connection is dropped after the headers: Mint may count that as a
//! download against the monthly quota. A whole [`MintClient::probe_contract`] with the default
//! target costs 4 units plus 5 for the result file's headers.

use std::collections::HashMap;
use std::fmt;

use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use crate::client::{MintClient, Reply, Req, Want};
use crate::error::{Error, Operation};
use crate::ids::{DefinitionId, FlowId, InstanceId};
use crate::model::{Activity, Flow, Instance, Page, StartedInstance};
use crate::result_file::{ContentTypeVerdict, classify_content_type};
use crate::timestamp::Timestamp;

/// How much a difference matters to this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A difference the client handles fully, or one that helps (`Accept-Ranges: bytes`).
    Info,
    /// The client copes but loses something: a usable date, the pagination total, a status it
    /// can act on.
    Warning,
    /// The client cannot use the answer: a call fails to decode, or a value it needs is missing.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One difference between an answer and what the client expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The endpoint that answered (serialized as its short name, e.g. `list_instances`).
    #[serde(serialize_with = "operation_name")]
    pub endpoint: Operation,
    /// Where: a field path (`items[].createdAt`, `totalCount`), `(body)` for the whole answer,
    /// `header Content-Type` for a header, `(method HEAD)` for the method.
    pub field: String,
    /// What the client expects there.
    pub expected: String,
    /// What the answer held (for several items, the first one's value).
    pub found: String,
    /// How much it matters.
    pub severity: Severity,
    /// What it means for the client.
    pub impact: String,
    /// In how many places (items of a list) it was found.
    pub occurrences: u32,
}

fn operation_name<S: serde::Serializer>(op: &Operation, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(op.name())
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: expected {}, found {}",
            self.severity,
            self.endpoint.name(),
            self.field,
            self.expected,
            self.found
        )?;
        if self.occurrences > 1 {
            write!(f, " ({} times)", self.occurrences)?;
        }
        write!(f, "; {}", self.impact)
    }
}

/// The page a list request asked for, to compare with the page's own `offset` and `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PageRequest {
    /// `offset` asked for.
    pub offset: u64,
    /// `limit` asked for.
    pub limit: u32,
}

/// An answer as it came: status, headers, body. Built by the fetchers, or by hand (for an answer
/// obtained another way, e.g. a start's answer in an end-to-end check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer {
    /// The endpoint.
    pub endpoint: Operation,
    /// `GET`, `HEAD`, `POST`.
    pub method: String,
    /// The path requested (no query).
    pub path: String,
    /// The HTTP status.
    pub status: u16,
    /// Every header, names lower-case, values lossily decoded.
    pub headers: Vec<(String, String)>,
    /// The body (empty for headers-only fetches).
    pub body: Vec<u8>,
    /// For a list: the page asked for.
    pub requested_page: Option<PageRequest>,
}

impl RawAnswer {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Every difference between `answer` and what the client expects of its endpoint.
///
/// JSON endpoints: the body's shape, each field the contract lists (missing, `null` where a value
/// is needed, another JSON type, an unknown enum value, a date that does not parse or is
/// implausible), the pagination fields (`items`, `totalCount`, `offset`, `limit`, and their
/// consistency with the page asked for); the result file: `Content-Type`, `Content-Length`,
/// `Accept-Ranges`. As a last resort the body is decoded with the client's own models, so nothing
/// that would fail to decode goes unreported.
pub fn check(answer: &RawAnswer) -> Vec<Finding> {
    let mut out = Findings::new(answer.endpoint);
    match answer.endpoint {
        Operation::ResultFile => check_result_file_headers(answer, &mut out),
        Operation::Token => {}
        endpoint => check_json(endpoint, answer, &mut out),
    }
    out.into_vec()
}

/// Findings being collected: the same difference on several items becomes one finding.
struct Findings {
    endpoint: Operation,
    list: Vec<Finding>,
    /// (field, class) → index in `list`.
    seen: HashMap<(String, String), usize>,
}

impl Findings {
    fn new(endpoint: Operation) -> Self {
        Self {
            endpoint,
            list: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// Adds a finding; `class` groups occurrences of the same difference (e.g. `type:number`).
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        field: &str,
        class: &str,
        expected: &str,
        found: String,
        severity: Severity,
        impact: &str,
    ) {
        let key = (field.to_owned(), class.to_owned());
        if let Some(&i) = self.seen.get(&key) {
            self.list[i].occurrences += 1;
            return;
        }
        self.seen.insert(key, self.list.len());
        self.list.push(Finding {
            endpoint: self.endpoint,
            field: field.to_owned(),
            expected: expected.to_owned(),
            found,
            severity,
            impact: impact.to_owned(),
            occurrences: 1,
        });
    }

    fn has_error(&self) -> bool {
        self.list.iter().any(|f| f.severity == Severity::Error)
    }

    fn into_vec(self) -> Vec<Finding> {
        self.list
    }
}

// ---- result-file headers ----

fn check_result_file_headers(answer: &RawAnswer, out: &mut Findings) {
    let content_type = answer.header("content-type");
    let field = "header Content-Type";
    let expected = "application/zip";
    match classify_content_type(content_type) {
        ContentTypeVerdict::Zip => {
            let essence = content_type
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim();
            if !essence.eq_ignore_ascii_case("application/zip") {
                out.add(
                    field,
                    "zip-alias",
                    expected,
                    essence.to_owned(),
                    Severity::Info,
                    "accepted as a ZIP type; the structure check decides",
                );
            }
        }
        ContentTypeVerdict::Missing => out.add(
            field,
            "missing",
            expected,
            "missing".into(),
            Severity::Warning,
            "accepted; only the ZIP structure check tells a result file from an error page",
        ),
        ContentTypeVerdict::Unknown => out.add(
            field,
            "unknown",
            expected,
            content_type.unwrap_or_default().to_owned(),
            Severity::Warning,
            "accepted; only the ZIP structure check tells a result file from an error page",
        ),
        // ContentTypeVerdict is non-exhaustive: anything else is refused as well.
        _ => out.add(
            field,
            "refused",
            expected,
            content_type.unwrap_or_default().to_owned(),
            Severity::Error,
            "every download of this answer is refused as not a result file",
        ),
    }
    let field = "header Content-Length";
    let expected = "the file's size in bytes";
    match answer.header("content-length").map(str::trim) {
        None => out.add(
            field,
            "missing",
            expected,
            "missing".into(),
            Severity::Warning,
            "a cut transfer is caught only by the ZIP structure check, and progress has no total",
        ),
        Some(v) => match v.parse::<u64>() {
            Ok(0) => out.add(
                field,
                "zero",
                expected,
                "0".into(),
                Severity::Warning,
                "a result file is never empty: the length cannot be trusted",
            ),
            Ok(_) => {}
            Err(_) => out.add(
                field,
                "invalid",
                expected,
                v.to_owned(),
                Severity::Error,
                "the HTTP stack refuses the answer",
            ),
        },
    }
    let field = "header Accept-Ranges";
    match answer.header("accept-ranges").map(str::trim) {
        None => {}
        Some(v) if v.eq_ignore_ascii_case("none") => {}
        Some(v) if v.eq_ignore_ascii_case("bytes") => out.add(
            field,
            "bytes",
            "missing (the contract: no ranges)",
            "bytes".into(),
            Severity::Info,
            "a cut download resumes with Range instead of restarting from zero",
        ),
        Some(v) => out.add(
            field,
            "other",
            "missing, none or bytes",
            v.to_owned(),
            Severity::Warning,
            "ranges are not used; a cut download restarts from zero",
        ),
    }
}

// ---- JSON answers ----

/// What a field must hold.
#[derive(Clone, Copy)]
enum Shape {
    FlowId,
    DefinitionId,
    InstanceId,
    Text,
    Integer,
    Bool,
    Timestamp,
    /// An enum the client acts on: an unknown value is a warning.
    Status(&'static [&'static str]),
    /// An open enum the client only displays: an unknown value is information.
    Kind(&'static [&'static str]),
    Object,
    Any,
}

struct Field {
    name: &'static str,
    shape: Shape,
    /// Severity when the field is missing or `null` (`None`: both are fine).
    missing: Option<Severity>,
    /// What a missing value costs.
    missing_impact: &'static str,
}

const fn field(
    name: &'static str,
    shape: Shape,
    missing: Option<Severity>,
    missing_impact: &'static str,
) -> Field {
    Field {
        name,
        shape,
        missing,
        missing_impact,
    }
}

const INSTANCE_STATUSES: &[&str] = &["Running", "Finished", "Faulted", "Cancelled"];
const ACTIVITY_STATUSES: &[&str] = &["Pending", "Executing", "Suspended", "Completed", "Faulted"];
const ACTIVITY_TYPES: &[&str] = &[
    "http",
    "userTask",
    "verification",
    "document",
    "httpRequest",
];
const CONTRACT_FIELD: &str = "a field of the contract; the client does without it";

const FLOW: &[Field] = &[
    field(
        "id",
        Shape::FlowId,
        Some(Severity::Error),
        "the flow cannot be decoded",
    ),
    field(
        "definitionId",
        Shape::DefinitionId,
        Some(Severity::Warning),
        "a definition id passed as a flow id can no longer be explained",
    ),
    field("name", Shape::Text, Some(Severity::Info), CONTRACT_FIELD),
    field("description", Shape::Text, None, ""),
    field(
        "version",
        Shape::Integer,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field(
        "isLatest",
        Shape::Bool,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field(
        "isPublished",
        Shape::Bool,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field(
        "createdAt",
        Shape::Timestamp,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
];

/// An instance, alone (`GET /api/instances/{id}`, a start's answer).
const INSTANCE: &[Field] = &[
    field(
        "id",
        Shape::InstanceId,
        Some(Severity::Error),
        "the instance cannot be decoded",
    ),
    field(
        "flowId",
        Shape::FlowId,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field(
        "definitionId",
        Shape::DefinitionId,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field(
        "status",
        Shape::Status(INSTANCE_STATUSES),
        Some(Severity::Error),
        "the client cannot tell whether the instance finished",
    ),
    field(
        "createdAt",
        Shape::Timestamp,
        Some(Severity::Warning),
        "the client uses its own clock for the instance's age",
    ),
    field(
        "updatedAt",
        Shape::Timestamp,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field("finishedAt", Shape::Timestamp, None, ""),
    field("input", Shape::Any, Some(Severity::Info), CONTRACT_FIELD),
    field("output", Shape::Any, None, ""),
    field("error", Shape::Object, None, ""),
];

/// An item of `GET /api/flows/{flowId}/instances`: the input finds a lost start again.
const INSTANCE_IN_LIST: &[Field] = &[
    field(
        "id",
        Shape::InstanceId,
        Some(Severity::Error),
        "the page cannot be decoded",
    ),
    field(
        "flowId",
        Shape::FlowId,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field(
        "definitionId",
        Shape::DefinitionId,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field(
        "status",
        Shape::Status(INSTANCE_STATUSES),
        Some(Severity::Error),
        "the client cannot tell whether the instance finished",
    ),
    field(
        "createdAt",
        Shape::Timestamp,
        Some(Severity::Warning),
        "a lost start cannot be matched by its time",
    ),
    field(
        "updatedAt",
        Shape::Timestamp,
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field("finishedAt", Shape::Timestamp, None, ""),
    field(
        "input",
        Shape::Any,
        Some(Severity::Warning),
        "a start whose answer was lost cannot be found again by its input from the list",
    ),
    field("output", Shape::Any, None, ""),
    field("error", Shape::Object, None, ""),
];

const ACTIVITY: &[Field] = &[
    field(
        "id",
        Shape::Text,
        Some(Severity::Error),
        "the activities cannot be decoded",
    ),
    field("name", Shape::Text, Some(Severity::Info), CONTRACT_FIELD),
    field(
        "type",
        Shape::Kind(ACTIVITY_TYPES),
        Some(Severity::Info),
        CONTRACT_FIELD,
    ),
    field(
        "status",
        Shape::Status(ACTIVITY_STATUSES),
        Some(Severity::Warning),
        "a running instance cannot be told waiting for its user from working",
    ),
    field("startedAt", Shape::Timestamp, None, ""),
    field("completedAt", Shape::Timestamp, None, ""),
];

const START_EXTRA: &[Field] = &[field(
    "workflowUrl",
    Shape::Text,
    Some(Severity::Warning),
    "the end user's link is missing from the start's answer",
)];

fn check_json(endpoint: Operation, answer: &RawAnswer, out: &mut Findings) {
    if let Some(ct) = answer.header("content-type") {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        let json = essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json");
        if !json {
            out.add(
                "header Content-Type",
                "not-json",
                "application/json",
                ct.to_owned(),
                Severity::Info,
                "the body is decoded as JSON whatever its type",
            );
        }
    }
    let body: Value = match serde_json::from_slice(&answer.body) {
        Ok(v) => v,
        Err(_) => {
            out.add(
                "(body)",
                "not-json",
                "JSON",
                printable_start(&answer.body),
                Severity::Error,
                "the answer cannot be decoded",
            );
            return;
        }
    };
    match endpoint {
        Operation::ListFlows => check_page(&body, FLOW, true, answer.requested_page, out),
        Operation::ListInstances => {
            check_page(&body, INSTANCE_IN_LIST, true, answer.requested_page, out)
        }
        Operation::Activities => check_page(&body, ACTIVITY, false, answer.requested_page, out),
        Operation::GetInstance => check_object(&body, "", INSTANCE, out),
        Operation::StartInstance => {
            check_object(&body, "", INSTANCE, out);
            check_object(&body, "", START_EXTRA, out);
        }
        Operation::Token | Operation::ResultFile => {}
    }
    // Last resort: what the client's own models say.
    let decoded = match endpoint {
        Operation::ListFlows => serde_json::from_value::<Page<Flow>>(body).err(),
        Operation::ListInstances => serde_json::from_value::<Page<Instance>>(body).err(),
        Operation::GetInstance => serde_json::from_value::<Instance>(body).err(),
        Operation::StartInstance => serde_json::from_value::<StartedInstance>(body).err(),
        Operation::Activities => {
            #[derive(serde::Deserialize)]
            #[serde(untagged)]
            #[allow(dead_code)] // decoded only to see whether it can be
            enum Activities {
                List(Vec<Activity>),
                Page { items: Vec<Activity> },
            }
            serde_json::from_value::<Activities>(body).err()
        }
        Operation::Token | Operation::ResultFile => None,
    };
    if let Some(e) = decoded
        && !out.has_error()
    {
        out.add(
            "(body)",
            "undecodable",
            "an answer the client's models decode",
            e.to_string(),
            Severity::Error,
            "the call fails with a decode error",
        );
    }
}

/// A list answer: `{items, totalCount, offset, limit}`. `strict`: the client decodes it as a
/// `Page` (flows, instances); otherwise it also takes a bare array and ignores the rest
/// (activities).
fn check_page(
    body: &Value,
    item: &[Field],
    strict: bool,
    requested: Option<PageRequest>,
    out: &mut Findings,
) {
    let (shape_severity, shape_impact) = if strict {
        (Severity::Error, "every listing fails to decode")
    } else {
        (Severity::Info, "the client accepts it")
    };
    let page = match body {
        Value::Array(items) => {
            out.add(
                "(body)",
                "bare-array",
                "an object {items, totalCount, offset, limit}",
                format!("a bare array of {} items", items.len()),
                shape_severity,
                shape_impact,
            );
            check_items(items, item, out);
            return;
        }
        Value::Object(page) => page,
        other => {
            out.add(
                "(body)",
                "type",
                "an object {items, totalCount, offset, limit}",
                describe(other),
                Severity::Error,
                "every listing fails to decode",
            );
            return;
        }
    };
    let items = match page.get("items") {
        Some(Value::Array(items)) => Some(items),
        found => {
            out.add(
                "items",
                "missing-or-type",
                "an array",
                found.map_or_else(|| "missing".to_owned(), describe),
                Severity::Error,
                "the listing fails to decode",
            );
            None
        }
    };
    let (minor, minor_type) = if strict {
        (Severity::Info, Severity::Error)
    } else {
        (Severity::Info, Severity::Info)
    };
    let count = |name: &str, missing: Severity, missing_impact: &str, out: &mut Findings| match page
        .get(name)
    {
        None => {
            out.add(
                name,
                "missing",
                "a non-negative integer",
                "missing".into(),
                missing,
                missing_impact,
            );
            None
        }
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                out.add(
                    name,
                    "type",
                    "a non-negative integer",
                    describe(v),
                    minor_type,
                    if strict {
                        "the listing fails to decode"
                    } else {
                        "ignored by the client"
                    },
                );
                None
            }
        },
    };
    let total = count(
        "totalCount",
        if strict {
            Severity::Warning
        } else {
            Severity::Info
        },
        if strict {
            "paging cannot know the total: it stops at the first page shorter than asked"
        } else {
            "ignored by the client"
        },
        out,
    );
    let offset = count("offset", minor, "ignored by the client", out);
    let limit = count("limit", minor, "ignored by the client", out);
    let len = items.map_or(0, |i| i.len() as u64);
    if let Some(req) = requested {
        if let Some(offset) = offset
            && offset != req.offset
        {
            out.add(
                "offset",
                "mismatch",
                &format!("{} (as asked)", req.offset),
                offset.to_string(),
                Severity::Warning,
                "pages may overlap or leave items out",
            );
        }
        if let Some(limit) = limit
            && limit != u64::from(req.limit)
        {
            out.add(
                "limit",
                "mismatch",
                &format!("{} (as asked)", req.limit),
                limit.to_string(),
                Severity::Info,
                "the server chose another page size; paging follows the items received",
            );
        }
        if len > u64::from(req.limit) {
            out.add(
                "items",
                "too-many",
                &format!("at most {} items (the limit asked)", req.limit),
                format!("{len} items"),
                Severity::Warning,
                "the server ignores limit: pages are larger than asked",
            );
        }
    }
    if let (Some(total), Some(offset)) = (total, offset)
        && total < offset.saturating_add(len)
    {
        out.add(
            "totalCount",
            "inconsistent",
            &format!("at least offset + items = {}", offset.saturating_add(len)),
            total.to_string(),
            Severity::Warning,
            "paging may stop before the last item",
        );
    }
    if let Some(items) = items {
        check_items(items, item, out);
    }
}

fn check_items(items: &[Value], item: &[Field], out: &mut Findings) {
    for value in items {
        check_object(value, "items[].", item, out);
    }
}

fn check_object(value: &Value, prefix: &str, fields: &[Field], out: &mut Findings) {
    let Value::Object(object) = value else {
        out.add(
            if prefix.is_empty() {
                "(body)"
            } else {
                "items[]"
            },
            "type",
            "an object",
            describe(value),
            Severity::Error,
            "the answer fails to decode",
        );
        return;
    };
    for f in fields {
        let path = format!("{prefix}{}", f.name);
        let v = object.get(f.name);
        match v {
            // `null` is a value for a field of any type (`"input": null` is a start without input).
            Some(Value::Null) if matches!(f.shape, Shape::Any) => {}
            None | Some(Value::Null) => {
                if let Some(severity) = f.missing {
                    let found = if v.is_none() { "missing" } else { "null" };
                    out.add(
                        &path,
                        found,
                        expected_of(f.shape),
                        found.to_owned(),
                        severity,
                        f.missing_impact,
                    );
                }
            }
            Some(v) => check_value(&path, f.shape, v, out),
        }
    }
    // A terminal instance without an end time: the client falls back on `updatedAt`.
    if let Some(Value::String(status)) = object.get("status")
        && fields.iter().any(|f| f.name == "finishedAt")
        && ["Finished", "Faulted", "Cancelled"]
            .iter()
            .any(|s| s.eq_ignore_ascii_case(status))
        && object.get("finishedAt").is_none_or(Value::is_null)
    {
        out.add(
            &format!("{prefix}finishedAt"),
            "terminal-null",
            "the end time of an ended instance",
            "missing or null".into(),
            Severity::Info,
            "the client uses updatedAt or its own observation time",
        );
    }
}

fn expected_of(shape: Shape) -> &'static str {
    match shape {
        Shape::FlowId => "a flow id (string)",
        Shape::DefinitionId => "a definition id (string)",
        Shape::InstanceId => "an instance id (string)",
        Shape::Text => "a string",
        Shape::Integer => "an integer",
        Shape::Bool => "a boolean",
        Shape::Timestamp => "an RFC 3339 date-time string",
        Shape::Status(_) | Shape::Kind(_) => "a known value (string)",
        Shape::Object => "an object",
        Shape::Any => "any JSON value",
    }
}

fn check_value(path: &str, shape: Shape, v: &Value, out: &mut Findings) {
    let wrong_type = |out: &mut Findings, severity, impact: &str| {
        out.add(
            path,
            &format!("type:{}", type_name(v)),
            expected_of(shape),
            describe(v),
            severity,
            impact,
        );
    };
    let decode_fails = "the answer fails to decode";
    match shape {
        Shape::Any => {}
        Shape::FlowId | Shape::DefinitionId | Shape::InstanceId => {
            let Value::String(s) = v else {
                return wrong_type(out, Severity::Error, decode_fails);
            };
            let invalid = match shape {
                Shape::FlowId => FlowId::new(s.as_str()).err(),
                Shape::DefinitionId => DefinitionId::new(s.as_str()).err(),
                _ => InstanceId::new(s.as_str()).err(),
            };
            if let Some(e) = invalid {
                out.add(
                    path,
                    "invalid-id",
                    expected_of(shape),
                    e.to_string(),
                    Severity::Error,
                    decode_fails,
                );
            }
        }
        Shape::Text if !v.is_string() => wrong_type(out, Severity::Error, decode_fails),
        Shape::Integer if !(v.is_i64() || v.is_u64()) => {
            wrong_type(out, Severity::Error, decode_fails)
        }
        Shape::Bool if !v.is_boolean() => wrong_type(out, Severity::Error, decode_fails),
        Shape::Object if !v.is_object() => wrong_type(out, Severity::Error, decode_fails),
        Shape::Timestamp => {
            let Value::String(s) = v else {
                return wrong_type(
                    out,
                    Severity::Warning,
                    "kept as text without a date: the client uses its own observation time",
                );
            };
            match Timestamp::parse(s.as_str()).parsed() {
                None => out.add(
                    path,
                    "unparseable",
                    expected_of(shape),
                    describe(v),
                    Severity::Warning,
                    "kept as text without a date: the client uses its own observation time",
                ),
                Some(t) if !plausible_calendar_date(t) => out.add(
                    path,
                    "implausible",
                    "a date between 2000 and a year from now",
                    describe(v),
                    Severity::Warning,
                    "Timestamp::plausible gives None: the client uses its own observation time",
                ),
                Some(_) => {}
            }
        }
        Shape::Status(known) | Shape::Kind(known) => {
            let acts = matches!(shape, Shape::Status(_));
            let Value::String(s) = v else {
                return wrong_type(
                    out,
                    if acts {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    "kept as an unknown value the client cannot act on",
                );
            };
            if !known.iter().any(|k| k.eq_ignore_ascii_case(s)) {
                out.add(
                    path,
                    &format!("unknown:{s}"),
                    &format!("one of {}", known.join(", ")),
                    describe(v),
                    if acts {
                        Severity::Warning
                    } else {
                        Severity::Info
                    },
                    if acts {
                        "kept as Other: the client treats the instance as in an unknown state"
                    } else {
                        "kept as Other; only displayed"
                    },
                );
            }
        }
        Shape::Text | Shape::Integer | Shape::Bool | Shape::Object => {}
    }
}

/// A sanity window for dates from Mint, independent of any instance: from 2000 to a year ahead.
fn plausible_calendar_date(t: chrono::DateTime<chrono::Utc>) -> bool {
    let earliest = chrono::DateTime::<chrono::Utc>::from_timestamp(946_684_800, 0)
        .expect("2000-01-01 is a valid date");
    let latest = chrono::Utc::now() + chrono::TimeDelta::days(366);
    earliest <= t && t <= latest
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as a finding shows it: its type and a short rendering.
fn describe(v: &Value) -> String {
    let text = match v {
        Value::Array(items) => return format!("an array of {} items", items.len()),
        Value::Object(o) => return format!("an object with {} fields", o.len()),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let short: String = text.chars().take(60).collect();
    let ellipsis = if short.len() < text.len() { "…" } else { "" };
    match v {
        Value::String(_) => format!("{short}{ellipsis}"),
        _ => format!("a {} ({short}{ellipsis})", type_name(v)),
    }
}

fn printable_start(body: &[u8]) -> String {
    let text: String = body
        .iter()
        .take(60)
        .map(|&b| match b {
            0x20..=0x7e => char::from(b),
            _ => '.',
        })
        .collect();
    if body.is_empty() {
        "an empty body".into()
    } else {
        format!("{text:?}")
    }
}

// ---- fetching the raw answers ----

/// How [`MintClient::raw_result_file_headers`] reads the result file's headers. Both cost 5 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderProbe {
    /// `HEAD`: no byte of the file is sent. A server that refuses `HEAD` answers `405`.
    #[default]
    Head,
    /// `GET`, dropped after the headers: the transfer starts, and Mint may count it as a download.
    Get,
}

/// What [`MintClient::probe_contract`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The flow whose instances are listed; `None`: the first flow listed.
    pub flow_id: Option<FlowId>,
    /// The instance read alone and with its activities; `None`: the first instance listed. Its
    /// result file's headers are read if it is `Finished`, else those of the first `Finished`
    /// instance listed.
    pub instance_id: Option<InstanceId>,
    /// How to read the result file's headers; `None` skips them (saves 5 units).
    pub result_file: Option<HeaderProbe>,
    /// Items asked per list (1–100; default 10).
    pub page_limit: u32,
}

impl Default for ProbeTarget {
    fn default() -> Self {
        Self {
            flow_id: None,
            instance_id: None,
            result_file: Some(HeaderProbe::Head),
            page_limit: 10,
        }
    }
}

/// How one call of a probe went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum StepOutcome {
    /// Answered (2xx); `findings` of the report's findings came from this answer.
    Answered {
        /// The HTTP status.
        status: u16,
        /// How many findings this answer gave.
        findings: usize,
    },
    /// The call failed (after the client's retries).
    Failed {
        /// The HTTP status, if one came.
        status: Option<u16>,
        /// The client's error, as text.
        error: String,
    },
    /// Not called, and why.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One call of a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeStep {
    /// The endpoint (serialized as its short name).
    #[serde(serialize_with = "operation_name")]
    pub endpoint: Operation,
    /// `GET` or `HEAD`.
    pub method: String,
    /// The path called, or the endpoint's template when skipped.
    pub path: String,
    /// Rate units the call cost when it reached the server (retries not counted).
    pub units: u32,
    /// How it went.
    #[serde(flatten)]
    pub outcome: StepOutcome,
}

/// What [`MintClient::probe_contract`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractReport {
    /// Each call, in order.
    pub steps: Vec<ProbeStep>,
    /// Every difference, in the order found.
    pub findings: Vec<Finding>,
}

impl ContractReport {
    /// The most severe finding's severity (`None`: the answers match the contract).
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Rate units the calls cost (retries not counted).
    pub fn units(&self) -> u32 {
        self.steps.iter().map(|s| s.units).sum()
    }

    /// Whether a call failed (then the report is partial).
    pub fn has_failed_step(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.outcome, StepOutcome::Failed { .. }))
    }
}

impl MintClient {
    /// `GET /api/flows?offset=&limit=` as it came (1 unit).
    pub async fn raw_list_flows(&self, offset: u64, limit: u32) -> Result<RawAnswer, Error> {
        let req = Req {
            query: vec![("offset", offset.to_string()), ("limit", limit.to_string())],
            resource: "flows".into(),
            ..Req::new(Operation::ListFlows, vec!["flows"])
        };
        self.raw(&req, Some(PageRequest { offset, limit })).await
    }

    /// `GET /api/flows/{flowId}/instances?offset=&limit=` as it came (1 unit; slow on a busy flow).
    pub async fn raw_list_instances(
        &self,
        flow_id: &FlowId,
        offset: u64,
        limit: u32,
    ) -> Result<RawAnswer, Error> {
        let req = Req {
            query: vec![("offset", offset.to_string()), ("limit", limit.to_string())],
            flow_id: Some(flow_id),
            resource: format!("flow {flow_id}"),
            ..Req::new(
                Operation::ListInstances,
                vec!["flows", flow_id.as_str(), "instances"],
            )
        };
        match self.raw(&req, Some(PageRequest { offset, limit })).await {
            Err(e @ Error::NotFound { .. }) => Err(self.explain_flow_404(flow_id, e).await),
            other => other,
        }
    }

    /// `GET /api/instances/{instanceId}` as it came (1 unit).
    pub async fn raw_instance(&self, id: &InstanceId) -> Result<RawAnswer, Error> {
        let req = Req {
            instance_id: Some(id),
            resource: format!("instance {id}"),
            ..Req::new(Operation::GetInstance, vec!["instances", id.as_str()])
        };
        self.raw(&req, None).await
    }

    /// `GET /api/instances/{instanceId}/activities` as it came (1 unit).
    pub async fn raw_activities(&self, id: &InstanceId) -> Result<RawAnswer, Error> {
        let req = Req {
            instance_id: Some(id),
            resource: format!("instance {id}"),
            ..Req::new(
                Operation::Activities,
                vec!["instances", id.as_str(), "activities"],
            )
        };
        self.raw(&req, None).await
    }

    /// The result file's status and headers, without its bytes (5 units; see [`HeaderProbe`]).
    /// Not ready yet is [`Error::NotReady`], as for a download.
    pub async fn raw_result_file_headers(
        &self,
        id: &InstanceId,
        how: HeaderProbe,
    ) -> Result<RawAnswer, Error> {
        let mut req = Req {
            instance_id: Some(id),
            resource: format!("result file of instance {id}"),
            send_timeout: Some(self.inner.cfg.timeouts.request),
            ..Req::new(
                Operation::ResultFile,
                vec!["instances", id.as_str(), "result-file"],
            )
        };
        if how == HeaderProbe::Head {
            req.method = reqwest::Method::HEAD;
        }
        let Reply::Stream(resp) = self.execute(&req, Want::Headers).await? else {
            unreachable!("Want::Headers answers with a stream")
        };
        let answer = RawAnswer {
            endpoint: Operation::ResultFile,
            method: req.method.as_str().to_owned(),
            path: resp.url().path().to_owned(),
            status: resp.status().as_u16(),
            headers: header_pairs(resp.headers()),
            body: Vec::new(),
            requested_page: None,
        };
        // Dropped unread: for a GET the connection closes and the transfer stops.
        drop(resp);
        Ok(answer)
    }

    async fn raw(&self, req: &Req<'_>, page: Option<PageRequest>) -> Result<RawAnswer, Error> {
        let Reply::Body {
            status,
            headers,
            body,
            path,
        } = self.execute(req, Want::Body).await?
        else {
            unreachable!("Want::Body answers with a body")
        };
        Ok(RawAnswer {
            endpoint: req.op,
            method: req.method.as_str().to_owned(),
            path,
            status,
            headers: header_pairs(&headers),
            body: body.to_vec(),
            requested_page: page,
        })
    }

    /// Reads each endpoint once and checks every answer ([`check`]): flows, the instances of a
    /// flow, one instance, its activities, and a finished instance's result-file headers. Never
    /// starts anything; costs 4 units plus 5 for the result file (see the module docs). A call
    /// that fails is a failed step, and the probe goes on with what it can still read.
    pub async fn probe_contract(&self, target: &ProbeTarget) -> ContractReport {
        let limit = target.page_limit.clamp(1, crate::model::PAGE_LIMIT_MAX);
        let mut report = ContractReport {
            steps: Vec::new(),
            findings: Vec::new(),
        };
        let flows = self.raw_list_flows(0, limit).await;
        let first_flow = flows.as_ref().ok().and_then(|a| {
            listed(a)
                .iter()
                .find_map(|i| i.get("id")?.as_str().and_then(|s| FlowId::new(s).ok()))
        });
        self.record(&mut report, Operation::ListFlows, flows);

        let flow = target.flow_id.clone().or(first_flow);
        let mut listed_items = Vec::new();
        match &flow {
            Some(flow) => {
                let instances = self.raw_list_instances(flow, 0, limit).await;
                if let Ok(a) = &instances {
                    listed_items = listed(a);
                }
                self.record(&mut report, Operation::ListInstances, instances);
            }
            None => skip(
                &mut report,
                Operation::ListInstances,
                "no flow to list: none given and none listed",
            ),
        }
        let listed_id = |finished: bool| {
            listed_items.iter().find_map(|i| {
                let ok = !finished
                    || i.get("status")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.eq_ignore_ascii_case("Finished"));
                ok.then(|| i.get("id")?.as_str().and_then(|s| InstanceId::new(s).ok()))
                    .flatten()
            })
        };
        let instance = target.instance_id.clone().or_else(|| listed_id(false));
        let mut instance_finished = false;
        match &instance {
            Some(id) => {
                let one = self.raw_instance(id).await;
                if let Ok(a) = &one {
                    instance_finished = serde_json::from_slice::<Value>(&a.body)
                        .ok()
                        .and_then(|v| v.get("status")?.as_str().map(str::to_owned))
                        .is_some_and(|s| s.eq_ignore_ascii_case("Finished"));
                }
                self.record(&mut report, Operation::GetInstance, one);
                let activities = self.raw_activities(id).await;
                self.record(&mut report, Operation::Activities, activities);
            }
            None => {
                let reason = "no instance to read: none given and the flow lists none";
                skip(&mut report, Operation::GetInstance, reason);
                skip(&mut report, Operation::Activities, reason);
            }
        }
        let Some(how) = target.result_file else {
            skip(&mut report, Operation::ResultFile, "not asked for");
            return report;
        };
        let finished = match &instance {
            Some(id) if instance_finished => Some(id.clone()),
            _ => listed_id(true),
        };
        let Some(id) = finished else {
            skip(
                &mut report,
                Operation::ResultFile,
                &format!(
                    "no finished instance among the {} listed: pass one",
                    listed_items.len()
                ),
            );
            return report;
        };
        let headers = self.raw_result_file_headers(&id, how).await;
        if how == HeaderProbe::Head
            && let Err(e) = &headers
            && matches!(e.status(), Some(405 | 501))
        {
            report.findings.push(Finding {
                endpoint: Operation::ResultFile,
                field: "(method HEAD)".into(),
                expected: "HEAD answered like GET, without the body".into(),
                found: format!("{}", e.status().unwrap_or_default()),
                severity: Severity::Warning,
                impact: "the headers can only be read with HeaderProbe::Get (5 units, and Mint \
                         may count it as a download)"
                    .into(),
                occurrences: 1,
            });
        }
        self.record(&mut report, Operation::ResultFile, headers);
        report
    }

    fn record(
        &self,
        report: &mut ContractReport,
        endpoint: Operation,
        answer: Result<RawAnswer, Error>,
    ) {
        let units = if endpoint == Operation::ResultFile {
            self.inner.cfg.budget.result_file_units
        } else {
            self.inner.cfg.budget.request_units
        };
        let step = match answer {
            Ok(answer) => {
                let findings = check(&answer);
                let step = ProbeStep {
                    endpoint,
                    method: answer.method,
                    path: answer.path,
                    units,
                    outcome: StepOutcome::Answered {
                        status: answer.status,
                        findings: findings.len(),
                    },
                };
                report.findings.extend(findings);
                step
            }
            Err(e) => {
                let status = e.status();
                // A 401 and a 429 consume nothing; without an answer nothing is known.
                let charged = matches!(status, Some(s) if s != 401 && s != 429);
                ProbeStep {
                    endpoint,
                    method: if endpoint == Operation::ResultFile {
                        "HEAD/GET".into()
                    } else {
                        endpoint.method().into()
                    },
                    path: endpoint.path_template().into(),
                    units: if charged { units } else { 0 },
                    outcome: StepOutcome::Failed {
                        status,
                        error: e.to_string(),
                    },
                }
            }
        };
        report.steps.push(step);
    }
}

fn skip(report: &mut ContractReport, endpoint: Operation, reason: &str) {
    report.steps.push(ProbeStep {
        endpoint,
        method: endpoint.method().into(),
        path: endpoint.path_template().into(),
        units: 0,
        outcome: StepOutcome::Skipped {
            reason: reason.to_owned(),
        },
    });
}

/// The items of a list answer, leniently (a page or a bare array), to pick ids from.
fn listed(answer: &RawAnswer) -> Vec<Value> {
    match serde_json::from_slice::<Value>(&answer.body) {
        Ok(Value::Array(items)) => items,
        Ok(Value::Object(mut page)) => match page.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(endpoint: Operation, body: Value) -> RawAnswer {
        RawAnswer {
            endpoint,
            method: "GET".into(),
            path: "/x".into(),
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            requested_page: Some(PageRequest {
                offset: 0,
                limit: 10,
            }),
        }
    }

    fn instance(status: &str) -> Value {
        serde_json::json!({
            "id": "i-1", "flowId": "f-1", "definitionId": "d-1", "status": status,
            "createdAt": "2025-01-01T00:00:00Z", "updatedAt": "2025-01-01T00:01:00Z",
            "finishedAt": null, "input": {"a": 1}, "output": null, "error": null,
            "accountId": "ignored"
        })
    }

    fn page(items: Vec<Value>) -> Value {
        let n = items.len();
        serde_json::json!({"items": items, "totalCount": n, "offset": 0, "limit": 10})
    }

    #[test]
    fn an_answer_as_the_contract_says_has_no_finding() {
        let a = answer(
            Operation::ListInstances,
            page(vec![instance("Running"), instance("Running")]),
        );
        assert_eq!(check(&a), []);
        let a = answer(Operation::GetInstance, instance("Running"));
        assert_eq!(check(&a), []);
    }

    #[test]
    fn the_same_difference_on_every_item_is_one_finding_counted() {
        let mut items = vec![
            instance("Running"),
            instance("Running"),
            instance("Running"),
        ];
        for i in &mut items {
            i["createdAt"] = Value::from(1_735_689_600);
        }
        let findings = check(&answer(Operation::ListInstances, page(items)));
        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert_eq!(
            (f.field.as_str(), f.severity, f.occurrences),
            ("items[].createdAt", Severity::Warning, 3)
        );
        assert_eq!(f.found, "a number (1735689600)");
    }

    #[test]
    fn types_the_models_cannot_decode_are_errors() {
        let mut i = instance("Running");
        i["error"] = Value::from("boom");
        let findings = check(&answer(Operation::GetInstance, i));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(
            (findings[0].field.as_str(), findings[0].severity),
            ("error", Severity::Error)
        );
        let mut i = instance("Running");
        i["id"] = Value::from("has space");
        let findings = check(&answer(Operation::GetInstance, i));
        assert_eq!(findings[0].severity, Severity::Error, "{findings:?}");
        let findings = check(&answer(Operation::ListFlows, Value::from("nope")));
        assert_eq!(findings[0].field, "(body)");
        let mut raw = answer(Operation::ListFlows, Value::Null);
        raw.body = b"<html>502</html>".to_vec();
        let findings = check(&raw);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].found, "\"<html>502</html>\"");
    }

    #[test]
    fn pagination_fields_are_checked_against_the_page_asked_for() {
        let mut body = page(vec![instance("Running")]);
        body["offset"] = Value::from(5);
        body["limit"] = Value::from(50);
        body["totalCount"] = Value::from(2);
        let findings = check(&answer(Operation::ListInstances, body));
        let fields: Vec<_> = findings
            .iter()
            .map(|f| (f.field.as_str(), f.severity))
            .collect();
        assert_eq!(
            fields,
            [
                ("offset", Severity::Warning),
                ("limit", Severity::Info),
                ("totalCount", Severity::Warning)
            ]
        );
        let mut body = page(vec![]);
        body["totalCount"] = Value::from("12");
        let findings = check(&answer(Operation::ListFlows, body));
        assert_eq!(findings[0].severity, Severity::Error, "{findings:?}");
    }

    #[test]
    fn activities_may_be_a_bare_array_but_it_is_reported() {
        let activity = serde_json::json!({"id": "a-1", "name": "Step", "type": "userTask",
            "status": "Suspended", "startedAt": "2025-01-01T00:00:00Z", "completedAt": null});
        let findings = check(&answer(Operation::Activities, Value::from(vec![activity])));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Info);
    }

    #[test]
    fn result_file_headers_are_checked() {
        let headers = |pairs: &[(&str, &str)]| RawAnswer {
            endpoint: Operation::ResultFile,
            method: "HEAD".into(),
            path: "/x".into(),
            status: 200,
            headers: pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: vec![],
            requested_page: None,
        };
        let ok = headers(&[("content-type", "application/zip"), ("content-length", "9")]);
        assert_eq!(check(&ok), []);
        let severities = |a: &RawAnswer| {
            check(a)
                .into_iter()
                .map(|f| (f.field, f.severity))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            severities(&headers(&[("content-type", "text/html; charset=utf-8")])),
            [
                ("header Content-Type".into(), Severity::Error),
                ("header Content-Length".into(), Severity::Warning)
            ]
        );
        assert_eq!(
            severities(&headers(&[
                ("content-type", "application/octet-stream"),
                ("content-length", "9"),
                ("accept-ranges", "bytes")
            ])),
            [
                ("header Content-Type".into(), Severity::Info),
                ("header Accept-Ranges".into(), Severity::Info)
            ]
        );
    }

    #[test]
    fn findings_serialize_with_the_endpoint_name() {
        let findings = check(&answer(
            Operation::ListFlows,
            Value::from(Vec::<Value>::new()),
        ));
        let json = serde_json::to_value(&findings).unwrap();
        assert_eq!(json[0]["endpoint"], "list_flows");
        assert_eq!(json[0]["severity"], "error");
    }
}
