-- floodway schema for PostgreSQL, version 10: shaping work before it spends a quota.
-- Mirrors migrations/sqlite/0010 (job_keys: the job a dedupe or debounce key stands for;
-- jobs.batch_key: the items of one batch task and key).

CREATE TABLE job_keys (
    kind       text NOT NULL,
    task       text NOT NULL,
    key        text NOT NULL,
    job_id     text NOT NULL,
    first_at   double precision NOT NULL,
    expires_at double precision,
    collapsed  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, task, key)
);
CREATE INDEX job_keys_job ON job_keys (job_id);

ALTER TABLE jobs ADD COLUMN batch_key text;
CREATE INDEX jobs_batch ON jobs (batch_key, status, priority DESC, run_at) WHERE batch_key IS NOT NULL;
