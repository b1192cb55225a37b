-- floodway schema for PostgreSQL, version 12: a claim limited to some queues reads only their
-- jobs. jobs_ready orders a fairness group's waiting jobs across all queues, so such a claim
-- walked past every waiting job of the other queues in the group (a backlog of 100,000 made a
-- worker of another queue wait seconds); this index gives each (group, queue) its own range,
-- which the claim reads queue by queue and merges.
CREATE INDEX jobs_ready_queue ON jobs (fair_key, queue, priority DESC, run_at, seq) WHERE status = 'waiting';
