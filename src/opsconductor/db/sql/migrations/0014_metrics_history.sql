-- 0014: /metrics in constant time and history that can be pruned (issue 16).
--
-- metric_rollup holds every database-derived counter and histogram bucket, kept current by
-- triggers (see below): a scrape sums a few rows whatever the history. Each backend adds its deltas to rows of its own slot
-- (its pid): concurrent workers never wait on each other's row locks, so no hot row
-- serialises their commits. A scrape first folds slots into slot 0 (rows it can lock
-- without waiting), which keeps the table near one row per label set.
--
-- Counters (steps, waits, SLA outcomes, counted events, lease renewals) only grow: a
-- pruned row keeps its contribution, because Prometheus reads a falling counter as a
-- restart. The 'executions' gauge counts rows held, so pruning lowers it; it holds finished
-- executions only (a status is entered once and never left), while the unfinished are
-- counted live through executions_live_idx: the many moves between unfinished statuses
-- write nothing here.
CREATE TABLE execution.metric_rollup (
    metric  text NOT NULL,
    labels  text[] NOT NULL,
    slot    integer NOT NULL,
    value   numeric NOT NULL,
    PRIMARY KEY (metric, labels, slot)
);

-- The (non-cumulative) bucket an observation falls in, labelled by its upper bound (or
-- '+Inf'). The bounds equal DURATION_BUCKETS and WAIT_BUCKETS in db/metrics.py (a test
-- checks); a plain CASE, so the planner inlines it into the triggers' statements.
CREATE FUNCTION execution.metric_duration_bucket(seconds numeric) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT
        CASE WHEN seconds <= 0.05 THEN '0.05' WHEN seconds <= 0.1 THEN '0.1'
             WHEN seconds <= 0.25 THEN '0.25' WHEN seconds <= 0.5 THEN '0.5'
             WHEN seconds <= 1 THEN '1' WHEN seconds <= 2.5 THEN '2.5'
             WHEN seconds <= 5 THEN '5' WHEN seconds <= 10 THEN '10'
             WHEN seconds <= 30 THEN '30' WHEN seconds <= 60 THEN '60'
             WHEN seconds <= 120 THEN '120' WHEN seconds <= 300 THEN '300'
             WHEN seconds <= 1800 THEN '1800'
             ELSE '+Inf' END
$$;
CREATE FUNCTION execution.metric_wait_bucket(seconds numeric) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT
        CASE WHEN seconds <= 0.1 THEN '0.1' WHEN seconds <= 0.5 THEN '0.5'
             WHEN seconds <= 1 THEN '1' WHEN seconds <= 5 THEN '5'
             WHEN seconds <= 10 THEN '10' WHEN seconds <= 30 THEN '30'
             WHEN seconds <= 60 THEN '60' WHEN seconds <= 300 THEN '300'
             WHEN seconds <= 900 THEN '900' WHEN seconds <= 1800 THEN '1800'
             WHEN seconds <= 3600 THEN '3600'
             ELSE '+Inf' END
$$;

