-- Issue 16: the instance's `updatedAt` as Mint spelt it when `progress` was last read from its
-- activities. A check whose `GET` answers the same `updatedAt` knows the progress has not changed
-- and reads no activities (one unit instead of two).
ALTER TABLE executions ADD COLUMN progress_mint_updated_at TEXT;
