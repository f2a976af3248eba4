-- SLA budgets: the clock runs from approval (automatic at submission for
-- level 0) to the final status. Budgets: fast 10 s, medium 30 s, long the longest execution
-- timeout the policy matrix gives a long plan.

-- name: flag_violations
WITH budgets (sla_class, budget_s) AS (
    VALUES ('fast'::execution.sla_class, %(fast_s)s::float8),
           ('medium'::execution.sla_class, %(medium_s)s::float8),
           ('long'::execution.sla_class,
            (SELECT max(execution_timeout_s)::float8 FROM execution.timeout_policies
             WHERE sla_class = 'long'))
), candidates AS (
    -- SKIP LOCKED: never wait on an execution another transaction is changing; the next
    -- sweep, a second later, looks again.
    SELECT e.id, b.sla_class, b.budget_s,
           extract(epoch FROM coalesce(e.finished_at, now()) - a.at) AS elapsed_s
    FROM execution.executions e
    JOIN budgets b ON b.sla_class = e.sla_class
    JOIN LATERAL (SELECT min(v.created_at) AS at FROM execution.execution_events v
                  WHERE v.execution_id = e.id AND v.to_status = 'approved') a
      ON a.at IS NOT NULL
    WHERE e.sla_violated_at IS NULL
      AND (e.finished_at IS NULL OR e.finished_at > now() - interval '1 hour')
      AND extract(epoch FROM coalesce(e.finished_at, now()) - a.at) > b.budget_s
    FOR NO KEY UPDATE OF e SKIP LOCKED
), flagged AS (
    -- The IS NULL re-check under the row lock makes each violation exactly-once across
    -- every process running this sweep.
    UPDATE execution.executions e SET sla_violated_at = now()
    FROM candidates c
    WHERE e.id = c.id AND e.sla_violated_at IS NULL
    RETURNING e.id, e.tenant_id, e.status, c.sla_class, c.budget_s, c.elapsed_s
)
INSERT INTO execution.execution_events (execution_id, tenant_id, event_type, actor_id, payload)
SELECT id, tenant_id, 'sla_violation', 'system:sla',
       jsonb_build_object('sla_class', sla_class, 'budget_s', budget_s,
                          'elapsed_s', round(elapsed_s::numeric, 3), 'status', status)
FROM flagged
RETURNING execution_id, tenant_id, payload
