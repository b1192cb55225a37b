-- floodway schema, version 9: the database itself refuses a status change to a status that is
-- not one of floodway's (the list is floodway.jobs.Status; a unit test keeps the two equal).
-- SQLite cannot add a CHECK to an existing table without rebuilding it, so a trigger does the
-- check on every change of status: claims, completions, promotions, rescues and user actions
-- all write statuses in SQL. A job's first status is checked where the job is made (enqueue
-- checks it against the transition table); a trigger on INSERT as well halved the speed of a
-- bulk enqueue.

CREATE TRIGGER jobs_status_known_update BEFORE UPDATE OF status ON jobs
WHEN NEW.status NOT IN ('scheduled', 'waiting', 'running', 'retrying', 'complete', 'failed', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'jobs.status must be a job status');
END;
