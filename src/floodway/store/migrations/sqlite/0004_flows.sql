-- floodway schema, version 4: flow steps with their throttling metrics, step concurrency
-- slots, cron schedules.

CREATE TABLE steps (
    job_id            TEXT NOT NULL,
    step_id           TEXT NOT NULL,
    kind              TEXT NOT NULL,
    critical          INTEGER NOT NULL,
    status            TEXT NOT NULL,      -- complete | failed
    result            TEXT,
    error             TEXT,
    attempts          INTEGER NOT NULL,
    retries           INTEGER NOT NULL,
    duration          REAL NOT NULL,      -- seconds the final attempt ran
    total_time        REAL NOT NULL,      -- seconds from the step's start to its end
    throttle_overhead REAL NOT NULL,      -- seconds spent waiting on limits and retry delays
    throttle          TEXT,               -- the throttle it ran under (JSON)
    tenant            TEXT,
    started_at        REAL NOT NULL,
    finished_at       REAL NOT NULL,
    PRIMARY KEY (job_id, step_id)
);
CREATE INDEX steps_kind ON steps (kind, finished_at);

-- concurrency slots held by running steps; released when the step ends, or with the job
CREATE TABLE job_slots (
    job_id     TEXT NOT NULL,
    limit_name TEXT NOT NULL,
    key        TEXT NOT NULL,
    holder     TEXT NOT NULL,
    acquired_at REAL NOT NULL
);
CREATE INDEX job_slots_job ON job_slots (job_id);

CREATE TABLE schedules (
    name       TEXT PRIMARY KEY,
    task       TEXT NOT NULL,
    cron       TEXT NOT NULL,
    tz         TEXT NOT NULL,
    args       TEXT NOT NULL,
    options    TEXT,
    missed     TEXT NOT NULL,      -- skip | catch_up
    last_tick  REAL,               -- the newest tick enqueued
    updated_at REAL NOT NULL
);
