-- floodway schema, version 3: resumable work — cursors, once-ledgers, payload segments, pauses.

-- the state a job checkpoints into: NULL means its own ('job:<id>'), else a shared key such as
-- 'orders:acme' that carries the cursor from one job (or run) to the next
ALTER TABLE jobs ADD COLUMN state_key TEXT;
-- paused from outside: not claimed until resumed; a running one stops at its next checkpoint
ALTER TABLE jobs ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;

CREATE TABLE state (
    key         TEXT PRIMARY KEY,
    cursor      TEXT,
    checkpoints INTEGER NOT NULL DEFAULT 0,
    job_id      TEXT,
    updated_at  REAL NOT NULL
);

-- what `ctx.once` did since the state's last checkpoint (a checkpoint clears it)
CREATE TABLE ledger (
    state_key  TEXT NOT NULL,
    entry      TEXT NOT NULL,
    result     TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (state_key, entry)
);

-- a large list argument stored in pieces of at most segment_bytes
CREATE TABLE segments (
    job_id TEXT NOT NULL,
    arg    TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (job_id, arg, idx)
);
