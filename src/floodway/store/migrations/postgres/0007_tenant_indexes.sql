-- floodway schema, version 7: indexes that make a tenant's views read only what they show.

-- a tenant's counts per (status, queue) and its waiting jobs, from the index alone; only jobs
-- that have a tenant pay for it
DROP INDEX IF EXISTS jobs_tenant;
CREATE INDEX jobs_tenant ON jobs (tenant, status, queue) WHERE tenant IS NOT NULL;
-- a tenant's job list, newest first, and its jobs enqueued since an instant
CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at DESC, seq DESC) WHERE tenant IS NOT NULL;
-- a tenant's jobs finished since an instant
CREATE INDEX jobs_tenant_finished ON jobs (tenant, finished_at) WHERE tenant IS NOT NULL AND finished_at IS NOT NULL;
