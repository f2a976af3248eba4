-- Dynamic inventory sources (0022_inventory_sources, inventory_sources.py).

-- name: insert_source
INSERT INTO execution.inventory_sources
    (tenant_id, name, kind, path, url, token_ref, environment, every_s, next_sync_at,
     created_by)
VALUES (%(tenant_id)s, %(name)s, %(kind)s, %(path)s, %(url)s, %(token_ref)s,
        %(environment)s, %(every_s)s,
        -- the first scheduled sync one interval on: time to look at a dry run first
        now() + make_interval(secs => %(every_s)s::integer), %(actor_id)s)
RETURNING *

-- name: list_sources
SELECT * FROM execution.inventory_sources WHERE tenant_id = %(tenant_id)s ORDER BY name

-- name: get_source
SELECT * FROM execution.inventory_sources
WHERE tenant_id = %(tenant_id)s AND name = %(name)s

-- name: delete_source
DELETE FROM execution.inventory_sources
WHERE tenant_id = %(tenant_id)s AND name = %(name)s
RETURNING *

-- name: claim_due
-- One due source, whoever asks: its next time moves on in the same statement, so with
-- any number of workers each due time is claimed once (SKIP LOCKED: no waiting on a row
-- another worker is claiming).
UPDATE execution.inventory_sources s
SET next_sync_at = now() + make_interval(secs => s.every_s)
FROM (SELECT tenant_id, name FROM execution.inventory_sources
      WHERE next_sync_at <= now()
      ORDER BY next_sync_at
      LIMIT 1
      FOR UPDATE SKIP LOCKED) due
WHERE s.tenant_id = due.tenant_id AND s.name = due.name
RETURNING s.*

-- name: record_result
UPDATE execution.inventory_sources
SET last_sync_at = now(), last_result = %(result)s, last_error = %(error)s,
    last_counts = %(counts)s
WHERE tenant_id = %(tenant_id)s AND name = %(name)s

-- name: lock_source
-- One sync of a source at a time (on demand and scheduled alike): read, compare, write.
SELECT pg_advisory_xact_lock(hashtextextended('opsc.inventory_source ' || %(tenant_id)s
                                              || ' ' || %(name)s, 0))

-- name: owned_assets
SELECT * FROM execution.assets WHERE tenant_id = %(tenant_id)s ORDER BY asset_id

-- name: set_owner
UPDATE execution.assets SET inventory_source = %(name)s
WHERE tenant_id = %(tenant_id)s AND asset_id = ANY (%(asset_ids)s::text[])

-- name: delete_owned
-- Only the source's own assets: a hand-made one is never removed by a sync.
DELETE FROM execution.assets
WHERE tenant_id = %(tenant_id)s AND inventory_source = %(name)s
  AND asset_id = ANY (%(asset_ids)s::text[])
RETURNING asset_id
