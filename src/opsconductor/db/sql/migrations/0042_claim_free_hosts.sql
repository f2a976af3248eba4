-- 0042: the claim leaves new work whose host is busy in the queue.
--
-- Every run takes a per-asset lock (execution_locks) and waits for it up to lock_wait_s,
-- then fails its step with asset_locked. The claim took queued runs by priority and age
-- whatever their hosts: a run whose host another run held took a worker slot only to wait
-- (a drain of plans over 100 assets got slower as the concurrency grew past the hosts
-- free), and a long queue for one host failed asset_locked instead of waiting its turn.
-- Now each queue row carries the assets its run's first lock takes (first_locks.py) and
-- their tenant, set at enqueue; NULL (rows queued before, work not covered) filters
-- nothing. The claim walks the claimable rows in its order (recovered work first, then
-- priority, then age) and passes over new work one of whose first locks is held by a
-- live lock (its lease not run out) or wanted by a run taken earlier in the same claim.
-- Interrupted work is taken as before. Each row taken is locked on its own, SKIP LOCKED,
-- so rows passed over are not locked, and a row another claim is taking is passed over
-- with its hosts counted as taken. The walk stops at claim_limit rows or after reading
-- claim_limit * 4 + 32 rows: a busy host's long queue costs each claim at most that (rows
-- further on wait for a later claim). A run claimed but not yet holding its lock would
-- leave its host looking free: the claim reserves the new runs' first locks for 5
-- seconds (owner '<execution id>:<worker>' as the engine's, execution_id NULL), which
-- their engine takes over (locks.sql); a dead worker's are reaped with its other locks.
-- The statement after the walk is 0039's on the rows taken, which it finds by key, with
-- the reservations, answered in claim order; a resumed run's lease clears its first_locks.
ALTER TABLE execution.execution_queue
    ADD COLUMN first_locks text[],
    ADD COLUMN first_locks_tenant text;

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
    -- unlocked: a row is locked only when it is taken
    candidates CURSOR FOR
        SELECT q.execution_id, q.interrupted_at, q.first_locks, q.first_locks_tenant
        FROM execution.execution_queue q
        WHERE q.lease_token IS NULL AND q.available_at <= now()
        ORDER BY (q.interrupted_at IS NULL), q.priority, q.available_at;
    c record;
    taken_ids uuid[] := '{}';
    -- first locks of the rows taken (or being taken by another claim), as
    -- length(tenant) || ':' || tenant || asset: no two tenants' assets can meet
    taken_locks text[] := '{}';
    wanted text[];
    budget int := claim_limit * 4 + 32;
BEGIN
    OPEN candidates;
    WHILE cardinality(taken_ids) < claim_limit AND budget > 0 LOOP
        FETCH candidates INTO c;
        EXIT WHEN NOT FOUND;
        budget := budget - 1;
        wanted := NULL;
        IF c.first_locks IS NOT NULL AND c.interrupted_at IS NULL THEN
            wanted := ARRAY(SELECT length(c.first_locks_tenant) || ':' || c.first_locks_tenant || a
                            FROM unnest(c.first_locks) AS a);
            CONTINUE WHEN wanted && taken_locks;
            CONTINUE WHEN EXISTS (
                SELECT FROM execution.execution_locks l
                WHERE l.tenant_id = c.first_locks_tenant AND l.asset_id = ANY(c.first_locks)
                  AND l.expires_at >= now()
                  -- its own reservation, from a claim that did not start it
                  AND split_part(l.owner_tag, ':', 1) <> c.execution_id::text);
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
    CLOSE candidates;
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
