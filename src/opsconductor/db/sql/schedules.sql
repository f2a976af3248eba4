-- Schedules of jobs and the slots they fired (services/schedules.py).

-- name: insert_schedule
INSERT INTO execution.schedules
    (id, tenant_id, name, job_name, job_version, cron, timezone, params, missed, next_fire_at,
     created_by)
VALUES (%(id)s, %(tenant_id)s, %(name)s, %(job_name)s, %(job_version)s, %(cron)s, %(timezone)s,
        %(params)s, %(missed)s, %(next_fire_at)s, %(actor_id)s)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING *

-- name: list_schedules
SELECT s.*, f.slot AS last_slot, f.execution_id AS last_execution_id, f.error AS last_error
FROM execution.schedules s
LEFT JOIN LATERAL (
    SELECT slot, execution_id, error FROM execution.schedule_fires
    WHERE schedule_id = s.id ORDER BY slot DESC LIMIT 1) f ON true
WHERE s.tenant_id = %(tenant_id)s AND (%(name)s::text IS NULL OR s.name = %(name)s)
ORDER BY s.name

-- name: set_paused
UPDATE execution.schedules SET paused = %(paused)s,
    next_fire_at = coalesce(%(next_fire_at)s, next_fire_at)
WHERE tenant_id = %(tenant_id)s AND name = %(name)s
RETURNING *

-- name: delete_schedule
DELETE FROM execution.schedules WHERE tenant_id = %(tenant_id)s AND name = %(name)s
RETURNING id

-- name: due_ids
SELECT id FROM execution.schedules
WHERE NOT paused AND next_fire_at <= now()
ORDER BY next_fire_at LIMIT %(limit)s

-- name: lock_due
-- Another worker firing it holds the lock: skip it (it moves next_fire_at on when done).
SELECT *, now() AS db_now FROM execution.schedules
WHERE id = %(id)s AND NOT paused AND next_fire_at <= now()
FOR UPDATE SKIP LOCKED

-- name: claim_slot
-- The primary key (schedule_id, slot) fires a slot once, whatever the number of workers.
INSERT INTO execution.schedule_fires (schedule_id, slot, catch_up, fired_by)
VALUES (%(id)s, %(slot)s, %(catch_up)s, %(fired_by)s)
ON CONFLICT DO NOTHING
RETURNING slot

-- name: fire_result
UPDATE execution.schedule_fires SET execution_id = %(execution_id)s, error = %(error)s
WHERE schedule_id = %(id)s AND slot = %(slot)s

-- name: advance
UPDATE execution.schedules SET next_fire_at = %(next_fire_at)s WHERE id = %(id)s

-- name: fires
SELECT f.*, s.name FROM execution.schedule_fires f
JOIN execution.schedules s ON s.id = f.schedule_id
WHERE s.tenant_id = %(tenant_id)s AND s.name = %(name)s
ORDER BY f.slot DESC LIMIT %(limit)s
