//! Every modelled choice of the simulator in one place: costs, defaults, limits and error texts.
//!
//! `mint-api.md` marks facts as **[doc]**, **[field]** or **[model]**. The constants here are the
//! simulator's reading of them; when the real OpenAPI document or a sandbox says otherwise, correct
//! them here and nowhere else.

/// Role needed for every GET on flows, instances and activities. [doc]/[field]
pub const ROLE_VIEWER: &str = "Flow Viewer";
/// Role needed to start an instance. [doc]/[field]
pub const ROLE_EDITOR: &str = "Flow Editor";
/// Role needed to download a result file. [field]
pub const ROLE_DOWNLOAD: &str = "Flow Instance Download";
/// The only scope the token endpoint grants. [doc]
pub const SCOPE: &str = "signicat-api";
/// The only grant type the token endpoint knows. [doc]
pub const GRANT_TYPE: &str = "client_credentials";

/// Token lifetime when a client does not set one. [doc]
pub const TOKEN_LIFETIME_SECS_DEFAULT: u64 = 600;
/// Shortest configurable token lifetime. [doc]
pub const TOKEN_LIFETIME_SECS_MIN: u64 = 1;
/// Longest configurable token lifetime. [doc]
pub const TOKEN_LIFETIME_SECS_MAX: u64 = 3600;

/// Length of the main rate-limit window. [field]
pub const RATE_WINDOW_SECS_DEFAULT: u64 = 60;
/// Units admitted in any main window. [field]
pub const RATE_WINDOW_UNITS_DEFAULT: u64 = 100;
/// Length of the burst window. [model]
pub const BURST_WINDOW_MILLIS_DEFAULT: u64 = 1000;
/// Units admitted in any burst window. [model]
pub const BURST_UNITS_DEFAULT: u64 = 20;
/// Cost of an ordinary API request. [field]
pub const REQUEST_COST_UNITS_DEFAULT: u64 = 1;
/// Cost of a result-file download. [field]
pub const RESULT_FILE_COST_UNITS_DEFAULT: u64 = 5;

/// Price of one execution (a started instance), in cents. [field]
pub const START_CENTS_DEFAULT: u64 = 50;
/// Instances and files are deleted this long after the instance ended. [field]
pub const RETENTION_SECS_DEFAULT: u64 = 30 * 24 * 3600;
/// Simulated time `GET /api/flows/{flowId}/instances` spends per instance of the flow:
/// 100,000 instances take about 10 s. [field] (calibration [model])
pub const LIST_DELAY_MICROS_PER_INSTANCE_DEFAULT: u64 = 100;
/// The start input's key that carries the caller's correlation id (mintgate's execution id), for
/// the ground truth of starts per correlation id. [model]
pub const CORRELATION_INPUT_KEY_DEFAULT: &str = "mintgateExecutionId";
/// How long the HTTP request step waits for the webhook receiver (real time). [model]
pub const WEBHOOK_TIMEOUT_MILLIS_DEFAULT: u64 = 5000;
/// How long a delayed (fault) webhook is held back, real time. [model]
pub const WEBHOOK_DELAY_MILLIS_DEFAULT: u64 = 2000;

/// Default `limit` of list endpoints. [model]
pub const LIST_LIMIT_DEFAULT: u64 = 20;
/// Largest `limit` of list endpoints. [doc]
pub const LIST_LIMIT_MAX: u64 = 100;

/// Lifetime of the end user's workflow URL when the start body sets none. [model]
pub const WORKFLOW_URL_TTL_SECS_DEFAULT: u64 = 3600;
/// Longest accepted `workflowUrlTtl`. [model]
pub const WORKFLOW_URL_TTL_SECS_MAX: u64 = 30 * 24 * 3600;

/// The one error message a faulted instance carries. [field]
pub const EXECUTION_ERROR_MESSAGE: &str = "Workflow execution failed";

