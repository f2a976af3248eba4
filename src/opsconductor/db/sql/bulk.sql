-- Many submissions in one transaction (db/bulk.py): each statement takes one JSON array of
-- items, so N plans cost the statements of one, not N times them. The rows and events are
-- the same as one submission writes (executions.sql, steps.sql, queue.sql).

-- name: insert_executions
-- A key already held (a duplicate, or a failed run to retry) inserts nothing here: that
-- item goes through the one-by-one path, which knows how to answer it.
INSERT INTO execution.executions (
    id, tenant_id, actor_id, idempotency_key, plan_name, plan_snapshot, plan_hash, status,
    mode, sla_class, approval_level, priority, estimated_duration_s, trace_id, record_only,
    record_only_reason)
SELECT t.id, t.tenant_id, t.actor_id, t.idempotency_key, t.plan_name, t.plan_snapshot,
       t.plan_hash, t.status, t.mode, t.sla_class, t.approval_level, t.priority,
       t.estimated_duration_s, t.trace_id, t.record_only, t.record_only_reason
FROM jsonb_to_recordset(%(items)s::jsonb) AS t(
    ord int, id uuid, tenant_id text, actor_id text, idempotency_key text, plan_name text,
    plan_snapshot jsonb, plan_hash text, status execution.execution_status,
    mode execution.execution_mode, sla_class execution.sla_class, approval_level smallint,
    priority smallint, estimated_duration_s float8, trace_id text, record_only bool,
    record_only_reason text)
ORDER BY t.ord
ON CONFLICT (tenant_id, idempotency_key) WHERE NOT key_released DO NOTHING
RETURNING *

-- name: insert_submitted_events
INSERT INTO execution.execution_events
    (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
SELECT t.execution_id, t.tenant_id, 'submitted', NULL, t.to_status, t.actor_id, t.payload
FROM jsonb_to_recordset(%(items)s::jsonb) AS t(
    ord int, execution_id uuid, tenant_id text, to_status execution.execution_status,
    actor_id text, payload jsonb)
ORDER BY t.ord

-- name: insert_pending_steps
INSERT INTO execution.execution_steps
    (execution_id, tenant_id, step_index, step_name, step_type, target_asset_id, status,
     attempt, step_key)
SELECT t.execution_id, t.tenant_id, t.step_index, t.step_name, t.step_type, t.asset_id,
       'pending', 1, t.step_key
FROM jsonb_to_recordset(%(items)s::jsonb) AS t(
    execution_id uuid, tenant_id text, step_index int, step_name text, step_type text,
    asset_id text, step_key text)

-- name: enqueue
-- As queue.sql's enqueue, per item: the retry budget and visibility timeout from the
-- policies of the execution's SLA class and its steps' action classes; one NOTIFY. Ages
-- follow the order given (clock_timestamp, not the transaction's one now()): workers claim
-- by priority then age, so a bulk is taken in submission order like single submissions.
WITH t AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb) AS t(
        ord int, execution_id uuid, action_classes text[], min_lease_s float8)
), queued AS (
    INSERT INTO execution.execution_queue
        (execution_id, priority, max_attempts, lease_timeout_s, available_at, enqueued_at)
    SELECT e.id, e.priority, coalesce(p.max_attempts, 3),
           greatest(coalesce(p.lease_timeout_s, 60), t.min_lease_s),
           clock_timestamp(), clock_timestamp()
    FROM t
    JOIN execution.executions e ON e.id = t.execution_id
    CROSS JOIN LATERAL (
        SELECT min(p.max_attempts) AS max_attempts, max(p.lease_timeout_s) AS lease_timeout_s
        FROM execution.timeout_policies p
        WHERE p.sla_class = e.sla_class AND p.action_class = ANY(t.action_classes)
    ) p
    WHERE e.id = ANY(ARRAY(SELECT execution_id FROM t))
    ORDER BY t.ord
    RETURNING execution_id
)
SELECT pg_notify('opsc_queue', '') FROM (SELECT 1 FROM queued LIMIT 1) AS any_queued
