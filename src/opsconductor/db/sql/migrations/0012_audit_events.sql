-- 0012: a tenant-level audit trail for administrative actions that belong to no execution
-- (execution_events hangs off one execution). First users: trusting, replacing and removing
-- SSH host keys; other admin actions (roles, tokens, secrets, settings) can record here too.
-- No foreign key to tenants, like execution_events: the trail outlives what it describes.
CREATE TABLE execution.audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL,
    actor_id    text NOT NULL,
    event_type  text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]*$'),
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_tenant_idx ON execution.audit_events (tenant_id, id);

-- Append-only: a row is never changed or deleted (TRUNCATE stays an installation admin's
-- tool, as it is for every table).
CREATE FUNCTION execution.forbid_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON execution.audit_events
    FOR EACH ROW EXECUTE FUNCTION execution.forbid_audit_change();
