-- The tenant-level audit trail of administrative actions (0012_audit_events).

-- name: record
INSERT INTO execution.audit_events (tenant_id, actor_id, event_type, payload)
VALUES (%(tenant_id)s, %(actor_id)s, %(event_type)s, %(payload)s)
RETURNING id, tenant_id, actor_id, event_type, payload, created_at

-- name: list_events
SELECT id, tenant_id, actor_id, event_type, payload, created_at FROM execution.audit_events
WHERE tenant_id = %(tenant_id)s
  AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s)
ORDER BY id DESC
LIMIT %(limit)s
