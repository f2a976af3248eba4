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
-- priority, then age) and passes over new work one of whose first locks is busy: held by
-- a lock whose lease has not run out, wanted first by a run claimed in the last 5 seconds
-- (it may not hold its lock yet; a run claimed earlier holds it or is past it), or by a
-- run taken earlier in the same claim. Interrupted work is taken as before. Each row
-- taken is locked on its own, SKIP LOCKED, so rows passed over are not locked, and a row
-- another claim is taking is passed over with its hosts counted as busy. The walk stops at
-- claim_limit rows or after reading claim_limit * 4 + 32 rows: a busy host's long queue
-- costs each claim at most that (rows further on wait for a later claim). The statement
-- after the walk is 0039's on the rows taken, which it finds by key, answered in claim
-- order; a resumed run's lease clears its first_locks (its first step is behind it).
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
    -- first locks of the rows taken (or being taken by another claim) and of the runs
    -- claimed in the last 5 seconds (which may not hold their locks yet), as
    -- length(tenant) || ':' || tenant || asset: no two tenants' assets can meet
    taken_locks text[];
    wanted text[];
    budget int := claim_limit * 4 + 32;
BEGIN
    taken_locks := ARRAY(
        SELECT length(q.first_locks_tenant) || ':' || q.first_locks_tenant || a
        FROM execution.execution_queue q, unnest(q.first_locks) AS a
        WHERE q.lease_token IS NOT NULL AND q.first_locks IS NOT NULL
          AND q.leased_at > now() - interval '5 seconds');
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
                  AND l.expires_at >= now());
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
        SELECT execution_id, interrupted_at, action_classes, plan_timeout_s, steps_timeout_s
        FROM execution.execution_queue
        WHERE execution_id = ANY(taken_ids)
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
