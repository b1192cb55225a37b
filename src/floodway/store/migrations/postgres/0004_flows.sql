-- floodway schema for PostgreSQL, version 4: flow steps with their throttling metrics, step
-- concurrency slots, cron schedules. Mirrors migrations/sqlite/0004.

CREATE TABLE steps (
    job_id            text NOT NULL,
    step_id           text NOT NULL,
    kind              text NOT NULL,
    critical          boolean NOT NULL,
    status            text NOT NULL,              -- complete | failed
    result            text,
    error             text,
    attempts          integer NOT NULL,
    retries           integer NOT NULL,
    duration          double precision NOT NULL,  -- seconds the final attempt ran
    total_time        double precision NOT NULL,  -- seconds from the step's start to its end
    throttle_overhead double precision NOT NULL,  -- seconds spent waiting on limits and retry delays
    throttle          text,                       -- the throttle it ran under (JSON)
    tenant            text,
    started_at        double precision NOT NULL,
    finished_at       double precision NOT NULL,
    PRIMARY KEY (job_id, step_id)
);
CREATE INDEX steps_kind ON steps (kind, finished_at);
CREATE INDEX steps_finished ON steps (finished_at);

-- concurrency slots held by running steps; released when the step ends, or with the job
CREATE TABLE job_slots (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL,
    limit_name  text NOT NULL,
    key         text NOT NULL,
    holder      text NOT NULL,
    acquired_at double precision NOT NULL
);
CREATE INDEX job_slots_job ON job_slots (job_id);

CREATE TABLE schedules (
    name       text PRIMARY KEY,
    task       text NOT NULL,
    cron       text NOT NULL,
    tz         text NOT NULL,
    args       text NOT NULL,
    options    text,
    missed     text NOT NULL,      -- skip | catch_up
    last_tick  double precision,   -- the newest tick enqueued
    updated_at double precision NOT NULL
);
