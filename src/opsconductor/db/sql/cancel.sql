-- Cancel requests on running executions, and the engine's cancel checks.

-- name: request_cancel
UPDATE execution.executions SET
    cancel_requested_by = %(actor_id)s, cancel_requested_at = now()
WHERE id = %(id)s AND status = 'running' AND cancel_requested_at IS NULL
RETURNING id, tenant_id, cancel_requested_at

-- name: check_cancel
UPDATE execution.executions SET cancel_checks_performed = cancel_checks_performed + 1
WHERE id = %(id)s
RETURNING status, cancel_requested_by, cancel_requested_at

-- name: drop_from_queue
DELETE FROM execution.execution_queue WHERE execution_id = %(id)s
