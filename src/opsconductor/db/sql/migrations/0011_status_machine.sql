-- 0011: the status machines in the database (issue 12).
-- The legal moves of an execution and of a step attempt, as in status_machine.py, with a
-- trigger that refuses any other move whoever writes the row: a raw UPDATE from psql, a
-- bug in a new statement. A NULL from_status is a row's first status (INSERT).
-- tests/test_status_machine_db.py reads these functions and checks they equal the Python
-- tables, so the two cannot drift apart.

CREATE FUNCTION execution.execution_transitions()
RETURNS TABLE (from_status execution.execution_status, to_status execution.execution_status)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    VALUES
        (NULL::execution.execution_status, 'pending_approval'::execution.execution_status),
        (NULL, 'approved'),
        ('pending_approval', 'approved'), ('pending_approval', 'rejected'),
        ('pending_approval', 'cancelled'),
        ('approved', 'queued'), ('approved', 'running'), ('approved', 'cancelled'),
        ('approved', 'pending_approval'),
        ('queued', 'running'), ('queued', 'cancelled'), ('queued', 'timeout'),
        ('queued', 'pending_approval'),
        ('running', 'completed'), ('running', 'failed'), ('running', 'cancelled'),
        ('running', 'timeout'), ('running', 'partial')
$$;

CREATE FUNCTION execution.step_transitions()
RETURNS TABLE (from_status text, to_status text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    VALUES
        (NULL::text, 'pending'::text), (NULL, 'running'), (NULL, 'failed'),
        ('pending', 'running'), ('pending', 'failed'), ('pending', 'skipped'),
        ('pending', 'awaiting_approval'),
        ('awaiting_approval', 'pending'), ('awaiting_approval', 'skipped'),
        ('running', 'completed'), ('running', 'failed'), ('running', 'timeout'),
        ('running', 'cancelled'), ('running', 'skipped')
$$;

CREATE FUNCTION execution.check_execution_transition() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous execution.execution_status;
    allowed text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.status;
    END IF;
    PERFORM 1 FROM execution.execution_transitions() t
    WHERE t.from_status IS NOT DISTINCT FROM previous AND t.to_status = NEW.status;
    IF NOT FOUND THEN
        SELECT string_agg(t.to_status::text, ', ' ORDER BY t.to_status::text) INTO allowed
        FROM execution.execution_transitions() t
        WHERE t.from_status IS NOT DISTINCT FROM previous;
        IF previous IS NULL THEN
            RAISE EXCEPTION 'illegal initial status for execution %: %; a new execution '
                            'starts as %', NEW.id, NEW.status, allowed
                USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                      TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
        END IF;
        RAISE EXCEPTION 'illegal status change for execution %: % -> %; from % it may go to %',
            NEW.id, previous, NEW.status, previous, coalesce(allowed, 'nothing (terminal)')
            USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                  TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION execution.check_step_transition() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous text;
    allowed text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.status;
    END IF;
    PERFORM 1 FROM execution.step_transitions() t
    WHERE t.from_status IS NOT DISTINCT FROM previous AND t.to_status = NEW.status;
    IF NOT FOUND THEN
        SELECT string_agg(t.to_status, ', ' ORDER BY t.to_status) INTO allowed
        FROM execution.step_transitions() t
        WHERE t.from_status IS NOT DISTINCT FROM previous;
        IF previous IS NULL THEN
            RAISE EXCEPTION 'illegal initial status for a step attempt of execution %: %; a '
                            'new attempt starts as %', NEW.execution_id, NEW.status, allowed
                USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                      TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
        END IF;
        RAISE EXCEPTION 'illegal status change for step attempt % of execution %: % -> %; '
                        'from % it may go to %',
            NEW.id, NEW.execution_id, previous, NEW.status, previous,
            coalesce(allowed, 'nothing (terminal)')
            USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                  TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
    END IF;
    RETURN NEW;
END $$;

-- WHEN keeps the common updates (lease renewals, counters, outputs) away from PL/pgSQL.
CREATE TRIGGER executions_status_machine
    BEFORE UPDATE OF status ON execution.executions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION execution.check_execution_transition();
CREATE TRIGGER executions_initial_status
    BEFORE INSERT ON execution.executions
    FOR EACH ROW EXECUTE FUNCTION execution.check_execution_transition();
CREATE TRIGGER execution_steps_status_machine
    BEFORE UPDATE OF status ON execution.execution_steps
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION execution.check_step_transition();
CREATE TRIGGER execution_steps_initial_status
    BEFORE INSERT ON execution.execution_steps
    FOR EACH ROW EXECUTE FUNCTION execution.check_step_transition();
