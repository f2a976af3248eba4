-- Per-asset lease locks. A lock is held while its lease runs; the holder keeps it
-- alive with heartbeats, and a lock whose lease ran out belongs to nobody: the next taker
-- overwrites it (and the reaper deletes it).

-- name: try_acquire
-- Set-based (db/batching.py): one row per wanted lock; a row back (its ord) for each lock
-- taken. Inserted in (tenant, asset) order, as LeaseHold takes them, so two batches
-- wanting the same assets lock them in the same order. A lock the claim reserved for this
-- execution (no execution_id, its owner's tag leads with this execution's id: migration
-- 0042) is its own to take, whichever worker runs it.
WITH t AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb) AS t(
        ord int, tenant_id text, asset_id text, owner_tag text, execution_id uuid, ttl_s float8)
), taken AS (
    INSERT INTO execution.execution_locks
        (tenant_id, asset_id, owner_tag, execution_id, expires_at)
    SELECT tenant_id, asset_id, owner_tag, execution_id, now() + make_interval(secs => ttl_s)
    FROM t ORDER BY tenant_id, asset_id
    ON CONFLICT (tenant_id, asset_id) DO UPDATE SET
        owner_tag = EXCLUDED.owner_tag, execution_id = EXCLUDED.execution_id,
        acquired_at = now(), expires_at = EXCLUDED.expires_at, last_heartbeat_at = now()
    WHERE execution_locks.expires_at < now() OR execution_locks.owner_tag = EXCLUDED.owner_tag
       OR (execution_locks.execution_id IS NULL
           AND split_part(execution_locks.owner_tag, ':', 1) = EXCLUDED.execution_id::text)
    RETURNING tenant_id, asset_id, owner_tag
)
SELECT t.ord, t.asset_id FROM taken JOIN t USING (tenant_id, asset_id, owner_tag)

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
-- Set-based (db/batching.py): one row per lock to let go of, only where it is still ours.
DELETE FROM execution.execution_locks l
USING jsonb_to_recordset(%(items)s::jsonb) AS t(tenant_id text, asset_id text, owner_tag text)
WHERE l.tenant_id = t.tenant_id AND l.asset_id = t.asset_id AND l.owner_tag = t.owner_tag

-- name: reap_expired
-- Expired locks, and every lock of a worker declared dead (owner_tag is
-- "<execution id>:<worker id>"): executions waiting for those assets go on at once.
DELETE FROM execution.execution_locks l
WHERE l.expires_at < now()
   OR EXISTS (SELECT 1 FROM execution.workers w
              WHERE w.worker_id = substr(l.owner_tag, strpos(l.owner_tag, ':') + 1)
                AND w.died_at IS NOT NULL)
RETURNING tenant_id, asset_id, owner_tag, execution_id, expires_at,
          expires_at >= now() AS holder_died

-- name: list_locks
SELECT * FROM execution.execution_locks WHERE tenant_id = %(tenant_id)s ORDER BY asset_id
