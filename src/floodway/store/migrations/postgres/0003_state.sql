-- floodway schema for PostgreSQL, version 3: resumable work — cursors, once-ledgers, payload
-- segments, pauses. Mirrors migrations/sqlite/0003.

-- NULL means the job's own state ('job:<id>'), else a shared key such as 'orders:acme'
ALTER TABLE jobs ADD COLUMN state_key text;
-- paused from outside: not claimed until resumed; a running one stops at its next checkpoint
ALTER TABLE jobs ADD COLUMN paused boolean NOT NULL DEFAULT false;
ALTER TABLE queues ADD COLUMN paused boolean NOT NULL DEFAULT false;

CREATE TABLE state (
    key         text PRIMARY KEY,
    cursor      text,
    checkpoints integer NOT NULL DEFAULT 0,
    job_id      text,
    updated_at  double precision NOT NULL
);

-- what `ctx.once` did since the state's last checkpoint (a checkpoint clears it)
CREATE TABLE ledger (
    state_key  text NOT NULL,
    entry      text NOT NULL,
    result     text,
    created_at double precision NOT NULL,
    PRIMARY KEY (state_key, entry)
);

-- a large list argument stored in pieces
CREATE TABLE segments (
    job_id text NOT NULL,
    arg    text NOT NULL,
    idx    integer NOT NULL,
    data   text NOT NULL,
    PRIMARY KEY (job_id, arg, idx)
);
