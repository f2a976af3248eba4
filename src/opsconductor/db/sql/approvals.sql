-- Approval requests and decisions. Deciding locks the approval row, so two approvers
-- racing are serialised and exactly one decision settles it.

-- name: insert_approval
INSERT INTO execution.approvals
    (execution_id, step_index, level, plan_hash, requested_by, expires_at)
SELECT %(execution_id)s, %(step_index)s, %(level)s, %(plan_hash)s, %(requested_by)s,
       now() + make_interval(secs => t.approval_windows_s[%(level)s])
FROM execution.tenants t WHERE t.tenant_id = %(tenant_id)s
RETURNING *

-- name: lock_open_approval
SELECT a.*, t.approval_quorum, now() AS db_now
FROM execution.approvals a
JOIN execution.executions e ON e.id = a.execution_id
JOIN execution.tenants t ON t.tenant_id = e.tenant_id
WHERE a.execution_id = %(execution_id)s
  AND a.step_index IS NOT DISTINCT FROM %(step_index)s
ORDER BY a.id DESC
LIMIT 1
FOR UPDATE OF a

-- name: approvers_so_far
SELECT actor_id FROM execution.approval_decisions
WHERE approval_id = %(approval_id)s AND decision = 'approve'
ORDER BY id

-- name: insert_decision
INSERT INTO execution.approval_decisions (approval_id, actor_id, decision, plan_hash, comment)
VALUES (%(approval_id)s, %(actor_id)s, %(decision)s, %(plan_hash)s, %(comment)s)

-- name: settle_approval
UPDATE execution.approvals
SET state = %(state)s, decided_by = %(actor_id)s, decided_at = now(),
    comment = coalesce(%(comment)s, comment)
WHERE id = %(approval_id)s AND state = 'pending'

-- name: expire_overdue
UPDATE execution.approvals a SET state = 'expired'
FROM execution.executions e
WHERE a.state = 'pending' AND a.expires_at <= now() AND e.id = a.execution_id
RETURNING a.id, a.execution_id, a.step_index, e.tenant_id, e.status

-- name: history
SELECT a.id, a.execution_id, a.step_index, a.level, a.plan_hash, a.state, a.requested_by, a.decided_by,
       a.decided_at, a.expires_at, a.comment, a.created_at,
       coalesce(json_agg(json_build_object(
           'actor_id', d.actor_id, 'decision', d.decision, 'plan_hash', d.plan_hash,
           'comment', d.comment, 'decided_at', d.decided_at) ORDER BY d.id)
           FILTER (WHERE d.id IS NOT NULL), '[]') AS decisions
FROM execution.approvals a
LEFT JOIN execution.approval_decisions d ON d.approval_id = a.id
WHERE a.execution_id = %(execution_id)s
GROUP BY a.id
ORDER BY a.id

-- name: tenant_settings
SELECT approval_quorum, approval_windows_s, on_approval_invalidated
FROM execution.tenants WHERE tenant_id = %(tenant_id)s

-- name: replace_plan
UPDATE execution.executions SET plan_snapshot = %(plan_snapshot)s, plan_hash = %(plan_hash)s
WHERE id = %(id)s

-- name: await_step
UPDATE execution.execution_steps SET status = 'awaiting_approval'
WHERE execution_id = %(execution_id)s AND step_index = %(step_index)s AND status = 'pending'

-- name: release_step
UPDATE execution.execution_steps SET status = 'pending'
WHERE execution_id = %(execution_id)s AND step_index = %(step_index)s
  AND status = 'awaiting_approval'

-- name: extend_timeout
-- The wait for a person does not count against the execution's time budget.
UPDATE execution.executions
SET timeout_at = timeout_at + (now() - %(waiting_since)s::timestamptz)
WHERE id = %(execution_id)s AND timeout_at IS NOT NULL

-- name: skip_awaiting
UPDATE execution.execution_steps SET status = 'skipped', finished_at = now()
WHERE execution_id = %(execution_id)s AND status IN ('pending', 'awaiting_approval')

-- name: try_sweep_lock
SELECT pg_try_advisory_xact_lock(%(key)s) AS got

-- name: waiting
-- The tenant's approvals still open (not decided, not expired), soonest to expire first:
-- the approvals inbox.
SELECT a.id, a.execution_id, a.step_index, a.level, a.plan_hash, a.state, a.requested_by,
       a.decided_by, a.decided_at, a.expires_at, a.comment, a.created_at
FROM execution.approvals a
JOIN execution.executions e ON e.id = a.execution_id
WHERE e.tenant_id = %(tenant_id)s AND a.state = 'pending' AND a.expires_at > now()
ORDER BY a.expires_at, a.id
LIMIT %(limit)s
