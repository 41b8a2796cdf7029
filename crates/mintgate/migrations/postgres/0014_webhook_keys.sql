-- Issue 16: fewer indexes written at random places per webhook. One UNIQUE(instance_id,
-- body_sha256) both finds a body seen before (the instance id is read from the body, so the pair
-- is unique exactly when the body is) and lists an instance's webhooks (its first column), instead
-- of UNIQUE(body_sha256) and an index on instance_id.
ALTER TABLE webhooks ADD CONSTRAINT webhooks_instance_body UNIQUE (instance_id, body_sha256);
ALTER TABLE webhooks DROP CONSTRAINT webhooks_body_sha256_key;
DROP INDEX webhooks_by_instance;
