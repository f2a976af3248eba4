-- 0033: the hot set-based statements of the workers' path as PL/pgSQL functions whose
-- statements use a generic plan from their first call.
--
-- transition, end_run and the claim cost the server 2-2.5 ms to plan each (CTEs, row
-- locks, triggers and foreign keys to expand), several times the cost of running them for
-- a batch. Sent as prepared statements they were still planned again for each of their
-- first five calls on every pooled connection (PostgreSQL tries custom plans first), and a
-- worker rotates over its whole pool: on a drain of a few thousand executions most calls
-- were planned. Their one parameter is a JSON array the planner cannot see into, so a
-- custom plan is never better than the generic one: here the generic plan is made once per
-- connection (the function's plan_cache_mode) and the statement sent is a function call,
-- cheap to plan. The statements are those of db/sql/executions.sql and queue.sql before
-- this migration, word for word but for their parameters; those blocks call these now.
-- `#variable_conflict use_column`: the result columns' names (ord, id, leased, ...) are
-- also column names inside the statements, where they mean the columns.

-- Its events need not take their execution's row lock one by one (order_event): each is
-- written for a row this statement has just updated, whose lock it holds to its commit.
CREATE FUNCTION execution.transition_batch(items jsonb)
RETURNS TABLE (ord int, id bigint, leased bool)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH t AS (
        SELECT * FROM jsonb_to_recordset(items) AS t(
            ord int, id uuid, from_status execution.execution_status,
            to_status execution.execution_status, terminal bool, reason text, actor_id text,
            payload jsonb, timeout_at timestamptz, worker_id text, lease_token uuid,
            skip_pending bool)
    ), lease AS (
        SELECT q.execution_id FROM execution.execution_queue q
        JOIN t ON q.execution_id = t.id AND q.lease_token = t.lease_token
        WHERE q.execution_id = ANY(ARRAY(SELECT id FROM t WHERE lease_token IS NOT NULL))
        ORDER BY q.execution_id
        FOR UPDATE OF q
    ), held AS (
        SELECT t.*, t.lease_token IS NULL OR t.id IN (SELECT execution_id FROM lease) AS leased
        FROM t
    ), moved AS (
        UPDATE execution.executions e SET
            status = h.to_status,
            status_reason = coalesce(h.reason, e.status_reason),
            started_at = CASE WHEN h.to_status = 'running' THEN coalesce(e.started_at, now())
                              ELSE e.started_at END,
            finished_at = CASE WHEN h.terminal THEN now() ELSE e.finished_at END,
            timeout_at = coalesce(h.timeout_at, e.timeout_at),
            worker_id = coalesce(h.worker_id, e.worker_id),
            cancelled_by = CASE WHEN h.to_status = 'cancelled' THEN h.actor_id ELSE e.cancelled_by END,
            cancelled_at = CASE WHEN h.to_status = 'cancelled' THEN now() ELSE e.cancelled_at END
        FROM held h
        WHERE e.id = ANY(ARRAY(SELECT id FROM held WHERE leased))
          AND e.id = h.id AND e.status = h.from_status AND h.leased
        RETURNING h.ord, e.id, e.tenant_id, h.from_status, h.to_status, h.actor_id, h.payload,
                  h.lease_token, h.skip_pending
    ), dequeued AS (
        DELETE FROM execution.execution_queue q USING moved m
        WHERE q.execution_id = m.id AND q.lease_token = m.lease_token
    ), skipped AS (
        UPDATE execution.execution_steps s SET status = 'skipped', finished_at = now()
        FROM moved m
        WHERE m.skip_pending AND s.execution_id = m.id AND s.status = 'pending'
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT id, tenant_id, 'status_changed', from_status, to_status, actor_id, payload
        FROM moved ORDER BY ord
        RETURNING id, execution_id
    )
    SELECT h.ord, (SELECT l.id FROM logged l WHERE l.execution_id = h.id) AS id, h.leased
    FROM held h;
END $$;

-- Its status_changed events are written for rows this statement has just updated (their
-- locks held to its commit); a step_finished event is also written when the move failed,
-- so the statement takes that execution's row lock before the event's id is drawn, as
-- order_event did row by row (in the same order: the items', after the queue rows).
CREATE FUNCTION execution.end_run_batch(items jsonb)
RETURNS TABLE (ord int, id bigint, leased bool)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH t AS (
        SELECT * FROM jsonb_to_recordset(items) AS t(
            ord int, id uuid, tenant_id text, from_status execution.execution_status,
            to_status execution.execution_status, terminal bool, reason text, actor_id text,
            payload jsonb, timeout_at timestamptz, worker_id text, lease_token uuid,
            skip_pending bool, attempt_id bigint, step_status text, exit_code int, output text,
            stderr text, error text, step_actor text, step_payload jsonb, locks jsonb)
    ), lease AS (
        SELECT q.execution_id FROM execution.execution_queue q
        JOIN t ON q.execution_id = t.id AND q.lease_token = t.lease_token
        WHERE q.execution_id = ANY(ARRAY(SELECT id FROM t WHERE lease_token IS NOT NULL))
        ORDER BY q.execution_id
        FOR UPDATE OF q
    ), held AS (
        SELECT t.*, t.lease_token IS NULL OR t.id IN (SELECT execution_id FROM lease) AS leased
        FROM t
    ), finished AS (
        UPDATE execution.execution_steps s SET
            status = t.step_status, finished_at = now(), exit_code = t.exit_code,
            output = t.output, stderr = t.stderr, error = t.error
        FROM t
        WHERE s.id = ANY(ARRAY(SELECT attempt_id FROM t WHERE attempt_id IS NOT NULL))
          AND s.id = t.attempt_id AND s.status = 'running'
    ), released AS (
        -- by primary key, one index probe per lock (a join by tenant alone reads all its locks)
        DELETE FROM execution.execution_locks l
        WHERE (l.tenant_id, l.asset_id, l.owner_tag) IN (
            SELECT t.tenant_id, k.asset_id, k.owner_tag
            FROM t CROSS JOIN LATERAL jsonb_to_recordset(t.locks) AS k(asset_id text, owner_tag text)
            WHERE t.locks IS NOT NULL)
    ), moved AS (
        UPDATE execution.executions e SET
            status = h.to_status,
            status_reason = coalesce(h.reason, e.status_reason),
            started_at = CASE WHEN h.to_status = 'running' THEN coalesce(e.started_at, now())
                              ELSE e.started_at END,
            finished_at = CASE WHEN h.terminal THEN now() ELSE e.finished_at END,
            timeout_at = coalesce(h.timeout_at, e.timeout_at),
            worker_id = coalesce(h.worker_id, e.worker_id),
            cancelled_by = CASE WHEN h.to_status = 'cancelled' THEN h.actor_id ELSE e.cancelled_by END,
            cancelled_at = CASE WHEN h.to_status = 'cancelled' THEN now() ELSE e.cancelled_at END
        FROM held h
        WHERE e.id = ANY(ARRAY(SELECT id FROM held WHERE leased))
          AND e.id = h.id AND e.status = h.from_status AND h.leased
        RETURNING h.ord, e.id, e.tenant_id, h.from_status, h.to_status, h.actor_id, h.payload,
                  h.lease_token, h.skip_pending
    ), dequeued AS (
        DELETE FROM execution.execution_queue q USING moved m
        WHERE q.execution_id = m.id AND q.lease_token = m.lease_token
    ), skipped AS (
        UPDATE execution.execution_steps s SET status = 'skipped', finished_at = now()
        FROM moved m
        WHERE m.skip_pending AND s.execution_id = m.id AND s.status = 'pending'
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT v.execution_id, v.tenant_id, v.event_type, v.from_status, v.to_status, v.actor_id,
               v.payload
        FROM (SELECT t.ord, 0 AS seq, t.id AS execution_id, t.tenant_id,
                     'step_finished' AS event_type, NULL::execution.execution_status AS from_status,
                     NULL::execution.execution_status AS to_status, t.step_actor AS actor_id,
                     t.step_payload AS payload
              FROM t CROSS JOIN LATERAL (
                  SELECT 1 FROM execution.executions x WHERE x.id = t.id
                  FOR NO KEY UPDATE OF x) AS locked
              WHERE t.attempt_id IS NOT NULL
              UNION ALL
              SELECT m.ord, 1, m.id, m.tenant_id, 'status_changed', m.from_status, m.to_status,
                     m.actor_id, m.payload
              FROM moved m) AS v
        ORDER BY v.ord, v.seq
        RETURNING id, execution_id, event_type
    )
    SELECT h.ord,
           (SELECT l.id FROM logged l
            WHERE l.execution_id = h.id AND l.event_type = 'status_changed') AS id,
           h.leased
    FROM held h;
END $$;

-- The execution row comes back whole (db/sql/queue.sql expands it into its columns).
CREATE FUNCTION execution.claim_batch(claim_worker text, claim_limit int, claim_lease_s float8)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at FROM execution.execution_queue
        WHERE lease_token IS NULL AND available_at <= now()
        ORDER BY (interrupted_at IS NULL), priority, available_at
        LIMIT claim_limit
        FOR UPDATE SKIP LOCKED
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = p.execution_id AND p.interrupted_at IS NOT NULL AND e.timeout_at IS NOT NULL
          AND e.status = 'running'
        RETURNING e.id, e.timeout_at
    )
    UPDATE execution.execution_queue q SET
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => coalesce(claim_lease_s, q.lease_timeout_s)),
        worker_id = claim_worker,
        leased_at = now(),
        attempt_count = q.attempt_count + 1,
        recovery_s = q.recovery_s + coalesce(extract(epoch FROM now() - picked.interrupted_at), 0),
        interrupted_at = NULL
    FROM picked
    JOIN execution.executions e ON e.id = picked.execution_id
    LEFT JOIN extended x ON x.id = picked.execution_id
    WHERE q.execution_id = picked.execution_id
    -- The execution row comes back with the lease: the worker need not read it again. So does
    -- what the engine reads to start it (runs.start_context: the tenant's settings, masking
    -- patterns and the plan's targets, as the start_context statement reads them).
    RETURNING e, q.lease_token, q.attempt_count, q.max_attempts,
              coalesce(claim_lease_s, q.lease_timeout_s) AS lease_s,
              x.timeout_at AS extended_timeout_at,
              extract(epoch FROM now() - picked.interrupted_at)::float8 AS recovered_after_s,
              q.interruption, q.interruptions, q.recovery_s,
              (SELECT json_build_object(
                   'record_only', tn.record_only, 'host_key_policy', tn.host_key_policy,
                   'local_execution', tn.local_execution, 'local_network', tn.local_network,
                   'masking_patterns',
                   coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                             FROM execution.masking_patterns p WHERE p.tenant_id = tn.tenant_id),
                            '[]'::json),
                   'assets',
                   coalesce((SELECT json_agg(a ORDER BY a.asset_id) FROM execution.assets a
                             WHERE a.tenant_id = tn.tenant_id
                               AND a.asset_id = ANY(ARRAY(
                                   SELECT jsonb_array_elements_text(s)
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s))),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context;
END $$;

-- The executions' roll-up trigger (0027) cost more to plan than to run: its statement
-- inlined execution_metric_delta, six part functions with their subqueries, 6-8 ms of
-- planning on each connection that ever updated an execution (most of a worker's pool).
-- The same deltas, written flat: per changed row the own parts of the old and the new row,
-- and the look-ups of events only for the part whose inputs moved (a sub-select inside a
-- CASE runs only when its branch is taken). An execution's events are the same for its
-- old and new row, so each look-up runs once for both. execution_metric_rows stays the
-- definition (the rebuild's); tests/test_metrics_rollup.py checks the two agree.
CREATE OR REPLACE FUNCTION execution.metric_rollup_executions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
    FROM gone o JOIN added n USING (id)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN (o.finished_at, o.sla_violated_at, o.sla_class, o.tenant_id)
                         IS DISTINCT FROM (n.finished_at, n.sla_violated_at, n.sla_class,
                                           n.tenant_id)
                         AND (o.finished_at IS NOT NULL OR n.finished_at IS NOT NULL)
                    THEN EXISTS (SELECT 1 FROM execution.execution_events v
                                 WHERE v.execution_id = n.id AND v.to_status = 'approved')
                    ELSE false END AS approved,
               CASE WHEN (o.started_at, o.mode) IS DISTINCT FROM (n.started_at, n.mode)
                         AND ((o.mode = 'background' AND o.started_at IS NOT NULL)
                              OR (n.mode = 'background' AND n.started_at IS NOT NULL))
                    THEN (SELECT min(v.created_at) FROM execution.execution_events v
                          WHERE v.execution_id = n.id
                            AND v.to_status IN ('approved', 'queued')) END AS waited_from
        OFFSET 0) AS x
    CROSS JOIN LATERAL (
        SELECT extract(epoch FROM n.started_at - x.waited_from) AS new_w,
               extract(epoch FROM o.started_at - x.waited_from) AS old_w
        OFFSET 0) AS w
    CROSS JOIN LATERAL (VALUES
        ('executions', ARRAY[n.tenant_id, n.status::text],
         CASE WHEN n.status = ANY (execution.terminal_statuses()) THEN 1 END),
        ('executions', ARRAY[o.tenant_id, o.status::text],
         CASE WHEN o.status = ANY (execution.terminal_statuses()) THEN -1 END),
        ('lease_renewals', '{}'::text[], n.lease_renewals::numeric - o.lease_renewals),
        ('sla_violations', ARRAY[n.tenant_id, n.sla_class::text],
         CASE WHEN n.sla_violated_at IS NOT NULL THEN 1 END),
        ('sla_violations', ARRAY[o.tenant_id, o.sla_class::text],
         CASE WHEN o.sla_violated_at IS NOT NULL THEN -1 END),
        ('sla_outcomes',
         ARRAY[n.tenant_id, n.sla_class::text,
               CASE WHEN n.sla_violated_at IS NULL THEN 'met' ELSE 'violated' END],
         CASE WHEN x.approved AND n.finished_at IS NOT NULL THEN 1 END),
        ('sla_outcomes',
         ARRAY[o.tenant_id, o.sla_class::text,
               CASE WHEN o.sla_violated_at IS NULL THEN 'met' ELSE 'violated' END],
         CASE WHEN x.approved AND o.finished_at IS NOT NULL THEN -1 END),
        ('queue_wait', ARRAY[execution.metric_wait_bucket(w.new_w)],
         CASE WHEN n.mode = 'background' AND w.new_w IS NOT NULL THEN 1 END),
        ('queue_wait_sum', '{}'::text[],
         CASE WHEN n.mode = 'background' THEN w.new_w END),
        ('queue_wait', ARRAY[execution.metric_wait_bucket(w.old_w)],
         CASE WHEN o.mode = 'background' AND w.old_w IS NOT NULL THEN -1 END),
        ('queue_wait_sum', '{}'::text[],
         CASE WHEN o.mode = 'background' THEN -w.old_w END)
    ) AS d (metric, labels, value)
    WHERE (o.status, o.tenant_id, o.lease_renewals, o.sla_violated_at, o.sla_class,
           o.finished_at, o.started_at, o.mode)
          IS DISTINCT FROM (n.status, n.tenant_id, n.lease_renewals, n.sla_violated_at,
                            n.sla_class, n.finished_at, n.started_at, n.mode)
      AND d.value IS NOT NULL
    GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;

-- The step attempts' roll-up on update, written flat in the same way (every attempt's start
-- and end fires it): step_metric_rows of the new row minus the old, without inlining the
-- function twice. metric_rollup_apply keeps its branch for this table (unused now) and
-- serves approvals and deletions as before.
CREATE FUNCTION execution.metric_rollup_steps() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
    FROM gone o JOIN added n USING (id)
    CROSS JOIN LATERAL (
        SELECT extract(epoch FROM n.finished_at - n.started_at) AS new_w,
               extract(epoch FROM o.finished_at - o.started_at) AS old_w
        OFFSET 0) AS w
    CROSS JOIN LATERAL (VALUES
        ('step_retries', ARRAY[n.step_type], CASE WHEN n.attempt > 1 THEN 1 END),
        ('step_retries', ARRAY[o.step_type], CASE WHEN o.attempt > 1 THEN -1 END),
        ('step_duration', ARRAY[n.step_type, execution.metric_duration_bucket(w.new_w)],
         CASE WHEN w.new_w IS NOT NULL THEN 1 END),
        ('step_duration_sum', ARRAY[n.step_type], w.new_w),
        ('step_duration', ARRAY[o.step_type, execution.metric_duration_bucket(w.old_w)],
         CASE WHEN w.old_w IS NOT NULL THEN -1 END),
        ('step_duration_sum', ARRAY[o.step_type], -w.old_w)
    ) AS d (metric, labels, value)
    WHERE (o.step_type, o.attempt, o.started_at, o.finished_at)
          IS DISTINCT FROM (n.step_type, n.attempt, n.started_at, n.finished_at)
      AND d.value IS NOT NULL
    GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;
DROP TRIGGER execution_steps_metrics_update ON execution.execution_steps;
CREATE TRIGGER execution_steps_metrics_update AFTER UPDATE ON execution.execution_steps
    REFERENCING OLD TABLE AS gone NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_steps();

-- start_attempt_logged as a function too (planned once per connection, as above). Its
-- step_started events take their executions' row locks in one go, in id order, before any
-- of their ids is drawn (the join below waits for them), instead of order_event's per row.
CREATE FUNCTION execution.start_attempt_batch(items jsonb)
RETURNS TABLE (ord int, id bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH t AS (
        SELECT * FROM jsonb_to_recordset(items) AS t(
            ord int, execution_id uuid, tenant_id text, step_index int, step_name text,
            step_type text, asset_id text, attempt int, retry_count int, actor_id text,
            payload jsonb)
    ), started AS (
        INSERT INTO execution.execution_steps
            (execution_id, tenant_id, step_index, step_name, step_type, target_asset_id, status,
             attempt, retry_count, started_at)
        SELECT execution_id, tenant_id, step_index, step_name, step_type, asset_id, 'running',
               attempt, retry_count, now()
        FROM t ORDER BY ord
        ON CONFLICT (execution_id, step_index, target_asset_id, attempt) DO UPDATE
            SET status = 'running', retry_count = EXCLUDED.retry_count, started_at = now()
            WHERE execution_steps.status = 'pending'
        RETURNING id, execution_id, step_index, target_asset_id, attempt
    ), answered AS (
        SELECT t.*, s.id FROM started s JOIN t
            ON (t.execution_id, t.step_index, t.asset_id, t.attempt)
             = (s.execution_id, s.step_index, s.target_asset_id, s.attempt)
    ), locked AS (
        SELECT x.id FROM execution.executions x
        WHERE x.id = ANY(ARRAY(SELECT execution_id FROM answered))
        ORDER BY x.id
        FOR NO KEY UPDATE OF x
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT a.execution_id, a.tenant_id, 'step_started', NULL, NULL, a.actor_id, a.payload
        FROM answered a JOIN locked l ON l.id = a.execution_id ORDER BY a.ord
    )
    SELECT ord, id FROM answered;
END $$;
