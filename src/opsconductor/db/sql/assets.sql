-- The inventory.

-- name: list_assets
SELECT * FROM execution.assets WHERE tenant_id = %(tenant_id)s ORDER BY asset_id

-- name: insert_asset
INSERT INTO execution.assets
    (tenant_id, asset_id, hostname, address, port, os, environment, connection_type,
     credential_ref, username, tags, vars, proxy_jump)
VALUES (%(tenant_id)s, %(asset_id)s, %(hostname)s, %(address)s, %(port)s, %(os)s,
        %(environment)s, %(connection_type)s, %(credential_ref)s, %(username)s, %(tags)s,
        %(vars)s, %(proxy_jump)s)
RETURNING *

-- name: delete_asset
DELETE FROM execution.assets WHERE tenant_id = %(tenant_id)s AND asset_id = %(asset_id)s
RETURNING asset_id

-- name: ensure_tenant
INSERT INTO execution.tenants (tenant_id) VALUES (%(tenant_id)s) ON CONFLICT DO NOTHING

-- name: get_asset
SELECT * FROM execution.assets WHERE tenant_id = %(tenant_id)s AND asset_id = %(asset_id)s

-- name: update_asset
UPDATE execution.assets SET
    hostname = %(hostname)s, address = %(address)s, port = %(port)s, os = %(os)s,
    environment = %(environment)s, connection_type = %(connection_type)s,
    credential_ref = %(credential_ref)s, username = %(username)s, tags = %(tags)s,
    vars = %(vars)s,
    proxy_jump = %(proxy_jump)s
WHERE tenant_id = %(tenant_id)s AND asset_id = %(asset_id)s
RETURNING *

-- name: upsert_asset
INSERT INTO execution.assets
    (tenant_id, asset_id, hostname, address, port, os, environment, connection_type,
     credential_ref, username, tags, vars, proxy_jump)
VALUES (%(tenant_id)s, %(asset_id)s, %(hostname)s, %(address)s, %(port)s, %(os)s,
        %(environment)s, %(connection_type)s, %(credential_ref)s, %(username)s, %(tags)s,
        %(vars)s, %(proxy_jump)s)
ON CONFLICT (tenant_id, asset_id) DO UPDATE SET
    hostname = EXCLUDED.hostname, address = EXCLUDED.address, port = EXCLUDED.port,
    os = EXCLUDED.os, environment = EXCLUDED.environment,
    connection_type = EXCLUDED.connection_type, credential_ref = EXCLUDED.credential_ref,
    username = EXCLUDED.username, tags = EXCLUDED.tags, vars = EXCLUDED.vars,
    proxy_jump = EXCLUDED.proxy_jump
RETURNING *, (xmax = 0) AS inserted

-- name: select_targets
-- One step selector's matches, by index: each selector part given narrows the rows (asset
-- ids: the primary key; hostnames, environment: their indexes; tags: jsonb containment on
-- the GIN index). Run unprepared, so the planner folds the parts not given away.
SELECT * FROM execution.assets
WHERE tenant_id = %(tenant_id)s
  AND (%(asset_ids)s::text[] IS NULL OR asset_id = ANY (%(asset_ids)s::text[]))
  AND (%(hostnames)s::text[] IS NULL OR hostname = ANY (%(hostnames)s::text[]))
  AND (%(environment)s::text IS NULL OR environment = %(environment)s::text)
  AND (%(tags)s::jsonb IS NULL OR tags @> %(tags)s::jsonb)
