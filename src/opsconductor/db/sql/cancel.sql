-- Cancel requests on running executions, and the engine's cancel checks.

-- name: request_cancel
UPDATE execution.executions SET
    cancel_requested_by = %(actor_id)s, cancel_requested_at = now()
WHERE id = %(id)s AND status = 'running' AND cancel_requested_at IS NULL
RETURNING id, tenant_id, cancel_requested_at

-- name: check_cancel
-- Set-based (db/batching.py): every running execution of a worker checks four times a
-- second, so the checks of all of them go in one statement (by key: see transition).
UPDATE execution.executions e SET cancel_checks_performed = e.cancel_checks_performed + 1
FROM jsonb_to_recordset(%(items)s::jsonb) AS t(ord int, id uuid)
WHERE e.id = ANY(ARRAY(SELECT id FROM jsonb_to_recordset(%(items)s::jsonb) AS k(id uuid)))
  AND e.id = t.id
RETURNING t.ord, e.status, e.cancel_requested_by, e.cancel_requested_at

-- name: drop_from_queue
DELETE FROM execution.execution_queue WHERE execution_id = %(id)s
