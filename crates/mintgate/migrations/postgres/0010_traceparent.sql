-- Issue 13: the W3C `traceparent` of the request that created an execution (NULL without traces):
-- its jobs' spans are children of that request's span, so one execution is one trace.
ALTER TABLE executions ADD COLUMN traceparent TEXT;
