-- floodway schema for PostgreSQL, version 1: jobs, their timelines, queues and workers.
-- Mirrors migrations/sqlite/0001 (same version numbers, same meaning). Instants are Unix
-- timestamps (double precision seconds); JSON is stored as text, exactly as the code wrote it.

CREATE TABLE jobs (
    id               text PRIMARY KEY,
    seq              bigint GENERATED ALWAYS AS IDENTITY,  -- enqueue order (SQLite's rowid)
    task             text NOT NULL,
    args             text NOT NULL,
    queue            text NOT NULL,
    status           text NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    retry            text,
    run_at           double precision NOT NULL,
    tenant           text,
    result           text,
    error            text,
    worker_id        text,
    lease_until      double precision,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    started_at       double precision,
    finished_at      double precision
) WITH (fillfactor = 80);  -- room on each page for the next version of a row that changes status

-- Partial indexes: each one holds only the rows of the statuses it serves, so the claim path
-- looks at ready rows only, however many finished jobs the table keeps.
-- scheduled/retrying jobs whose run_at comes (promotion, next_due)
CREATE INDEX jobs_due ON jobs (run_at) WHERE status IN ('scheduled', 'retrying');
-- running jobs: per-queue caps, expired leases, the workers page
CREATE INDEX jobs_running ON jobs (queue, worker_id) WHERE status = 'running';
CREATE INDEX jobs_queue ON jobs (queue, status);
-- average run time of a task's latest completed jobs (only complete rows are indexed)
CREATE INDEX jobs_task ON jobs (task, finished_at) WHERE status = 'complete';
CREATE INDEX jobs_tenant ON jobs (tenant) WHERE tenant IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_created ON jobs (created_at DESC, seq DESC);

-- no primary key: events are read per job, in order, through job_events_job; an index on seq
-- alone would be one more index write per event for nothing
CREATE TABLE job_events (
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    job_id      text NOT NULL,
    at          double precision NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    attempt     integer NOT NULL,
    error       text,
    worker_id   text,
    reason      text
);
CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE queues (
    name            text PRIMARY KEY,
    max_concurrency integer
);

CREATE TABLE workers (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    queues       text,
    concurrency  integer NOT NULL,
    started_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    stopped_at   double precision
);
