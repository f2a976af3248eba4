-- 0001: the first schema.

CREATE SCHEMA IF NOT EXISTS execution;

CREATE TYPE execution.execution_status AS ENUM (
    'pending_approval', 'approved', 'rejected', 'queued', 'running',
    'completed', 'failed', 'cancelled', 'timeout', 'partial'
);
CREATE TYPE execution.execution_mode AS ENUM ('immediate', 'background');
CREATE TYPE execution.sla_class AS ENUM ('fast', 'medium', 'long');
CREATE TYPE execution.approval_state AS ENUM ('pending', 'approved', 'rejected', 'expired');

CREATE TABLE execution.tenants (
    tenant_id   text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE execution.assets (
    tenant_id        text NOT NULL REFERENCES execution.tenants ON DELETE CASCADE,
    asset_id         text NOT NULL CHECK (asset_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    hostname         text NOT NULL CHECK (hostname <> ''),
    address          text NOT NULL CHECK (address <> ''),
    port             integer CHECK (port BETWEEN 1 AND 65535),
    os               text,
    environment      text NOT NULL DEFAULT 'dev' CHECK (environment <> ''),
    connection_type  text NOT NULL DEFAULT 'local' CHECK (connection_type IN ('local', 'ssh')),
    credential_ref   text,
    tags             jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(tags) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, asset_id),
    UNIQUE (tenant_id, hostname)
);
CREATE INDEX assets_tags_idx ON execution.assets USING gin (tags);

-- Every tenant gets the machine the product runs on, so a plan can target it out of the box.
CREATE FUNCTION execution.add_localhost_asset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO execution.assets (tenant_id, asset_id, hostname, address, environment,
                                  connection_type, tags)
    VALUES (NEW.tenant_id, 'localhost', 'localhost', '127.0.0.1', 'local', 'local',
            '{"builtin": "true"}'::jsonb)
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;
CREATE TRIGGER tenants_localhost AFTER INSERT ON execution.tenants
    FOR EACH ROW EXECUTE FUNCTION execution.add_localhost_asset();

INSERT INTO execution.tenants (tenant_id) VALUES ('default');

CREATE TABLE execution.timeout_policies (
    sla_class            execution.sla_class NOT NULL,
    action_class         text NOT NULL CHECK (action_class IN ('read', 'modify', 'deploy')),
    step_timeout_s       double precision NOT NULL CHECK (step_timeout_s > 0),
    execution_timeout_s  double precision NOT NULL CHECK (execution_timeout_s >= step_timeout_s),
    lease_timeout_s      double precision NOT NULL CHECK (lease_timeout_s > 0),
    max_attempts         integer NOT NULL CHECK (max_attempts >= 1),
    PRIMARY KEY (sla_class, action_class)
);
-- Lease timeout starts as step timeout + 30 s buffer; the worker raises it from observed p95.
INSERT INTO execution.timeout_policies VALUES
    ('fast',   'read',   5,   10,   35,  3),
    ('fast',   'modify', 8,   15,   38,  3),
    ('fast',   'deploy', 10,  20,   40,  3),
    ('medium', 'read',   15,  30,   45,  5),
    ('medium', 'modify', 20,  45,   50,  5),
    ('medium', 'deploy', 30,  60,   60,  5),
    ('long',   'read',   60,  300,  90,  3),
    ('long',   'modify', 120, 600,  150, 3),
    ('long',   'deploy', 300, 1800, 330, 3);

CREATE TABLE execution.executions (
    id                       uuid PRIMARY KEY,
    tenant_id                text NOT NULL REFERENCES execution.tenants,
    actor_id                 text NOT NULL CHECK (actor_id <> ''),
    idempotency_key          text NOT NULL CHECK (idempotency_key <> ''),
    -- Set once the key no longer deduplicates (earlier run failed, or window passed),
    -- which frees the key for a new execution that points back here through retry_of.
    key_released             boolean NOT NULL DEFAULT false,
    retry_of                 uuid REFERENCES execution.executions,
    plan_name                text NOT NULL,
    plan_snapshot            jsonb NOT NULL,
    plan_hash                text NOT NULL CHECK (plan_hash ~ '^[0-9a-f]{64}$'),
    status                   execution.execution_status NOT NULL,
    status_reason            text,
    mode                     execution.execution_mode NOT NULL,
    sla_class                execution.sla_class NOT NULL,
    approval_level           smallint NOT NULL CHECK (approval_level BETWEEN 0 AND 3),
    priority                 smallint NOT NULL CHECK (priority BETWEEN 1 AND 10),
    estimated_duration_s     double precision NOT NULL CHECK (estimated_duration_s >= 0),
    timeout_at               timestamptz,
    trace_id                 text NOT NULL,
    worker_id                text,
    lease_renewals           integer NOT NULL DEFAULT 0 CHECK (lease_renewals >= 0),
    cancel_checks_performed  integer NOT NULL DEFAULT 0 CHECK (cancel_checks_performed >= 0),
    cancelled_by             text,
    cancelled_at             timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    started_at               timestamptz,
    finished_at              timestamptz,
    CONSTRAINT cancelled_together CHECK ((cancelled_by IS NULL) = (cancelled_at IS NULL))
);
CREATE UNIQUE INDEX executions_idempotency_key_uniq
    ON execution.executions (tenant_id, idempotency_key) WHERE NOT key_released;
CREATE INDEX executions_tenant_created_idx ON execution.executions (tenant_id, created_at DESC);
CREATE INDEX executions_tenant_status_idx ON execution.executions (tenant_id, status);
CREATE INDEX executions_retry_of_idx ON execution.executions (retry_of) WHERE retry_of IS NOT NULL;

CREATE TABLE execution.execution_steps (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id      uuid NOT NULL REFERENCES execution.executions ON DELETE CASCADE,
    step_index        integer NOT NULL CHECK (step_index >= 0),
    step_name         text NOT NULL,
    step_type         text NOT NULL,
    tenant_id         text NOT NULL,
    target_asset_id   text NOT NULL,
    status            text NOT NULL CHECK (status IN
                          ('pending', 'running', 'completed', 'failed', 'timeout', 'cancelled',
                           'skipped')),
    attempt           integer NOT NULL CHECK (attempt >= 1),
    retry_count       integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    started_at        timestamptz,
    finished_at       timestamptz,
    exit_code         integer,
    -- 10 KB cap: the writer truncates with a visible marker, this CHECK makes sure of it.
    output            text NOT NULL DEFAULT '' CHECK (octet_length(output) <= 10240),
    stderr            text NOT NULL DEFAULT '' CHECK (octet_length(stderr) <= 10240),
    error             text,
    -- No foreign key to assets: the audit trail outlives a decommissioned host.
    UNIQUE (execution_id, step_index, target_asset_id, attempt)
);

CREATE TABLE execution.approvals (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id  uuid NOT NULL REFERENCES execution.executions ON DELETE CASCADE,
    step_index    integer CHECK (step_index >= 0),
    level         smallint NOT NULL CHECK (level BETWEEN 1 AND 3),
    plan_hash     text NOT NULL CHECK (plan_hash ~ '^[0-9a-f]{64}$'),
    state         execution.approval_state NOT NULL DEFAULT 'pending',
    requested_by  text NOT NULL,
    decided_by    text,
    decided_at    timestamptz,
    expires_at    timestamptz NOT NULL,
    comment       text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT decided_together CHECK ((decided_by IS NULL) = (decided_at IS NULL))
);
CREATE INDEX approvals_execution_idx ON execution.approvals (execution_id);
CREATE INDEX approvals_pending_expiry_idx ON execution.approvals (expires_at)
    WHERE state = 'pending';

CREATE TABLE execution.execution_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id  uuid NOT NULL REFERENCES execution.executions ON DELETE CASCADE,
    tenant_id     text NOT NULL,
    event_type    text NOT NULL,
    from_status   execution.execution_status,
    to_status     execution.execution_status,
    actor_id      text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX execution_events_execution_idx ON execution.execution_events (execution_id, id);
CREATE INDEX execution_events_tenant_idx ON execution.execution_events (tenant_id, id);

-- The audit trail is append-only: no UPDATE, ever.
CREATE FUNCTION execution.forbid_event_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'execution_events is append-only';
END $$;
CREATE TRIGGER execution_events_append_only BEFORE UPDATE ON execution.execution_events
    FOR EACH ROW EXECUTE FUNCTION execution.forbid_event_update();

CREATE TABLE execution.execution_queue (
    execution_id      uuid PRIMARY KEY REFERENCES execution.executions ON DELETE CASCADE,
    priority          smallint NOT NULL CHECK (priority BETWEEN 1 AND 10),
    available_at      timestamptz NOT NULL DEFAULT now(),
    lease_token       uuid,
    lease_expires_at  timestamptz,
    worker_id         text,
    attempt_count     integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    enqueued_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lease_together CHECK ((lease_token IS NULL) = (lease_expires_at IS NULL))
);
CREATE INDEX execution_queue_claim_idx ON execution.execution_queue (priority, available_at)
    WHERE lease_token IS NULL;
CREATE INDEX execution_queue_lease_idx ON execution.execution_queue (lease_expires_at)
    WHERE lease_token IS NOT NULL;

CREATE TABLE execution.execution_dlq (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id    uuid NOT NULL REFERENCES execution.executions ON DELETE CASCADE,
    failure_reason  text NOT NULL,
    attempt_count   integer NOT NULL CHECK (attempt_count >= 0),
    failed_at       timestamptz NOT NULL DEFAULT now(),
    requeued        boolean NOT NULL DEFAULT false,
    requeued_at     timestamptz,
    requeued_by     text,
    CONSTRAINT requeued_together CHECK (
        requeued = (requeued_at IS NOT NULL) AND requeued = (requeued_by IS NOT NULL))
);
CREATE UNIQUE INDEX execution_dlq_open_uniq ON execution.execution_dlq (execution_id)
    WHERE NOT requeued;

CREATE TABLE execution.execution_locks (
    tenant_id          text NOT NULL,
    asset_id           text NOT NULL,
    owner_tag          text NOT NULL CHECK (owner_tag ~ '^[^:]+:.+$'),
    execution_id       uuid REFERENCES execution.executions ON DELETE CASCADE,
    acquired_at        timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, asset_id),
    FOREIGN KEY (tenant_id, asset_id) REFERENCES execution.assets ON DELETE CASCADE
);
CREATE INDEX execution_locks_expiry_idx ON execution.execution_locks (expires_at);
