-- Per-asset lease locks (SPEC 6.2). A lock is held while its lease runs; the holder keeps it
-- alive with heartbeats, and a lock whose lease ran out belongs to nobody: the next taker
-- overwrites it (and the reaper deletes it).

-- name: try_acquire
INSERT INTO execution.execution_locks
    (tenant_id, asset_id, owner_tag, execution_id, expires_at)
VALUES (%(tenant_id)s, %(asset_id)s, %(owner_tag)s, %(execution_id)s,
        now() + make_interval(secs => %(ttl_s)s))
ON CONFLICT (tenant_id, asset_id) DO UPDATE SET
    owner_tag = EXCLUDED.owner_tag, execution_id = EXCLUDED.execution_id,
    acquired_at = now(), expires_at = EXCLUDED.expires_at, last_heartbeat_at = now()
WHERE execution_locks.expires_at < now() OR execution_locks.owner_tag = EXCLUDED.owner_tag
RETURNING asset_id

-- name: holder
SELECT owner_tag, execution_id, acquired_at, expires_at, last_heartbeat_at
FROM execution.execution_locks
WHERE tenant_id = %(tenant_id)s AND asset_id = %(asset_id)s

-- name: heartbeat
UPDATE execution.execution_locks SET
    expires_at = now() + make_interval(secs => %(ttl_s)s), last_heartbeat_at = now()
WHERE tenant_id = %(tenant_id)s AND asset_id = ANY(%(asset_ids)s) AND owner_tag = %(owner_tag)s
RETURNING asset_id

-- name: release
DELETE FROM execution.execution_locks
WHERE tenant_id = %(tenant_id)s AND asset_id = ANY(%(asset_ids)s) AND owner_tag = %(owner_tag)s

-- name: reap_expired
DELETE FROM execution.execution_locks WHERE expires_at < now()
RETURNING tenant_id, asset_id, owner_tag, execution_id, expires_at

-- name: list_locks
SELECT * FROM execution.execution_locks WHERE tenant_id = %(tenant_id)s ORDER BY asset_id
