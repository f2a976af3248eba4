-- Actors, API tokens, custom roles and role bindings (0003_auth).

-- name: ensure_actor
INSERT INTO execution.actors (tenant_id, actor_id) VALUES (%(tenant_id)s, %(actor_id)s)
ON CONFLICT DO NOTHING

-- name: insert_token
INSERT INTO execution.api_tokens (token_id, tenant_id, actor_id, token_hash, name, expires_at)
VALUES (%(token_id)s, %(tenant_id)s, %(actor_id)s, %(token_hash)s, %(name)s, %(expires_at)s)
RETURNING token_id, tenant_id, actor_id, name, created_at, expires_at, revoked_at

-- name: principal_by_token_hash
SELECT token_id, tenant_id, actor_id FROM execution.api_tokens
WHERE token_hash = %(token_hash)s AND revoked_at IS NULL
  AND (expires_at IS NULL OR expires_at > now())

-- name: revoke_token
UPDATE execution.api_tokens SET revoked_at = now()
WHERE tenant_id = %(tenant_id)s AND token_id = %(token_id)s AND revoked_at IS NULL
RETURNING token_id

-- name: list_tokens
SELECT token_id, tenant_id, actor_id, name, created_at, expires_at, revoked_at
FROM execution.api_tokens WHERE tenant_id = %(tenant_id)s
ORDER BY created_at, token_id

-- name: bind_role
INSERT INTO execution.role_bindings (tenant_id, actor_id, role_name, granted_by)
VALUES (%(tenant_id)s, %(actor_id)s, %(role_name)s, %(granted_by)s)
ON CONFLICT DO NOTHING
RETURNING role_name

-- name: unbind_role
DELETE FROM execution.role_bindings
WHERE tenant_id = %(tenant_id)s AND actor_id = %(actor_id)s AND role_name = %(role_name)s
RETURNING role_name

-- name: roles_of_actor
-- Set-based (db/batching.py): the roles bound to each (tenant, actor) item.
SELECT t.ord, b.role_name
FROM jsonb_to_recordset(%(items)s::jsonb) AS t(ord int, tenant_id text, actor_id text)
JOIN execution.role_bindings b ON b.tenant_id = t.tenant_id AND b.actor_id = t.actor_id
ORDER BY t.ord, b.role_name

-- name: list_bindings
SELECT actor_id, role_name, granted_by, granted_at FROM execution.role_bindings
WHERE tenant_id = %(tenant_id)s
ORDER BY actor_id, role_name

-- name: count_bindings
SELECT count(*) AS n FROM execution.role_bindings WHERE tenant_id = %(tenant_id)s

-- name: custom_permissions
SELECT r.role_name, r.description, p.resource, p.action, p.environments
FROM execution.roles r
LEFT JOIN execution.role_permissions p USING (tenant_id, role_name)
WHERE r.tenant_id = %(tenant_id)s
  AND (%(role_names)s::text[] IS NULL OR r.role_name = ANY(%(role_names)s))
ORDER BY r.role_name, p.id

-- name: insert_role
INSERT INTO execution.roles (tenant_id, role_name, description)
VALUES (%(tenant_id)s, %(role_name)s, %(description)s)

-- name: insert_role_permission
INSERT INTO execution.role_permissions (tenant_id, role_name, resource, action, environments)
VALUES (%(tenant_id)s, %(role_name)s, %(resource)s, %(action)s, %(environments)s)

-- name: delete_role
DELETE FROM execution.roles WHERE tenant_id = %(tenant_id)s AND role_name = %(role_name)s
RETURNING role_name

-- name: delete_role_bindings
DELETE FROM execution.role_bindings WHERE tenant_id = %(tenant_id)s AND role_name = %(role_name)s
