-- floodway schema, version 12: fewer index entries written per enqueue. Each index on jobs is
-- one more page written (and fsynced) by every enqueue; a new job now enters only the indexes
-- a waiting job is looked up by.

-- unused: the claim reads waiting jobs through jobs_fair, other looks by status go through
-- jobs_fair or jobs_due
DROP INDEX IF EXISTS jobs_ready;
-- finished jobs only (purge, the finished rates): a job enters it when it finishes
DROP INDEX IF EXISTS jobs_finished;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- the average run time of a task's latest completed jobs; only complete jobs are indexed
-- (a filter by task otherwise narrows by status, tenant or creation time first)
DROP INDEX IF EXISTS jobs_task;
CREATE INDEX jobs_task ON jobs (task, finished_at) WHERE status = 'complete';
-- jobs whose run_at is awaited (rules.PROMOTE_FROM, which the queries that read it repeat):
-- a waiting job is looked up by status through jobs_fair
DROP INDEX IF EXISTS jobs_due;
CREATE INDEX jobs_due ON jobs (status, run_at) WHERE status IN ('retrying', 'scheduled');
