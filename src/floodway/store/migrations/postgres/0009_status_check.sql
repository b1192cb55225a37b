-- floodway schema for PostgreSQL, version 9: the database itself refuses a job status that is
-- not one of floodway's (the list is floodway.jobs.Status; a unit test keeps the two equal).
-- Mirrors migrations/sqlite/0009. NOT VALID then VALIDATE: existing rows are checked without
-- holding a lock that blocks writers for the whole scan.

ALTER TABLE jobs ADD CONSTRAINT jobs_status_known
    CHECK (status IN ('scheduled', 'waiting', 'running', 'retrying', 'complete', 'failed', 'cancelled')) NOT VALID;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_status_known;
