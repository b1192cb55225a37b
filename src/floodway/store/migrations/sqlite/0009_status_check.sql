-- floodway schema, version 9: the database itself refuses a job status that is not one of
-- floodway's (the list is floodway.jobs.Status; a unit test keeps the two equal). SQLite
-- cannot add a CHECK to an existing table without rebuilding it, so two triggers do the check.

CREATE TRIGGER jobs_status_known_insert BEFORE INSERT ON jobs
WHEN NEW.status NOT IN ('scheduled', 'waiting', 'running', 'retrying', 'complete', 'failed', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'jobs.status must be a job status');
END;

CREATE TRIGGER jobs_status_known_update BEFORE UPDATE OF status ON jobs
WHEN NEW.status NOT IN ('scheduled', 'waiting', 'running', 'retrying', 'complete', 'failed', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'jobs.status must be a job status');
END;
