-- Current full schema of OpsConductor Execution. A fresh database gets this file in one go;
-- an existing one gets the numbered files in migrations/. tests/test_migrations.py proves the
-- two paths produce the same catalog.

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

-- from migrations/0002_queue.sql: queue retry budget, lease timeout, last error; history index
ALTER TABLE execution.execution_queue
    ADD COLUMN max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    ADD COLUMN lease_timeout_s  double precision NOT NULL DEFAULT 60 CHECK (lease_timeout_s > 0),
    ADD COLUMN last_error       text;

-- Observed step durations per type (routing's p95) read the newest finished attempts.
CREATE INDEX execution_steps_history_idx
    ON execution.execution_steps (tenant_id, step_type, finished_at DESC)
    WHERE finished_at IS NOT NULL AND started_at IS NOT NULL;

CREATE INDEX execution_dlq_open_idx ON execution.execution_dlq (failed_at DESC)
    WHERE NOT requeued;

-- from migrations/0003_auth.sql: actors, API tokens, custom roles, role bindings, event notifications
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

-- 0005_connectors

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

-- 0006_approvals

ALTER TABLE execution.tenants
    ADD COLUMN approval_quorum smallint NOT NULL DEFAULT 1
        CHECK (approval_quorum BETWEEN 1 AND 10),
    ADD COLUMN approval_windows_s integer[] NOT NULL DEFAULT '{300,900,1800}'
        CHECK (cardinality(approval_windows_s) = 3 AND 0 < ALL (approval_windows_s)),
    ADD COLUMN on_approval_invalidated text NOT NULL DEFAULT 'reapprove'
        CHECK (on_approval_invalidated IN ('reapprove', 'cancel'));

CREATE TABLE execution.approval_decisions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    approval_id  bigint NOT NULL REFERENCES execution.approvals ON DELETE CASCADE,
    actor_id     text NOT NULL,
    decision     text NOT NULL CHECK (decision IN ('approve', 'reject')),
    plan_hash    text,
    comment      text,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (approval_id, actor_id)
);

-- From 0004_safety: encrypted secrets, tenant masking patterns, cancel requests.
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

-- 0007_streams

-- Workers announce themselves here and beat every few seconds; `opsc workers` and /readyz
-- read it. A row whose heartbeat is old belongs to a worker that died without saying so.
CREATE TABLE execution.workers (
    worker_id          text PRIMARY KEY CHECK (worker_id <> ''),
    host               text NOT NULL,
    pid                integer NOT NULL CHECK (pid > 0),
    started_at         timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    concurrency        integer NOT NULL CHECK (concurrency >= 1),
    in_flight          integer NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    stopped_at         timestamptz
);

-- Set once, by whichever process sees the execution past its SLA budget first; the
-- compare-and-set on NULL makes the sla_violation event exactly-once across processes.
ALTER TABLE execution.executions ADD COLUMN sla_violated_at timestamptz;
CREATE INDEX executions_sla_open_idx ON execution.executions (finished_at)
    WHERE sla_violated_at IS NULL;

-- Metrics count these event types at scrape time.
CREATE INDEX execution_events_type_idx ON execution.execution_events (event_type);

-- Stream cursors: the ids of one execution's events must become visible in id order, or a
-- client resuming after id N could miss an N-1 that committed later. Drawing the id while
-- holding the execution's row lock makes id order the commit order of that execution. It
-- is the lock every status change already takes (no new lock, so no new lock cycle), and
-- a transaction that changed the status holds it already.
CREATE FUNCTION execution.order_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM execution.executions WHERE id = NEW.execution_id FOR NO KEY UPDATE;
    NEW.id := nextval(pg_get_serial_sequence('execution.execution_events', 'id'));
    RETURN NEW;
END $$;
CREATE TRIGGER execution_events_order BEFORE INSERT ON execution.execution_events
    FOR EACH ROW EXECUTE FUNCTION execution.order_event();

-- Notifications now carry the event id (readers fetch the masked row once per process)
-- and the execution and tenant it belongs to (so a process fetches only what it streams).
CREATE OR REPLACE FUNCTION execution.notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opsc_execution_events',
                      NEW.id || ' ' || NEW.execution_id || ' ' || NEW.tenant_id);
    RETURN NULL;
END $$;

