-- The cost ledger: one row per billed start (written in the same transaction as the execution's
-- billed_count), and operator settings such as the monthly spend cap. As migrations/sqlite/0002.
CREATE TABLE spend_ledger (
    id           BIGSERIAL PRIMARY KEY,
    execution_id TEXT   NOT NULL REFERENCES executions (id),
    environment  TEXT   NOT NULL,
    flow_id      TEXT   NOT NULL,
    billed_at    BIGINT NOT NULL, -- ms since the epoch
    day          TEXT   NOT NULL, -- YYYY-MM-DD (UTC)
    month        TEXT   NOT NULL, -- YYYY-MM (UTC)
    cents        BIGINT NOT NULL
);
CREATE INDEX spend_ledger_month ON spend_ledger (month, day);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
