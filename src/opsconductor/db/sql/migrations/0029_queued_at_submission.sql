-- 0029: a bulk submission stores an execution approved by policy (level 0) already queued.
--
-- It was inserted as approved, then moved to queued by an UPDATE: a second version of the
-- row (all its indexes again), the status trigger and the metric roll-up trigger for
-- nothing (approved -> queued counts nothing). The events stay as they were: `submitted`
-- (to approved) and `status_changed` (approved -> queued), written with the row. Created
-- queued is only for what needs no approval: at level 1-3 it must wait for a human.

CREATE OR REPLACE FUNCTION execution.execution_transitions()
RETURNS TABLE (from_status execution.execution_status, to_status execution.execution_status)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    VALUES
        (NULL::execution.execution_status, 'pending_approval'::execution.execution_status),
        (NULL, 'approved'), (NULL, 'queued'),
        ('pending_approval', 'approved'), ('pending_approval', 'rejected'),
        ('pending_approval', 'cancelled'),
        ('approved', 'queued'), ('approved', 'running'), ('approved', 'cancelled'),
        ('approved', 'pending_approval'),
        ('queued', 'running'), ('queued', 'cancelled'), ('queued', 'timeout'),
        ('queued', 'pending_approval'),
        ('running', 'completed'), ('running', 'failed'), ('running', 'cancelled'),
        ('running', 'timeout'), ('running', 'partial')
$$;

CREATE OR REPLACE FUNCTION execution.check_execution_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    previous execution.execution_status;
    allowed text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.status;
    ELSIF NEW.status = 'queued' AND NEW.approval_level <> 0 THEN
        RAISE EXCEPTION 'illegal initial status for execution %: queued at approval level %; '
                        'only level 0 (approved by policy) may be queued at submission',
            NEW.id, NEW.approval_level
            USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                  TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
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
