-- 0003_auth: who may do what. Actors per tenant, API tokens (only their SHA-256 is stored),
-- custom roles with their permissions, and role bindings. The built-in roles (viewer,
-- operator, approver, admin) are defined in code (rbac.py), so every tenant has them and an
-- upgrade can refine them; custom roles live here, per tenant.

CREATE TABLE execution.actors (
    tenant_id   text NOT NULL REFERENCES execution.tenants ON DELETE CASCADE,
    actor_id    text NOT NULL CHECK (actor_id <> '' AND length(actor_id) <= 128),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, actor_id)
);

CREATE TABLE execution.api_tokens (
    token_id    uuid PRIMARY KEY,
    tenant_id   text NOT NULL,
    actor_id    text NOT NULL,
    token_hash  text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    FOREIGN KEY (tenant_id, actor_id) REFERENCES execution.actors ON DELETE CASCADE
);
CREATE INDEX api_tokens_actor_idx ON execution.api_tokens (tenant_id, actor_id);

CREATE TABLE execution.roles (
    tenant_id    text NOT NULL REFERENCES execution.tenants ON DELETE CASCADE,
    role_name    text NOT NULL CHECK (role_name ~ '^[a-z][a-z0-9_-]{0,62}$'
                     AND role_name NOT IN ('viewer', 'operator', 'approver', 'admin')),
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, role_name)
);

CREATE TABLE execution.role_permissions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     text NOT NULL,
    role_name     text NOT NULL,
    resource      text NOT NULL CHECK (resource ~ '^([a-z_]+|\*)$'),
    action        text NOT NULL CHECK (action ~ '^([a-z_]+|\*)$'),
    -- NULL: every environment; otherwise only targets in one of these environments.
    environments  text[] CHECK (environments IS NULL OR cardinality(environments) > 0),
    FOREIGN KEY (tenant_id, role_name) REFERENCES execution.roles ON DELETE CASCADE
);
CREATE INDEX role_permissions_role_idx ON execution.role_permissions (tenant_id, role_name);

-- No foreign key to roles: a binding may name a built-in role, which has no row.
CREATE TABLE execution.role_bindings (
    tenant_id   text NOT NULL,
    actor_id    text NOT NULL,
    role_name   text NOT NULL CHECK (role_name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    granted_by  text NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, actor_id, role_name),
    FOREIGN KEY (tenant_id, actor_id) REFERENCES execution.actors ON DELETE CASCADE
);

-- Live event feeds (API long-poll) wait on this channel instead of polling the table;
-- the payload is the execution id, delivered when the inserting transaction commits.
CREATE FUNCTION execution.notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opsc_execution_events', NEW.execution_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER execution_events_notify AFTER INSERT ON execution.execution_events
    FOR EACH ROW EXECUTE FUNCTION execution.notify_event();
