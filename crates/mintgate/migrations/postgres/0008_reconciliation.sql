-- Reconciliation that proves or holds (issue 10): when each start was sent (the lower bound of the
-- instances that may be ours), the end user's link known to be lost, why an execution waits for an
-- operator's decision, and what one flow scan found for every ambiguous execution of that flow.
ALTER TABLE executions ADD COLUMN start_sent_at BIGINT;
ALTER TABLE executions ADD COLUMN workflow_url_unknown BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN decision_reason TEXT;
CREATE INDEX executions_ambiguous ON executions (environment, flow_id) WHERE start_ambiguous = 1;

CREATE TABLE reconcile_findings (
    execution_id     TEXT PRIMARY KEY NOT NULL,
    outcome          TEXT NOT NULL,
    instance_id      TEXT,
    scan_started_at  BIGINT NOT NULL,
    recorded_at      BIGINT NOT NULL,
    detail           TEXT NOT NULL
);
