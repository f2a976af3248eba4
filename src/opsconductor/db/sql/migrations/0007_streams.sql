-- 0007_streams

-- Workers announce themselves here and beat every few seconds; `opsc workers` and /readyz
-- read it. A row whose heartbeat is old belongs to a worker that died without saying so.
CREATE TABLE execution.workers (
    worker_id          text PRIMARY KEY CHECK (worker_id <> ''),
    host               text NOT NULL,
    pid                integer NOT NULL CHECK (pid > 0),
    started_at         timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    concurrency        integer NOT NULL CHECK (concurrency >= 1),
    in_flight          integer NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    stopped_at         timestamptz
);

-- Set once, by whichever process sees the execution past its SLA budget first; the
-- compare-and-set on NULL makes the sla_violation event exactly-once across processes.
ALTER TABLE execution.executions ADD COLUMN sla_violated_at timestamptz;
CREATE INDEX executions_sla_open_idx ON execution.executions (finished_at)
    WHERE sla_violated_at IS NULL;

-- Metrics count these event types at scrape time.
CREATE INDEX execution_events_type_idx ON execution.execution_events (event_type);

-- Stream cursors: the ids of one execution's events must become visible in id order, or a
-- client resuming after id N could miss an N-1 that committed later. Drawing the id while
-- holding the execution's row lock makes id order the commit order of that execution. It
-- is the lock every status change already takes (no new lock, so no new lock cycle), and
-- a transaction that changed the status holds it already.
CREATE FUNCTION execution.order_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM execution.executions WHERE id = NEW.execution_id FOR NO KEY UPDATE;
    NEW.id := nextval(pg_get_serial_sequence('execution.execution_events', 'id'));
    RETURN NEW;
END $$;
CREATE TRIGGER execution_events_order BEFORE INSERT ON execution.execution_events
    FOR EACH ROW EXECUTE FUNCTION execution.order_event();

-- Notifications now carry the event id (readers fetch the masked row once per process)
-- and the execution and tenant it belongs to (so a process fetches only what it streams).
CREATE OR REPLACE FUNCTION execution.notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opsc_execution_events',
                      NEW.id || ' ' || NEW.execution_id || ' ' || NEW.tenant_id);
    RETURN NULL;
END $$;
