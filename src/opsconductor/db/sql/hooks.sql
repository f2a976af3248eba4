-- Inbound webhooks of jobs and their deliveries (services/hooks.py).

-- name: insert_hook
INSERT INTO execution.job_hooks
    (id, tenant_id, job_name, job_version, secret_path, mapping, params, created_by)
VALUES (%(id)s, %(tenant_id)s, %(job_name)s, %(job_version)s, %(secret_path)s, %(mapping)s,
        %(params)s, %(actor_id)s)
RETURNING *

-- name: get_hook
-- With its sealed secret (NULLs once it is gone): a delivery needs both, in one read.
SELECT h.*, s.key_id AS sealed_key_id, s.nonce AS sealed_nonce,
       s.ciphertext AS sealed_ciphertext
FROM execution.job_hooks h
LEFT JOIN execution.secrets s ON s.tenant_id = h.tenant_id AND s.path = h.secret_path
WHERE h.id = %(id)s

-- name: list_hooks
SELECT * FROM execution.job_hooks
WHERE tenant_id = %(tenant_id)s AND (%(job_name)s::text IS NULL OR job_name = %(job_name)s)
ORDER BY created_at

-- name: delete_hook
DELETE FROM execution.job_hooks WHERE tenant_id = %(tenant_id)s AND id = %(id)s
RETURNING secret_path

-- name: seen
-- An accepted delivery with this signature, or this delivery id: a replay.
SELECT 1 FROM execution.hook_deliveries
WHERE hook_id = %(hook_id)s AND accepted
  AND (signature = %(signature)s OR delivery_id = %(delivery_id)s)
LIMIT 1

-- name: insert_delivery
-- An accepted one conflicts with an earlier accepted one of the same signature or
-- delivery id (the partial unique indexes): nothing is inserted, it is a replay.
INSERT INTO execution.hook_deliveries
    (hook_id, tenant_id, accepted, status_code, reason, signature, delivery_id, body_sha256,
     execution_id)
VALUES (%(hook_id)s, %(tenant_id)s, %(accepted)s, %(status_code)s, %(reason)s, %(signature)s,
        %(delivery_id)s, %(body_sha256)s, %(execution_id)s)
ON CONFLICT DO NOTHING
RETURNING id

-- name: insert_refusal
-- A refused delivery, unless the hook has %(cap)s refusals of the last minute recorded
-- already: whoever floods a hook's URL with bad requests cannot fill the table (each is
-- still refused). Two API nodes may overshoot the cap by a few rows; it is a bound, not
-- a count. The per-hook index finds the minute's rows. The tenant is the hook's: a refusal
-- decided before the hook was read is recorded by this one statement (nothing for an
-- unknown id, which no tenant owns).
INSERT INTO execution.hook_deliveries
    (hook_id, tenant_id, accepted, status_code, reason, signature, delivery_id, body_sha256)
SELECT h.id, h.tenant_id, false, %(status_code)s, %(reason)s, %(signature)s,
       %(delivery_id)s, %(body_sha256)s
FROM execution.job_hooks h
WHERE h.id = %(hook_id)s
  AND (SELECT count(*) FROM (
           SELECT 1 FROM execution.hook_deliveries
           WHERE hook_id = %(hook_id)s AND received_at > now() - interval '1 minute'
             AND NOT accepted
           LIMIT %(cap)s) AS recent) < %(cap)s
RETURNING id

-- name: set_delivery_execution
UPDATE execution.hook_deliveries SET execution_id = %(execution_id)s WHERE id = %(id)s

-- name: deliveries
SELECT * FROM execution.hook_deliveries
WHERE tenant_id = %(tenant_id)s AND hook_id = %(hook_id)s
ORDER BY id DESC LIMIT %(limit)s
