-- Read side for the API: filtered, keyset-paged listings and tenant statistics.

-- name: page_executions
SELECT * FROM execution.executions
WHERE tenant_id = %(tenant_id)s
  AND (%(status)s::execution.execution_status IS NULL OR status = %(status)s)
  AND (%(actor_id)s::text IS NULL OR actor_id = %(actor_id)s)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
  AND (%(after_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s

-- name: counts_by_status
-- Finished executions from the metrics roll-up (migration 0014), unfinished ones through
-- executions_live_idx: the cost follows the live rows and the tenant's statuses, not the
-- history. The list of unfinished statuses is the index's predicate.
SELECT labels[2] AS status, sum(value)::bigint AS n FROM execution.metric_rollup
WHERE metric = 'executions' AND labels[1] = %(tenant_id)s
GROUP BY 1 HAVING sum(value) <> 0
UNION ALL
SELECT status::text, count(*) FROM execution.executions
WHERE tenant_id = %(tenant_id)s AND status IN ('pending_approval', 'approved', 'queued', 'running')
GROUP BY 1

-- name: queue_depth
SELECT count(*) FILTER (WHERE q.lease_token IS NULL) AS waiting,
       count(*) FILTER (WHERE q.lease_token IS NOT NULL) AS leased
FROM execution.execution_queue q
JOIN execution.executions e ON e.id = q.execution_id
WHERE e.tenant_id = %(tenant_id)s

-- name: dlq_open
SELECT count(*) AS n FROM execution.execution_dlq d
JOIN execution.executions e ON e.id = d.execution_id
WHERE e.tenant_id = %(tenant_id)s AND NOT d.requeued

-- name: step_history
-- Median duration and sample count per step key (routing.step_key: the same step in any
-- plan) over its newest finished attempts in the tenant: the basis of an honest ETA.
SELECT k.step_key,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY recent.seconds) AS p50,
       count(*) AS n
FROM unnest(%(step_keys)s::text[]) AS k(step_key)
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM s.finished_at - s.started_at)::float8 AS seconds
    FROM execution.execution_steps s
    WHERE s.tenant_id = %(tenant_id)s AND s.step_key = k.step_key
      AND s.finished_at IS NOT NULL AND s.started_at IS NOT NULL
      AND s.status IN ('completed', 'failed', 'timeout')
    ORDER BY s.finished_at DESC
    LIMIT %(sample)s
) AS recent
GROUP BY k.step_key

-- name: executions_by_id
SELECT * FROM execution.executions WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)s)

-- name: previous_job_run
-- The newest earlier run of the same job in the tenant (over executions_job_idx).
SELECT * FROM execution.executions
WHERE tenant_id = %(tenant_id)s AND job_name = %(job_name)s
  AND created_at < %(before)s AND id <> %(id)s
ORDER BY created_at DESC
LIMIT 1

-- name: previous_run
-- The newest earlier execution of the same plan name in the tenant (walks the
-- (tenant_id, created_at DESC) index back from the given one).
SELECT * FROM execution.executions
WHERE tenant_id = %(tenant_id)s AND plan_name = %(plan_name)s
  AND created_at < %(before)s AND id <> %(id)s
ORDER BY created_at DESC
LIMIT 1
