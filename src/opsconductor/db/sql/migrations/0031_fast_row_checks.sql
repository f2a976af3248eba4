-- 0031: the row triggers every write pays for, off PL/pgSQL in the common case.
--
-- Measured on a scratch copy, 20,000 rows per statement (load ~1.5): the status machine's
-- trigger cost ~47 us per execution status change (1,072 ms against 133 ms without it)
-- and ~30 us per new step attempt (662 against 59 ms): a PL/pgSQL call that scans the
-- transition table function for every row. The drain pays it four times per execution,
-- a submission twice. The legal moves now sit in each trigger's WHEN clause as a constant
-- array of 'from>to' strings, built below from the same transition functions (so those
-- stay the one table, checked against status_machine.py by tests); the PL/pgSQL function,
-- unchanged, runs only for an illegal move, to refuse it with its message.
--
-- order_event locks the execution row for each event so that one execution's event ids
-- commit in id order (0007). An execution created in the same transaction is invisible to
-- every other transaction, so no other event of it can interleave: a bulk submission
-- (db/bulk.py) says so for the rest of its transaction with the transaction-local setting
-- opsconductor.events_of_new_executions = 'on', and its events keep the ids they drew.

DO $$
DECLARE
    moves text[];
    first text[];
BEGIN
    SELECT array_agg(coalesce(from_status::text, '') || '>' || to_status::text ORDER BY 1)
    INTO moves FROM execution.execution_transitions() WHERE from_status IS NOT NULL;
    SELECT array_agg('>' || to_status::text ORDER BY 1)
    INTO first FROM execution.execution_transitions() WHERE from_status IS NULL;
    DROP TRIGGER executions_status_machine ON execution.executions;
    EXECUTE format($t$
        CREATE TRIGGER executions_status_machine
            BEFORE UPDATE OF status ON execution.executions
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                AND NOT (OLD.status::text || '>' || NEW.status::text) = ANY (%L::text[]))
            EXECUTE FUNCTION execution.check_execution_transition()$t$, moves);
    -- queued at submission is only for level 0 (0029): anything else goes to the function
    DROP TRIGGER executions_initial_status ON execution.executions;
    EXECUTE format($t$
        CREATE TRIGGER executions_initial_status
            BEFORE INSERT ON execution.executions
            FOR EACH ROW WHEN (NOT ('>' || NEW.status::text) = ANY (%L::text[])
                OR (NEW.status = 'queued' AND NEW.approval_level <> 0))
            EXECUTE FUNCTION execution.check_execution_transition()$t$, first);

    SELECT array_agg(from_status || '>' || to_status ORDER BY 1)
    INTO moves FROM execution.step_transitions() WHERE from_status IS NOT NULL;
    SELECT array_agg('>' || to_status ORDER BY 1)
    INTO first FROM execution.step_transitions() WHERE from_status IS NULL;
    DROP TRIGGER execution_steps_status_machine ON execution.execution_steps;
    EXECUTE format($t$
        CREATE TRIGGER execution_steps_status_machine
            BEFORE UPDATE OF status ON execution.execution_steps
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                AND NOT (OLD.status || '>' || NEW.status) = ANY (%L::text[]))
            EXECUTE FUNCTION execution.check_step_transition()$t$, moves);
    DROP TRIGGER execution_steps_initial_status ON execution.execution_steps;
    EXECUTE format($t$
        CREATE TRIGGER execution_steps_initial_status
            BEFORE INSERT ON execution.execution_steps
            FOR EACH ROW WHEN (NEW.status IS NULL
                OR NOT ('>' || NEW.status) = ANY (%L::text[]))
            EXECUTE FUNCTION execution.check_step_transition()$t$, first);
END $$;

DROP TRIGGER execution_events_order ON execution.execution_events;
CREATE TRIGGER execution_events_order BEFORE INSERT ON execution.execution_events
    FOR EACH ROW
    WHEN (current_setting('opsconductor.events_of_new_executions', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION execution.order_event();
