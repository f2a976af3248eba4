-- Executions and their status changes. Every status change and its audit event are one
-- statement, so they commit together or not at all.

-- name: insert_execution
INSERT INTO execution.executions (
    id, tenant_id, actor_id, idempotency_key, retry_of, plan_name, plan_snapshot, plan_hash,
    status, mode, sla_class, approval_level, priority, estimated_duration_s, trace_id,
    record_only)
VALUES (
    %(id)s, %(tenant_id)s, %(actor_id)s, %(idempotency_key)s, %(retry_of)s, %(plan_name)s,
    %(plan_snapshot)s, %(plan_hash)s, %(status)s, %(mode)s, %(sla_class)s, %(approval_level)s,
    %(priority)s, %(estimated_duration_s)s, %(trace_id)s, %(record_only)s)
ON CONFLICT (tenant_id, idempotency_key) WHERE NOT key_released DO NOTHING
RETURNING *

-- name: lock_active_by_key
SELECT *, created_at < now() - make_interval(secs => %(window_s)s) AS window_passed
FROM execution.executions
WHERE tenant_id = %(tenant_id)s AND idempotency_key = %(idempotency_key)s AND NOT key_released
FOR UPDATE

-- name: release_key
UPDATE execution.executions SET key_released = true
WHERE id = %(id)s AND NOT key_released

-- name: get_execution
SELECT * FROM execution.executions WHERE tenant_id = %(tenant_id)s AND id = %(id)s

-- name: find_execution_by_prefix
SELECT * FROM execution.executions
WHERE tenant_id = %(tenant_id)s AND id::text LIKE %(prefix)s || '%%'
LIMIT 2

-- name: list_executions
SELECT id, plan_name, status, status_reason, actor_id, mode, sla_class, created_at,
       started_at, finished_at
FROM execution.executions
WHERE tenant_id = %(tenant_id)s
  AND (%(status)s::execution.execution_status IS NULL OR status = %(status)s)
ORDER BY created_at DESC, id
LIMIT %(limit)s

-- name: transition
-- Optionally, in the same statement: only while the worker still holds its queue lease
-- (lease_token set: the lease row is locked, the execution moves only if it is ours, and
-- the queue row is deleted with the move), and marking the steps still pending as skipped
-- (skip_pending). No row in `moved`: nothing at all changed.
-- Lock order as in renew and the reaper: the queue row first (EXPLAIN: a one-time filter,
-- evaluated before the executions row is scanned), then the execution.
WITH lease AS (
    SELECT execution_id FROM execution.execution_queue
    WHERE execution_id = %(id)s AND lease_token = %(lease_token)s::uuid
    FOR UPDATE
), moved AS (
    UPDATE execution.executions SET
        status = %(to)s::execution.execution_status,
        status_reason = coalesce(%(reason)s, status_reason),
        started_at = CASE WHEN %(to)s::execution.execution_status = 'running' THEN coalesce(started_at, now())
                          ELSE started_at END,
        finished_at = CASE WHEN %(terminal)s THEN now() ELSE finished_at END,
        timeout_at = coalesce(%(timeout_at)s, timeout_at),
        worker_id = coalesce(%(worker_id)s, worker_id),
        cancelled_by = CASE WHEN %(to)s::execution.execution_status = 'cancelled' THEN %(actor_id)s ELSE cancelled_by END,
        cancelled_at = CASE WHEN %(to)s::execution.execution_status = 'cancelled' THEN now() ELSE cancelled_at END
    WHERE id = %(id)s AND status = %(from)s::execution.execution_status
      AND (%(lease_token)s::uuid IS NULL OR EXISTS (SELECT 1 FROM lease))
    RETURNING id, tenant_id
), dequeued AS (
    DELETE FROM execution.execution_queue
    WHERE execution_id IN (SELECT id FROM moved) AND lease_token = %(lease_token)s::uuid
), skipped AS (
    UPDATE execution.execution_steps SET status = 'skipped', finished_at = now()
    WHERE %(skip_pending)s AND execution_id IN (SELECT id FROM moved) AND status = 'pending'
), logged AS (
    INSERT INTO execution.execution_events
        (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
    SELECT id, tenant_id, 'status_changed', %(from)s::execution.execution_status, %(to)s::execution.execution_status, %(actor_id)s, %(payload)s FROM moved
    RETURNING id
)
SELECT (SELECT id FROM logged) AS id,
       %(lease_token)s::uuid IS NULL OR EXISTS (SELECT 1 FROM lease) AS leased

-- name: current_status
SELECT status FROM execution.executions WHERE id = %(id)s

-- name: insert_event
INSERT INTO execution.execution_events
    (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
VALUES (%(execution_id)s, %(tenant_id)s, %(event_type)s, NULL, %(to_status)s, %(actor_id)s,
        %(payload)s)
RETURNING id

-- name: list_events
SELECT * FROM execution.execution_events
WHERE execution_id = %(execution_id)s AND id > %(after)s
ORDER BY id

-- name: load_policies
SELECT * FROM execution.timeout_policies
