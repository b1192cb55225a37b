-- floodway schema, version 8: telling a dead worker from a live one in seconds.
-- A worker records which process table it lives in (host_key: host name, boot id and pid
-- namespace) and its process start time, so a worker on the same host can check that the
-- process still exists (a reused pid has another start time). lost_runs counts the runs of a
-- job rescued from a dead worker, which spend no attempt up to a bound.

ALTER TABLE workers ADD COLUMN host_key TEXT;
ALTER TABLE workers ADD COLUMN pid_start INTEGER;
ALTER TABLE jobs ADD COLUMN lost_runs INTEGER NOT NULL DEFAULT 0;
