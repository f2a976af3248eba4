-- Per-tenant connector settings and trusted SSH host keys.

-- name: tenant_settings
SELECT record_only, host_key_policy, local_execution, local_network
FROM execution.tenants WHERE tenant_id = %(tenant_id)s

-- name: set_record_only
UPDATE execution.tenants SET record_only = %(record_only)s WHERE tenant_id = %(tenant_id)s

-- name: set_host_key_policy
UPDATE execution.tenants SET host_key_policy = %(policy)s WHERE tenant_id = %(tenant_id)s

-- name: set_local_execution
-- An installation admin's decision (the local CLI only; no API route reaches this).
UPDATE execution.tenants
SET local_execution = %(on)s, local_network = %(network)s,
    local_execution_changed_by = %(actor_id)s, local_execution_changed_at = now()
WHERE tenant_id = %(tenant_id)s
RETURNING tenant_id

-- name: bootstrap_local_execution
-- `opsc run` on a fresh embedded install: on, without network, only if nobody ever decided.
UPDATE execution.tenants
SET local_execution = true, local_network = false,
    local_execution_changed_by = %(actor_id)s, local_execution_changed_at = now()
WHERE tenant_id = %(tenant_id)s AND local_execution_changed_at IS NULL
RETURNING tenant_id

-- name: known_host_keys
SELECT public_key FROM execution.known_hosts
WHERE tenant_id = %(tenant_id)s AND host = %(host)s AND port = %(port)s
ORDER BY added_at, public_key

-- name: add_known_host
INSERT INTO execution.known_hosts (tenant_id, host, port, public_key, added_by)
VALUES (%(tenant_id)s, %(host)s, %(port)s, %(public_key)s, %(added_by)s)
ON CONFLICT DO NOTHING
RETURNING host

-- name: list_known_hosts
SELECT host, port, public_key, added_by, added_at FROM execution.known_hosts
WHERE tenant_id = %(tenant_id)s ORDER BY host, port, public_key

-- name: remove_known_hosts
DELETE FROM execution.known_hosts
WHERE tenant_id = %(tenant_id)s AND host = %(host)s AND port = %(port)s
RETURNING public_key

-- name: lock_known_host
-- Serialises every change to one host:port's keys until the transaction ends, so two
-- writers (two workers learning a first key under accept-new, an add racing a replace)
-- cannot both see "no key stored" and each store a different one.
SELECT pg_advisory_xact_lock(
    hashtextextended('opsc.known_hosts ' || %(tenant_id)s || ' ' || %(host)s || ':' || %(port)s, 0)
)

-- name: delete_known_host_keys
DELETE FROM execution.known_hosts
WHERE tenant_id = %(tenant_id)s AND host = %(host)s AND port = %(port)s
  AND public_key = ANY(%(public_keys)s)
RETURNING public_key
