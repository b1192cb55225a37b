-- floodway schema, version 1: jobs, their timelines, queues and workers.
-- Instants are Unix timestamps (REAL seconds); JSON is stored as TEXT.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    task             TEXT NOT NULL,
    args             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    retry            TEXT,
    run_at           REAL NOT NULL,
    tenant           TEXT,
    result           TEXT,
    error            TEXT,
    worker_id        TEXT,
    lease_until      REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL
);

-- claim order within a status: priority, then run_at, then enqueue order (rowid)
CREATE INDEX jobs_ready ON jobs (status, priority DESC, run_at);
-- due scheduled/retrying jobs, expired leases, purge
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_queue ON jobs (queue, status);
CREATE INDEX jobs_task ON jobs (task);
CREATE INDEX jobs_tenant ON jobs (tenant);
CREATE INDEX jobs_finished ON jobs (finished_at);

CREATE TABLE job_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL,
    at          REAL NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    error       TEXT,
    worker_id   TEXT,
    reason      TEXT
);
CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE queues (
    name            TEXT PRIMARY KEY,
    max_concurrency INTEGER
);

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    queues       TEXT,
    concurrency  INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at   REAL
);
