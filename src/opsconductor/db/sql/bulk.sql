-- Many submissions in one transaction (db/bulk.py): one statement takes one JSON array of
-- items, so N plans cost the statement of one, not N statements. The rows and events are
-- the same as one submission writes (executions.sql, steps.sql, queue.sql).

-- name: submit
-- The whole bulk in one statement. %(items)s: one JSON array per execution, by position
-- (a positional array costs the server a third of what an object does to take apart):
--   0 id, 1 tenant_id, 2 actor_id, 3 idempotency_key, 4 plan_name, 5 plan_hash, 6 status,
--   7 mode, 8 sla_class, 9 approval_level, 10 priority, 11 estimated_duration_s,
--   12 trace_id, 13 record_only, 14 record_only_reason, 15 rerun_of, 16 job_name,
--   17 job_version, 18 min_lease_s, 19 action_classes (sorted), 20 steps: one
--   [step_index, step_name, step_type, asset_id, step_key] per first attempt, 21 the
--   payload of its `submitted` event (built by the caller: jsonb_build_object cost the
--   server ~20K instructions a call, parsing it with the rest a fraction of that),
--   22 plan_timeout_s, 23 steps_timeout_s (policies.plan_timeout, for the queue row),
--   24 first_locks: the asset ids its first lock takes or null (first_locks.py, ditto);
-- %(snapshots)s: their plan snapshots in the same order, as the JSON text the caller has.
--
-- A key already held (a duplicate, or a failed run to retry) inserts nothing: that item
-- goes through the one-by-one path, which knows how to answer it. Held keys are skipped by
-- a look-up (NOT EXISTS), and the insert is a plain one: ON CONFLICT's speculative
-- insertion cost the server ~23K instructions a plan (of ~626K for this statement), the
-- look-up ~8K. A key only an unfinished transaction holds (a race), or held twice in the
-- bulk, is then a unique violation: db/bulk.py runs the statement again with its racing
-- line (below) made live (DO NOTHING, waiting for that transaction as a single submission's
-- insert does). The status is the caller's: a level-0 plan for the workers is created
-- queued (migration 0029). Each inserted execution then gets what one submission writes:
-- its `submitted` event and, created queued, the `status_changed` approved -> queued that
-- one submission writes when it queues it (executions.sql's transition), in that order; its
-- pending first attempts (steps.sql); for one that waits for approval its approval request;
-- and for a queued one its queue row, as queue.sql's enqueue: the retry budget and
-- visibility timeout from the policies of its SLA class and its steps' action classes, then
-- one NOTIFY. Ages follow the order given (clock_timestamp, not the transaction's one
-- now()): workers claim by priority then age, so a bulk is taken in submission order.
-- Answers the inserted executions' place in the items (ord, from 1) and created_at: the
-- caller holds every other value.
WITH new AS (
    SELECT x.ord, (x.e->>0)::uuid AS id, x.e->>1 AS tenant_id, x.e->>2 AS actor_id,
           x.e->>3 AS idempotency_key, x.e->>4 AS plan_name, x.e->>5 AS plan_hash,
           (x.e->>6)::execution.execution_status AS status,
           (x.e->>7)::execution.execution_mode AS mode,
           (x.e->>8)::execution.sla_class AS sla_class,
           (x.e->>9)::smallint AS approval_level, (x.e->>10)::smallint AS priority,
           (x.e->>11)::float8 AS estimated_duration_s, x.e->>12 AS trace_id,
           (x.e->>13)::bool AS record_only, x.e->>14 AS record_only_reason,
           (x.e->>15)::uuid AS rerun_of, x.e->>16 AS job_name, (x.e->>17)::int AS job_version,
           (x.e->>18)::float8 AS min_lease_s, x.e->19 AS action_classes, x.e->20 AS steps,
           x.e->21 AS payload, (x.e->>22)::float8 AS plan_timeout_s,
           (x.e->>23)::float8 AS steps_timeout_s, x.e->24 AS first_locks, x.snapshot
    FROM ROWS FROM (jsonb_array_elements(%(items)s::jsonb),
                    jsonb_array_elements(%(snapshots)s::jsonb))
         WITH ORDINALITY AS x(e, snapshot, ord)
), made AS (
    INSERT INTO execution.executions (
        id, tenant_id, actor_id, idempotency_key, plan_name, plan_snapshot, plan_hash, status,
        mode, sla_class, approval_level, priority, estimated_duration_s, trace_id, record_only,
        record_only_reason, rerun_of, job_name, job_version)
    SELECT id, tenant_id, actor_id, idempotency_key, plan_name, snapshot, plan_hash, status,
           mode, sla_class, approval_level, priority, estimated_duration_s, trace_id,
           record_only, record_only_reason, rerun_of, job_name, job_version
    FROM new
    WHERE NOT EXISTS (SELECT FROM execution.executions e
                      WHERE e.tenant_id = new.tenant_id
                        AND e.idempotency_key = new.idempotency_key AND NOT e.key_released)
    ORDER BY ord
    -- racing: ON CONFLICT (tenant_id, idempotency_key) WHERE NOT key_released DO NOTHING
    RETURNING id, created_at
), m AS (
    -- what the rows below need of each inserted execution (its snapshot is not copied on)
    SELECT new.ord, new.id, made.created_at, new.tenant_id, new.actor_id, new.status,
           new.approval_level, new.plan_hash, new.priority, new.sla_class, new.min_lease_s,
           new.action_classes, new.steps, new.payload, new.plan_timeout_s,
           new.steps_timeout_s, new.first_locks
    FROM made JOIN new USING (id)
), no_event_lock AS MATERIALIZED (
    -- Events of executions this transaction created need no per-event row lock for id order
    -- (migration 0031): no other transaction can see them before this one commits. Set
    -- before any event row exists (every one is made from this row, and needs its value),
    -- for the rest of this transaction only (is_local).
    SELECT set_config('opsconductor.events_of_new_executions', 'on', true) AS value
), logged AS (
    INSERT INTO execution.execution_events
        (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
    SELECT m.id, m.tenant_id, v.event_type, v.from_status, v.to_status, m.actor_id, v.payload
    FROM m
    CROSS JOIN no_event_lock
    CROSS JOIN LATERAL (
        VALUES (0, 'submitted', NULL::execution.execution_status,
                -- what it was created as, before it was queued with it
                CASE WHEN m.status = 'queued' THEN 'approved' ELSE m.status END,
                m.payload),
               (1, 'status_changed', 'approved', 'queued', '{}'::jsonb)
    ) AS v(n, event_type, from_status, to_status, payload)
    WHERE no_event_lock.value = 'on' AND (v.n = 0 OR m.status = 'queued')
    ORDER BY m.ord, v.n
), pending AS (
    INSERT INTO execution.execution_steps
        (execution_id, tenant_id, step_index, step_name, step_type, target_asset_id, status,
         attempt, step_key)
    SELECT m.id, m.tenant_id, (s.step->>0)::int, s.step->>1, s.step->>2, s.step->>3,
           'pending', 1, s.step->>4
    FROM m CROSS JOIN LATERAL jsonb_array_elements(m.steps) WITH ORDINALITY AS s(step, n)
    ORDER BY m.ord, s.n
), requested AS (
    -- a plan that waits for a human: its approval request (approvals.sql's insert_approval),
    -- open for the tenant's window of its level
    INSERT INTO execution.approvals
        (execution_id, step_index, level, plan_hash, requested_by, expires_at)
    SELECT m.id, NULL, m.approval_level, m.plan_hash, m.actor_id,
           now() + make_interval(secs => t.approval_windows_s[m.approval_level])
    FROM m JOIN execution.tenants t ON t.tenant_id = m.tenant_id
    WHERE m.approval_level >= 1
    ORDER BY m.ord
), policy AS MATERIALIZED (
    -- one look-up per distinct (SLA class, action classes), not one per execution
    SELECT c.sla_class, c.action_classes, min(p.max_attempts) AS max_attempts,
           max(p.lease_timeout_s) AS lease_timeout_s
    FROM (SELECT DISTINCT sla_class, action_classes FROM m WHERE status = 'queued') AS c
    LEFT JOIN execution.timeout_policies p
        ON p.sla_class = c.sla_class AND c.action_classes ? p.action_class
    GROUP BY c.sla_class, c.action_classes
), queued AS (
    INSERT INTO execution.execution_queue
        (execution_id, priority, max_attempts, lease_timeout_s, available_at, enqueued_at,
         action_classes, plan_timeout_s, steps_timeout_s, first_locks, first_locks_tenant)
    SELECT m.id, m.priority, coalesce(p.max_attempts, 3),
           greatest(coalesce(p.lease_timeout_s, 60), m.min_lease_s),
           clock_timestamp(), clock_timestamp(),
           ARRAY(SELECT jsonb_array_elements_text(m.action_classes)), m.plan_timeout_s,
           m.steps_timeout_s,
           CASE WHEN jsonb_typeof(m.first_locks) = 'array'
                THEN ARRAY(SELECT jsonb_array_elements_text(m.first_locks)) END,
           m.tenant_id
    FROM m JOIN policy p USING (sla_class, action_classes)
    WHERE m.status = 'queued'
    ORDER BY m.ord
    RETURNING execution_id
)
SELECT ord, created_at FROM m
UNION ALL
-- no row: one NOTIFY when anything was queued
SELECT NULL, NULL FROM (SELECT 1 FROM queued LIMIT 1) AS any_queued
WHERE pg_notify('opsc_queue', '') IS NULL