-- The statuses nothing leaves (status_machine.TERMINAL; a test checks).
CREATE FUNCTION execution.terminal_statuses() RETURNS execution.execution_status[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{rejected,completed,failed,cancelled,timeout,partial}'::execution.execution_status[]
$$;

-- What one row adds to the roll-up. The same functions back-fill the table below and
-- compute each trigger's deltas (new rows minus old rows), so the two cannot disagree.
CREATE FUNCTION execution.execution_metric_rows(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT 'executions', ARRAY[e.tenant_id, e.status::text], 1::numeric
    WHERE e.status = ANY (execution.terminal_statuses())
    UNION ALL
    SELECT 'lease_renewals', '{}', e.lease_renewals WHERE e.lease_renewals <> 0
    UNION ALL
    SELECT 'sla_violations', ARRAY[e.tenant_id, e.sla_class::text], 1
    WHERE e.sla_violated_at IS NOT NULL
    UNION ALL
    SELECT 'sla_outcomes',
           ARRAY[e.tenant_id, e.sla_class::text,
                 CASE WHEN e.sla_violated_at IS NULL THEN 'met' ELSE 'violated' END], 1
    WHERE e.finished_at IS NOT NULL
      AND EXISTS (SELECT 1 FROM execution.execution_events v
                  WHERE v.execution_id = e.id AND v.to_status = 'approved')
    UNION ALL
    SELECT x.metric, x.labels, x.value
    FROM (SELECT extract(epoch FROM e.started_at - min(v.created_at)) AS w
          FROM execution.execution_events v
          WHERE e.mode = 'background' AND e.started_at IS NOT NULL
            AND v.execution_id = e.id AND v.to_status IN ('approved', 'queued')) AS a
    CROSS JOIN LATERAL (VALUES
        ('queue_wait', ARRAY[execution.metric_wait_bucket(a.w)],
         1::numeric),
        ('queue_wait_sum', '{}'::text[], a.w)) AS x (metric, labels, value)
    WHERE a.w IS NOT NULL
$$;

CREATE FUNCTION execution.step_metric_rows(s execution.execution_steps)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'step_retries', ARRAY[s.step_type], 1::numeric WHERE s.attempt > 1
    UNION ALL
    SELECT x.metric, x.labels, x.value
    FROM (SELECT extract(epoch FROM s.finished_at - s.started_at) AS w) AS a
    CROSS JOIN LATERAL (VALUES
        ('step_duration',
         ARRAY[s.step_type, execution.metric_duration_bucket(a.w)],
         1::numeric),
        ('step_duration_sum', ARRAY[s.step_type], a.w)) AS x (metric, labels, value)
    WHERE a.w IS NOT NULL
$$;

CREATE FUNCTION execution.approval_metric_rows(p execution.approvals)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT x.metric, x.labels, x.value
    FROM (SELECT extract(epoch FROM p.decided_at - p.created_at) AS w) AS a
    CROSS JOIN LATERAL (VALUES
        ('approval_wait', ARRAY[execution.metric_wait_bucket(a.w)],
         1::numeric),
        ('approval_wait_sum', '{}'::text[], a.w)) AS x (metric, labels, value)
    WHERE a.w IS NOT NULL
$$;

-- Event types counted as alerts and audit figures (COUNTED_EVENTS in db/metrics.py).
CREATE FUNCTION execution.event_metric_rows(v execution.execution_events)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'events', ARRAY[v.tenant_id, v.event_type], 1::numeric
    WHERE v.event_type IN ('rbac_violation', 'sla_violation', 'lock_reaped')
$$;

-- Two kinds of trigger, chosen by measurement on the workers' path. Most writes change
-- nothing counted: a new execution, a move between unfinished statuses, a first step
-- attempt, an ordinary event. Row triggers with a WHEN clause skip those before PL/pgSQL
-- (a WHEN is not constant-folded, so the clauses spell lists out instead of calling
-- functions). Writes that always count and may come many rows to a statement (step
-- attempts finishing, approvals decided, executions pruned) use statement triggers that
-- read the statement's transition tables: one call however many rows. Either way the
-- deltas (new row's contribution minus old row's) go to this backend's slot, in key order.
CREATE FUNCTION execution.metric_rollup_apply_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'executions' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
        FROM (SELECT m.metric, m.labels, m.value FROM execution.execution_metric_rows(NEW) m
              UNION ALL
              SELECT m.metric, m.labels, -m.value FROM execution.execution_metric_rows(OLD) m
              WHERE TG_OP = 'UPDATE') AS d
        GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'execution_steps' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT m.metric, m.labels, pg_backend_pid(), sum(m.value)
        FROM execution.step_metric_rows(NEW) m
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'approvals' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT m.metric, m.labels, pg_backend_pid(), sum(m.value)
        FROM execution.approval_metric_rows(NEW) m
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'execution_events' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT m.metric, m.labels, pg_backend_pid(), sum(m.value)
        FROM execution.event_metric_rows(NEW) m
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION execution.metric_rollup_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'executions' AND TG_OP = 'DELETE' THEN
        -- Only the gauge follows deletions (prune); counters keep what they counted.
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT 'executions', ARRAY[g.tenant_id, g.status::text], pg_backend_pid(), -count(*)
        FROM gone g WHERE g.status = ANY (execution.terminal_statuses())
        GROUP BY 2 ORDER BY 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'execution_steps' AND TG_OP = 'UPDATE' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
        FROM gone o JOIN added n USING (id)
        CROSS JOIN LATERAL (
            SELECT m.metric, m.labels, m.value
            FROM execution.step_metric_rows(n::execution.execution_steps) m
            UNION ALL
            SELECT m.metric, m.labels, -m.value
            FROM execution.step_metric_rows(o::execution.execution_steps) m) AS d
        WHERE (o.step_type, o.attempt, o.started_at, o.finished_at)
              IS DISTINCT FROM (n.step_type, n.attempt, n.started_at, n.finished_at)
        GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'approvals' AND TG_OP = 'UPDATE' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
        FROM gone o JOIN added n USING (id)
        CROSS JOIN LATERAL (
            SELECT m.metric, m.labels, m.value
            FROM execution.approval_metric_rows(n::execution.approvals) m
            UNION ALL
            SELECT m.metric, m.labels, -m.value
            FROM execution.approval_metric_rows(o::execution.approvals) m) AS d
        WHERE (o.created_at, o.decided_at) IS DISTINCT FROM (n.created_at, n.decided_at)
        GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    END IF;
    RETURN NULL;
END $$;

-- Fold every slot row no transaction holds into slot 0 (never waits: SKIP LOCKED). The
-- caller takes an advisory lock so two scrapes do not fold at once.
CREATE FUNCTION execution.metric_rollup_compact() RETURNS bigint LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM execution.metric_rollup
        WHERE ctid = ANY (ARRAY(SELECT ctid FROM execution.metric_rollup WHERE slot <> 0
                                FOR UPDATE SKIP LOCKED))
        RETURNING metric, labels, value
    ), folded AS (
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT metric, labels, 0, sum(value) FROM moved GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value
        RETURNING 1
    )
    SELECT count(*) FROM folded
$$;

-- A new execution counts only if it arrives finished or started (never, today).
CREATE TRIGGER executions_metrics_insert AFTER INSERT ON execution.executions
    FOR EACH ROW WHEN (
        NEW.status NOT IN ('pending_approval', 'approved', 'queued', 'running')
        OR NEW.started_at IS NOT NULL OR NEW.finished_at IS NOT NULL
        OR NEW.sla_violated_at IS NOT NULL OR NEW.lease_renewals <> 0)
    EXECUTE FUNCTION execution.metric_rollup_apply_row();
-- What an execution's row counts: its status once finished, a background run's start
-- (queue wait), lease renewals, the SLA flag and outcome.
CREATE TRIGGER executions_metrics_update AFTER UPDATE ON execution.executions
    FOR EACH ROW WHEN (
        (OLD.status IS DISTINCT FROM NEW.status
         AND (NEW.status NOT IN ('pending_approval', 'approved', 'queued', 'running')
              OR OLD.status NOT IN ('pending_approval', 'approved', 'queued', 'running')))
        OR (OLD.started_at IS DISTINCT FROM NEW.started_at AND NEW.mode = 'background')
        OR OLD.lease_renewals IS DISTINCT FROM NEW.lease_renewals
        OR OLD.sla_violated_at IS DISTINCT FROM NEW.sla_violated_at
        OR OLD.finished_at IS DISTINCT FROM NEW.finished_at
        OR OLD.mode IS DISTINCT FROM NEW.mode
        OR OLD.sla_class IS DISTINCT FROM NEW.sla_class
        OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION execution.metric_rollup_apply_row();
CREATE TRIGGER executions_metrics_delete AFTER DELETE ON execution.executions
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_apply();
-- A step attempt counts when it is a retry or once it has both ends.
CREATE TRIGGER execution_steps_metrics_insert AFTER INSERT ON execution.execution_steps
    FOR EACH ROW WHEN (NEW.attempt > 1 OR NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION execution.metric_rollup_apply_row();
CREATE TRIGGER execution_steps_metrics_update AFTER UPDATE ON execution.execution_steps
    REFERENCING OLD TABLE AS gone NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_apply();
CREATE TRIGGER approvals_metrics_insert AFTER INSERT ON execution.approvals
    FOR EACH ROW WHEN (NEW.decided_at IS NOT NULL)
    EXECUTE FUNCTION execution.metric_rollup_apply_row();
CREATE TRIGGER approvals_metrics_update AFTER UPDATE ON execution.approvals
    REFERENCING OLD TABLE AS gone NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_apply();
-- The counted event types (event_metric_rows), spelled out for the same reason.
CREATE TRIGGER execution_events_metrics AFTER INSERT ON execution.execution_events
    FOR EACH ROW WHEN (NEW.event_type IN ('rbac_violation', 'sla_violation', 'lock_reaped'))
    EXECUTE FUNCTION execution.metric_rollup_apply_row();

-- Recount the roll-up from the rows held (the migration's back-fill; also a repair tool).
-- The locks hold writers off while it counts; counts of pruned rows are lost by a rebuild.
CREATE FUNCTION execution.metric_rollup_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE execution.executions, execution.execution_steps, execution.approvals,
               execution.execution_events, execution.metric_rollup
        IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM execution.metric_rollup;
    INSERT INTO execution.metric_rollup (metric, labels, slot, value)
    SELECT m.metric, m.labels, 0, sum(m.value)
    FROM (
        SELECT r.* FROM execution.executions e
        CROSS JOIN LATERAL execution.execution_metric_rows(e) r
        UNION ALL
        SELECT r.* FROM execution.execution_steps s
        CROSS JOIN LATERAL execution.step_metric_rows(s) r
        UNION ALL
        SELECT r.* FROM execution.approvals p
        CROSS JOIN LATERAL execution.approval_metric_rows(p) r
        UNION ALL
        SELECT r.* FROM execution.execution_events v
        CROSS JOIN LATERAL execution.event_metric_rows(v) r
        WHERE v.event_type IN ('rbac_violation', 'sla_violation', 'lock_reaped')
    ) AS m
    GROUP BY 1, 2;
END $$;

SELECT execution.metric_rollup_rebuild();

-- Gauges read live rows only: unfinished executions (the literal list is the complement
-- of terminal_statuses(); the metrics query repeats it so the planner matches the index),
-- and workers that have not signed off (the table keeps one row
-- per worker ever started).
CREATE INDEX executions_live_idx ON execution.executions (tenant_id, status)
    WHERE status IN ('pending_approval', 'approved', 'queued', 'running');
CREATE INDEX workers_running_idx ON execution.workers (last_heartbeat_at)
    WHERE stopped_at IS NULL;

-- History: prune finds an execution's dead-letter rows without a scan.
CREATE INDEX execution_dlq_execution_idx ON execution.execution_dlq (execution_id);

-- Retention: executions of this tenant finished more than this many days ago may be pruned
-- by `opsc history prune --retention` (NULL: kept until pruned by hand).
ALTER TABLE execution.tenants ADD COLUMN history_retention_days integer
    CHECK (history_retention_days >= 1);
