-- floodway schema for PostgreSQL, version 8: telling a dead worker from a live one in seconds.
-- Mirrors migrations/sqlite/0008.

ALTER TABLE workers ADD COLUMN host_key text;
ALTER TABLE workers ADD COLUMN pid_start bigint;
ALTER TABLE jobs ADD COLUMN lost_runs integer NOT NULL DEFAULT 0;
