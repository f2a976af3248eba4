-- 0027: the executions' metric roll-up runs once per statement, and recomputes only what moved.
--
-- A worker moves many executions in one set-based statement (db/batching.py). The row
-- trigger of 0014 fired for each of them, twice per execution (started, finished), and each
-- time recomputed the row's whole contribution, old and new, events look-ups included: a
-- finishing execution looked up its queue wait twice only to subtract it from itself. Now
-- one statement trigger reads the statement's old and new rows (transition tables) and adds
-- per row only the parts whose inputs changed (execution_metric_delta); the parts are the
-- three pieces of execution_metric_rows, which the rebuild still uses whole.

-- Finished status (gauge), lease renewals, SLA violations: columns of the row only.
CREATE FUNCTION execution.execution_metric_rows_own(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'executions', ARRAY[e.tenant_id, e.status::text], 1::numeric
    WHERE e.status = ANY (execution.terminal_statuses())
    UNION ALL
    SELECT 'lease_renewals', '{}', e.lease_renewals WHERE e.lease_renewals <> 0
    UNION ALL
    SELECT 'sla_violations', ARRAY[e.tenant_id, e.sla_class::text], 1
    WHERE e.sla_violated_at IS NOT NULL
$$;

-- The SLA outcome of a finished execution that was approved (reads its events).
CREATE FUNCTION execution.execution_metric_rows_outcome(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT 'sla_outcomes',
           ARRAY[e.tenant_id, e.sla_class::text,
                 CASE WHEN e.sla_violated_at IS NULL THEN 'met' ELSE 'violated' END], 1::numeric
    WHERE e.finished_at IS NOT NULL
      AND EXISTS (SELECT 1 FROM execution.execution_events v
                  WHERE v.execution_id = e.id AND v.to_status = 'approved')
$$;

-- A background execution's queue wait, from its approval or queueing to its start.
CREATE FUNCTION execution.execution_metric_rows_wait(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT x.metric, x.labels, x.value
    FROM (SELECT extract(epoch FROM e.started_at - min(v.created_at)) AS w
          FROM execution.execution_events v
          WHERE e.mode = 'background' AND e.started_at IS NOT NULL
            AND v.execution_id = e.id AND v.to_status IN ('approved', 'queued')) AS a
    CROSS JOIN LATERAL (VALUES
        ('queue_wait', ARRAY[execution.metric_wait_bucket(a.w)], 1::numeric),
        ('queue_wait_sum', '{}'::text[], a.w)) AS x (metric, labels, value)
    WHERE a.w IS NOT NULL
$$;

-- The same rows as in 0014, now as the sum of the three parts (the rebuild's definition).
CREATE OR REPLACE FUNCTION execution.execution_metric_rows(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT * FROM execution.execution_metric_rows_own(e)
    UNION ALL
    SELECT * FROM execution.execution_metric_rows_outcome(e)
    UNION ALL
    SELECT * FROM execution.execution_metric_rows_wait(e)
$$;

-- What an update of one row adds: new minus old, for each part whose inputs changed.
CREATE FUNCTION execution.execution_metric_delta(o execution.executions, n execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT m.metric, m.labels, m.value FROM execution.execution_metric_rows_own(n) m
    UNION ALL
    SELECT m.metric, m.labels, -m.value FROM execution.execution_metric_rows_own(o) m
    UNION ALL
    SELECT m.metric, m.labels, m.value FROM execution.execution_metric_rows_outcome(n) m
    WHERE (o.finished_at, o.sla_violated_at, o.sla_class, o.tenant_id)
          IS DISTINCT FROM (n.finished_at, n.sla_violated_at, n.sla_class, n.tenant_id)
    UNION ALL
    SELECT m.metric, m.labels, -m.value FROM execution.execution_metric_rows_outcome(o) m
    WHERE (o.finished_at, o.sla_violated_at, o.sla_class, o.tenant_id)
          IS DISTINCT FROM (n.finished_at, n.sla_violated_at, n.sla_class, n.tenant_id)
    UNION ALL
    SELECT m.metric, m.labels, m.value FROM execution.execution_metric_rows_wait(n) m
    WHERE (o.started_at, o.mode) IS DISTINCT FROM (n.started_at, n.mode)
    UNION ALL
    SELECT m.metric, m.labels, -m.value FROM execution.execution_metric_rows_wait(o) m
    WHERE (o.started_at, o.mode) IS DISTINCT FROM (n.started_at, n.mode)
$$;

CREATE FUNCTION execution.metric_rollup_executions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Rows whose counted columns did not move (most updates) are dropped by the join's
    -- filter before any function runs.
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
    FROM gone o JOIN added n USING (id)
    CROSS JOIN LATERAL execution.execution_metric_delta(
        o::execution.executions, n::execution.executions) AS d
    WHERE (o.status, o.tenant_id, o.lease_renewals, o.sla_violated_at, o.sla_class,
           o.finished_at, o.started_at, o.mode)
          IS DISTINCT FROM (n.status, n.tenant_id, n.lease_renewals, n.sla_violated_at,
                            n.sla_class, n.finished_at, n.started_at, n.mode)
    GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;

DROP TRIGGER executions_metrics_update ON execution.executions;
CREATE TRIGGER executions_metrics_update AFTER UPDATE ON execution.executions
    REFERENCING OLD TABLE AS gone NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_executions();
