-- Pruning old history (services/history.py): one batch of finished executions per
-- transaction, each child table deleted with RETURNING so the export is exactly what left.

-- name: batch
-- The next batch, newest first below the cursor (a retry is newer than what it retries, so
-- it goes first and frees its original). Locked FOR UPDATE: no new step, event or retry can
-- attach to these rows until the batch commits. A row still referenced through retry_of by
-- an execution outside the batch is kept (blocked), and so is whatever it retries.
WITH RECURSIVE batch AS MATERIALIZED (
    SELECT id, created_at, retry_of FROM execution.executions
    WHERE tenant_id = %(tenant_id)s
      AND created_at < %(before)s
      AND created_at <= %(cursor_at)s
      AND (created_at, id) < (%(cursor_at)s, %(cursor_id)s::uuid)
      AND status = ANY (%(terminal)s::execution.execution_status[])
      AND coalesce(finished_at, created_at) < %(before)s
    ORDER BY created_at DESC, id DESC
    LIMIT %(size)s
    FOR UPDATE
), blocked (id) AS (
    SELECT e.retry_of FROM execution.executions e JOIN batch b ON b.id = e.retry_of
    WHERE NOT EXISTS (SELECT 1 FROM batch k WHERE k.id = e.id)
    UNION
    SELECT b.retry_of FROM batch b JOIN blocked x ON x.id = b.id WHERE b.retry_of IS NOT NULL
)
SELECT b.id, b.created_at, EXISTS (SELECT 1 FROM blocked x WHERE x.id = b.id) AS blocked
FROM batch b ORDER BY b.created_at DESC, b.id DESC

-- name: delete_executions
DELETE FROM execution.executions t WHERE id = ANY (%(ids)s::uuid[])
RETURNING to_jsonb(t) AS row

-- name: delete_approval_decisions
DELETE FROM execution.approval_decisions t
WHERE approval_id IN (SELECT id FROM execution.approvals WHERE execution_id = ANY (%(ids)s::uuid[]))
RETURNING to_jsonb(t) AS row

-- name: delete_approvals
DELETE FROM execution.approvals t WHERE execution_id = ANY (%(ids)s::uuid[])
RETURNING to_jsonb(t) AS row

-- name: delete_steps
DELETE FROM execution.execution_steps t WHERE execution_id = ANY (%(ids)s::uuid[])
RETURNING to_jsonb(t) AS row

-- name: delete_events
DELETE FROM execution.execution_events t WHERE execution_id = ANY (%(ids)s::uuid[])
RETURNING to_jsonb(t) AS row

-- name: delete_dlq
DELETE FROM execution.execution_dlq t WHERE execution_id = ANY (%(ids)s::uuid[])
RETURNING to_jsonb(t) AS row

-- name: delete_queue
DELETE FROM execution.execution_queue t WHERE execution_id = ANY (%(ids)s::uuid[])
RETURNING to_jsonb(t) AS row

-- name: delete_locks
DELETE FROM execution.execution_locks t WHERE execution_id = ANY (%(ids)s::uuid[])
RETURNING to_jsonb(t) AS row

-- name: delete_hook_deliveries
-- Up to %(size)s deliveries of the tenant's hooks received before the cut-off (through the
-- per-hook index); the caller keeps the signature window out of the cut-off, so a signed
-- request that could still arrive is always recognised as a replay.
WITH doomed AS (
    SELECT d.id FROM execution.hook_deliveries d
    JOIN execution.job_hooks h ON h.id = d.hook_id
    WHERE h.tenant_id = %(tenant_id)s AND d.received_at < %(before)s
    ORDER BY d.id
    LIMIT %(size)s
    FOR UPDATE OF d
)
DELETE FROM execution.hook_deliveries t USING doomed WHERE t.id = doomed.id
RETURNING to_jsonb(t) AS row

-- name: delete_schedule_fires
-- Up to %(size)s fired slots of the tenant's schedules before the cut-off, never a
-- schedule's latest (what `opsc schedules` shows as its last run). A pruned slot cannot fire
-- again: a schedule only fires slots at or after its next_fire_at, which its fire moved on.
WITH doomed AS (
    SELECT f.schedule_id, f.slot FROM execution.schedule_fires f
    JOIN execution.schedules s ON s.id = f.schedule_id
    WHERE s.tenant_id = %(tenant_id)s AND f.slot < %(before)s
      AND f.slot < (SELECT max(l.slot) FROM execution.schedule_fires l
                    WHERE l.schedule_id = f.schedule_id)
    ORDER BY f.schedule_id, f.slot
    LIMIT %(size)s
    FOR UPDATE OF f
)
DELETE FROM execution.schedule_fires t USING doomed
WHERE t.schedule_id = doomed.schedule_id AND t.slot = doomed.slot
RETURNING to_jsonb(t) AS row

-- name: cascading_tables
-- Tables whose rows a DELETE of an execution would remove (directly or through another
-- table, by a key or by the events' trigger): prune refuses to run if one is not exported.
WITH RECURSIVE down (rel) AS (
    SELECT 'execution.executions'::regclass
    UNION
    -- an execution's events go with it by a trigger, not by a key (migration 0038)
    SELECT 'execution.execution_events'::regclass FROM pg_trigger t
    WHERE t.tgrelid = 'execution.executions'::regclass AND t.tgname = 'executions_events_cascade'
    UNION
    SELECT c.conrelid::regclass FROM pg_constraint c JOIN down d ON c.confrelid = d.rel
    WHERE c.contype = 'f' AND c.confdeltype IN ('c', 'n', 'd') AND c.conrelid <> d.rel
)
SELECT rel::text AS name FROM down WHERE rel <> 'execution.executions'::regclass ORDER BY 1

-- name: tenants_with_retention
SELECT tenant_id, history_retention_days FROM execution.tenants
WHERE history_retention_days IS NOT NULL
  AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s)
ORDER BY tenant_id

-- name: tenant_ids
SELECT tenant_id FROM execution.tenants
WHERE %(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s ORDER BY tenant_id

-- name: set_retention
UPDATE execution.tenants SET history_retention_days = %(days)s WHERE tenant_id = %(tenant_id)s
RETURNING tenant_id, history_retention_days

-- name: get_retention
SELECT tenant_id, history_retention_days FROM execution.tenants WHERE tenant_id = %(tenant_id)s
