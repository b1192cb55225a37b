-- floodway schema, version 10: shaping work before it spends a quota.
--
-- job_keys: the one job an enqueue key currently stands for. A dedupe key ('unique') returns
-- that job's handle instead of making another while its window lasts (or while the job is
-- unfinished); a debounce key ('debounce') folds later enqueues into that job while it has
-- not started, so it runs once with the last arguments. The row is the lock two enqueuers of
-- one key serialise on, so the rule holds across processes and machines.
CREATE TABLE job_keys (
    kind       TEXT NOT NULL,
    task       TEXT NOT NULL,
    key        TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    first_at   REAL NOT NULL,
    expires_at REAL,
    collapsed  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, task, key)
);
CREATE INDEX job_keys_job ON job_keys (job_id);

-- batching: the items of one batch task and key wait together, so a worker that claimed one
-- takes the others that are ready in the same step
ALTER TABLE jobs ADD COLUMN batch_key TEXT;
CREATE INDEX jobs_batch ON jobs (batch_key, status, priority DESC, run_at) WHERE batch_key IS NOT NULL;
