-- 0004: the safety layer (issue 6): encrypted secrets, tenant masking patterns, cancel
-- requests. Asset locks use execution_locks from 0001.

-- Built-in secret store: AES-256-GCM ciphertext only; the key never reaches the database.
-- key_id names the key that sealed the row (first 16 hex of SHA-256 of the key), so a key
-- rotation interrupted half-way can still open every row.
CREATE TABLE execution.secrets (
    tenant_id   text NOT NULL REFERENCES execution.tenants ON DELETE CASCADE,
    path        text NOT NULL CHECK (path ~ '^[A-Za-z0-9][A-Za-z0-9_.@/-]{0,254}$'),
    key_id      text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    nonce       bytea NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext  bytea NOT NULL CHECK (octet_length(ciphertext) >= 16),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, path)
);

-- Tenant-defined masking patterns (Python regular expressions), added to the built-ins.
CREATE TABLE execution.masking_patterns (
    tenant_id   text NOT NULL REFERENCES execution.tenants ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    pattern     text NOT NULL CHECK (pattern <> ''),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- A cancel request on a running execution; cancelled_by/cancelled_at are set only with
-- the final transition, when the engine has actually stopped the work.
ALTER TABLE execution.executions
    ADD COLUMN cancel_requested_by text,
    ADD COLUMN cancel_requested_at timestamptz,
    ADD CONSTRAINT cancel_requested_together
        CHECK ((cancel_requested_by IS NULL) = (cancel_requested_at IS NULL));
