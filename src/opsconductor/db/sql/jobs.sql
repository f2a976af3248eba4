-- Jobs and their immutable versions (services/jobs.py).

-- name: lock_job
SELECT * FROM execution.jobs WHERE tenant_id = %(tenant_id)s AND name = %(name)s FOR UPDATE

-- name: insert_job
INSERT INTO execution.jobs (tenant_id, name, latest_version, created_by)
VALUES (%(tenant_id)s, %(name)s, 1, %(actor_id)s)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING *

-- name: bump_job
UPDATE execution.jobs SET latest_version = latest_version + 1, updated_at = now()
WHERE tenant_id = %(tenant_id)s AND name = %(name)s
RETURNING *

-- name: insert_version
INSERT INTO execution.job_versions
    (tenant_id, job_name, version, plan, content_hash, created_by)
VALUES (%(tenant_id)s, %(name)s, %(version)s, %(plan)s, %(content_hash)s, %(actor_id)s)
RETURNING *

-- name: get_job
SELECT * FROM execution.jobs WHERE tenant_id = %(tenant_id)s AND name = %(name)s

-- name: list_jobs
SELECT j.*, v.plan ->> 'name' AS plan_name,
       (SELECT count(*) FROM execution.schedules s
        WHERE s.tenant_id = j.tenant_id AND s.job_name = j.name) AS schedules,
       r.id AS last_run_id, r.status AS last_run_status, r.created_at AS last_run_at
FROM execution.jobs j
JOIN execution.job_versions v
  ON v.tenant_id = j.tenant_id AND v.job_name = j.name AND v.version = j.latest_version
-- the newest run, over executions_job_idx
LEFT JOIN LATERAL (
    SELECT e.id, e.status::text AS status, e.created_at FROM execution.executions e
    WHERE e.tenant_id = j.tenant_id AND e.job_name = j.name
    ORDER BY e.created_at DESC LIMIT 1) r ON true
WHERE j.tenant_id = %(tenant_id)s ORDER BY j.name

-- name: get_version
SELECT * FROM execution.job_versions
WHERE tenant_id = %(tenant_id)s AND job_name = %(name)s AND version = %(version)s

-- name: list_versions
SELECT * FROM execution.job_versions
WHERE tenant_id = %(tenant_id)s AND job_name = %(name)s ORDER BY version DESC

-- name: delete_job
DELETE FROM execution.jobs WHERE tenant_id = %(tenant_id)s AND name = %(name)s
RETURNING name

-- name: job_runs
SELECT * FROM execution.executions
WHERE tenant_id = %(tenant_id)s AND job_name = %(name)s
ORDER BY created_at DESC LIMIT %(limit)s
