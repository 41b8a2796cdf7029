-- Issue 14: application events. The outbox holds what an application is told (execution.started,
-- …), written by the store in the transaction of the change it reports; `seq` is the feed's cursor
-- (commit order: a transaction-level advisory lock serializes
-- its assignment, see store/outbox.rs). Deliveries are one row per event and
-- endpoint, claimed with a lease and a fencing token like jobs; each endpoint's fan-out position is
-- its `cursor_seq`.
CREATE TABLE outbox (
    seq           BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    execution_id  TEXT NOT NULL,
    type          TEXT NOT NULL,
    at            BIGINT NOT NULL,
    payload       TEXT NOT NULL
);
CREATE INDEX outbox_by_execution ON outbox (execution_id, seq);
CREATE INDEX outbox_by_at ON outbox (at);

-- When `execution.at_risk` was written for the execution (once).
ALTER TABLE executions ADD COLUMN at_risk_at BIGINT;

CREATE TABLE event_endpoints (
    name        TEXT PRIMARY KEY NOT NULL,
    cursor_seq  BIGINT NOT NULL
);

CREATE TABLE event_deliveries (
    endpoint      TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    execution_id  TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    next_at       BIGINT NOT NULL,
    lease_owner   TEXT,
    lease_until   BIGINT,
    lease_token   BIGINT NOT NULL DEFAULT 0,
    last_status   BIGINT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    delivered_at  BIGINT,
    PRIMARY KEY (endpoint, seq)
);
CREATE INDEX event_deliveries_due ON event_deliveries (state, next_at);
CREATE INDEX event_deliveries_chain ON event_deliveries (endpoint, execution_id, seq);
