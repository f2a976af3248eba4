-- Notification channels, the outbox of deliveries and its cursor (0025_notifications).

-- name: add_channel
-- A new channel hears of events from now on: since_event_id is the newest id drawn.
INSERT INTO execution.notification_channels
    (tenant_id, name, kind, config, secret_ref, events, since_event_id, created_by)
VALUES (%(tenant_id)s, %(name)s, %(kind)s, %(config)s, %(secret_ref)s, %(events)s,
        coalesce(pg_sequence_last_value(
            pg_get_serial_sequence('execution.execution_events', 'id')), 0),
        %(actor_id)s)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING *

-- name: list_channels
SELECT * FROM execution.notification_channels WHERE tenant_id = %(tenant_id)s ORDER BY name

-- name: get_channel
SELECT * FROM execution.notification_channels
WHERE tenant_id = %(tenant_id)s AND name = %(name)s

-- name: remove_channel
DELETE FROM execution.notification_channels WHERE tenant_id = %(tenant_id)s AND name = %(name)s
RETURNING id, kind

-- name: lock_cursor
-- One dispatcher fills at a time; the others skip this round's filling.
SELECT done_id, horizon_id,
       horizon_xid IS NOT NULL
       AND pg_snapshot_xmin(pg_current_snapshot()) >= horizon_xid AS settled
FROM execution.notification_cursor FOR UPDATE SKIP LOCKED

-- name: any_channel
SELECT EXISTS (SELECT 1 FROM execution.notification_channels) AS found

-- name: fill
-- Every event after the cursor that a channel of its tenant subscribes to becomes one
-- delivery; rows already made by an earlier round are left alone (ON CONFLICT).
INSERT INTO execution.notification_deliveries
    (channel_id, tenant_id, event_kind, event_id, execution_id)
SELECT c.id, e.tenant_id, r.kind, e.id, e.execution_id
FROM execution.execution_events e
JOIN jsonb_to_recordset(%(rules)s::jsonb) AS r(event_type text, to_status text, kind text)
  ON r.event_type = e.event_type AND (r.to_status IS NULL OR r.to_status = e.to_status::text)
JOIN execution.notification_channels c
  ON c.tenant_id = e.tenant_id AND r.kind = ANY (c.events) AND e.id > c.since_event_id
WHERE e.id > %(after)s
ORDER BY e.id
ON CONFLICT (channel_id, event_id) DO NOTHING

-- name: last_drawn_event_id
SELECT coalesce(pg_sequence_last_value(
    pg_get_serial_sequence('execution.execution_events', 'id')), 0) AS id

-- name: move_cursor
-- horizon_xid comes from this statement's snapshot, taken after horizon_id was read (an
-- earlier statement): every transaction that drew an id up to it has an older xid.
UPDATE execution.notification_cursor SET
    done_id = greatest(done_id, %(done_id)s), horizon_id = %(horizon_id)s,
    horizon_xid = pg_snapshot_xmax(pg_current_snapshot())

-- name: add_test_delivery
-- Born claimed (first try under way, leased): the caller sends it at once, no worker does.
INSERT INTO execution.notification_deliveries
    (channel_id, tenant_id, event_kind, attempts, next_attempt_at)
VALUES (%(channel_id)s, %(tenant_id)s, 'test', 1, now() + make_interval(secs => %(lease_s)s))
RETURNING id

-- name: claim_due
-- Due deliveries, taken for lease_s: a dispatcher that dies while sending leaves them to be
-- tried again after it (at least once; receivers drop duplicates by the payload's id).
UPDATE execution.notification_deliveries d
SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => %(lease_s)s)
WHERE d.id IN (
    SELECT id FROM execution.notification_deliveries
    WHERE state = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING d.id

-- name: delivery_context
-- What a message is built from: the delivery, its channel, its event and the execution.
SELECT d.id, d.tenant_id, d.event_kind, d.event_id, d.attempts, d.created_at,
       c.id AS channel_id, c.name, c.kind, c.config, c.secret_ref,
       v.payload AS event_payload, v.created_at AS event_at,
       x.id AS execution_id, x.plan_name, x.status, x.status_reason, x.plan_snapshot
FROM execution.notification_deliveries d
JOIN execution.notification_channels c ON c.id = d.channel_id
LEFT JOIN execution.execution_events v ON v.id = d.event_id
LEFT JOIN execution.executions x ON x.id = d.execution_id
WHERE d.id = %(id)s

-- name: record_attempt
WITH tried AS (
    INSERT INTO execution.notification_attempts (delivery_id, attempt, ok, detail)
    SELECT id, attempts, %(ok)s, %(detail)s FROM execution.notification_deliveries
    WHERE id = %(id)s
)
UPDATE execution.notification_deliveries SET
    state = CASE WHEN %(ok)s THEN 'delivered'
                 WHEN attempts >= %(max_attempts)s OR %(final)s THEN 'failed'
                 ELSE 'pending' END,
    last_error = CASE WHEN %(ok)s THEN NULL ELSE %(detail)s END,
    next_attempt_at = now() + make_interval(secs => %(backoff_s)s),
    finished_at = CASE WHEN %(ok)s OR attempts >= %(max_attempts)s OR %(final)s
                       THEN now() END
WHERE id = %(id)s
RETURNING state

-- name: list_deliveries
SELECT d.*, c.name AS channel_name
FROM execution.notification_deliveries d
JOIN execution.notification_channels c ON c.id = d.channel_id
WHERE d.tenant_id = %(tenant_id)s AND (%(channel)s::text IS NULL OR c.name = %(channel)s)
ORDER BY d.id DESC
LIMIT %(limit)s

-- name: list_attempts
SELECT delivery_id, attempt, ok, detail, at FROM execution.notification_attempts
WHERE delivery_id = ANY (%(ids)s::bigint[])
ORDER BY delivery_id, id
