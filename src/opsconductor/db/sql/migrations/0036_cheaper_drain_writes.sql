-- 0036: what the server spends per drained execution, cut where it bought nothing.
--
-- The roll-up triggers (0027, 0033) cost more than any statement of the drain but one:
-- on a 3,000-execution drain (track_functions) metric_rollup_executions took ~190 us of
-- self time per execution and metric_rollup_steps ~90. Per changed row they expanded
-- eleven (steps: six) candidate rows, built each one's label array and then threw most
-- away, and they ran their whole plan for statements that updated nothing (the claim's
-- timeout extension, the start's ON CONFLICT, the transition's step skipping: three of the
-- five calls per batch).
--
-- Now: no work at all for an empty statement, and each part is a sum over the new rows
-- minus the same sum over the old ones, grouped on plain columns first, so a label array
-- is built once per label set, not per row. A row whose counted columns did not move adds
-- and subtracts the same (numeric sums are exact), so it needs no test of its own; the
-- events are read only for the rows whose SLA outcome or queue wait moved (grouped by id:
-- what does not cancel), one index probe each, as before. No join of the old and new rows:
-- its plan, cached from a connection's first call, was a nested loop over both
-- transition tables, quadratic in the rows of a statement.
-- execution_metric_rows / step_metric_rows stay the definitions (the rebuild's);
-- tests/test_metrics_rollup.py compares the roll-up with a recount.

CREATE OR REPLACE FUNCTION execution.metric_rollup_executions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM added) THEN
        RETURN NULL;
    END IF;
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    WITH d AS (
        SELECT 1 AS s, n.id, n.tenant_id, n.status, n.lease_renewals, n.sla_class,
               n.sla_violated_at, n.finished_at, n.started_at, n.mode
        FROM added n
        UNION ALL
        SELECT -1, o.id, o.tenant_id, o.status, o.lease_renewals, o.sla_class,
               o.sla_violated_at, o.finished_at, o.started_at, o.mode
        FROM gone o
    ), outcome AS (
        -- finished rows whose outcome label moved (or that finished): what does not cancel
        SELECT d.id, d.tenant_id, d.sla_class, d.sla_violated_at IS NULL AS met, sum(d.s) AS s
        FROM d WHERE d.finished_at IS NOT NULL
        GROUP BY 1, 2, 3, 4 HAVING sum(d.s) <> 0
    ), started AS (
        -- background rows whose start moved (or that started)
        SELECT d.id, d.started_at, sum(d.s) AS s
        FROM d WHERE d.mode = 'background' AND d.started_at IS NOT NULL
        GROUP BY 1, 2 HAVING sum(d.s) <> 0
    ), waits AS (
        SELECT st.s, extract(epoch FROM st.started_at - f.since) AS w
        FROM started st
        CROSS JOIN LATERAL (
            SELECT min(v.created_at) AS since FROM execution.execution_events v
            WHERE v.execution_id = st.id AND v.to_status IN ('approved', 'queued')) AS f
        WHERE f.since IS NOT NULL
    )
    SELECT x.metric, x.labels, pg_backend_pid(), x.value
    FROM (
        SELECT 'executions' AS metric, ARRAY[d.tenant_id, d.status::text] AS labels,
               sum(d.s)::numeric AS value
        FROM d WHERE d.status = ANY (execution.terminal_statuses())
        GROUP BY d.tenant_id, d.status
        UNION ALL
        SELECT 'lease_renewals', '{}', sum(d.s * d.lease_renewals) FROM d
        UNION ALL
        SELECT 'sla_violations', ARRAY[d.tenant_id, d.sla_class::text], sum(d.s)
        FROM d WHERE d.sla_violated_at IS NOT NULL
        GROUP BY d.tenant_id, d.sla_class
        UNION ALL
        SELECT 'sla_outcomes',
               ARRAY[o.tenant_id, o.sla_class::text,
                     CASE WHEN o.met THEN 'met' ELSE 'violated' END], sum(o.s)
        FROM outcome o
        -- in the select list (OFFSET 0): a probe per row, never a semi-join that the
        -- cached plan could make a scan of every approval event
        CROSS JOIN LATERAL (
            SELECT EXISTS (SELECT 1 FROM execution.execution_events v
                           WHERE v.execution_id = o.id AND v.to_status = 'approved') AS approved
            OFFSET 0) AS a
        WHERE a.approved
        GROUP BY o.tenant_id, o.sla_class, o.met
        UNION ALL
        SELECT 'queue_wait', ARRAY[execution.metric_wait_bucket(w.w)], sum(w.s)
        FROM waits w GROUP BY 2
        UNION ALL
        SELECT 'queue_wait_sum', '{}', sum(w.s * w.w) FROM waits w
    ) AS x
    WHERE x.value <> 0
    ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION execution.metric_rollup_steps() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A row counts only as a retry or with both ends (step_metric_rows): an attempt's
    -- start (pending -> running, every drained step) moves nothing.
    IF NOT EXISTS (SELECT FROM added WHERE attempt > 1 OR finished_at IS NOT NULL)
       AND NOT EXISTS (SELECT FROM gone WHERE attempt > 1 OR finished_at IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    WITH d AS (
        SELECT 1 AS s, n.step_type, n.attempt,
               extract(epoch FROM n.finished_at - n.started_at) AS w
        FROM added n
        UNION ALL
        SELECT -1, o.step_type, o.attempt, extract(epoch FROM o.finished_at - o.started_at)
        FROM gone o
    )
    SELECT x.metric, x.labels, pg_backend_pid(), x.value
    FROM (
        SELECT 'step_retries' AS metric, ARRAY[d.step_type] AS labels,
               sum(d.s)::numeric AS value
        FROM d WHERE d.attempt > 1 GROUP BY d.step_type
        UNION ALL
        SELECT 'step_duration', ARRAY[d.step_type, execution.metric_duration_bucket(d.w)],
               sum(d.s)
        FROM d WHERE d.w IS NOT NULL
        GROUP BY d.step_type, execution.metric_duration_bucket(d.w)
        UNION ALL
        SELECT 'step_duration_sum', ARRAY[d.step_type], sum(d.s * d.w)
        FROM d WHERE d.w IS NOT NULL GROUP BY d.step_type
    ) AS x
    WHERE x.value <> 0
    ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;

-- end_run_batch as in 0033 but for what its cached plan read per batch. The generic
-- plan is made at a connection's first call, from the statistics of that moment: on a young
-- database (small or never analysed queue, steps and locks tables) it read the queue, the
-- step attempts and the locks whole by sequential scan for the few rows of a batch, and
-- kept doing so as they grew (3,000 queued executions: every call read every queue and
-- step row). Its rows are found by primary key, so a scan is never the better plan here:
-- enable_seqscan = off for this function's statements only; the statement stays 0033's
-- (its answer reads `logged` through a sub-select per item: a join could let the plan write
-- the events, and lock their executions, before the lease rows are locked).
ALTER FUNCTION execution.end_run_batch(jsonb) SET enable_seqscan = off;

