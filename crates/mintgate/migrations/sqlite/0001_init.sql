-- mintgate's durable state on SQLite. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE executions (
    id               TEXT PRIMARY KEY NOT NULL,
    idempotency_key  TEXT UNIQUE,
    request_sha256   TEXT NOT NULL,
    environment      TEXT NOT NULL,
    flow_id          TEXT NOT NULL,
    input            TEXT NOT NULL,
    state            TEXT NOT NULL,
    instance_id      TEXT UNIQUE,
    workflow_url     TEXT,
    mint_status      TEXT,
    progress         TEXT,
    progress_at      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    deadline_at      INTEGER,
    archived_at      INTEGER,
    archive_path     TEXT,
    sha256           TEXT,
    bytes            INTEGER,
    failure_reason   TEXT,
    start_ambiguous  INTEGER NOT NULL DEFAULT 0,
    start_attempts   INTEGER NOT NULL DEFAULT 0,
    billed_count     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX executions_by_state ON executions (state, deadline_at);
CREATE INDEX executions_by_created ON executions (created_at);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY NOT NULL,
    execution_id  TEXT NOT NULL REFERENCES executions (id),
    kind          TEXT NOT NULL,
    state         TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    run_at        INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    lease_owner   TEXT,
    lease_until   INTEGER,
    lease_token   INTEGER NOT NULL DEFAULT 0,
    errors        TEXT NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
-- Architecture invariant: at most one active job of a kind per execution.
CREATE UNIQUE INDEX jobs_one_active ON jobs (execution_id, kind) WHERE state IN ('ready', 'running');
CREATE INDEX jobs_due ON jobs (state, kind, run_at);

CREATE TABLE webhooks (
    id              TEXT PRIMARY KEY NOT NULL,
    received_at     INTEGER NOT NULL,
    instance_id     TEXT NOT NULL,
    claimed_status  TEXT,
    authentic       INTEGER NOT NULL,
    body_sha256     TEXT NOT NULL UNIQUE,
    execution_id    TEXT
);
CREATE INDEX webhooks_by_instance ON webhooks (instance_id);

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id  TEXT NOT NULL,
    at            INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    detail        TEXT NOT NULL
);
CREATE INDEX events_by_execution ON events (execution_id, id);
