-- floodway schema for PostgreSQL, version 11: mirrors migrations/sqlite/0011 (jobs.trace).
ALTER TABLE jobs ADD COLUMN trace text;
