-- Issue 10: an instance is `expired` only when it is true, and a missing role pauses work.

-- When this service saw the instance finished (its own clock): Mint's deletion deadline is judged
-- by it, whatever Mint's `finishedAt` says.
ALTER TABLE executions ADD COLUMN finished_seen_at INTEGER;
-- The first of an unbroken run of `404`s for the instance (NULL once Mint answers it again), and
-- how many there were: one spurious `404` expires nothing.
ALTER TABLE executions ADD COLUMN not_found_since INTEGER;
ALTER TABLE executions ADD COLUMN not_found_count INTEGER NOT NULL DEFAULT 0;

-- Work paused because the API client lacks a role in an environment: every replica's claims skip
-- jobs of that kind there until a probe (which bills nothing) finds the role granted.
CREATE TABLE work_pauses (
    environment    TEXT NOT NULL,
    kind           TEXT NOT NULL,
    role           TEXT NOT NULL,
    operation      TEXT NOT NULL,
    detail         TEXT NOT NULL,
    since          INTEGER NOT NULL,
    probed_at      INTEGER,
    next_probe_at  INTEGER NOT NULL,
    PRIMARY KEY (environment, kind)
);
