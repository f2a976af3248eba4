-- 0037: the claim starts the new work it leases (queued -> running), as the engine's
-- begin did one round trip later (db/executions.py transition, engine/core.py _begin).
--
-- A worker sent, per execution, the claim and then the begin; the begin needs only what the
-- claim already holds: the row (locked), the worker and the execution's budget. The budget
-- is policies.execution_timeout: the plan's part of it (policies.plan_timeout) is stored
-- with the queue row at enqueue, the policies' part is read at the claim from the same
-- table the engine reads (tests/test_claim_begin.py checks the two agree case by case).
-- Rows queued before this migration have no stored part (NULL): the engine begins them.
ALTER TABLE execution.execution_queue
    ADD COLUMN action_classes  text[],
    ADD COLUMN plan_timeout_s  double precision,
    ADD COLUMN steps_timeout_s double precision;

-- policies.PlanTimeout.resolve in SQL: the plan's own timeout, else the longest policy
-- budget of its action classes but no less than its explicit step timeouts. NULL where
-- the engine's matrix look-up would fail (a class without a policy) or nothing was stored.
-- PL/pgSQL: its statement is planned once per connection, not on every claim.
CREATE FUNCTION execution.execution_timeout_s(
    sla execution.sla_class, classes text[], plan_s float8, steps_s float8)
RETURNS float8 LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF steps_s IS NULL OR classes IS NULL OR cardinality(classes) = 0 THEN
        RETURN NULL;
    END IF;
    IF plan_s IS NOT NULL THEN
        RETURN plan_s;
    END IF;
    RETURN (SELECT CASE WHEN count(*) < cardinality(classes) THEN NULL
                        ELSE greatest(max(p.execution_timeout_s), steps_s) END
            FROM execution.timeout_policies p
            WHERE p.sla_class = sla AND p.action_class = ANY(classes));
END $$;

-- claim_batch (0033), and with begin_actor it also begins what it claims that the engine
-- would begin straight away: queued (not a resume), approval level 0 (nothing for
-- gate.still_valid to re-check), budget known. The move is transition_batch's for
-- queued -> running (the columns it changes there; the others it sets to themselves): the
-- same status-machine trigger, roll-up and status_changed event (actor, empty payload). Rows another transaction holds (a cancel
-- about to delete the queue row this statement holds) are skipped, not waited for: they
-- go the engine's way. Events: each is for a row this statement has just updated and
-- holds locked to its commit (as transition_batch's). The three-argument claim_batch stays
-- for workers of the previous version during a rolling upgrade (they begin what they claim).
CREATE FUNCTION execution.claim_batch(
    claim_worker text, claim_limit int, claim_lease_s float8, begin_actor text)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json, begun_timeout_s float8)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
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
        WHERE e.id = p.execution_id AND p.interrupted_at IS NOT NULL AND e.timeout_at IS NOT NULL
          AND e.status = 'running'
        RETURNING e.id, e.timeout_at
    ), startable AS (
        SELECT x.id, b.timeout_s FROM execution.executions x
        JOIN picked p ON p.execution_id = x.id
        CROSS JOIN LATERAL (
            SELECT execution.execution_timeout_s(x.sla_class, p.action_classes,
                                                 p.plan_timeout_s, p.steps_timeout_s)
                   AS timeout_s) AS b
        WHERE begin_actor IS NOT NULL AND x.status = 'queued' AND x.approval_level = 0
          AND b.timeout_s IS NOT NULL
        ORDER BY x.id
        FOR NO KEY UPDATE OF x SKIP LOCKED
    ), begun AS (
        UPDATE execution.executions e SET
            status = 'running',
            started_at = coalesce(e.started_at, now()),
            timeout_at = now() + make_interval(secs => s.timeout_s),
            worker_id = claim_worker
        FROM startable s
        WHERE e.id = s.id AND e.status = 'queued'
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
    WHERE q.execution_id = picked.execution_id
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
                   coalesce((SELECT json_agg(a ORDER BY a.asset_id) FROM execution.assets a
                             WHERE a.tenant_id = tn.tenant_id
                               AND a.asset_id = ANY(ARRAY(
                                   SELECT jsonb_array_elements_text(s)
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s))),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context,
              b.timeout_s AS begun_timeout_s;
END $$;
