-- Erasure and retention (issue 12), as migrations/sqlite/0006. `erasures` is the tombstone of an execution whose archived
-- result and personal fields were removed (by an operator or by the retention policy's purge);
-- `audit_log` records every operator action on personal data, refusals included. The cost ledger
-- (spend_ledger) is never touched by either.
CREATE TABLE erasures (
    execution_id TEXT    PRIMARY KEY NOT NULL REFERENCES executions (id),
    kind         TEXT    NOT NULL, -- 'erased' | 'purged'
    at           BIGINT  NOT NULL, -- ms since the epoch
    operator     TEXT    NOT NULL,
    reason       TEXT,
    removed      TEXT    NOT NULL  -- JSON: what was removed
);

CREATE TABLE audit_log (
    id       BIGSERIAL PRIMARY KEY,
    at       BIGINT  NOT NULL, -- ms since the epoch
    operator TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    target   TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    detail   TEXT    NOT NULL  -- JSON
);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX executions_by_archived ON executions (state, archived_at);
