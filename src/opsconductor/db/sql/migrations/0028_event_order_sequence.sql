-- 0028: an event's id drawn from its sequence by name, not looked up per row.
--
-- order_event (0007) runs for every event row. It found the id sequence through
-- pg_get_serial_sequence() on each call, a catalog look-up that cost about 8 us of server
-- time per event (six per execution; measured by swapping the function on copies of one
-- database, the way bench/rollup.py swaps triggers). The sequence is the column's
-- own, named when the table was made: a regclass constant resolves once per plan.
CREATE OR REPLACE FUNCTION execution.order_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM execution.executions WHERE id = NEW.execution_id FOR NO KEY UPDATE;
    NEW.id := nextval('execution.execution_events_id_seq'::regclass);
    RETURN NEW;
END $$;
