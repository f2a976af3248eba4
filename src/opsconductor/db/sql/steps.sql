-- Step rows: one per (step, target, attempt); the first attempt of every pair is created
-- pending at submission so progress can count what is left.

-- name: insert_pending_steps
INSERT INTO execution.execution_steps
    (execution_id, tenant_id, step_index, step_name, step_type, target_asset_id, status,
     attempt, step_key)
SELECT %(execution_id)s, %(tenant_id)s, s.step_index, s.step_name, s.step_type, s.asset_id,
       'pending', 1, (%(step_keys)s::text[])[s.step_index + 1]
FROM unnest(%(step_index)s::int[], %(step_name)s::text[], %(step_type)s::text[],
            %(asset_id)s::text[]) AS s(step_index, step_name, step_type, asset_id)

-- name: record_denied
-- A step RBAC refused on a target: its first attempt ends failed without having started.
INSERT INTO execution.execution_steps
    (execution_id, tenant_id, step_index, step_name, step_type, target_asset_id, status,
     attempt, started_at, finished_at, error)
VALUES (%(execution_id)s, %(tenant_id)s, %(step_index)s, %(step_name)s, %(step_type)s,
        %(asset_id)s, 'failed', 1, now(), now(), %(error)s)
ON CONFLICT (execution_id, step_index, target_asset_id, attempt) DO UPDATE
    SET status = 'failed', started_at = now(), finished_at = now(), error = EXCLUDED.error
    WHERE execution_steps.status = 'pending'

-- name: start_attempt_logged
-- Start attempts and write their step_started events in one statement (set-based: one row
-- per item of db/batching.py, numbered by ord): both or neither, since a statement is
-- atomic. No row back for an item: that attempt had started already.
-- The statement is execution.start_attempt_batch (migration 0033: planned once per
-- connection).
SELECT ord, id FROM execution.start_attempt_batch(%(items)s::jsonb)

-- name: finish_attempt_logged
-- Store attempts' results and their step_finished events in one statement (set-based, as
-- start_attempt_logged). The event is written even if the attempt was no longer running
-- (closed by a resume elsewhere): what this worker saw is part of the audit trail.
WITH t AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb) AS t(
        ord int, id bigint, execution_id uuid, tenant_id text, status text, exit_code int,
        output text, stderr text, error text, actor_id text, payload jsonb)
), finished AS (
    UPDATE execution.execution_steps s SET
        status = t.status, finished_at = now(), exit_code = t.exit_code,
        output = t.output, stderr = t.stderr, error = t.error
    FROM t
    -- An index scan by key: the planner cannot know how few items the JSON holds.
    WHERE s.id = ANY(ARRAY(SELECT id FROM t)) AND s.id = t.id AND s.status = 'running'
)
INSERT INTO execution.execution_events
    (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
SELECT execution_id, tenant_id, 'step_finished', NULL, NULL, actor_id, payload
FROM t ORDER BY ord

-- name: skip_pending
UPDATE execution.execution_steps SET status = 'skipped', finished_at = now()
WHERE execution_id = %(execution_id)s AND status = 'pending'

-- name: skip_pending_targets
-- A rolling update leaves these targets' pending steps unrun (an earlier step failed on the
-- host, or the rollout stopped): they end skipped, with why.
UPDATE execution.execution_steps SET status = 'skipped', finished_at = now(), error = %(reason)s
WHERE execution_id = %(execution_id)s AND status = 'pending'
  AND target_asset_id = ANY(%(asset_ids)s::text[])

-- name: list_steps
SELECT * FROM execution.execution_steps
WHERE execution_id = %(execution_id)s
ORDER BY step_index, target_asset_id, attempt

-- name: latest_results
SELECT DISTINCT ON (target_asset_id)
       step_name, target_asset_id, status, exit_code, output, stderr
FROM execution.execution_steps
WHERE execution_id = %(execution_id)s AND step_index = %(step_index)s
ORDER BY target_asset_id, attempt DESC

-- name: observed_p95
-- p95 duration per step type over the newest finished attempts of this tenant; a type with
-- too few samples is left out so one odd run cannot re-route a plan.
SELECT t.step_type,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY recent.seconds) AS p95,
       count(*) AS samples
FROM unnest(%(step_types)s::text[]) AS t(step_type)
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM s.finished_at - s.started_at)::float8 AS seconds
    FROM execution.execution_steps s
    WHERE s.tenant_id = %(tenant_id)s AND s.step_type = t.step_type
      AND s.finished_at IS NOT NULL AND s.started_at IS NOT NULL
      AND s.status IN ('completed', 'failed', 'timeout')
    ORDER BY s.finished_at DESC
    LIMIT %(window)s
) AS recent
GROUP BY t.step_type
HAVING count(*) >= %(min_samples)s

-- name: observed_p95_by_key
-- p95 duration per step key (routing.step_key: the same step in any plan) over its newest
-- finished attempts; keys with too few samples are left out.
SELECT k.step_key,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY recent.seconds) AS p95
FROM unnest(%(step_keys)s::text[]) AS k(step_key)
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM s.finished_at - s.started_at)::float8 AS seconds
    FROM execution.execution_steps s
    WHERE s.tenant_id = %(tenant_id)s AND s.step_key = k.step_key
      AND s.finished_at IS NOT NULL AND s.started_at IS NOT NULL
      AND s.status IN ('completed', 'failed', 'timeout')
    ORDER BY s.finished_at DESC
    LIMIT %(window)s
) AS recent
GROUP BY k.step_key
HAVING count(*) >= %(min_samples)s

-- name: close_attempts
UPDATE execution.execution_steps SET status = %(status)s, finished_at = now(), error = %(error)s
WHERE id = ANY(%(ids)s) AND status = 'running'

-- name: target_results
SELECT DISTINCT ON (step_index)
       step_name, target_asset_id, status, exit_code, output, stderr
FROM execution.execution_steps
WHERE execution_id = %(execution_id)s AND target_asset_id = %(asset_id)s
  AND step_index < %(before)s AND status <> 'pending'
ORDER BY step_index, attempt DESC
