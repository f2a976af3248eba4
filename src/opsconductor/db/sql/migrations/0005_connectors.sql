-- Connectors (issue 7): SSH login per asset, known host keys per tenant, record-only mode.

-- The login name for SSH; NULL means the name of the user running the worker.
ALTER TABLE execution.assets ADD COLUMN username text CHECK (username <> '');

-- Record-only (dark launch): everything is resolved and recorded, nothing touches a host.
-- A tenant flag applies to every execution of the tenant; an execution flag to just one.
ALTER TABLE execution.tenants ADD COLUMN record_only boolean NOT NULL DEFAULT false;
ALTER TABLE execution.executions ADD COLUMN record_only boolean NOT NULL DEFAULT false;

-- 'strict' refuses a host whose key is not in known_hosts; 'accept-new' trusts and records
-- the first key seen (never a changed one). Strict is the default: accept-new is an opt-in.
ALTER TABLE execution.tenants ADD COLUMN host_key_policy text NOT NULL DEFAULT 'strict'
    CHECK (host_key_policy IN ('strict', 'accept-new'));

-- Trusted SSH host keys, per tenant, per address and port (OpenSSH public key format).
CREATE TABLE execution.known_hosts (
    tenant_id   text NOT NULL REFERENCES execution.tenants ON DELETE CASCADE,
    host        text NOT NULL CHECK (host <> ''),
    port        integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    public_key  text NOT NULL CHECK (public_key ~ '^[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+=*$'),
    added_by    text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, host, port, public_key)
);
