-- 0043: the claim's walk reads its candidates in one statement.
--
-- 0042's walk fetched the claimable rows one by one through a cursor and, for each, asked
-- in a statement of its own whether a live lock held one of its first locks; that
-- question read every lock of the tenant (the plan filtered the assets after a probe on
-- the tenant alone), so each candidate cost more the more hosts were busy. The candidates
-- now come from one query in claim order, at most claim_limit * 4 + 32 of them as before,
-- each with that answer probed asset by asset on the locks' key. What is taken is
-- unchanged: rows are passed over, taken and locked (SKIP LOCKED) as in 0042, the hosts
-- of a row another claim is taking still count as taken, and the rest of the claim is
-- 0042's but for the execution's timeout when the claim begins a run: written out in the
-- statement instead of one execution_timeout_s call (a function and its own policy read)
-- per row. execution_timeout_s stays for its other callers.
CREATE OR REPLACE FUNCTION execution.claim_batch(
    claim_worker text, claim_limit int, claim_lease_s float8, begin_actor text)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json, begun_timeout_s float8)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
DECLARE
    c record;
    taken_ids uuid[] := '{}';
    -- first locks of the rows taken (or being taken by another claim), as
    -- length(tenant) || ':' || tenant || asset: no two tenants' assets can meet
    taken_locks text[] := '{}';
    wanted text[];
BEGIN
    -- One read of the claimable rows in claim order, unlocked (a row is locked only when
    -- it is taken), each with whether a live lock of another execution holds one of its
    -- first locks: probed asset by asset on the locks' key, so the cost of a row is its
    -- own assets, not every lock of its tenant.
    FOR c IN
        SELECT q.execution_id, q.interrupted_at, q.first_locks, q.first_locks_tenant,
               q.first_locks IS NOT NULL AND q.interrupted_at IS NULL AND EXISTS (
                   SELECT FROM unnest(q.first_locks) AS w(asset_id)
                   CROSS JOIN LATERAL (
                       SELECT FROM execution.execution_locks l
                       WHERE l.tenant_id = q.first_locks_tenant AND l.asset_id = w.asset_id
                         AND l.expires_at >= now()
                         -- its own reservation, from a claim that did not start it
                         AND split_part(l.owner_tag, ':', 1) <> q.execution_id::text
                       LIMIT 1) AS held) AS busy
        FROM execution.execution_queue q
        WHERE q.lease_token IS NULL AND q.available_at <= now()
        ORDER BY (q.interrupted_at IS NULL), q.priority, q.available_at
        LIMIT claim_limit * 4 + 32
    LOOP
        EXIT WHEN cardinality(taken_ids) >= claim_limit;
        CONTINUE WHEN c.busy;
        wanted := NULL;
        IF c.first_locks IS NOT NULL AND c.interrupted_at IS NULL THEN
            wanted := ARRAY(SELECT length(c.first_locks_tenant) || ':' || c.first_locks_tenant || a
                            FROM unnest(c.first_locks) AS a);
            CONTINUE WHEN wanted && taken_locks;
            taken_locks := taken_locks || wanted;
        END IF;
        PERFORM FROM execution.execution_queue q
        WHERE q.execution_id = c.execution_id AND q.lease_token IS NULL
          AND q.available_at <= now()
        FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            taken_ids := taken_ids || c.execution_id;
        END IF;
    END LOOP;
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at, action_classes, plan_timeout_s, steps_timeout_s,
               first_locks, first_locks_tenant
        FROM execution.execution_queue
        WHERE execution_id = ANY(taken_ids)
    ), reserved AS (
        -- The new runs' first locks, held for them until their engine takes them (a
        -- reservation of its execution is its to take: locks.sql) or for 5 seconds: until
        -- then no other claim hands their hosts out. In (tenant, asset) order, as every
        -- lock is taken; only assets still in the inventory (a missing one fails the run)
        -- and only where no live lock of another execution is (another claim's, just taken).
        INSERT INTO execution.execution_locks AS l
            (tenant_id, asset_id, owner_tag, execution_id, expires_at)
        SELECT p.first_locks_tenant, x.asset_id, p.execution_id || ':' || claim_worker, NULL,
               now() + interval '5 seconds'
        FROM picked p
        CROSS JOIN LATERAL unnest(p.first_locks) AS w(asset_id)
        CROSS JOIN LATERAL (
            SELECT a.asset_id FROM execution.assets a
            WHERE a.tenant_id = p.first_locks_tenant AND a.asset_id = w.asset_id LIMIT 1) AS x
        WHERE p.interrupted_at IS NULL
        ORDER BY 1, 2
        ON CONFLICT (tenant_id, asset_id) DO UPDATE SET
            owner_tag = EXCLUDED.owner_tag, execution_id = NULL, acquired_at = now(),
            expires_at = EXCLUDED.expires_at, last_heartbeat_at = now()
        WHERE l.expires_at < now()
           OR split_part(l.owner_tag, ':', 1) = split_part(EXCLUDED.owner_tag, ':', 1)
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE interrupted_at IS NOT NULL))
          AND e.id = p.execution_id AND e.timeout_at IS NOT NULL AND e.status::text = 'running'
        RETURNING e.id, e.timeout_at
    ), startable AS (
        -- execution_timeout_s, written out: no function call per row (its policy read
        -- runs only for a row that needs it)
        SELECT x.id, b.timeout_s FROM execution.executions x
        JOIN picked p ON p.execution_id = x.id
        CROSS JOIN LATERAL (
            SELECT CASE
                WHEN p.steps_timeout_s IS NULL OR p.action_classes IS NULL
                     OR cardinality(p.action_classes) = 0 THEN NULL
                WHEN p.plan_timeout_s IS NOT NULL THEN p.plan_timeout_s
                ELSE (SELECT CASE WHEN count(*) < cardinality(p.action_classes) THEN NULL
                                  ELSE greatest(max(t.execution_timeout_s), p.steps_timeout_s) END
                      FROM execution.timeout_policies t
                      WHERE t.sla_class = x.sla_class AND t.action_class = ANY(p.action_classes))
                END AS timeout_s) AS b
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
    ), claimed AS (
    UPDATE execution.execution_queue q SET
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => coalesce(claim_lease_s, q.lease_timeout_s)),
        worker_id = claim_worker,
        leased_at = now(),
        attempt_count = q.attempt_count + 1,
        recovery_s = q.recovery_s + coalesce(extract(epoch FROM now() - picked.interrupted_at), 0),
        interrupted_at = NULL,
        -- a resumed run's first locks are behind it
        first_locks = CASE WHEN picked.interrupted_at IS NULL THEN q.first_locks END
    FROM picked
    JOIN execution.executions e ON e.id = picked.execution_id
    LEFT JOIN extended x ON x.id = picked.execution_id
    LEFT JOIN begun b ON b.id = picked.execution_id
    WHERE q.execution_id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND e.id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND q.execution_id = picked.execution_id
    -- The execution row comes back with the lease (as begun, when it was), and what the
    -- engine reads to start it (runs.start_context, as the start_context statement reads it).
    RETURNING CASE WHEN b.id IS NULL THEN e ELSE b.started END AS e, q.lease_token, q.attempt_count,
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
              b.timeout_s AS begun_timeout_s
    )
    -- in claim order: a worker starts them in that order
    SELECT * FROM claimed c ORDER BY array_position(taken_ids, (c.e).id);
END $$;
