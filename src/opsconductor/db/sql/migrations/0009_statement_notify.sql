-- 0009: event notifications once per statement instead of once per row (issue 3).
-- The same notifications as before (one per event: id, execution, tenant), sent by one
-- trigger call per statement that reads the new rows from its transition table: a batched
-- statement that writes the events of many executions calls PL/pgSQL once, not per row.

DROP TRIGGER execution_events_notify ON execution.execution_events;
DROP FUNCTION execution.notify_event();

CREATE FUNCTION execution.notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opsc_execution_events', id || ' ' || execution_id || ' ' || tenant_id)
    FROM added ORDER BY id;
    RETURN NULL;
END $$;
CREATE TRIGGER execution_events_notify AFTER INSERT ON execution.execution_events
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.notify_events();
