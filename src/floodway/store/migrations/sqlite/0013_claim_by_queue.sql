-- floodway schema, version 13: a claim limited to some queues reads only their jobs. jobs_fair
-- orders a fairness group's waiting jobs across all queues, so such a claim walked past every
-- waiting job of the other queues in the group; this index gives each (group, queue) its own
-- range, which the claim reads queue by queue and merges. (Its WHERE term is the claim's own:
-- SQLite uses a partial index only for a query that repeats it.)
CREATE INDEX jobs_fair_queue ON jobs (fair_key, queue, priority DESC, run_at) WHERE status = 'waiting';
