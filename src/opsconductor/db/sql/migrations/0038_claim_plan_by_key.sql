-- 0038: the claim's plan finds its rows by key whatever the statistics say; the events'
-- key to their execution is checked once per statement (below).
--
-- claim_batch (0037) is planned once per connection, generically (0033), from the
-- statistics of that moment; its batch size is a parameter, so the planner takes the picked
-- rows for a tenth of the queue. Once autovacuum had analysed a queue of a few thousand
-- rows (in a drain, within a minute; in production, always), every claim of that
-- connection read the executions twice and the queue once by sequential scan, for hash
-- joins against 20 picked rows (auto_explain on a 3,000-execution drain: 2,496 rows read
-- per scan, three scans per claim). And where the statistics were older than the data,
-- the plan read the queued executions by the partial index on status (executions_live_idx:
-- "status = 'queued'", thought to be a few rows, all 3,000 read).
--
-- Now, as in end_run_batch and start_attempt_batch, each table is reached through
-- `= ANY(ARRAY(<the batch's ids>))` on its primary key, an index scan whatever the
-- estimates; and the status tests on executions compare the status as text, which no
-- partial index on status can answer, so they stay filters on the rows found by key. The
-- statement is otherwise 0037's: the same rows, locks in the same order (queue rows, then
-- executions in id order, SKIP LOCKED), writes and answer. The budget's function is called
-- once per row (OFFSET 0 keeps the sub-select whole; it was evaluated twice, in the filter
-- and in the output). Server instructions per 20-row claim (perf stat on the backend,
-- 3,000 queued no-op executions): 35.7 M before and 17.8 M after on an analysed copy;
-- 17.7 M before and 18.6 M after on one never analysed (its plan found them by key already).
CREATE OR REPLACE FUNCTION execution.claim_batch(
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
                   coalesce((SELECT json_agg(a ORDER BY a.asset_id) FROM execution.assets a
                             WHERE a.tenant_id = tn.tenant_id
                               AND a.asset_id = ANY(ARRAY(
                                   SELECT jsonb_array_elements_text(s)
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s))),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context,
              b.timeout_s AS begun_timeout_s;
END $$;

-- The events' key to their execution, checked once per statement instead of once per row.
-- The foreign key ran its check query (SELECT ... FOR KEY SHARE) for every event: about
-- four events per drained execution, 154,000 server instructions per execution in all
-- (perf stat on a drain's statements, 6.6% of the server's work). The same check for a
-- whole statement's events runs in the trigger that already reads them (for the
-- notifications): the executions they name must exist, locked FOR KEY SHARE as the key
-- locked them, so that an execution cannot be deleted between the check and the commit; an
-- event whose execution is missing (or was deleted by a transaction this one waited for)
-- fails the statement with the key's error (SQLSTATE 23503). What the key did besides, the
-- triggers below do: an execution's events go with it (ON DELETE CASCADE), with a TRUNCATE
-- too, and an execution's id does not change under its events.
-- tests/test_event_key.py checks each of these. Net: 103,000 instructions less per
-- drained execution (4.4%).
ALTER TABLE execution.execution_events DROP CONSTRAINT execution_events_execution_id_fkey;

-- Its statements are planned at a connection's first insert of events, maybe on a young
-- database where a scan of every execution looks cheaper: by key, whatever it looks like.
CREATE OR REPLACE FUNCTION execution.notify_events() RETURNS trigger
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    wanted int;
    found int;
BEGIN
    SELECT count(DISTINCT execution_id) INTO wanted FROM added;
    PERFORM FROM execution.executions x
    WHERE x.id = ANY(ARRAY(SELECT execution_id FROM added))
    FOR KEY SHARE OF x;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < wanted THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'insert or update on table "execution_events" violates foreign key '
                      'constraint "execution_events_execution_id_fkey"',
            DETAIL = 'An event names an execution that does not exist.';
    END IF;
    PERFORM pg_notify('opsc_execution_events', id || ' ' || execution_id || ' ' || tenant_id)
    FROM added ORDER BY id;
    RETURN NULL;
END $$;

CREATE FUNCTION execution.delete_events_of_executions() RETURNS trigger
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE execution.execution_events;
    ELSE
        DELETE FROM execution.execution_events v
        WHERE v.execution_id = ANY(ARRAY(SELECT id FROM gone));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER executions_events_cascade AFTER DELETE ON execution.executions
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION execution.delete_events_of_executions();
CREATE TRIGGER executions_events_truncate AFTER TRUNCATE ON execution.executions
    FOR EACH STATEMENT EXECUTE FUNCTION execution.delete_events_of_executions();

-- Only an UPDATE that names the id column calls it (none of the system's does).
CREATE FUNCTION execution.keep_id_of_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM execution.execution_events v WHERE v.execution_id = OLD.id) THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'update or delete on table "executions" violates foreign key constraint '
                      '"execution_events_execution_id_fkey" on table "execution_events"';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER executions_id_of_events BEFORE UPDATE OF id ON execution.executions
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION execution.keep_id_of_events();
