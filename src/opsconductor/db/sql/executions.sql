-- Executions and their status changes. Every status change and its audit event are one
-- statement, so they commit together or not at all.

-- name: insert_execution
INSERT INTO execution.executions (
    id, tenant_id, actor_id, idempotency_key, retry_of, plan_name, plan_snapshot, plan_hash,
    status, mode, sla_class, approval_level, priority, estimated_duration_s, trace_id,
    record_only, rerun_of, record_only_reason, job_name, job_version)
VALUES (
    %(id)s, %(tenant_id)s, %(actor_id)s, %(idempotency_key)s, %(retry_of)s, %(plan_name)s,
    %(plan_snapshot)s, %(plan_hash)s, %(status)s, %(mode)s, %(sla_class)s, %(approval_level)s,
    %(priority)s, %(estimated_duration_s)s, %(trace_id)s, %(record_only)s, %(rerun_of)s,
    %(record_only_reason)s, %(job_name)s, %(job_version)s)
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
-- The prefix (hex digits and '-', checked by the caller) as a range of the primary key, so
-- `opsc show 28800deb` reads a few index entries, not the tenant's whole history.
SELECT * FROM execution.executions
WHERE tenant_id = %(tenant_id)s AND id::text LIKE %(prefix)s || '%%'
  AND id BETWEEN rpad(replace(%(prefix)s, '-', ''), 32, '0')::uuid
             AND rpad(replace(%(prefix)s, '-', ''), 32, 'f')::uuid
LIMIT 2

-- name: transition
-- Compare-and-set status changes, set-based (db/batching.py: one row per item, by ord),
-- each with its status_changed event. Per item, optionally: only while the worker still
-- holds its queue lease (lease_token set: the lease row is locked, the execution moves only
-- if it is ours, and the queue row is deleted with the move), and marking the steps still
-- pending as skipped (skip_pending). Answers every item: `id` is its event (NULL: it did
-- not move), `leased` whether its lease held. Lock order as in renew and the reaper: the
-- queue rows first (the lease CTE is read whole by the hashed subplan that filters t,
-- before any execution row is touched), then the executions. The `= ANY(ARRAY(...))`
-- conditions make both lookups index scans by key: the planner cannot know how few items a
-- JSON argument holds, and would otherwise scan whole tables.
-- The statement is execution.transition_batch (migration 0033: planned once per connection).
SELECT ord, id, leased FROM execution.transition_batch(%(items)s::jsonb)

-- name: end_run
-- A run's end in one statement (engine/ending.py), set-based as transition: per item, what
-- transition does for its final move (under the lease token: the lease row locked first,
-- the queue row deleted with the move, pending steps skipped), plus what the run held back
-- for it: its last attempt's result (attempt_id set; written as finish_attempt_logged
-- writes it, whether or not the lease holds) and the asset locks it still holds (`locks`:
-- [{asset_id, owner_tag}], let go of only where still ours, also whatever the lease). One
-- INSERT writes the step_finished event before the status_changed one, as two statements
-- did. Answers as transition: `id` the status_changed event (NULL: it did not move).
-- The statement is execution.end_run_batch (migration 0033: planned once per connection).
SELECT ord, id, leased FROM execution.end_run_batch(%(items)s::jsonb)

-- name: current_status
SELECT status FROM execution.executions WHERE id = %(id)s

-- name: insert_event
INSERT INTO execution.execution_events
    (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
VALUES (%(execution_id)s, %(tenant_id)s, %(event_type)s, NULL, %(to_status)s, %(actor_id)s,
        %(payload)s)
RETURNING id

-- name: append_events
-- Events of many callers in one statement (set-based, db/batching.py): a running step's
-- output lines. Inserted in execution order, so two such statements in flight at once take
-- the executions' row locks (execution.order_event) in the same order.
INSERT INTO execution.execution_events
    (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
SELECT execution_id, tenant_id, event_type, NULL, NULL, actor_id, payload
FROM jsonb_to_recordset(%(items)s::jsonb) AS t(
    ord int, execution_id uuid, tenant_id text, event_type text, actor_id text, payload jsonb)
ORDER BY execution_id, ord

-- name: list_events
SELECT * FROM execution.execution_events
WHERE execution_id = %(execution_id)s AND id > %(after)s
ORDER BY id

-- name: load_policies
SELECT * FROM execution.timeout_policies
