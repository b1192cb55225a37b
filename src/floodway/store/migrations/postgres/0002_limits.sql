-- floodway schema for PostgreSQL, version 2: limits shared by every worker, fairness between
-- keys. Mirrors migrations/sqlite/0002.

-- the (limit, key) pairs a job holds, as JSON [[name, key], ...]
ALTER TABLE jobs ADD COLUMN limits text;
-- the round-robin group of a job: its tenant plus every (limit, key) it holds ('' for none)
ALTER TABLE jobs ADD COLUMN fair_key text NOT NULL DEFAULT '';
-- time spent held back by limits (the throttling overhead), and since when it is held
ALTER TABLE jobs ADD COLUMN throttled_seconds double precision NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN throttled_since double precision;

-- the claim path: ready jobs of one fairness group in claim order
CREATE INDEX jobs_ready ON jobs (fair_key, priority DESC, run_at, seq) WHERE status = 'waiting';

-- one row per named limit; `declared` is what the code last declared, so a worker restart
-- does not undo a change made at run time
CREATE TABLE limits (
    name        text PRIMARY KEY,
    rate_count  double precision,
    rate_period double precision,
    burst       integer NOT NULL DEFAULT 1,
    concurrency integer,
    key         text,
    adaptive    boolean NOT NULL DEFAULT false,
    declared    text,
    updated_at  double precision NOT NULL
);

-- the state of one key of a limit: GCRA's theoretical arrival time, a pause, running jobs.
-- A claim locks the rows it admits against (SELECT ... FOR UPDATE, in key order) once per
-- batch, so limits hold across every worker process.
CREATE TABLE limit_keys (
    limit_name   text NOT NULL,
    key          text NOT NULL,
    tat          double precision NOT NULL DEFAULT 0,
    paused_until double precision NOT NULL DEFAULT 0,
    pause_reason text,
    running      integer NOT NULL DEFAULT 0,
    admitted     bigint NOT NULL DEFAULT 0,
    rate_limited bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (limit_name, key)
) WITH (fillfactor = 50);  -- hot rows: keep their updates on the same page (HOT updates)

-- fairness groups with ready jobs, served least recently served first
CREATE TABLE fair_keys (
    key       text PRIMARY KEY,
    served_at double precision NOT NULL DEFAULT 0
) WITH (fillfactor = 50);
INSERT INTO fair_keys (key) SELECT DISTINCT fair_key FROM jobs WHERE status = 'waiting';
