-- floodway schema, version 2: limits shared by every worker, fairness between keys.

-- the (limit, key) pairs a job holds, as JSON [[name, key], ...]
ALTER TABLE jobs ADD COLUMN limits TEXT;
-- the round-robin group of a job: its tenant plus every (limit, key) it holds ('' for none)
ALTER TABLE jobs ADD COLUMN fair_key TEXT NOT NULL DEFAULT '';
-- time spent held back by limits (the throttling overhead), and since when it is held
ALTER TABLE jobs ADD COLUMN throttled_seconds REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN throttled_since REAL;

CREATE INDEX jobs_fair ON jobs (status, fair_key, priority DESC, run_at);

-- one row per named limit; `declared` is what the code last declared, so a worker restart
-- does not undo a change made at run time (`floodway limits set`)
CREATE TABLE limits (
    name        TEXT PRIMARY KEY,
    rate_count  REAL,
    rate_period REAL,
    burst       INTEGER NOT NULL DEFAULT 1,
    concurrency INTEGER,
    key         TEXT,
    adaptive    INTEGER NOT NULL DEFAULT 0,
    declared    TEXT,
    updated_at  REAL NOT NULL
);

-- the state of one key of a limit: GCRA's theoretical arrival time, a pause, running jobs
CREATE TABLE limit_keys (
    limit_name   TEXT NOT NULL,
    key          TEXT NOT NULL,
    tat          REAL NOT NULL DEFAULT 0,
    paused_until REAL NOT NULL DEFAULT 0,
    pause_reason TEXT,
    running      INTEGER NOT NULL DEFAULT 0,
    admitted     INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (limit_name, key)
);

-- fairness groups with ready jobs, served least recently served first
CREATE TABLE fair_keys (
    key       TEXT PRIMARY KEY,
    served_at REAL NOT NULL DEFAULT 0
);
INSERT INTO fair_keys (key) SELECT DISTINCT fair_key FROM jobs WHERE status = 'waiting';