/// Default body template of the HTTP request step. [model]
pub const WEBHOOK_BODY_TEMPLATE_DEFAULT: &str =
    r#"{"instanceId":"{{instanceId}}","flowId":"{{flowId}}","status":"Finished"}"#;
/// Header carrying the signing timestamp (unix seconds) when a flow signs its webhook. [model]
pub const SIGNATURE_TIMESTAMP_HEADER: &str = "X-Mint-Timestamp";
/// Header carrying `v1=<hex hmac>` when a flow signs its webhook. [model]
pub const SIGNATURE_HEADER: &str = "X-Mint-Signature";

/// Largest result file a flow may declare (ZIP64 is used above 4 GiB). [model]
pub const RESULT_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Largest single evidence entry inside a result file, so entries never need ZIP64 sizes. [model]
pub const EVIDENCE_ENTRY_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Status codes the server-error fault chooses from. 502 and 503 come with an HTML body, as a
/// gateway would send them. [model]
pub const SERVER_ERROR_STATUSES: [u16; 3] = [500, 502, 503];

/// Account id carried in every flow and instance (an extra field clients must ignore). [model]
pub const ACCOUNT_ID: &str = "a-sim-0000001";

/// `type` of Signicat error bodies, by status. [model]
pub fn problem_type(status: u16) -> &'static str {
    match status {
        400 => "https://developer.signicat.com/docs/errors/#validation-error",
        401 => "https://developer.signicat.com/docs/errors/#unauthorized",
        404 => "https://developer.signicat.com/docs/errors/#not-found",
        409 => "https://developer.signicat.com/docs/errors/#conflict",
        415 => "https://developer.signicat.com/docs/errors/#unsupported-media-type",
        416 => "https://developer.signicat.com/docs/errors/#range-not-satisfiable",
        429 => "https://developer.signicat.com/docs/errors/#too-many-requests",
        _ => "https://developer.signicat.com/docs/errors/#server-error",
    }
}

/// `title` of Signicat error bodies, by status. [model]
pub fn problem_title(status: u16) -> &'static str {
    match status {
        400 => "One or more validation errors occurred.",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    }
}

/// `detail` of the 404 for an unknown flow id (including a definition id passed as a flow id). [field]
pub const FLOW_NOT_FOUND: &str = "Flow not found";
/// `detail` of the 404 for an unknown or deleted instance. [model]
pub const INSTANCE_NOT_FOUND: &str = "Instance not found";
/// `detail` of the 409 for a result file that is not ready. [model]
pub const RESULT_NOT_READY: &str = "The result file is not available yet";

/// `finishedAt` of the `year1` behaviour: .NET's `default(DateTime)`. [model]
pub const FINISHED_AT_YEAR_1: &str = "0001-01-01T00:00:00Z";
/// `finishedAt` of the `chronoMax` behaviour: a date near chrono's largest, which overflows any
/// arithmetic on it. [model]
pub const FINISHED_AT_CHRONO_MAX: &str = "+262142-12-31T00:00:00Z";
/// `finishedAt` of the `unparseable` behaviour. [model]
pub const FINISHED_AT_UNPARSEABLE: &str = "not a date";
/// Instance `status` of the `statusUnknown` contract change: a value the contract does not list.
/// [model]
pub const UNKNOWN_INSTANCE_STATUS: &str = "Archived";
/// Activity `status` of the `statusUnknown` contract change. [model]
pub const UNKNOWN_ACTIVITY_STATUS: &str = "Skipped";
/// Body of the result-file HTML error page (`resultFileHtmlRate`): what a gateway or a storage
/// front end answers with `200 text/html` when it fails. [model]
pub const RESULT_FILE_HTML_PAGE: &str = "<!DOCTYPE html>\r\n<html>\r\n<head><title>Service unavailable</title></head>\r\n<body>\r\n<h1>Sorry, something went wrong</h1>\r\n<p>The file could not be retrieved. Please try again later.</p>\r\n</body>\r\n</html>\r\n";
