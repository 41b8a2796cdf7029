-- Issue 14: application events. The outbox holds what an application is told (execution.started,
-- …), written by the store in the transaction of the change it reports; `seq` is the feed's cursor
-- (commit order: SQLite writes one transaction at a time). Deliveries are one row per event and
-- endpoint, claimed with a lease and a fencing token like jobs; each endpoint's fan-out position is
-- its `cursor_seq`.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    execution_id  TEXT NOT NULL,
    type          TEXT NOT NULL,
    at            INTEGER NOT NULL,
    payload       TEXT NOT NULL
);
CREATE INDEX outbox_by_execution ON outbox (execution_id, seq);
CREATE INDEX outbox_by_at ON outbox (at);

-- When `execution.at_risk` was written for the execution (once).
ALTER TABLE executions ADD COLUMN at_risk_at INTEGER;

CREATE TABLE event_endpoints (
    name        TEXT PRIMARY KEY NOT NULL,
    cursor_seq  INTEGER NOT NULL
);

CREATE TABLE event_deliveries (
    endpoint      TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    execution_id  TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       INTEGER NOT NULL,
    lease_owner   TEXT,
    lease_until   INTEGER,
    lease_token   INTEGER NOT NULL DEFAULT 0,
    last_status   INTEGER,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    delivered_at  INTEGER,
    PRIMARY KEY (endpoint, seq)
);
CREATE INDEX event_deliveries_due ON event_deliveries (state, next_at);
CREATE INDEX event_deliveries_chain ON event_deliveries (endpoint, execution_id, seq);
