-- mintgate's durable state on PostgreSQL: the same tables as on SQLite (migrations/sqlite), so both
-- stores read and write the same shapes. Times are milliseconds since the Unix epoch (UTC); ids are
-- UUID text; JSON is text. The tables live in the connection's `search_path` schema.

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
    progress_at      BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    deadline_at      BIGINT,
    archived_at      BIGINT,
    archive_path     TEXT,
    sha256           TEXT,
    bytes            BIGINT,
    failure_reason   TEXT,
    start_ambiguous  BIGINT NOT NULL DEFAULT 0,
    start_attempts   BIGINT NOT NULL DEFAULT 0,
    billed_count     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX executions_by_state ON executions (state, deadline_at);
CREATE INDEX executions_by_created ON executions (created_at);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY NOT NULL,
    execution_id  TEXT NOT NULL REFERENCES executions (id),
    kind          TEXT NOT NULL,
    state         TEXT NOT NULL,
    priority      BIGINT NOT NULL,
    run_at        BIGINT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    max_attempts  BIGINT NOT NULL,
    lease_owner   TEXT,
    lease_until   BIGINT,
    lease_token   BIGINT NOT NULL DEFAULT 0,
    errors        TEXT NOT NULL DEFAULT '[]',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- Architecture invariant: at most one active job of a kind per execution.
CREATE UNIQUE INDEX jobs_one_active ON jobs (execution_id, kind) WHERE state IN ('ready', 'running');
CREATE INDEX jobs_due ON jobs (state, kind, run_at);

CREATE TABLE webhooks (
    id              TEXT PRIMARY KEY NOT NULL,
    received_at     BIGINT NOT NULL,
    instance_id     TEXT NOT NULL,
    claimed_status  TEXT,
    authentic       BIGINT NOT NULL,
    body_sha256     TEXT NOT NULL UNIQUE,
    execution_id    TEXT
);
CREATE INDEX webhooks_by_instance ON webhooks (instance_id);

CREATE TABLE events (
    id            BIGSERIAL PRIMARY KEY,
    execution_id  TEXT NOT NULL,
    at            BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    detail        TEXT NOT NULL
);
CREATE INDEX events_by_execution ON events (execution_id, id);
