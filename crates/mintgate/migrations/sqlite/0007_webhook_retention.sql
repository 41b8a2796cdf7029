-- Webhook records are pruned after a retention (issue 11): find the old ones without a full scan.
CREATE INDEX webhooks_by_received ON webhooks (received_at);
