-- 0039: the claim reads a run's assets one probe per target, and plans no sequential scan.
--
-- claim_batch (0038) found the claimed runs' assets with `asset_id = ANY(<the plan's
-- targets>)` on the tenant's assets. Its plan is made once per pooled connection (generic,
-- 0033) from the statistics of that moment. On an analysed inventory of 100 assets it read
-- all of them for each claimed run (a sequential scan); on one never analysed, through
-- assets_environment_idx, every asset of the tenant. Each distinct target is now looked up
-- alone (a lateral probe on tenant and asset id: LIMIT 1 keeps it from being turned into a
-- join), and the function plans without sequential scans: a connection that planned it on
-- a young database, where every table is a page or two and a scan looks cheapest, would
-- keep that plan while the tables grow. Rows, locks, writes and the answer are 0038's.
-- Without statistics at all (a new database, before autovacuum's first ANALYZE of the
-- assets: the plan is made again then) the planner may still probe another index that
-- leads with the tenant.
CREATE OR REPLACE FUNCTION execution.claim_batch(
    claim_worker text, claim_limit int, claim_lease_s float8, begin_actor text)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json, begun_timeout_s float8)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at, action_classes, plan_timeout_s, steps_timeout_s
        FROM execution.execution_queue
        WHERE lease_token IS NULL AND available_at <= now()
        ORDER BY (interrupted_at IS NULL), priority, available_at
        LIMIT claim_limit
        FOR UPDATE SKIP LOCKED
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE interrupted_at IS NOT NULL))
          AND e.id = p.execution_id AND e.timeout_at IS NOT NULL AND e.status::text = 'running'
        RETURNING e.id, e.timeout_at
    ), startable AS (
        SELECT x.id, b.timeout_s FROM execution.executions x
        JOIN picked p ON p.execution_id = x.id
        CROSS JOIN LATERAL (
            SELECT execution.execution_timeout_s(x.sla_class, p.action_classes,
                                                 p.plan_timeout_s, p.steps_timeout_s)
                   AS timeout_s
            OFFSET 0) AS b
        WHERE x.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE begin_actor IS NOT NULL))
          AND x.status::text = 'queued' AND x.approval_level = 0 AND b.timeout_s IS NOT NULL
        ORDER BY x.id
        FOR NO KEY UPDATE OF x SKIP LOCKED
    ), begun AS (
        UPDATE execution.executions e SET
            status = 'running',
            started_at = coalesce(e.started_at, now()),
            timeout_at = now() + make_interval(secs => s.timeout_s),
            worker_id = claim_worker
        FROM startable s
        WHERE e.id = ANY(ARRAY(SELECT id FROM startable)) AND e.id = s.id
          AND e.status::text = 'queued'
        RETURNING e AS started, e.id, e.tenant_id, s.timeout_s
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT id, tenant_id, 'status_changed', 'queued', 'running', begin_actor, '{}'::jsonb
        FROM begun ORDER BY id
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
    LEFT JOIN begun b ON b.id = picked.execution_id
    WHERE q.execution_id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND e.id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND q.execution_id = picked.execution_id
    -- The execution row comes back with the lease (as begun, when it was), and what the
    -- engine reads to start it (runs.start_context, as the start_context statement reads it).
    RETURNING CASE WHEN b.id IS NULL THEN e ELSE b.started END, q.lease_token, q.attempt_count,
              q.max_attempts, coalesce(claim_lease_s, q.lease_timeout_s) AS lease_s,
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
                   coalesce((SELECT json_agg(x.a ORDER BY (x.a).asset_id)
                             FROM (SELECT DISTINCT w.asset_id
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s,
                                        jsonb_array_elements_text(s) AS w(asset_id)) AS want
                             CROSS JOIN LATERAL (
                                 SELECT a FROM execution.assets a
                                 WHERE a.tenant_id = tn.tenant_id AND a.asset_id = want.asset_id
                                 LIMIT 1) AS x),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context,
              b.timeout_s AS begun_timeout_s;
END $$;
