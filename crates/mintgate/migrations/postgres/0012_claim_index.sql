-- Issue 16: a claim reads the due jobs of one kind and priority, oldest first, from this index
-- (a range, however long the queue), instead of sorting every due job of the kind at each claim.
CREATE INDEX jobs_due_by_priority ON jobs (state, kind, priority, run_at);
