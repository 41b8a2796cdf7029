-- Issue 16: fewer B-trees written at random places per webhook. UNIQUE(body_sha256) and the
-- index on instance_id each took a webhook at a random place, so each webhook of a group commit
-- dirtied a page of both (a WAL frame each). One UNIQUE(instance_id, body_sha256) now both finds
-- a body seen before (the instance id is read from the body, so the pair is unique exactly when
-- the body is) and lists an instance's webhooks (its first column). The other keys are written in
-- time order (the ids are UUIDv7). SQLite drops a column's UNIQUE only by rebuilding the table.
CREATE TABLE webhooks_keyed (
    id              TEXT PRIMARY KEY NOT NULL,
    received_at     INTEGER NOT NULL,
    instance_id     TEXT NOT NULL,
    claimed_status  TEXT,
    authentic       INTEGER NOT NULL,
    body_sha256     TEXT NOT NULL,
    execution_id    TEXT,
    UNIQUE (instance_id, body_sha256)
);
INSERT INTO webhooks_keyed (id, received_at, instance_id, claimed_status, authentic, body_sha256, execution_id)
    SELECT id, received_at, instance_id, claimed_status, authentic, body_sha256, execution_id
    FROM webhooks ORDER BY id;
DROP TABLE webhooks;
ALTER TABLE webhooks_keyed RENAME TO webhooks;
-- Webhook records are pruned after a retention (issue 11): find the old ones without a full scan.
CREATE INDEX webhooks_by_received ON webhooks (received_at);
