-- The built-in secret store (ciphertext only) and tenant masking patterns.

-- name: put_secret
INSERT INTO execution.secrets
    (tenant_id, path, key_id, nonce, ciphertext, created_by, updated_by)
VALUES (%(tenant_id)s, %(path)s, %(key_id)s, %(nonce)s, %(ciphertext)s, %(actor_id)s,
        %(actor_id)s)
ON CONFLICT (tenant_id, path) DO UPDATE SET
    key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
    updated_by = EXCLUDED.updated_by, updated_at = now()
RETURNING (xmax = 0) AS created

-- name: get_secret
SELECT key_id, nonce, ciphertext FROM execution.secrets
WHERE tenant_id = %(tenant_id)s AND path = %(path)s

-- name: list_secrets
SELECT path, key_id, created_by, created_at, updated_by, updated_at FROM execution.secrets
WHERE tenant_id = %(tenant_id)s ORDER BY path

-- name: delete_secret
DELETE FROM execution.secrets WHERE tenant_id = %(tenant_id)s AND path = %(path)s
RETURNING path

-- name: lock_all_secrets
SELECT tenant_id, path, key_id, nonce, ciphertext FROM execution.secrets
ORDER BY tenant_id, path FOR UPDATE

-- name: reseal_secret
UPDATE execution.secrets SET key_id = %(key_id)s, nonce = %(nonce)s, ciphertext = %(ciphertext)s
WHERE tenant_id = %(tenant_id)s AND path = %(path)s

-- name: put_pattern
INSERT INTO execution.masking_patterns (tenant_id, name, pattern, created_by)
VALUES (%(tenant_id)s, %(name)s, %(pattern)s, %(actor_id)s)
ON CONFLICT (tenant_id, name) DO UPDATE SET pattern = EXCLUDED.pattern,
    created_by = EXCLUDED.created_by, created_at = now()

-- name: list_patterns
SELECT name, pattern, created_by, created_at FROM execution.masking_patterns
WHERE tenant_id = %(tenant_id)s ORDER BY name

-- name: delete_pattern
DELETE FROM execution.masking_patterns WHERE tenant_id = %(tenant_id)s AND name = %(name)s
RETURNING name
