-- Event streams (SSE, WebSocket): rows fetched once per process on notification, and the
-- replay of what a client missed, from its cursor.

-- name: events_by_id
SELECT * FROM execution.execution_events WHERE id = ANY(%(ids)s)

-- name: replay_execution
SELECT * FROM execution.execution_events
WHERE execution_id = %(execution_id)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s

-- name: replay_tenant
SELECT * FROM execution.execution_events
WHERE tenant_id = %(tenant_id)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s

-- name: latest_event_id
SELECT coalesce(max(id), 0) AS id FROM execution.execution_events
WHERE tenant_id = %(tenant_id)s