ALTER TABLE execution.execution_steps DROP CONSTRAINT execution_steps_status_check;
ALTER TABLE execution.execution_steps ADD CONSTRAINT execution_steps_status_check CHECK (status IN
    ('pending', 'running', 'completed', 'failed', 'timeout', 'cancelled', 'skipped',
     'awaiting_approval'));

-- 0009_statement_notify
-- 0009: event notifications once per statement instead of once per row (issue 3).
-- The same notifications as before (one per event: id, execution, tenant), sent by one
-- trigger call per statement that reads the new rows from its transition table: a batched
-- statement that writes the events of many executions calls PL/pgSQL once, not per row.

DROP TRIGGER execution_events_notify ON execution.execution_events;
DROP FUNCTION execution.notify_event();

CREATE FUNCTION execution.notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opsc_execution_events', id || ' ' || execution_id || ' ' || tenant_id)
    FROM added ORDER BY id;
    RETURN NULL;
END $$;
CREATE TRIGGER execution_events_notify AFTER INSERT ON execution.execution_events
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.notify_events();

-- 0010_local_exec
-- Local execution is a capability of a tenant, off unless an installation admin turns
-- it on (issue 12). Local steps (command, script, file on a `local` asset such as the
-- built-in localhost) run on the control plane's own machine, so a tenant reaches it only
-- when the installation says so, and then only inside the sandbox.
-- local_network: the sandbox keeps the host's network (loopback included: the database and
-- the API listen there); off means a private network namespace with only its own loopback.
-- Who changed the capability last, and when (NULL: never set; `opsc run` on a fresh embedded
-- install may then enable it for tenant 'default').
ALTER TABLE execution.tenants
    ADD COLUMN local_execution boolean NOT NULL DEFAULT false,
    ADD COLUMN local_network boolean NOT NULL DEFAULT false,
    ADD COLUMN local_execution_changed_by text,
    ADD COLUMN local_execution_changed_at timestamptz;
-- 0011_status_machine
-- The legal moves of an execution and of a step attempt, as in status_machine.py, with a
-- trigger that refuses any other move whoever writes the row: a raw UPDATE from psql, a
-- bug in a new statement. A NULL from_status is a row's first status (INSERT).
-- tests/test_status_machine_db.py reads these functions and checks they equal the Python
-- tables, so the two cannot drift apart.

CREATE FUNCTION execution.execution_transitions()
RETURNS TABLE (from_status execution.execution_status, to_status execution.execution_status)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    VALUES
        (NULL::execution.execution_status, 'pending_approval'::execution.execution_status),
        (NULL, 'approved'),
        ('pending_approval', 'approved'), ('pending_approval', 'rejected'),
        ('pending_approval', 'cancelled'),
        ('approved', 'queued'), ('approved', 'running'), ('approved', 'cancelled'),
        ('approved', 'pending_approval'),
        ('queued', 'running'), ('queued', 'cancelled'), ('queued', 'timeout'),
        ('queued', 'pending_approval'),
        ('running', 'completed'), ('running', 'failed'), ('running', 'cancelled'),
        ('running', 'timeout'), ('running', 'partial')
$$;

