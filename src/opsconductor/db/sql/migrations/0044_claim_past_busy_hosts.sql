-- 0044: work behind a long queue for busy hosts is reached.
--
-- The claim reads at most claim_limit * 4 + 32 claimable rows (0042, 0043). When more runs
-- than that wait at the head of the queue for hosts that are busy (a host down for hours
-- under a job scheduled every minute, a bulk of plans for one host), every claim read only
-- them and passed them over: no other host's work could start until that queue shrank.
-- Now a claim that took nothing after reading its whole budget reads further, up to
-- 10,000 rows, passing over in the query itself the rows whose first hosts it has just
-- found busy (by asset id, whatever the tenant: a row of another tenant's asset of the same
-- name is passed over in this second read only, and met again by a later claim), and
-- treating the others as the first read does. It does so at most once a second on a
-- connection (a session setting holds the time), so a queue whose every host is busy costs
-- that read once a second per connection at most. The rest is 0043's claim.
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
    rows refcursor;
    c record;
    taken_ids uuid[] := '{}';
    -- first locks of the rows taken (or being taken by another claim), as
    -- length(tenant) || ':' || tenant || asset: no two tenants' assets can meet
    taken_locks text[] := '{}';
    wanted text[];
    budget int := claim_limit * 4 + 32;
    seen int;
    -- the first locks of the rows found busy (plain asset ids, whatever the tenant)
    busy_assets text[] := '{}';
    deep_at text;
BEGIN
    FOR pass IN 1..2 LOOP
        IF pass = 1 THEN
            -- The claimable rows in claim order, unlocked (a row is locked only when it is
            -- taken), each with whether a live lock of another execution holds one of its
            -- first locks, probed asset by asset on the locks' key (0043).
            OPEN rows FOR
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
                LIMIT budget;
        ELSE
            -- Nothing taken, the whole budget read, every row passed over: perhaps a long
            -- queue for busy hosts stands in front of other hosts' work. Read further, up to
            -- 10,000 rows, passing over at C speed the rows whose hosts were just found
            -- busy (without asking again), at most once a second on this connection (a
            -- claim that finds nothing looks again within a second: worker.py).
            EXIT WHEN cardinality(taken_ids) > 0 OR seen < budget
                   OR cardinality(busy_assets) = 0;
            deep_at := current_setting('opsconductor.claim_deep_at', true);
            EXIT WHEN CASE WHEN coalesce(deep_at, '') = '' THEN false  -- not yet read deep
                           ELSE deep_at::timestamptz > clock_timestamp() - interval '1 second'
                      END;
            PERFORM set_config('opsconductor.claim_deep_at', clock_timestamp()::text, false);
            OPEN rows FOR
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
                FROM (SELECT q.execution_id, q.interrupted_at, q.first_locks,
                             q.first_locks_tenant, q.priority, q.available_at
                      FROM execution.execution_queue q
                      WHERE q.lease_token IS NULL AND q.available_at <= now()
                      ORDER BY (q.interrupted_at IS NULL), q.priority, q.available_at
                      OFFSET budget LIMIT 10000) AS q
                WHERE q.first_locks IS NULL OR NOT (q.first_locks && busy_assets)
                ORDER BY (q.interrupted_at IS NULL), q.priority, q.available_at;
        END IF;
        seen := 0;
        LOOP
            EXIT WHEN cardinality(taken_ids) >= claim_limit OR seen >= budget;
            FETCH rows INTO c;
            EXIT WHEN NOT FOUND;
            seen := seen + 1;
            IF c.busy THEN
                busy_assets := busy_assets || c.first_locks;
                CONTINUE;
            END IF;
            wanted := NULL;
            IF c.first_locks IS NOT NULL AND c.interrupted_at IS NULL THEN
                wanted := ARRAY(SELECT length(c.first_locks_tenant) || ':' || c.first_locks_tenant
                                       || a
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
        CLOSE rows;
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
