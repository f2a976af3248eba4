-- Many submissions in one transaction (db/bulk.py): each statement takes one JSON array of
-- items, so N plans cost the statements of one, not N times them. The rows and events are
-- the same as one submission writes (executions.sql, steps.sql, queue.sql).

-- name: insert_executions
-- A key already held (a duplicate, or a failed run to retry) inserts nothing here: that
-- item goes through the one-by-one path, which knows how to answer it. The status is the
-- caller's: a level-0 plan for the workers is created queued (migration 0029). Only what
-- the server chose comes back: the caller holds every other value of the new row.
INSERT INTO execution.executions (
    id, tenant_id, actor_id, idempotency_key, plan_name, plan_snapshot, plan_hash, status,
    mode, sla_class, approval_level, priority, estimated_duration_s, trace_id, record_only,
    record_only_reason, rerun_of, job_name, job_version)
SELECT t.id, t.tenant_id, t.actor_id, t.idempotency_key, t.plan_name, t.plan_snapshot,
       t.plan_hash, t.status, t.mode, t.sla_class, t.approval_level, t.priority,
       t.estimated_duration_s, t.trace_id, t.record_only, t.record_only_reason, t.rerun_of,
       t.job_name, t.job_version
FROM ROWS FROM (
    jsonb_to_recordset(%(items)s::jsonb) AS (
        ord int, id uuid, tenant_id text, actor_id text, idempotency_key text,
        plan_name text, plan_hash text, status execution.execution_status,
        mode execution.execution_mode, sla_class execution.sla_class,
        approval_level smallint, priority smallint, estimated_duration_s float8,
        trace_id text, record_only bool, record_only_reason text, rerun_of uuid,
        job_name text, job_version int),
    -- the items' snapshots, in the same order: JSON text the caller has serialised already
    jsonb_array_elements(%(snapshots)s::jsonb)
) AS t(ord, id, tenant_id, actor_id, idempotency_key, plan_name, plan_hash, status, mode,
       sla_class, approval_level, priority, estimated_duration_s, trace_id, record_only,
       record_only_reason, rerun_of, job_name, job_version, plan_snapshot)
ORDER BY t.ord
ON CONFLICT (tenant_id, idempotency_key) WHERE NOT key_released DO NOTHING
RETURNING id, created_at

-- name: events_of_new_executions
-- For the rest of this transaction, events are of executions it created (migration 0031):
-- the ordering trigger skips its row lock. Set only here, after the insert, and gone at
-- commit or rollback (is_local).
SELECT set_config('opsconductor.events_of_new_executions', 'on', true)

-- name: after_insert
-- Everything else the new executions need, in one statement from one item per execution:
-- its `submitted` event and, created queued, the `status_changed` approved -> queued that
-- one submission writes when it queues it (executions.sql's transition), in that order per
-- execution; its pending first attempts (steps.sql); and for a queued one its queue row,
-- as queue.sql's enqueue: the retry budget and visibility timeout from the policies of its
-- SLA class and its steps' action classes, then one NOTIFY. Ages follow the order given
-- (clock_timestamp, not the transaction's one now()): workers claim by priority then age,
-- so a bulk is taken in submission order like single submissions.
WITH t AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb) AS t(
        ord int, execution_id uuid, tenant_id text, actor_id text,
        initial execution.execution_status, queued bool, payload jsonb, steps jsonb,
        priority smallint, sla_class execution.sla_class, action_classes text[],
        min_lease_s float8)
), logged AS (
    INSERT INTO execution.execution_events
        (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
    SELECT e.execution_id, e.tenant_id, e.event_type, e.from_status, e.to_status, e.actor_id,
           e.payload
    FROM (
        SELECT t.ord, 0 AS n, t.execution_id, t.tenant_id, 'submitted' AS event_type,
               NULL::execution.execution_status AS from_status, t.initial AS to_status,
               t.actor_id, t.payload
        FROM t
        UNION ALL
        SELECT t.ord, 1, t.execution_id, t.tenant_id, 'status_changed', t.initial,
               'queued', t.actor_id, '{}'::jsonb
        FROM t WHERE t.queued
    ) AS e
    ORDER BY e.ord, e.n
), pending AS (
    INSERT INTO execution.execution_steps
        (execution_id, tenant_id, step_index, step_name, step_type, target_asset_id, status,
         attempt, step_key)
    SELECT t.execution_id, t.tenant_id, s.step_index, s.step_name, s.step_type, s.asset_id,
           'pending', 1, s.step_key
    FROM t CROSS JOIN LATERAL jsonb_to_recordset(t.steps) AS s(
        step_index int, step_name text, step_type text, asset_id text, step_key text)
), queued AS (
    INSERT INTO execution.execution_queue
        (execution_id, priority, max_attempts, lease_timeout_s, available_at, enqueued_at)
    SELECT t.execution_id, t.priority, coalesce(p.max_attempts, 3),
           greatest(coalesce(p.lease_timeout_s, 60), t.min_lease_s),
           clock_timestamp(), clock_timestamp()
    FROM t
    CROSS JOIN LATERAL (
        SELECT min(p.max_attempts) AS max_attempts, max(p.lease_timeout_s) AS lease_timeout_s
        FROM execution.timeout_policies p
        WHERE p.sla_class = t.sla_class AND p.action_class = ANY(t.action_classes)
    ) p
    WHERE t.queued
    ORDER BY t.ord
    RETURNING execution_id
)
SELECT pg_notify('opsc_queue', '') FROM (SELECT 1 FROM queued LIMIT 1) AS any_queued