CREATE FUNCTION execution.step_transitions()
RETURNS TABLE (from_status text, to_status text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    VALUES
        (NULL::text, 'pending'::text), (NULL, 'running'), (NULL, 'failed'),
        ('pending', 'running'), ('pending', 'failed'), ('pending', 'skipped'),
        ('pending', 'awaiting_approval'),
        ('awaiting_approval', 'pending'), ('awaiting_approval', 'skipped'),
        ('running', 'completed'), ('running', 'failed'), ('running', 'timeout'),
        ('running', 'cancelled'), ('running', 'skipped')
$$;

CREATE FUNCTION execution.check_execution_transition() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous execution.execution_status;
    allowed text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.status;
    END IF;
    PERFORM 1 FROM execution.execution_transitions() t
    WHERE t.from_status IS NOT DISTINCT FROM previous AND t.to_status = NEW.status;
    IF NOT FOUND THEN
        SELECT string_agg(t.to_status::text, ', ' ORDER BY t.to_status::text) INTO allowed
        FROM execution.execution_transitions() t
        WHERE t.from_status IS NOT DISTINCT FROM previous;
        IF previous IS NULL THEN
            RAISE EXCEPTION 'illegal initial status for execution %: %; a new execution '
                            'starts as %', NEW.id, NEW.status, allowed
                USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                      TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
        END IF;
        RAISE EXCEPTION 'illegal status change for execution %: % -> %; from % it may go to %',
            NEW.id, previous, NEW.status, previous, coalesce(allowed, 'nothing (terminal)')
            USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                  TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION execution.check_step_transition() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous text;
    allowed text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.status;
    END IF;
    PERFORM 1 FROM execution.step_transitions() t
    WHERE t.from_status IS NOT DISTINCT FROM previous AND t.to_status = NEW.status;
    IF NOT FOUND THEN
        SELECT string_agg(t.to_status, ', ' ORDER BY t.to_status) INTO allowed
        FROM execution.step_transitions() t
        WHERE t.from_status IS NOT DISTINCT FROM previous;
        IF previous IS NULL THEN
            RAISE EXCEPTION 'illegal initial status for a step attempt of execution %: %; a '
                            'new attempt starts as %', NEW.execution_id, NEW.status, allowed
                USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                      TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
        END IF;
        RAISE EXCEPTION 'illegal status change for step attempt % of execution %: % -> %; '
                        'from % it may go to %',
            NEW.id, NEW.execution_id, previous, NEW.status, previous,
            coalesce(allowed, 'nothing (terminal)')
            USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                  TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
    END IF;
    RETURN NEW;
END $$;

-- WHEN keeps the common updates (lease renewals, counters, outputs) away from PL/pgSQL.
CREATE TRIGGER executions_status_machine
    BEFORE UPDATE OF status ON execution.executions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION execution.check_execution_transition();
CREATE TRIGGER executions_initial_status
    BEFORE INSERT ON execution.executions
    FOR EACH ROW EXECUTE FUNCTION execution.check_execution_transition();
CREATE TRIGGER execution_steps_status_machine
    BEFORE UPDATE OF status ON execution.execution_steps
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION execution.check_step_transition();
CREATE TRIGGER execution_steps_initial_status
    BEFORE INSERT ON execution.execution_steps
    FOR EACH ROW EXECUTE FUNCTION execution.check_step_transition();

-- 0012_audit_events
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

-- 0013_worker_liveness
-- 0013: dead workers detected in about a second, recovered work first.
-- Each worker holds a session-level advisory lock (classid 5118, objid lock_key) on a
-- connection of its own for its whole life; a SIGKILLed worker's connection closes at once
-- and frees the lock, which every reaper round looks for (db/sql/workers.sql).
-- No column default: only a worker that takes its lock sets a key (register), so rows of
-- workers from before (or of an older version still running) are never watched by lock.
CREATE SEQUENCE execution.worker_lock_keys AS integer;
ALTER TABLE execution.workers
    ADD COLUMN lock_key        integer UNIQUE,
    -- first reaper round that found the lock free; cleared when it is seen held again
    ADD COLUMN lock_free_since timestamptz,
    -- the reaper declared it dead and took its work back
    ADD COLUMN died_at         timestamptz;
ALTER SEQUENCE execution.worker_lock_keys OWNED BY execution.workers.lock_key;
CREATE INDEX workers_watched_idx ON execution.workers (worker_id)
    WHERE stopped_at IS NULL AND died_at IS NULL;

-- Why and since when a running execution has no worker (crash, lease expiry, hand-back,
-- failed attempt): such a row is claimed before new work, and the time it waits is added
-- to the execution's deadline when it is resumed.
ALTER TABLE execution.execution_queue
    ADD COLUMN interrupted_at  timestamptz,
    ADD COLUMN interruption    text,
    ADD COLUMN interruptions   integer NOT NULL DEFAULT 0 CHECK (interruptions >= 0),
    ADD COLUMN recovery_s      double precision NOT NULL DEFAULT 0 CHECK (recovery_s >= 0),
    -- when the current lease was taken: did the execution make progress under it?
    ADD COLUMN leased_at       timestamptz;
DROP INDEX execution.execution_queue_claim_idx;
CREATE INDEX execution_queue_claim_idx
    ON execution.execution_queue ((interrupted_at IS NULL), priority, available_at)
    WHERE lease_token IS NULL;
CREATE INDEX execution_queue_worker_idx ON execution.execution_queue (worker_id)
    WHERE lease_token IS NOT NULL;
