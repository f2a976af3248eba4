-- 0030: the event-type index holds only the counted types.
--
-- execution_events_type_idx (0007) indexed every event's type for the metrics' recount
-- of the few counted types (rbac_violation, sla_violation, lock_reaped: COUNTED_EVENTS in
-- db/metrics.py; the roll-up's rebuild reads the same). Every event paid an index entry
-- for it: about six per drained execution, none of them of those types. Partial, it
-- serves the same reads and costs the workers' event writes nothing.
DROP INDEX execution.execution_events_type_idx;
CREATE INDEX execution_events_type_idx ON execution.execution_events (event_type)
    WHERE event_type IN ('rbac_violation', 'sla_violation', 'lock_reaped');
