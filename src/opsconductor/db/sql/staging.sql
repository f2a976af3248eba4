-- Staged enablement per tenant (0021_staged_enablement, staging.py).

-- name: get
SELECT level_modes, canary_percent, changed_by, changed_at
FROM execution.tenant_staging WHERE tenant_id = %(tenant_id)s

-- name: lock
-- Serialises two admins changing the same tenant's staging (read, change one part, write).
SELECT pg_advisory_xact_lock(hashtextextended('opsc.staging ' || %(tenant_id)s, 0))

-- name: put
INSERT INTO execution.tenant_staging (tenant_id, level_modes, canary_percent, changed_by)
VALUES (%(tenant_id)s, %(level_modes)s, %(canary_percent)s, %(actor_id)s)
ON CONFLICT (tenant_id) DO UPDATE
SET level_modes = EXCLUDED.level_modes, canary_percent = EXCLUDED.canary_percent,
    changed_by = EXCLUDED.changed_by, changed_at = now()
