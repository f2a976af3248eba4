"""Set-based history for the roll-up and prune tests: every path the metrics count (status
changes, step attempts and retries, approvals, queue waits, SLA flags, counted events, lease
renewals), written by the same kinds of statements the product runs, many rows at a time."""

from __future__ import annotations

from typing import Any

# %(tenant)s, %(n)s, %(tag)s: executions go through approved -> queued -> running -> an end.
ACTIVITY = [
    """
    INSERT INTO execution.executions (id, tenant_id, actor_id, idempotency_key, plan_name,
        plan_snapshot, plan_hash, status, mode, sla_class, approval_level, priority,
        estimated_duration_s, trace_id, created_at)
    SELECT gen_random_uuid(), %(tenant)s, 'tester', %(tag)s || g, 'p' || (g %% 3), '{}',
           repeat('a', 64), 'approved', (ARRAY['background', 'immediate'])[1 + g %% 2]::
           execution.execution_mode, (ARRAY['fast', 'medium', 'long'])[1 + g %% 3]::
           execution.sla_class, 0, 5, 1, 't', now() - make_interval(secs => g * 7)
    FROM generate_series(1, %(n)s) AS g""",
    """
    INSERT INTO execution.execution_events (execution_id, tenant_id, event_type, to_status,
                                            actor_id, created_at)
    SELECT id, tenant_id, 'status', 'approved', 'tester', created_at FROM execution.executions
    WHERE tenant_id = %(tenant)s AND idempotency_key LIKE %(tag)s || '%%'
      AND status = 'approved'""",
    """
    UPDATE execution.executions SET status = 'queued'
    WHERE tenant_id = %(tenant)s AND idempotency_key LIKE %(tag)s || '%%'
      AND mode = 'background'""",
    """
    UPDATE execution.executions
    SET status = 'running', started_at = created_at + make_interval(secs => random() * 400)
    WHERE tenant_id = %(tenant)s AND idempotency_key LIKE %(tag)s || '%%'""",
    """
    INSERT INTO execution.execution_steps (execution_id, step_index, step_name, step_type,
        tenant_id, target_asset_id, status, attempt, started_at)
    SELECT e.id, 0, 's', (ARRAY['command', 'noop', 'http'])[1 + a %% 3], e.tenant_id,
           'localhost', 'running', a, e.started_at
    FROM execution.executions e CROSS JOIN generate_series(1, 2) AS a
    WHERE e.tenant_id = %(tenant)s AND e.idempotency_key LIKE %(tag)s || '%%'""",
    """
    UPDATE execution.execution_steps s
    SET status = (ARRAY['completed', 'failed'])[1 + s.id %% 2],
        finished_at = s.started_at + make_interval(secs => (s.id %% 40) ^ 2 / 3.0)
    FROM execution.executions e
    WHERE e.id = s.execution_id AND e.tenant_id = %(tenant)s
      AND e.idempotency_key LIKE %(tag)s || '%%'""",
    """
    UPDATE execution.executions
    SET lease_renewals = lease_renewals + 3 WHERE tenant_id = %(tenant)s
      AND idempotency_key LIKE %(tag)s || '%%' AND mode = 'background'""",
    """
    UPDATE execution.executions
    SET status = (ARRAY['completed', 'failed', 'timeout', 'partial'])[
            1 + abs(hashtext(id::text)) %% 4]::execution.execution_status,
        finished_at = started_at + interval '9 seconds'
    WHERE tenant_id = %(tenant)s AND idempotency_key LIKE %(tag)s || '%%'""",
    """
    UPDATE execution.executions SET sla_violated_at = finished_at
    WHERE tenant_id = %(tenant)s AND idempotency_key LIKE %(tag)s || '%%'
      AND abs(hashtext(id::text)) %% 5 = 0""",
    """
    INSERT INTO execution.execution_events (execution_id, tenant_id, event_type, actor_id)
    SELECT id, tenant_id, (ARRAY['rbac_violation', 'sla_violation', 'lock_reaped', 'other'])[
           1 + abs(hashtext(id::text)) %% 4], 'tester'
    FROM execution.executions
    WHERE tenant_id = %(tenant)s AND idempotency_key LIKE %(tag)s || '%%'""",
    # A few waiting for approval (unfinished): requested, one decided and then rejected.
    """
    INSERT INTO execution.executions (id, tenant_id, actor_id, idempotency_key, plan_name,
        plan_snapshot, plan_hash, status, mode, sla_class, approval_level, priority,
        estimated_duration_s, trace_id, created_at)
    SELECT gen_random_uuid(), %(tenant)s, 'tester', %(tag)s || 'w' || g, 'waits', '{}',
           repeat('b', 64), 'pending_approval', 'background', 'fast', 1, 5, 1, 't',
           now() - interval '60 days'
    FROM generate_series(1, 3) AS g""",
    """
    INSERT INTO execution.approvals (execution_id, level, plan_hash, requested_by, expires_at,
                                     created_at)
    SELECT id, 1, plan_hash, 'tester', now() + interval '1 hour', created_at
    FROM execution.executions
    WHERE tenant_id = %(tenant)s AND idempotency_key LIKE %(tag)s || 'w%%'""",
    """
    UPDATE execution.approvals a SET state = 'rejected', decided_by = 'ann',
        decided_at = a.created_at + interval '42 seconds'
    FROM execution.executions e
    WHERE e.id = a.execution_id AND e.idempotency_key = %(tag)s || 'w1'
      AND e.tenant_id = %(tenant)s""",
    """
    UPDATE execution.executions SET status = 'rejected', finished_at = created_at
    WHERE tenant_id = %(tenant)s AND idempotency_key = %(tag)s || 'w1'""",
]


def params(tenant: str, n: int, tag: str) -> dict[str, Any]:
    return {"tenant": tenant, "n": n, "tag": tag}
