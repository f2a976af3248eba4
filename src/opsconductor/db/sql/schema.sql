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

-- Metrics counted these event types at scrape time (a partial index since 0030).
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

-- 0015: target selection by environment in SQL.
CREATE INDEX assets_environment_idx ON execution.assets (tenant_id, environment);

-- 0014_metrics_history
-- 0014: /metrics in constant time and history that can be pruned (issue 16).
--
-- metric_rollup holds every database-derived counter and histogram bucket, kept current by
-- triggers (see below): a scrape sums a few rows whatever the history. Each backend adds its deltas to rows of its own slot
-- (its pid): concurrent workers never wait on each other's row locks, so no hot row
-- serialises their commits. A scrape first folds slots into slot 0 (rows it can lock
-- without waiting), which keeps the table near one row per label set.
--
-- Counters (steps, waits, SLA outcomes, counted events, lease renewals) only grow: a
-- pruned row keeps its contribution, because Prometheus reads a falling counter as a
-- restart. The 'executions' gauge counts rows held, so pruning lowers it; it holds finished
-- executions only (a status is entered once and never left), while the unfinished are
-- counted live through executions_live_idx: the many moves between unfinished statuses
-- write nothing here.
CREATE TABLE execution.metric_rollup (
    metric  text NOT NULL,
    labels  text[] NOT NULL,
    slot    integer NOT NULL,
    value   numeric NOT NULL,
    PRIMARY KEY (metric, labels, slot)
);

-- The (non-cumulative) bucket an observation falls in, labelled by its upper bound (or
-- '+Inf'). The bounds equal DURATION_BUCKETS and WAIT_BUCKETS in db/metrics.py (a test
-- checks); a plain CASE, so the planner inlines it into the triggers' statements.
CREATE FUNCTION execution.metric_duration_bucket(seconds numeric) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT
        CASE WHEN seconds <= 0.05 THEN '0.05' WHEN seconds <= 0.1 THEN '0.1'
             WHEN seconds <= 0.25 THEN '0.25' WHEN seconds <= 0.5 THEN '0.5'
             WHEN seconds <= 1 THEN '1' WHEN seconds <= 2.5 THEN '2.5'
             WHEN seconds <= 5 THEN '5' WHEN seconds <= 10 THEN '10'
             WHEN seconds <= 30 THEN '30' WHEN seconds <= 60 THEN '60'
             WHEN seconds <= 120 THEN '120' WHEN seconds <= 300 THEN '300'
             WHEN seconds <= 1800 THEN '1800'
             ELSE '+Inf' END
$$;
CREATE FUNCTION execution.metric_wait_bucket(seconds numeric) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT
        CASE WHEN seconds <= 0.1 THEN '0.1' WHEN seconds <= 0.5 THEN '0.5'
             WHEN seconds <= 1 THEN '1' WHEN seconds <= 5 THEN '5'
             WHEN seconds <= 10 THEN '10' WHEN seconds <= 30 THEN '30'
             WHEN seconds <= 60 THEN '60' WHEN seconds <= 300 THEN '300'
             WHEN seconds <= 900 THEN '900' WHEN seconds <= 1800 THEN '1800'
             WHEN seconds <= 3600 THEN '3600'
             ELSE '+Inf' END
$$;

-- The statuses nothing leaves (status_machine.TERMINAL; a test checks).
CREATE FUNCTION execution.terminal_statuses() RETURNS execution.execution_status[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{rejected,completed,failed,cancelled,timeout,partial}'::execution.execution_status[]
$$;

-- What one row adds to the roll-up. The same functions back-fill the table below and
-- compute each trigger's deltas (new rows minus old rows), so the two cannot disagree.
CREATE FUNCTION execution.execution_metric_rows(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT 'executions', ARRAY[e.tenant_id, e.status::text], 1::numeric
    WHERE e.status = ANY (execution.terminal_statuses())
    UNION ALL
    SELECT 'lease_renewals', '{}', e.lease_renewals WHERE e.lease_renewals <> 0
    UNION ALL
    SELECT 'sla_violations', ARRAY[e.tenant_id, e.sla_class::text], 1
    WHERE e.sla_violated_at IS NOT NULL
    UNION ALL
    SELECT 'sla_outcomes',
           ARRAY[e.tenant_id, e.sla_class::text,
                 CASE WHEN e.sla_violated_at IS NULL THEN 'met' ELSE 'violated' END], 1
    WHERE e.finished_at IS NOT NULL
      AND EXISTS (SELECT 1 FROM execution.execution_events v
                  WHERE v.execution_id = e.id AND v.to_status = 'approved')
    UNION ALL
    SELECT x.metric, x.labels, x.value
    FROM (SELECT extract(epoch FROM e.started_at - min(v.created_at)) AS w
          FROM execution.execution_events v
          WHERE e.mode = 'background' AND e.started_at IS NOT NULL
            AND v.execution_id = e.id AND v.to_status IN ('approved', 'queued')) AS a
    CROSS JOIN LATERAL (VALUES
        ('queue_wait', ARRAY[execution.metric_wait_bucket(a.w)],
         1::numeric),
        ('queue_wait_sum', '{}'::text[], a.w)) AS x (metric, labels, value)
    WHERE a.w IS NOT NULL
$$;

CREATE FUNCTION execution.step_metric_rows(s execution.execution_steps)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'step_retries', ARRAY[s.step_type], 1::numeric WHERE s.attempt > 1
    UNION ALL
    SELECT x.metric, x.labels, x.value
    FROM (SELECT extract(epoch FROM s.finished_at - s.started_at) AS w) AS a
    CROSS JOIN LATERAL (VALUES
        ('step_duration',
         ARRAY[s.step_type, execution.metric_duration_bucket(a.w)],
         1::numeric),
        ('step_duration_sum', ARRAY[s.step_type], a.w)) AS x (metric, labels, value)
    WHERE a.w IS NOT NULL
$$;

CREATE FUNCTION execution.approval_metric_rows(p execution.approvals)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT x.metric, x.labels, x.value
    FROM (SELECT extract(epoch FROM p.decided_at - p.created_at) AS w) AS a
    CROSS JOIN LATERAL (VALUES
        ('approval_wait', ARRAY[execution.metric_wait_bucket(a.w)],
         1::numeric),
        ('approval_wait_sum', '{}'::text[], a.w)) AS x (metric, labels, value)
    WHERE a.w IS NOT NULL
$$;

-- Event types counted as alerts and audit figures (COUNTED_EVENTS in db/metrics.py).
CREATE FUNCTION execution.event_metric_rows(v execution.execution_events)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'events', ARRAY[v.tenant_id, v.event_type], 1::numeric
    WHERE v.event_type IN ('rbac_violation', 'sla_violation', 'lock_reaped')
$$;

-- Two kinds of trigger, chosen by measurement on the workers' path. Most writes change
-- nothing counted: a new execution, a move between unfinished statuses, a first step
-- attempt, an ordinary event. Row triggers with a WHEN clause skip those before PL/pgSQL
-- (a WHEN is not constant-folded, so the clauses spell lists out instead of calling
-- functions). Writes that always count and may come many rows to a statement (step
-- attempts finishing, approvals decided, executions pruned) use statement triggers that
-- read the statement's transition tables: one call however many rows. Either way the
-- deltas (new row's contribution minus old row's) go to this backend's slot, in key order.
CREATE FUNCTION execution.metric_rollup_apply_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'executions' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
        FROM (SELECT m.metric, m.labels, m.value FROM execution.execution_metric_rows(NEW) m
              UNION ALL
              SELECT m.metric, m.labels, -m.value FROM execution.execution_metric_rows(OLD) m
              WHERE TG_OP = 'UPDATE') AS d
        GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'execution_steps' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT m.metric, m.labels, pg_backend_pid(), sum(m.value)
        FROM execution.step_metric_rows(NEW) m
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'approvals' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT m.metric, m.labels, pg_backend_pid(), sum(m.value)
        FROM execution.approval_metric_rows(NEW) m
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'execution_events' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT m.metric, m.labels, pg_backend_pid(), sum(m.value)
        FROM execution.event_metric_rows(NEW) m
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION execution.metric_rollup_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'executions' AND TG_OP = 'DELETE' THEN
        -- Only the gauge follows deletions (prune); counters keep what they counted.
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT 'executions', ARRAY[g.tenant_id, g.status::text], pg_backend_pid(), -count(*)
        FROM gone g WHERE g.status = ANY (execution.terminal_statuses())
        GROUP BY 2 ORDER BY 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'execution_steps' AND TG_OP = 'UPDATE' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
        FROM gone o JOIN added n USING (id)
        CROSS JOIN LATERAL (
            SELECT m.metric, m.labels, m.value
            FROM execution.step_metric_rows(n::execution.execution_steps) m
            UNION ALL
            SELECT m.metric, m.labels, -m.value
            FROM execution.step_metric_rows(o::execution.execution_steps) m) AS d
        WHERE (o.step_type, o.attempt, o.started_at, o.finished_at)
              IS DISTINCT FROM (n.step_type, n.attempt, n.started_at, n.finished_at)
        GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    ELSIF TG_TABLE_NAME = 'approvals' AND TG_OP = 'UPDATE' THEN
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
        FROM gone o JOIN added n USING (id)
        CROSS JOIN LATERAL (
            SELECT m.metric, m.labels, m.value
            FROM execution.approval_metric_rows(n::execution.approvals) m
            UNION ALL
            SELECT m.metric, m.labels, -m.value
            FROM execution.approval_metric_rows(o::execution.approvals) m) AS d
        WHERE (o.created_at, o.decided_at) IS DISTINCT FROM (n.created_at, n.decided_at)
        GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    END IF;
    RETURN NULL;
END $$;

-- Fold every slot row no transaction holds into slot 0 (never waits: SKIP LOCKED). The
-- caller takes an advisory lock so two scrapes do not fold at once.
CREATE FUNCTION execution.metric_rollup_compact() RETURNS bigint LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM execution.metric_rollup
        WHERE ctid = ANY (ARRAY(SELECT ctid FROM execution.metric_rollup WHERE slot <> 0
                                FOR UPDATE SKIP LOCKED))
        RETURNING metric, labels, value
    ), folded AS (
        INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
        SELECT metric, labels, 0, sum(value) FROM moved GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value
        RETURNING 1
    )
    SELECT count(*) FROM folded
$$;

-- A new execution counts only if it arrives finished or started (never, today).
CREATE TRIGGER executions_metrics_insert AFTER INSERT ON execution.executions
    FOR EACH ROW WHEN (
        NEW.status NOT IN ('pending_approval', 'approved', 'queued', 'running')
        OR NEW.started_at IS NOT NULL OR NEW.finished_at IS NOT NULL
        OR NEW.sla_violated_at IS NOT NULL OR NEW.lease_renewals <> 0)
    EXECUTE FUNCTION execution.metric_rollup_apply_row();
-- What an execution's row counts: its status once finished, a background run's start
-- (queue wait), lease renewals, the SLA flag and outcome.
CREATE TRIGGER executions_metrics_update AFTER UPDATE ON execution.executions
    FOR EACH ROW WHEN (
        (OLD.status IS DISTINCT FROM NEW.status
         AND (NEW.status NOT IN ('pending_approval', 'approved', 'queued', 'running')
              OR OLD.status NOT IN ('pending_approval', 'approved', 'queued', 'running')))
        OR (OLD.started_at IS DISTINCT FROM NEW.started_at AND NEW.mode = 'background')
        OR OLD.lease_renewals IS DISTINCT FROM NEW.lease_renewals
        OR OLD.sla_violated_at IS DISTINCT FROM NEW.sla_violated_at
        OR OLD.finished_at IS DISTINCT FROM NEW.finished_at
        OR OLD.mode IS DISTINCT FROM NEW.mode
        OR OLD.sla_class IS DISTINCT FROM NEW.sla_class
        OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION execution.metric_rollup_apply_row();
CREATE TRIGGER executions_metrics_delete AFTER DELETE ON execution.executions
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_apply();
-- A step attempt counts when it is a retry or once it has both ends.
CREATE TRIGGER execution_steps_metrics_insert AFTER INSERT ON execution.execution_steps
    FOR EACH ROW WHEN (NEW.attempt > 1 OR NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION execution.metric_rollup_apply_row();
CREATE TRIGGER execution_steps_metrics_update AFTER UPDATE ON execution.execution_steps
    REFERENCING OLD TABLE AS gone NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_apply();
CREATE TRIGGER approvals_metrics_insert AFTER INSERT ON execution.approvals
    FOR EACH ROW WHEN (NEW.decided_at IS NOT NULL)
    EXECUTE FUNCTION execution.metric_rollup_apply_row();
CREATE TRIGGER approvals_metrics_update AFTER UPDATE ON execution.approvals
    REFERENCING OLD TABLE AS gone NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_apply();
-- The counted event types (event_metric_rows), spelled out for the same reason.
CREATE TRIGGER execution_events_metrics AFTER INSERT ON execution.execution_events
    FOR EACH ROW WHEN (NEW.event_type IN ('rbac_violation', 'sla_violation', 'lock_reaped'))
    EXECUTE FUNCTION execution.metric_rollup_apply_row();

-- Recount the roll-up from the rows held (the migration's back-fill; also a repair tool).
-- The locks hold writers off while it counts; counts of pruned rows are lost by a rebuild.
CREATE FUNCTION execution.metric_rollup_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE execution.executions, execution.execution_steps, execution.approvals,
               execution.execution_events, execution.metric_rollup
        IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM execution.metric_rollup;
    INSERT INTO execution.metric_rollup (metric, labels, slot, value)
    SELECT m.metric, m.labels, 0, sum(m.value)
    FROM (
        SELECT r.* FROM execution.executions e
        CROSS JOIN LATERAL execution.execution_metric_rows(e) r
        UNION ALL
        SELECT r.* FROM execution.execution_steps s
        CROSS JOIN LATERAL execution.step_metric_rows(s) r
        UNION ALL
        SELECT r.* FROM execution.approvals p
        CROSS JOIN LATERAL execution.approval_metric_rows(p) r
        UNION ALL
        SELECT r.* FROM execution.execution_events v
        CROSS JOIN LATERAL execution.event_metric_rows(v) r
        WHERE v.event_type IN ('rbac_violation', 'sla_violation', 'lock_reaped')
    ) AS m
    GROUP BY 1, 2;
END $$;

SELECT execution.metric_rollup_rebuild();

-- Gauges read live rows only: unfinished executions (the literal list is the complement
-- of terminal_statuses(); the metrics query repeats it so the planner matches the index),
-- and workers that have not signed off (the table keeps one row
-- per worker ever started).
CREATE INDEX executions_live_idx ON execution.executions (tenant_id, status)
    WHERE status IN ('pending_approval', 'approved', 'queued', 'running');
CREATE INDEX workers_running_idx ON execution.workers (last_heartbeat_at)
    WHERE stopped_at IS NULL;

-- History: prune finds an execution's dead-letter rows without a scan.
CREATE INDEX execution_dlq_execution_idx ON execution.execution_dlq (execution_id);

-- Retention: executions of this tenant finished more than this many days ago may be pruned
-- by `opsc history prune --retention` (NULL: kept until pruned by hand).
ALTER TABLE execution.tenants ADD COLUMN history_retention_days integer
    CHECK (history_retention_days >= 1);

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

-- Honest estimates: history per step (routing.step_key: type + hash of what it runs).
ALTER TABLE execution.execution_steps ADD COLUMN step_key text;
CREATE INDEX execution_steps_key_history_idx
    ON execution.execution_steps (tenant_id, step_key, finished_at DESC)
    WHERE step_key IS NOT NULL AND finished_at IS NOT NULL AND started_at IS NOT NULL;

-- Re-running the failed (opsc rerun ID --failed): the new execution points back at the one
-- whose failed targets it re-runs. Not retry_of, which links idempotency-key retries.
-- SET NULL: pruning the old one's history must not be blocked by a kept rerun (the rerun
-- holds its own whole plan snapshot; the link is for reading).
ALTER TABLE execution.executions
    ADD COLUMN rerun_of uuid REFERENCES execution.executions ON DELETE SET NULL;
CREATE INDEX executions_rerun_of_idx ON execution.executions (rerun_of)
    WHERE rerun_of IS NOT NULL;

-- SSH through a bastion: the asset id of the jump host (its own address, login, credential
-- and known_hosts entry apply). No foreign key: a missing bastion fails the connection
-- with a message, rather than blocking the bastion's removal.
ALTER TABLE execution.assets ADD COLUMN proxy_jump text
    CHECK (proxy_jump ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' AND proxy_jump <> asset_id);

-- Staged enablement (staging.py): per tenant, what each approval level may do for real
-- (real | record-only | refuse), and the canary share of eligible executions that run for
-- real. A table of its own: a tenant without a row runs everything for real, as before.
CREATE TABLE execution.tenant_staging (
    tenant_id      text PRIMARY KEY REFERENCES execution.tenants ON DELETE CASCADE,
    -- indexed by approval level 0..3
    level_modes    text[] NOT NULL DEFAULT '{real,real,real,real}'
        CHECK (cardinality(level_modes) = 4
               AND level_modes <@ ARRAY['real', 'record-only', 'refuse']::text[]),
    canary_percent smallint NOT NULL DEFAULT 100
        CHECK (canary_percent BETWEEN 0 AND 100),
    changed_by     text NOT NULL,
    changed_at     timestamptz NOT NULL DEFAULT now()
);
-- Why staging made an execution record-only (decided once, at submission; NULL: it did not).
ALTER TABLE execution.executions ADD COLUMN record_only_reason text;

-- Inventory variables (Ansible host and group vars, merged per host at import): templates
-- read them as asset.vars.*. Not secret: the importer refuses to store passwords here.
ALTER TABLE execution.assets
    ADD COLUMN vars jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(vars) = 'object');

-- 0027_rollup_per_statement
-- 0027: the executions' metric roll-up runs once per statement, and recomputes only what moved.
--
-- A worker moves many executions in one set-based statement (db/batching.py). The row
-- trigger of 0014 fired for each of them, twice per execution (started, finished), and each
-- time recomputed the row's whole contribution, old and new, events look-ups included: a
-- finishing execution looked up its queue wait twice only to subtract it from itself. Now
-- one statement trigger reads the statement's old and new rows (transition tables) and adds
-- per row only the parts whose inputs changed (execution_metric_delta); the parts are the
-- three pieces of execution_metric_rows, which the rebuild still uses whole.

-- Finished status (gauge), lease renewals, SLA violations: columns of the row only.
CREATE FUNCTION execution.execution_metric_rows_own(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'executions', ARRAY[e.tenant_id, e.status::text], 1::numeric
    WHERE e.status = ANY (execution.terminal_statuses())
    UNION ALL
    SELECT 'lease_renewals', '{}', e.lease_renewals WHERE e.lease_renewals <> 0
    UNION ALL
    SELECT 'sla_violations', ARRAY[e.tenant_id, e.sla_class::text], 1
    WHERE e.sla_violated_at IS NOT NULL
$$;

-- The SLA outcome of a finished execution that was approved (reads its events).
CREATE FUNCTION execution.execution_metric_rows_outcome(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT 'sla_outcomes',
           ARRAY[e.tenant_id, e.sla_class::text,
                 CASE WHEN e.sla_violated_at IS NULL THEN 'met' ELSE 'violated' END], 1::numeric
    WHERE e.finished_at IS NOT NULL
      AND EXISTS (SELECT 1 FROM execution.execution_events v
                  WHERE v.execution_id = e.id AND v.to_status = 'approved')
$$;

-- A background execution's queue wait, from its approval or queueing to its start.
CREATE FUNCTION execution.execution_metric_rows_wait(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT x.metric, x.labels, x.value
    FROM (SELECT extract(epoch FROM e.started_at - min(v.created_at)) AS w
          FROM execution.execution_events v
          WHERE e.mode = 'background' AND e.started_at IS NOT NULL
            AND v.execution_id = e.id AND v.to_status IN ('approved', 'queued')) AS a
    CROSS JOIN LATERAL (VALUES
        ('queue_wait', ARRAY[execution.metric_wait_bucket(a.w)], 1::numeric),
        ('queue_wait_sum', '{}'::text[], a.w)) AS x (metric, labels, value)
    WHERE a.w IS NOT NULL
$$;

-- The same rows as in 0014, now as the sum of the three parts (the rebuild's definition).
CREATE OR REPLACE FUNCTION execution.execution_metric_rows(e execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT * FROM execution.execution_metric_rows_own(e)
    UNION ALL
    SELECT * FROM execution.execution_metric_rows_outcome(e)
    UNION ALL
    SELECT * FROM execution.execution_metric_rows_wait(e)
$$;

-- What an update of one row adds: new minus old, for each part whose inputs changed.
CREATE FUNCTION execution.execution_metric_delta(o execution.executions, n execution.executions)
RETURNS TABLE (metric text, labels text[], value numeric)
LANGUAGE sql STABLE AS $$
    SELECT m.metric, m.labels, m.value FROM execution.execution_metric_rows_own(n) m
    UNION ALL
    SELECT m.metric, m.labels, -m.value FROM execution.execution_metric_rows_own(o) m
    UNION ALL
    SELECT m.metric, m.labels, m.value FROM execution.execution_metric_rows_outcome(n) m
    WHERE (o.finished_at, o.sla_violated_at, o.sla_class, o.tenant_id)
          IS DISTINCT FROM (n.finished_at, n.sla_violated_at, n.sla_class, n.tenant_id)
    UNION ALL
    SELECT m.metric, m.labels, -m.value FROM execution.execution_metric_rows_outcome(o) m
    WHERE (o.finished_at, o.sla_violated_at, o.sla_class, o.tenant_id)
          IS DISTINCT FROM (n.finished_at, n.sla_violated_at, n.sla_class, n.tenant_id)
    UNION ALL
    SELECT m.metric, m.labels, m.value FROM execution.execution_metric_rows_wait(n) m
    WHERE (o.started_at, o.mode) IS DISTINCT FROM (n.started_at, n.mode)
    UNION ALL
    SELECT m.metric, m.labels, -m.value FROM execution.execution_metric_rows_wait(o) m
    WHERE (o.started_at, o.mode) IS DISTINCT FROM (n.started_at, n.mode)
$$;

CREATE FUNCTION execution.metric_rollup_executions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Rows whose counted columns did not move (most updates) are dropped by the join's
    -- filter before any function runs.
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
    FROM gone o JOIN added n USING (id)
    CROSS JOIN LATERAL execution.execution_metric_delta(
        o::execution.executions, n::execution.executions) AS d
    WHERE (o.status, o.tenant_id, o.lease_renewals, o.sla_violated_at, o.sla_class,
           o.finished_at, o.started_at, o.mode)
          IS DISTINCT FROM (n.status, n.tenant_id, n.lease_renewals, n.sla_violated_at,
                            n.sla_class, n.finished_at, n.started_at, n.mode)
    GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;

DROP TRIGGER executions_metrics_update ON execution.executions;
CREATE TRIGGER executions_metrics_update AFTER UPDATE ON execution.executions
    REFERENCING OLD TABLE AS gone NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_executions();

-- 0025_notifications
-- Notifications (issue 19): per-tenant channels (an outbound webhook, signed, or an email
-- over SMTP) told about chosen kinds of events. The dispatcher (notification_dispatch.py,
-- run by the workers) reads execution_events behind a cursor and fills the deliveries
-- table (the outbox): nothing is added to the statements that run executions.
CREATE TABLE execution.notification_channels (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES execution.tenants ON DELETE CASCADE,
    name            text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    kind            text NOT NULL CHECK (kind IN ('webhook', 'email')),
    -- webhook: {url}; email: {host, port, sender, recipients, starttls, username}
    config          jsonb NOT NULL,
    -- a secret reference, never a value: the webhook's signing key, the SMTP password
    secret_ref      text,
    events          text[] NOT NULL CHECK (cardinality(events) > 0),
    -- events up to this id happened before the channel existed: it is not told of them
    since_event_id  bigint NOT NULL,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- The outbox: one row per (channel, event), so refilling from the cursor is idempotent.
-- No foreign key to executions: deliveries are a log that outlives pruned history.
CREATE TABLE execution.notification_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id       bigint NOT NULL REFERENCES execution.notification_channels ON DELETE CASCADE,
    tenant_id        text NOT NULL,
    event_kind       text NOT NULL,
    -- NULL: a test message (opsc notifications channels test)
    event_id         bigint,
    execution_id     uuid,
    state            text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (channel_id, event_id)
);
CREATE INDEX notification_deliveries_due_idx ON execution.notification_deliveries
    (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notification_deliveries_tenant_idx ON execution.notification_deliveries
    (tenant_id, id);

-- Every try of a delivery: what the receiver answered, or why it could not be reached.
CREATE TABLE execution.notification_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES execution.notification_deliveries ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt > 0),
    ok           boolean NOT NULL,
    detail       text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_attempts_delivery_idx ON execution.notification_attempts
    (delivery_id, id);

-- The dispatcher's place in execution_events (one row). Event ids are drawn in commit order
-- per execution only, so an id below one already seen may still commit: every id up to
-- horizon_id was drawn by a transaction older than horizon_xid, and once every such
-- transaction has ended (the snapshot's xmin passed it) done_id moves up to horizon_id.
CREATE TABLE execution.notification_cursor (
    only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    done_id      bigint NOT NULL,
    horizon_id   bigint,
    horizon_xid  xid8
);
INSERT INTO execution.notification_cursor (done_id)
SELECT coalesce(max(id), 0) FROM execution.execution_events;

-- Dynamic inventory sources (inventory_sources.py): per tenant, an `ansible-inventory --list`
-- run or a NetBox-compatible REST API whose devices a sync turns into assets. The NetBox
-- token is a secret *reference* (a secret store path), never the token itself.
CREATE TABLE execution.inventory_sources (
    tenant_id    text NOT NULL REFERENCES execution.tenants ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    kind         text NOT NULL CHECK (kind IN ('ansible', 'netbox')),
    -- ansible: an inventory directory or plugin config, relative to the tenant's files root
    path         text,
    -- netbox: the API's base URL and the secret store path of its token
    url          text,
    token_ref    text,
    environment  text NOT NULL,
    -- the schedule (NULL: on demand only); a sync claims its due row by moving next_sync_at
    every_s      integer CHECK (every_s BETWEEN 60 AND 604800),
    next_sync_at timestamptz,
    last_sync_at timestamptz,
    last_result  text CHECK (last_result IN ('ok', 'failed')),
    last_error   text,
    last_counts  jsonb,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name),
    CHECK ((kind = 'ansible' AND path IS NOT NULL AND url IS NULL AND token_ref IS NULL)
        OR (kind = 'netbox' AND url IS NOT NULL AND path IS NULL)),
    CHECK ((every_s IS NULL) = (next_sync_at IS NULL))
);
CREATE INDEX inventory_sources_due_idx ON execution.inventory_sources (next_sync_at)
    WHERE next_sync_at IS NOT NULL;
-- The source that owns an asset (NULL: made by hand or imported from a file): a sync
-- removes only its own assets. Removing a source leaves its assets, no longer owned.
ALTER TABLE execution.assets ADD COLUMN inventory_source text;
ALTER TABLE execution.assets ADD CONSTRAINT assets_inventory_source_fkey
    FOREIGN KEY (tenant_id, inventory_source)
    REFERENCES execution.inventory_sources (tenant_id, name)
    ON DELETE SET NULL (inventory_source);

-- Jobs (saved, versioned plans), their schedules and inbound webhooks (issue 19).
-- A job's versions are immutable; saving different content adds the next version.
CREATE TABLE execution.jobs (
    tenant_id      text NOT NULL REFERENCES execution.tenants ON DELETE CASCADE,
    name           text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    latest_version integer NOT NULL CHECK (latest_version >= 1),
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE execution.job_versions (
    tenant_id    text NOT NULL,
    job_name     text NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    -- the plan document (plan.plan_document), its params declarations included
    plan         jsonb NOT NULL CHECK (jsonb_typeof(plan) = 'object'),
    content_hash text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, job_name, version),
    FOREIGN KEY (tenant_id, job_name) REFERENCES execution.jobs ON DELETE CASCADE
);
-- The job (and version) an execution ran, if any. No foreign key: a deleted job keeps
-- the history of its runs.
ALTER TABLE execution.executions ADD COLUMN job_name text, ADD COLUMN job_version integer;
CREATE INDEX executions_job_idx ON execution.executions (tenant_id, job_name, created_at)
    WHERE job_name IS NOT NULL;

-- Schedules: a cron expression in a time zone firing a job with params, as its creator.
CREATE TABLE execution.schedules (
    id            uuid PRIMARY KEY,
    tenant_id     text NOT NULL,
    name          text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    job_name      text NOT NULL,
    cron          text NOT NULL CHECK (length(cron) BETWEEN 9 AND 200),
    timezone      text NOT NULL CHECK (length(timezone) BETWEEN 1 AND 64),
    params        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(params) = 'object'),
    missed        text NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip', 'run_once')),
    paused        boolean NOT NULL DEFAULT false,
    -- the next slot not yet fired; a fire moves it on in the fire's own transaction
    next_fire_at  timestamptz NOT NULL,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    FOREIGN KEY (tenant_id, job_name) REFERENCES execution.jobs ON DELETE CASCADE
);
CREATE INDEX schedules_due_idx ON execution.schedules (next_fire_at) WHERE NOT paused;
-- One row per fired slot: the primary key is what makes a slot fire once, whatever the
-- number of workers (inserted in the same transaction as the submission).
CREATE TABLE execution.schedule_fires (
    schedule_id  uuid NOT NULL REFERENCES execution.schedules ON DELETE CASCADE,
    slot         timestamptz NOT NULL,
    -- a run_once catch-up standing for every slot missed during a downtime
    catch_up     boolean NOT NULL DEFAULT false,
    execution_id uuid REFERENCES execution.executions ON DELETE SET NULL,
    -- why no execution was created (refused by RBAC, a parameter, no target...)
    error        text,
    -- the worker whose round fired it
    fired_by     text,
    fired_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, slot)
);

-- Inbound webhooks: an HMAC-signed POST starts a job, body fields mapped to params.
CREATE TABLE execution.job_hooks (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{16,64}$'),
    tenant_id   text NOT NULL,
    job_name    text NOT NULL,
    -- the signing secret's path in the secret store (sealed there, never here)
    secret_path text NOT NULL,
    -- param name -> JSON pointer or dotted path into the body
    mapping     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(mapping) = 'object'),
    -- fixed param values, under the mapped ones
    params      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(params) = 'object'),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, job_name) REFERENCES execution.jobs ON DELETE CASCADE
);
-- Every delivery to a known hook, accepted or refused, with the reason; never the body.
CREATE TABLE execution.hook_deliveries (
    id           bigserial PRIMARY KEY,
    hook_id      text NOT NULL REFERENCES execution.job_hooks ON DELETE CASCADE,
    tenant_id    text NOT NULL,
    accepted     boolean NOT NULL,
    status_code  smallint NOT NULL,
    reason       text,
    -- the signature's hex digest (an HMAC output, not the secret): replays are found by it
    signature    text CHECK (signature ~ '^[0-9a-f]{64}$'),
    delivery_id  text CHECK (length(delivery_id) <= 200),
    body_sha256  text,
    execution_id uuid REFERENCES execution.executions ON DELETE SET NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX hook_deliveries_signature_once ON execution.hook_deliveries
    (hook_id, signature) WHERE accepted;
CREATE UNIQUE INDEX hook_deliveries_delivery_once ON execution.hook_deliveries
    (hook_id, delivery_id) WHERE accepted AND delivery_id IS NOT NULL;
CREATE INDEX hook_deliveries_hook_idx ON execution.hook_deliveries (hook_id, received_at);

-- 0028_event_order_sequence
-- 0028: an event's id drawn from its sequence by name, not looked up per row.
--
-- order_event (0007) runs for every event row. It found the id sequence through
-- pg_get_serial_sequence() on each call, a catalog look-up that cost about 8 us of server
-- time per event (six per execution; measured by swapping the function on copies of one
-- database, the way bench/rollup.py swaps triggers). The sequence is the column's
-- own, named when the table was made: a regclass constant resolves once per plan.
CREATE OR REPLACE FUNCTION execution.order_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM execution.executions WHERE id = NEW.execution_id FOR NO KEY UPDATE;
    NEW.id := nextval('execution.execution_events_id_seq'::regclass);
    RETURN NEW;
END $$;

-- 0029_queued_at_submission
-- 0029: a bulk submission stores an execution approved by policy (level 0) already queued.
--
-- It was inserted as approved, then moved to queued by an UPDATE: a second version of the
-- row (all its indexes again), the status trigger and the metric roll-up trigger for
-- nothing (approved -> queued counts nothing). The events stay as they were: `submitted`
-- (to approved) and `status_changed` (approved -> queued), written with the row. Created
-- queued is only for what needs no approval: at level 1-3 it must wait for a human.

CREATE OR REPLACE FUNCTION execution.execution_transitions()
RETURNS TABLE (from_status execution.execution_status, to_status execution.execution_status)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    VALUES
        (NULL::execution.execution_status, 'pending_approval'::execution.execution_status),
        (NULL, 'approved'), (NULL, 'queued'),
        ('pending_approval', 'approved'), ('pending_approval', 'rejected'),
        ('pending_approval', 'cancelled'),
        ('approved', 'queued'), ('approved', 'running'), ('approved', 'cancelled'),
        ('approved', 'pending_approval'),
        ('queued', 'running'), ('queued', 'cancelled'), ('queued', 'timeout'),
        ('queued', 'pending_approval'),
        ('running', 'completed'), ('running', 'failed'), ('running', 'cancelled'),
        ('running', 'timeout'), ('running', 'partial')
$$;

CREATE OR REPLACE FUNCTION execution.check_execution_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    previous execution.execution_status;
    allowed text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.status;
    ELSIF NEW.status = 'queued' AND NEW.approval_level <> 0 THEN
        RAISE EXCEPTION 'illegal initial status for execution %: queued at approval level %; '
                        'only level 0 (approved by policy) may be queued at submission',
            NEW.id, NEW.approval_level
            USING ERRCODE = 'check_violation', SCHEMA = TG_TABLE_SCHEMA,
                  TABLE = TG_TABLE_NAME, COLUMN = 'status', CONSTRAINT = 'status_machine';
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

-- 0030_event_type_index_partial
-- 0030: the event-type index holds only the counted types.
--
-- execution_events_type_idx (0007) indexed every event's type for the metrics' recount
-- of the few counted types (rbac_violation, sla_violation, lock_reaped: COUNTED_EVENTS in
-- db/metrics.py; the roll-up's rebuild reads the same). Every event paid an index entry
-- for it: about six per drained execution, none of them of those types. Partial, it
-- serves the same reads and costs the workers' event writes nothing.
DROP INDEX execution.execution_events_type_idx;
CREATE INDEX execution_events_type_idx ON execution.execution_events (event_type)
    WHERE event_type IN ('rbac_violation', 'sla_violation', 'lock_reaped');

-- 0031_fast_row_checks
-- 0031: the row triggers every write pays for, off PL/pgSQL in the common case.
--
-- Measured on a scratch copy, 20,000 rows per statement (load ~1.5): the status machine's
-- trigger cost ~47 us per execution status change (1,072 ms against 133 ms without it)
-- and ~30 us per new step attempt (662 against 59 ms): a PL/pgSQL call that scans the
-- transition table function for every row. The drain pays it four times per execution,
-- a submission twice. The legal moves now sit in each trigger's WHEN clause as a constant
-- array of 'from>to' strings, built below from the same transition functions (so those
-- stay the one table, checked against status_machine.py by tests); the PL/pgSQL function,
-- unchanged, runs only for an illegal move, to refuse it with its message.
--
-- order_event locks the execution row for each event so that one execution's event ids
-- commit in id order (0007). An execution created in the same transaction is invisible to
-- every other transaction, so no other event of it can interleave: a bulk submission
-- (db/bulk.py) says so for the rest of its transaction with the transaction-local setting
-- opsconductor.events_of_new_executions = 'on', and its events keep the ids they drew.

DO $$
DECLARE
    moves text[];
    first text[];
BEGIN
    SELECT array_agg(coalesce(from_status::text, '') || '>' || to_status::text ORDER BY 1)
    INTO moves FROM execution.execution_transitions() WHERE from_status IS NOT NULL;
    SELECT array_agg('>' || to_status::text ORDER BY 1)
    INTO first FROM execution.execution_transitions() WHERE from_status IS NULL;
    DROP TRIGGER executions_status_machine ON execution.executions;
    EXECUTE format($t$
        CREATE TRIGGER executions_status_machine
            BEFORE UPDATE OF status ON execution.executions
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                AND NOT (OLD.status::text || '>' || NEW.status::text) = ANY (%L::text[]))
            EXECUTE FUNCTION execution.check_execution_transition()$t$, moves);
    -- queued at submission is only for level 0 (0029): anything else goes to the function
    DROP TRIGGER executions_initial_status ON execution.executions;
    EXECUTE format($t$
        CREATE TRIGGER executions_initial_status
            BEFORE INSERT ON execution.executions
            FOR EACH ROW WHEN (NOT ('>' || NEW.status::text) = ANY (%L::text[])
                OR (NEW.status = 'queued' AND NEW.approval_level <> 0))
            EXECUTE FUNCTION execution.check_execution_transition()$t$, first);

    SELECT array_agg(from_status || '>' || to_status ORDER BY 1)
    INTO moves FROM execution.step_transitions() WHERE from_status IS NOT NULL;
    SELECT array_agg('>' || to_status ORDER BY 1)
    INTO first FROM execution.step_transitions() WHERE from_status IS NULL;
    DROP TRIGGER execution_steps_status_machine ON execution.execution_steps;
    EXECUTE format($t$
        CREATE TRIGGER execution_steps_status_machine
            BEFORE UPDATE OF status ON execution.execution_steps
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                AND NOT (OLD.status || '>' || NEW.status) = ANY (%L::text[]))
            EXECUTE FUNCTION execution.check_step_transition()$t$, moves);
    DROP TRIGGER execution_steps_initial_status ON execution.execution_steps;
    EXECUTE format($t$
        CREATE TRIGGER execution_steps_initial_status
            BEFORE INSERT ON execution.execution_steps
            FOR EACH ROW WHEN (NEW.status IS NULL
                OR NOT ('>' || NEW.status) = ANY (%L::text[]))
            EXECUTE FUNCTION execution.check_step_transition()$t$, first);
END $$;

DROP TRIGGER execution_events_order ON execution.execution_events;
CREATE TRIGGER execution_events_order BEFORE INSERT ON execution.execution_events
    FOR EACH ROW
    WHEN (current_setting('opsconductor.events_of_new_executions', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION execution.order_event();

-- 0032_cheaper_execution_writes
-- 0032: what every new execution row paid for and did not need to.
--
-- The plan hash check was a regular expression with a bounded repetition, '^[0-9a-f]{64}$':
-- PostgreSQL's regex engine took ~20 us of server time for each row (callgrind: 12% of a
-- bulk enqueue's server instructions). The same rule, 64 characters that are all lowercase
-- hex digits, as a length test and an unbounded class costs ~1 us.
--
-- executions_tenant_status_idx indexed every row under (tenant_id, status), although the
-- unfinished statuses are in executions_live_idx already: every new execution and every
-- status change among unfinished ones paid an entry that only the finished statuses need.
-- It now holds the finished ones alone, the complement of executions_live_idx, so a query
-- for a tenant's executions in one status still finds them by index (EXPLAIN on a 300,000
-- row copy: the listing by a rare status and the roll-up recount use the two partial
-- indexes, every other query the same index as before).

ALTER TABLE execution.executions
    DROP CONSTRAINT executions_plan_hash_check,
    ADD CONSTRAINT executions_plan_hash_check
        CHECK (length(plan_hash) = 64 AND plan_hash ~ '^[0-9a-f]+$');
ALTER TABLE execution.approvals
    DROP CONSTRAINT approvals_plan_hash_check,
    ADD CONSTRAINT approvals_plan_hash_check
        CHECK (length(plan_hash) = 64 AND plan_hash ~ '^[0-9a-f]+$');

DROP INDEX execution.executions_tenant_status_idx;
CREATE INDEX executions_finished_idx ON execution.executions (tenant_id, status)
    WHERE status NOT IN ('pending_approval', 'approved', 'queued', 'running');

-- 0033_generic_plans
-- 0033: the hot set-based statements of the workers' path as PL/pgSQL functions whose
-- statements use a generic plan from their first call.
--
-- transition, end_run and the claim cost the server 2-2.5 ms to plan each (CTEs, row
-- locks, triggers and foreign keys to expand), several times the cost of running them for
-- a batch. Sent as prepared statements they were still planned again for each of their
-- first five calls on every pooled connection (PostgreSQL tries custom plans first), and a
-- worker rotates over its whole pool: on a drain of a few thousand executions most calls
-- were planned. Their one parameter is a JSON array the planner cannot see into, so a
-- custom plan is never better than the generic one: here the generic plan is made once per
-- connection (the function's plan_cache_mode) and the statement sent is a function call,
-- cheap to plan. The statements are those of db/sql/executions.sql and queue.sql before
-- this migration, word for word but for their parameters; those blocks call these now.
-- `#variable_conflict use_column`: the result columns' names (ord, id, leased, ...) are
-- also column names inside the statements, where they mean the columns.

-- Its events need not take their execution's row lock one by one (order_event): each is
-- written for a row this statement has just updated, whose lock it holds to its commit.
CREATE FUNCTION execution.transition_batch(items jsonb)
RETURNS TABLE (ord int, id bigint, leased bool)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH t AS (
        SELECT * FROM jsonb_to_recordset(items) AS t(
            ord int, id uuid, from_status execution.execution_status,
            to_status execution.execution_status, terminal bool, reason text, actor_id text,
            payload jsonb, timeout_at timestamptz, worker_id text, lease_token uuid,
            skip_pending bool)
    ), lease AS (
        SELECT q.execution_id FROM execution.execution_queue q
        JOIN t ON q.execution_id = t.id AND q.lease_token = t.lease_token
        WHERE q.execution_id = ANY(ARRAY(SELECT id FROM t WHERE lease_token IS NOT NULL))
        ORDER BY q.execution_id
        FOR UPDATE OF q
    ), held AS (
        SELECT t.*, t.lease_token IS NULL OR t.id IN (SELECT execution_id FROM lease) AS leased
        FROM t
    ), moved AS (
        UPDATE execution.executions e SET
            status = h.to_status,
            status_reason = coalesce(h.reason, e.status_reason),
            started_at = CASE WHEN h.to_status = 'running' THEN coalesce(e.started_at, now())
                              ELSE e.started_at END,
            finished_at = CASE WHEN h.terminal THEN now() ELSE e.finished_at END,
            timeout_at = coalesce(h.timeout_at, e.timeout_at),
            worker_id = coalesce(h.worker_id, e.worker_id),
            cancelled_by = CASE WHEN h.to_status = 'cancelled' THEN h.actor_id ELSE e.cancelled_by END,
            cancelled_at = CASE WHEN h.to_status = 'cancelled' THEN now() ELSE e.cancelled_at END
        FROM held h
        WHERE e.id = ANY(ARRAY(SELECT id FROM held WHERE leased))
          AND e.id = h.id AND e.status = h.from_status AND h.leased
        RETURNING h.ord, e.id, e.tenant_id, h.from_status, h.to_status, h.actor_id, h.payload,
                  h.lease_token, h.skip_pending
    ), dequeued AS (
        DELETE FROM execution.execution_queue q USING moved m
        WHERE q.execution_id = m.id AND q.lease_token = m.lease_token
    ), skipped AS (
        UPDATE execution.execution_steps s SET status = 'skipped', finished_at = now()
        FROM moved m
        WHERE m.skip_pending AND s.execution_id = m.id AND s.status = 'pending'
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT id, tenant_id, 'status_changed', from_status, to_status, actor_id, payload
        FROM moved ORDER BY ord
        RETURNING id, execution_id
    )
    SELECT h.ord, (SELECT l.id FROM logged l WHERE l.execution_id = h.id) AS id, h.leased
    FROM held h;
END $$;

-- Its status_changed events are written for rows this statement has just updated (their
-- locks held to its commit); a step_finished event is also written when the move failed,
-- so the statement takes that execution's row lock before the event's id is drawn, as
-- order_event did row by row (in the same order: the items', after the queue rows).
CREATE FUNCTION execution.end_run_batch(items jsonb)
RETURNS TABLE (ord int, id bigint, leased bool)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH t AS (
        SELECT * FROM jsonb_to_recordset(items) AS t(
            ord int, id uuid, tenant_id text, from_status execution.execution_status,
            to_status execution.execution_status, terminal bool, reason text, actor_id text,
            payload jsonb, timeout_at timestamptz, worker_id text, lease_token uuid,
            skip_pending bool, attempt_id bigint, step_status text, exit_code int, output text,
            stderr text, error text, step_actor text, step_payload jsonb, locks jsonb)
    ), lease AS (
        SELECT q.execution_id FROM execution.execution_queue q
        JOIN t ON q.execution_id = t.id AND q.lease_token = t.lease_token
        WHERE q.execution_id = ANY(ARRAY(SELECT id FROM t WHERE lease_token IS NOT NULL))
        ORDER BY q.execution_id
        FOR UPDATE OF q
    ), held AS (
        SELECT t.*, t.lease_token IS NULL OR t.id IN (SELECT execution_id FROM lease) AS leased
        FROM t
    ), finished AS (
        UPDATE execution.execution_steps s SET
            status = t.step_status, finished_at = now(), exit_code = t.exit_code,
            output = t.output, stderr = t.stderr, error = t.error
        FROM t
        WHERE s.id = ANY(ARRAY(SELECT attempt_id FROM t WHERE attempt_id IS NOT NULL))
          AND s.id = t.attempt_id AND s.status = 'running'
    ), released AS (
        -- by primary key, one index probe per lock (a join by tenant alone reads all its locks)
        DELETE FROM execution.execution_locks l
        WHERE (l.tenant_id, l.asset_id, l.owner_tag) IN (
            SELECT t.tenant_id, k.asset_id, k.owner_tag
            FROM t CROSS JOIN LATERAL jsonb_to_recordset(t.locks) AS k(asset_id text, owner_tag text)
            WHERE t.locks IS NOT NULL)
    ), moved AS (
        UPDATE execution.executions e SET
            status = h.to_status,
            status_reason = coalesce(h.reason, e.status_reason),
            started_at = CASE WHEN h.to_status = 'running' THEN coalesce(e.started_at, now())
                              ELSE e.started_at END,
            finished_at = CASE WHEN h.terminal THEN now() ELSE e.finished_at END,
            timeout_at = coalesce(h.timeout_at, e.timeout_at),
            worker_id = coalesce(h.worker_id, e.worker_id),
            cancelled_by = CASE WHEN h.to_status = 'cancelled' THEN h.actor_id ELSE e.cancelled_by END,
            cancelled_at = CASE WHEN h.to_status = 'cancelled' THEN now() ELSE e.cancelled_at END
        FROM held h
        WHERE e.id = ANY(ARRAY(SELECT id FROM held WHERE leased))
          AND e.id = h.id AND e.status = h.from_status AND h.leased
        RETURNING h.ord, e.id, e.tenant_id, h.from_status, h.to_status, h.actor_id, h.payload,
                  h.lease_token, h.skip_pending
    ), dequeued AS (
        DELETE FROM execution.execution_queue q USING moved m
        WHERE q.execution_id = m.id AND q.lease_token = m.lease_token
    ), skipped AS (
        UPDATE execution.execution_steps s SET status = 'skipped', finished_at = now()
        FROM moved m
        WHERE m.skip_pending AND s.execution_id = m.id AND s.status = 'pending'
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT v.execution_id, v.tenant_id, v.event_type, v.from_status, v.to_status, v.actor_id,
               v.payload
        FROM (SELECT t.ord, 0 AS seq, t.id AS execution_id, t.tenant_id,
                     'step_finished' AS event_type, NULL::execution.execution_status AS from_status,
                     NULL::execution.execution_status AS to_status, t.step_actor AS actor_id,
                     t.step_payload AS payload
              FROM t CROSS JOIN LATERAL (
                  SELECT 1 FROM execution.executions x WHERE x.id = t.id
                  FOR NO KEY UPDATE OF x) AS locked
              WHERE t.attempt_id IS NOT NULL
              UNION ALL
              SELECT m.ord, 1, m.id, m.tenant_id, 'status_changed', m.from_status, m.to_status,
                     m.actor_id, m.payload
              FROM moved m) AS v
        ORDER BY v.ord, v.seq
        RETURNING id, execution_id, event_type
    )
    SELECT h.ord,
           (SELECT l.id FROM logged l
            WHERE l.execution_id = h.id AND l.event_type = 'status_changed') AS id,
           h.leased
    FROM held h;
END $$;

-- The execution row comes back whole (db/sql/queue.sql expands it into its columns).
CREATE FUNCTION execution.claim_batch(claim_worker text, claim_limit int, claim_lease_s float8)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at FROM execution.execution_queue
        WHERE lease_token IS NULL AND available_at <= now()
        ORDER BY (interrupted_at IS NULL), priority, available_at
        LIMIT claim_limit
        FOR UPDATE SKIP LOCKED
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = p.execution_id AND p.interrupted_at IS NOT NULL AND e.timeout_at IS NOT NULL
          AND e.status = 'running'
        RETURNING e.id, e.timeout_at
    )
    UPDATE execution.execution_queue q SET
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => coalesce(claim_lease_s, q.lease_timeout_s)),
        worker_id = claim_worker,
        leased_at = now(),
        attempt_count = q.attempt_count + 1,
        recovery_s = q.recovery_s + coalesce(extract(epoch FROM now() - picked.interrupted_at), 0),
        interrupted_at = NULL
    FROM picked
    JOIN execution.executions e ON e.id = picked.execution_id
    LEFT JOIN extended x ON x.id = picked.execution_id
    WHERE q.execution_id = picked.execution_id
    -- The execution row comes back with the lease: the worker need not read it again. So does
    -- what the engine reads to start it (runs.start_context: the tenant's settings, masking
    -- patterns and the plan's targets, as the start_context statement reads them).
    RETURNING e, q.lease_token, q.attempt_count, q.max_attempts,
              coalesce(claim_lease_s, q.lease_timeout_s) AS lease_s,
              x.timeout_at AS extended_timeout_at,
              extract(epoch FROM now() - picked.interrupted_at)::float8 AS recovered_after_s,
              q.interruption, q.interruptions, q.recovery_s,
              (SELECT json_build_object(
                   'record_only', tn.record_only, 'host_key_policy', tn.host_key_policy,
                   'local_execution', tn.local_execution, 'local_network', tn.local_network,
                   'masking_patterns',
                   coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                             FROM execution.masking_patterns p WHERE p.tenant_id = tn.tenant_id),
                            '[]'::json),
                   'assets',
                   coalesce((SELECT json_agg(a ORDER BY a.asset_id) FROM execution.assets a
                             WHERE a.tenant_id = tn.tenant_id
                               AND a.asset_id = ANY(ARRAY(
                                   SELECT jsonb_array_elements_text(s)
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s))),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context;
END $$;

-- The executions' roll-up trigger (0027) cost more to plan than to run: its statement
-- inlined execution_metric_delta, six part functions with their subqueries, 6-8 ms of
-- planning on each connection that ever updated an execution (most of a worker's pool).
-- The same deltas, written flat: per changed row the own parts of the old and the new row,
-- and the look-ups of events only for the part whose inputs moved (a sub-select inside a
-- CASE runs only when its branch is taken). An execution's events are the same for its
-- old and new row, so each look-up runs once for both. execution_metric_rows stays the
-- definition (the rebuild's); tests/test_metrics_rollup.py checks the two agree.
CREATE OR REPLACE FUNCTION execution.metric_rollup_executions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
    FROM gone o JOIN added n USING (id)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN (o.finished_at, o.sla_violated_at, o.sla_class, o.tenant_id)
                         IS DISTINCT FROM (n.finished_at, n.sla_violated_at, n.sla_class,
                                           n.tenant_id)
                         AND (o.finished_at IS NOT NULL OR n.finished_at IS NOT NULL)
                    THEN EXISTS (SELECT 1 FROM execution.execution_events v
                                 WHERE v.execution_id = n.id AND v.to_status = 'approved')
                    ELSE false END AS approved,
               CASE WHEN (o.started_at, o.mode) IS DISTINCT FROM (n.started_at, n.mode)
                         AND ((o.mode = 'background' AND o.started_at IS NOT NULL)
                              OR (n.mode = 'background' AND n.started_at IS NOT NULL))
                    THEN (SELECT min(v.created_at) FROM execution.execution_events v
                          WHERE v.execution_id = n.id
                            AND v.to_status IN ('approved', 'queued')) END AS waited_from
        OFFSET 0) AS x
    CROSS JOIN LATERAL (
        SELECT extract(epoch FROM n.started_at - x.waited_from) AS new_w,
               extract(epoch FROM o.started_at - x.waited_from) AS old_w
        OFFSET 0) AS w
    CROSS JOIN LATERAL (VALUES
        ('executions', ARRAY[n.tenant_id, n.status::text],
         CASE WHEN n.status = ANY (execution.terminal_statuses()) THEN 1 END),
        ('executions', ARRAY[o.tenant_id, o.status::text],
         CASE WHEN o.status = ANY (execution.terminal_statuses()) THEN -1 END),
        ('lease_renewals', '{}'::text[], n.lease_renewals::numeric - o.lease_renewals),
        ('sla_violations', ARRAY[n.tenant_id, n.sla_class::text],
         CASE WHEN n.sla_violated_at IS NOT NULL THEN 1 END),
        ('sla_violations', ARRAY[o.tenant_id, o.sla_class::text],
         CASE WHEN o.sla_violated_at IS NOT NULL THEN -1 END),
        ('sla_outcomes',
         ARRAY[n.tenant_id, n.sla_class::text,
               CASE WHEN n.sla_violated_at IS NULL THEN 'met' ELSE 'violated' END],
         CASE WHEN x.approved AND n.finished_at IS NOT NULL THEN 1 END),
        ('sla_outcomes',
         ARRAY[o.tenant_id, o.sla_class::text,
               CASE WHEN o.sla_violated_at IS NULL THEN 'met' ELSE 'violated' END],
         CASE WHEN x.approved AND o.finished_at IS NOT NULL THEN -1 END),
        ('queue_wait', ARRAY[execution.metric_wait_bucket(w.new_w)],
         CASE WHEN n.mode = 'background' AND w.new_w IS NOT NULL THEN 1 END),
        ('queue_wait_sum', '{}'::text[],
         CASE WHEN n.mode = 'background' THEN w.new_w END),
        ('queue_wait', ARRAY[execution.metric_wait_bucket(w.old_w)],
         CASE WHEN o.mode = 'background' AND w.old_w IS NOT NULL THEN -1 END),
        ('queue_wait_sum', '{}'::text[],
         CASE WHEN o.mode = 'background' THEN -w.old_w END)
    ) AS d (metric, labels, value)
    WHERE (o.status, o.tenant_id, o.lease_renewals, o.sla_violated_at, o.sla_class,
           o.finished_at, o.started_at, o.mode)
          IS DISTINCT FROM (n.status, n.tenant_id, n.lease_renewals, n.sla_violated_at,
                            n.sla_class, n.finished_at, n.started_at, n.mode)
      AND d.value IS NOT NULL
    GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;

-- The step attempts' roll-up on update, written flat in the same way (every attempt's start
-- and end fires it): step_metric_rows of the new row minus the old, without inlining the
-- function twice. metric_rollup_apply keeps its branch for this table (unused now) and
-- serves approvals and deletions as before.
CREATE FUNCTION execution.metric_rollup_steps() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    SELECT d.metric, d.labels, pg_backend_pid(), sum(d.value)
    FROM gone o JOIN added n USING (id)
    CROSS JOIN LATERAL (
        SELECT extract(epoch FROM n.finished_at - n.started_at) AS new_w,
               extract(epoch FROM o.finished_at - o.started_at) AS old_w
        OFFSET 0) AS w
    CROSS JOIN LATERAL (VALUES
        ('step_retries', ARRAY[n.step_type], CASE WHEN n.attempt > 1 THEN 1 END),
        ('step_retries', ARRAY[o.step_type], CASE WHEN o.attempt > 1 THEN -1 END),
        ('step_duration', ARRAY[n.step_type, execution.metric_duration_bucket(w.new_w)],
         CASE WHEN w.new_w IS NOT NULL THEN 1 END),
        ('step_duration_sum', ARRAY[n.step_type], w.new_w),
        ('step_duration', ARRAY[o.step_type, execution.metric_duration_bucket(w.old_w)],
         CASE WHEN w.old_w IS NOT NULL THEN -1 END),
        ('step_duration_sum', ARRAY[o.step_type], -w.old_w)
    ) AS d (metric, labels, value)
    WHERE (o.step_type, o.attempt, o.started_at, o.finished_at)
          IS DISTINCT FROM (n.step_type, n.attempt, n.started_at, n.finished_at)
      AND d.value IS NOT NULL
    GROUP BY 1, 2 HAVING sum(d.value) <> 0 ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;
DROP TRIGGER execution_steps_metrics_update ON execution.execution_steps;
CREATE TRIGGER execution_steps_metrics_update AFTER UPDATE ON execution.execution_steps
    REFERENCING OLD TABLE AS gone NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION execution.metric_rollup_steps();

-- start_attempt_logged as a function too (planned once per connection, as above). Its
-- step_started events take their executions' row locks in one go, in id order, before any
-- of their ids is drawn (the join below waits for them), instead of order_event's per row.
CREATE FUNCTION execution.start_attempt_batch(items jsonb)
RETURNS TABLE (ord int, id bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH t AS (
        SELECT * FROM jsonb_to_recordset(items) AS t(
            ord int, execution_id uuid, tenant_id text, step_index int, step_name text,
            step_type text, asset_id text, attempt int, retry_count int, actor_id text,
            payload jsonb)
    ), started AS (
        INSERT INTO execution.execution_steps
            (execution_id, tenant_id, step_index, step_name, step_type, target_asset_id, status,
             attempt, retry_count, started_at)
        SELECT execution_id, tenant_id, step_index, step_name, step_type, asset_id, 'running',
               attempt, retry_count, now()
        FROM t ORDER BY ord
        ON CONFLICT (execution_id, step_index, target_asset_id, attempt) DO UPDATE
            SET status = 'running', retry_count = EXCLUDED.retry_count, started_at = now()
            WHERE execution_steps.status = 'pending'
        RETURNING id, execution_id, step_index, target_asset_id, attempt
    ), answered AS (
        SELECT t.*, s.id FROM started s JOIN t
            ON (t.execution_id, t.step_index, t.asset_id, t.attempt)
             = (s.execution_id, s.step_index, s.target_asset_id, s.attempt)
    ), locked AS (
        SELECT x.id FROM execution.executions x
        WHERE x.id = ANY(ARRAY(SELECT execution_id FROM answered))
        ORDER BY x.id
        FOR NO KEY UPDATE OF x
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT a.execution_id, a.tenant_id, 'step_started', NULL, NULL, a.actor_id, a.payload
        FROM answered a JOIN locked l ON l.id = a.execution_id ORDER BY a.ord
    )
    SELECT ord, id FROM answered;
END $$;

-- 0034_schedule_version
-- A schedule runs one version of its job, chosen when it is added (the latest then, or
-- one named), unless it was added to follow the latest (NULL). It runs as its creator:
-- following the latest would run whatever a later saver wrote under the creator's roles.
-- Schedules added before this migration keep following the latest (NULL), as they did.
ALTER TABLE execution.schedules ADD COLUMN job_version integer,
    ADD FOREIGN KEY (tenant_id, job_name, job_version)
        REFERENCES execution.job_versions ON DELETE CASCADE;

-- 0035_hook_version
-- A webhook runs one version of its job, as its creator, like a schedule (0034): the
-- latest when the hook is made, or one named; NULL follows the latest (hooks made before
-- this migration keep doing so).
ALTER TABLE execution.job_hooks ADD COLUMN job_version integer,
    ADD FOREIGN KEY (tenant_id, job_name, job_version)
        REFERENCES execution.job_versions ON DELETE CASCADE;

-- 0036_cheaper_drain_writes
-- 0036: what the server spends per drained execution, cut where it bought nothing.
--
-- The roll-up triggers (0027, 0033) cost more than any statement of the drain but one:
-- on a 3,000-execution drain (track_functions) metric_rollup_executions took ~190 us of
-- self time per execution and metric_rollup_steps ~90. Per changed row they expanded
-- eleven (steps: six) candidate rows, built each one's label array and then threw most
-- away, and they ran their whole plan for statements that updated nothing (the claim's
-- timeout extension, the start's ON CONFLICT, the transition's step skipping: three of the
-- five calls per batch).
--
-- Now: no work at all for an empty statement, and each part is a sum over the new rows
-- minus the same sum over the old ones, grouped on plain columns first, so a label array
-- is built once per label set, not per row. A row whose counted columns did not move adds
-- and subtracts the same (numeric sums are exact), so it needs no test of its own; the
-- events are read only for the rows whose SLA outcome or queue wait moved (grouped by id:
-- what does not cancel), one index probe each, as before. No join of the old and new rows:
-- its plan, cached from a connection's first call, was a nested loop over both
-- transition tables, quadratic in the rows of a statement.
-- execution_metric_rows / step_metric_rows stay the definitions (the rebuild's);
-- tests/test_metrics_rollup.py compares the roll-up with a recount.

CREATE OR REPLACE FUNCTION execution.metric_rollup_executions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM added) THEN
        RETURN NULL;
    END IF;
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    WITH d AS (
        SELECT 1 AS s, n.id, n.tenant_id, n.status, n.lease_renewals, n.sla_class,
               n.sla_violated_at, n.finished_at, n.started_at, n.mode
        FROM added n
        UNION ALL
        SELECT -1, o.id, o.tenant_id, o.status, o.lease_renewals, o.sla_class,
               o.sla_violated_at, o.finished_at, o.started_at, o.mode
        FROM gone o
    ), outcome AS (
        -- finished rows whose outcome label moved (or that finished): what does not cancel
        SELECT d.id, d.tenant_id, d.sla_class, d.sla_violated_at IS NULL AS met, sum(d.s) AS s
        FROM d WHERE d.finished_at IS NOT NULL
        GROUP BY 1, 2, 3, 4 HAVING sum(d.s) <> 0
    ), started AS (
        -- background rows whose start moved (or that started)
        SELECT d.id, d.started_at, sum(d.s) AS s
        FROM d WHERE d.mode = 'background' AND d.started_at IS NOT NULL
        GROUP BY 1, 2 HAVING sum(d.s) <> 0
    ), waits AS (
        SELECT st.s, extract(epoch FROM st.started_at - f.since) AS w
        FROM started st
        CROSS JOIN LATERAL (
            SELECT min(v.created_at) AS since FROM execution.execution_events v
            WHERE v.execution_id = st.id AND v.to_status IN ('approved', 'queued')) AS f
        WHERE f.since IS NOT NULL
    )
    SELECT x.metric, x.labels, pg_backend_pid(), x.value
    FROM (
        SELECT 'executions' AS metric, ARRAY[d.tenant_id, d.status::text] AS labels,
               sum(d.s)::numeric AS value
        FROM d WHERE d.status = ANY (execution.terminal_statuses())
        GROUP BY d.tenant_id, d.status
        UNION ALL
        SELECT 'lease_renewals', '{}', sum(d.s * d.lease_renewals) FROM d
        UNION ALL
        SELECT 'sla_violations', ARRAY[d.tenant_id, d.sla_class::text], sum(d.s)
        FROM d WHERE d.sla_violated_at IS NOT NULL
        GROUP BY d.tenant_id, d.sla_class
        UNION ALL
        SELECT 'sla_outcomes',
               ARRAY[o.tenant_id, o.sla_class::text,
                     CASE WHEN o.met THEN 'met' ELSE 'violated' END], sum(o.s)
        FROM outcome o
        -- in the select list (OFFSET 0): a probe per row, never a semi-join that the
        -- cached plan could make a scan of every approval event
        CROSS JOIN LATERAL (
            SELECT EXISTS (SELECT 1 FROM execution.execution_events v
                           WHERE v.execution_id = o.id AND v.to_status = 'approved') AS approved
            OFFSET 0) AS a
        WHERE a.approved
        GROUP BY o.tenant_id, o.sla_class, o.met
        UNION ALL
        SELECT 'queue_wait', ARRAY[execution.metric_wait_bucket(w.w)], sum(w.s)
        FROM waits w GROUP BY 2
        UNION ALL
        SELECT 'queue_wait_sum', '{}', sum(w.s * w.w) FROM waits w
    ) AS x
    WHERE x.value <> 0
    ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION execution.metric_rollup_steps() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A row counts only as a retry or with both ends (step_metric_rows): an attempt's
    -- start (pending -> running, every drained step) moves nothing.
    IF NOT EXISTS (SELECT FROM added WHERE attempt > 1 OR finished_at IS NOT NULL)
       AND NOT EXISTS (SELECT FROM gone WHERE attempt > 1 OR finished_at IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    INSERT INTO execution.metric_rollup AS r (metric, labels, slot, value)
    WITH d AS (
        SELECT 1 AS s, n.step_type, n.attempt,
               extract(epoch FROM n.finished_at - n.started_at) AS w
        FROM added n
        UNION ALL
        SELECT -1, o.step_type, o.attempt, extract(epoch FROM o.finished_at - o.started_at)
        FROM gone o
    )
    SELECT x.metric, x.labels, pg_backend_pid(), x.value
    FROM (
        SELECT 'step_retries' AS metric, ARRAY[d.step_type] AS labels,
               sum(d.s)::numeric AS value
        FROM d WHERE d.attempt > 1 GROUP BY d.step_type
        UNION ALL
        SELECT 'step_duration', ARRAY[d.step_type, execution.metric_duration_bucket(d.w)],
               sum(d.s)
        FROM d WHERE d.w IS NOT NULL
        GROUP BY d.step_type, execution.metric_duration_bucket(d.w)
        UNION ALL
        SELECT 'step_duration_sum', ARRAY[d.step_type], sum(d.s * d.w)
        FROM d WHERE d.w IS NOT NULL GROUP BY d.step_type
    ) AS x
    WHERE x.value <> 0
    ORDER BY 1, 2
    ON CONFLICT (metric, labels, slot) DO UPDATE SET value = r.value + EXCLUDED.value;
    RETURN NULL;
END $$;

-- end_run_batch as in 0033 but for what its cached plan read per batch. The generic
-- plan is made at a connection's first call, from the statistics of that moment: on a young
-- database (small or never analysed queue, steps and locks tables) it read the queue, the
-- step attempts and the locks whole by sequential scan for the few rows of a batch, and
-- kept doing so as they grew (3,000 queued executions: every call read every queue and
-- step row). Its rows are found by primary key, so a scan is never the better plan here:
-- enable_seqscan = off for this function's statements only; the statement stays 0033's
-- (its answer reads `logged` through a sub-select per item: a join could let the plan write
-- the events, and lock their executions, before the lease rows are locked).
ALTER FUNCTION execution.end_run_batch(jsonb) SET enable_seqscan = off;


-- 0037_claim_begins
-- 0037: the claim starts the new work it leases (queued -> running), as the engine's
-- begin did one round trip later (db/executions.py transition, engine/core.py _begin).
--
-- A worker sent, per execution, the claim and then the begin; the begin needs only what the
-- claim already holds: the row (locked), the worker and the execution's budget. The budget
-- is policies.execution_timeout: the plan's part of it (policies.plan_timeout) is stored
-- with the queue row at enqueue, the policies' part is read at the claim from the same
-- table the engine reads (tests/test_claim_begin.py checks the two agree case by case).
-- Rows queued before this migration have no stored part (NULL): the engine begins them.
ALTER TABLE execution.execution_queue
    ADD COLUMN action_classes  text[],
    ADD COLUMN plan_timeout_s  double precision,
    ADD COLUMN steps_timeout_s double precision;

-- policies.PlanTimeout.resolve in SQL: the plan's own timeout, else the longest policy
-- budget of its action classes but no less than its explicit step timeouts. NULL where
-- the engine's matrix look-up would fail (a class without a policy) or nothing was stored.
-- PL/pgSQL: its statement is planned once per connection, not on every claim.
CREATE FUNCTION execution.execution_timeout_s(
    sla execution.sla_class, classes text[], plan_s float8, steps_s float8)
RETURNS float8 LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF steps_s IS NULL OR classes IS NULL OR cardinality(classes) = 0 THEN
        RETURN NULL;
    END IF;
    IF plan_s IS NOT NULL THEN
        RETURN plan_s;
    END IF;
    RETURN (SELECT CASE WHEN count(*) < cardinality(classes) THEN NULL
                        ELSE greatest(max(p.execution_timeout_s), steps_s) END
            FROM execution.timeout_policies p
            WHERE p.sla_class = sla AND p.action_class = ANY(classes));
END $$;

-- claim_batch (0033), and with begin_actor it also begins what it claims that the engine
-- would begin straight away: queued (not a resume), approval level 0 (nothing for
-- gate.still_valid to re-check), budget known. The move is transition_batch's for
-- queued -> running (the columns it changes there; the others it sets to themselves): the
-- same status-machine trigger, roll-up and status_changed event (actor, empty payload). Rows another transaction holds (a cancel
-- about to delete the queue row this statement holds) are skipped, not waited for: they
-- go the engine's way. Events: each is for a row this statement has just updated and
-- holds locked to its commit (as transition_batch's). The three-argument claim_batch stays
-- for workers of the previous version during a rolling upgrade (they begin what they claim).
CREATE FUNCTION execution.claim_batch(
    claim_worker text, claim_limit int, claim_lease_s float8, begin_actor text)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json, begun_timeout_s float8)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at, action_classes, plan_timeout_s, steps_timeout_s
        FROM execution.execution_queue
        WHERE lease_token IS NULL AND available_at <= now()
        ORDER BY (interrupted_at IS NULL), priority, available_at
        LIMIT claim_limit
        FOR UPDATE SKIP LOCKED
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = p.execution_id AND p.interrupted_at IS NOT NULL AND e.timeout_at IS NOT NULL
          AND e.status = 'running'
        RETURNING e.id, e.timeout_at
    ), startable AS (
        SELECT x.id, b.timeout_s FROM execution.executions x
        JOIN picked p ON p.execution_id = x.id
        CROSS JOIN LATERAL (
            SELECT execution.execution_timeout_s(x.sla_class, p.action_classes,
                                                 p.plan_timeout_s, p.steps_timeout_s)
                   AS timeout_s) AS b
        WHERE begin_actor IS NOT NULL AND x.status = 'queued' AND x.approval_level = 0
          AND b.timeout_s IS NOT NULL
        ORDER BY x.id
        FOR NO KEY UPDATE OF x SKIP LOCKED
    ), begun AS (
        UPDATE execution.executions e SET
            status = 'running',
            started_at = coalesce(e.started_at, now()),
            timeout_at = now() + make_interval(secs => s.timeout_s),
            worker_id = claim_worker
        FROM startable s
        WHERE e.id = s.id AND e.status = 'queued'
        RETURNING e AS started, e.id, e.tenant_id, s.timeout_s
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT id, tenant_id, 'status_changed', 'queued', 'running', begin_actor, '{}'::jsonb
        FROM begun ORDER BY id
    )
    UPDATE execution.execution_queue q SET
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => coalesce(claim_lease_s, q.lease_timeout_s)),
        worker_id = claim_worker,
        leased_at = now(),
        attempt_count = q.attempt_count + 1,
        recovery_s = q.recovery_s + coalesce(extract(epoch FROM now() - picked.interrupted_at), 0),
        interrupted_at = NULL
    FROM picked
    JOIN execution.executions e ON e.id = picked.execution_id
    LEFT JOIN extended x ON x.id = picked.execution_id
    LEFT JOIN begun b ON b.id = picked.execution_id
    WHERE q.execution_id = picked.execution_id
    -- The execution row comes back with the lease (as begun, when it was), and what the
    -- engine reads to start it (runs.start_context, as the start_context statement reads it).
    RETURNING CASE WHEN b.id IS NULL THEN e ELSE b.started END, q.lease_token, q.attempt_count,
              q.max_attempts, coalesce(claim_lease_s, q.lease_timeout_s) AS lease_s,
              x.timeout_at AS extended_timeout_at,
              extract(epoch FROM now() - picked.interrupted_at)::float8 AS recovered_after_s,
              q.interruption, q.interruptions, q.recovery_s,
              (SELECT json_build_object(
                   'record_only', tn.record_only, 'host_key_policy', tn.host_key_policy,
                   'local_execution', tn.local_execution, 'local_network', tn.local_network,
                   'masking_patterns',
                   coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                             FROM execution.masking_patterns p WHERE p.tenant_id = tn.tenant_id),
                            '[]'::json),
                   'assets',
                   coalesce((SELECT json_agg(a ORDER BY a.asset_id) FROM execution.assets a
                             WHERE a.tenant_id = tn.tenant_id
                               AND a.asset_id = ANY(ARRAY(
                                   SELECT jsonb_array_elements_text(s)
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s))),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context,
              b.timeout_s AS begun_timeout_s;
END $$;


-- 0038_claim_plan_by_key
-- 0038: the claim's plan finds its rows by key whatever the statistics say; the events'
-- key to their execution is checked once per statement (below).
--
-- claim_batch (0037) is planned once per connection, generically (0033), from the
-- statistics of that moment; its batch size is a parameter, so the planner takes the picked
-- rows for a tenth of the queue. Once autovacuum had analysed a queue of a few thousand
-- rows (in a drain, within a minute; in production, always), every claim of that
-- connection read the executions twice and the queue once by sequential scan, for hash
-- joins against 20 picked rows (auto_explain on a 3,000-execution drain: 2,496 rows read
-- per scan, three scans per claim). And where the statistics were older than the data,
-- the plan read the queued executions by the partial index on status (executions_live_idx:
-- "status = 'queued'", thought to be a few rows, all 3,000 read).
--
-- Now, as in end_run_batch and start_attempt_batch, each table is reached through
-- `= ANY(ARRAY(<the batch's ids>))` on its primary key, an index scan whatever the
-- estimates; and the status tests on executions compare the status as text, which no
-- partial index on status can answer, so they stay filters on the rows found by key. The
-- statement is otherwise 0037's: the same rows, locks in the same order (queue rows, then
-- executions in id order, SKIP LOCKED), writes and answer. The budget's function is called
-- once per row (OFFSET 0 keeps the sub-select whole; it was evaluated twice, in the filter
-- and in the output). Server instructions per 20-row claim (perf stat on the backend,
-- 3,000 queued no-op executions): 35.7 M before and 17.8 M after on an analysed copy;
-- 17.7 M before and 18.6 M after on one never analysed (its plan found them by key already).
CREATE OR REPLACE FUNCTION execution.claim_batch(
    claim_worker text, claim_limit int, claim_lease_s float8, begin_actor text)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json, begun_timeout_s float8)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at, action_classes, plan_timeout_s, steps_timeout_s
        FROM execution.execution_queue
        WHERE lease_token IS NULL AND available_at <= now()
        ORDER BY (interrupted_at IS NULL), priority, available_at
        LIMIT claim_limit
        FOR UPDATE SKIP LOCKED
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE interrupted_at IS NOT NULL))
          AND e.id = p.execution_id AND e.timeout_at IS NOT NULL AND e.status::text = 'running'
        RETURNING e.id, e.timeout_at
    ), startable AS (
        SELECT x.id, b.timeout_s FROM execution.executions x
        JOIN picked p ON p.execution_id = x.id
        CROSS JOIN LATERAL (
            SELECT execution.execution_timeout_s(x.sla_class, p.action_classes,
                                                 p.plan_timeout_s, p.steps_timeout_s)
                   AS timeout_s
            OFFSET 0) AS b
        WHERE x.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE begin_actor IS NOT NULL))
          AND x.status::text = 'queued' AND x.approval_level = 0 AND b.timeout_s IS NOT NULL
        ORDER BY x.id
        FOR NO KEY UPDATE OF x SKIP LOCKED
    ), begun AS (
        UPDATE execution.executions e SET
            status = 'running',
            started_at = coalesce(e.started_at, now()),
            timeout_at = now() + make_interval(secs => s.timeout_s),
            worker_id = claim_worker
        FROM startable s
        WHERE e.id = ANY(ARRAY(SELECT id FROM startable)) AND e.id = s.id
          AND e.status::text = 'queued'
        RETURNING e AS started, e.id, e.tenant_id, s.timeout_s
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT id, tenant_id, 'status_changed', 'queued', 'running', begin_actor, '{}'::jsonb
        FROM begun ORDER BY id
    )
    UPDATE execution.execution_queue q SET
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => coalesce(claim_lease_s, q.lease_timeout_s)),
        worker_id = claim_worker,
        leased_at = now(),
        attempt_count = q.attempt_count + 1,
        recovery_s = q.recovery_s + coalesce(extract(epoch FROM now() - picked.interrupted_at), 0),
        interrupted_at = NULL
    FROM picked
    JOIN execution.executions e ON e.id = picked.execution_id
    LEFT JOIN extended x ON x.id = picked.execution_id
    LEFT JOIN begun b ON b.id = picked.execution_id
    WHERE q.execution_id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND e.id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND q.execution_id = picked.execution_id
    -- The execution row comes back with the lease (as begun, when it was), and what the
    -- engine reads to start it (runs.start_context, as the start_context statement reads it).
    RETURNING CASE WHEN b.id IS NULL THEN e ELSE b.started END, q.lease_token, q.attempt_count,
              q.max_attempts, coalesce(claim_lease_s, q.lease_timeout_s) AS lease_s,
              x.timeout_at AS extended_timeout_at,
              extract(epoch FROM now() - picked.interrupted_at)::float8 AS recovered_after_s,
              q.interruption, q.interruptions, q.recovery_s,
              (SELECT json_build_object(
                   'record_only', tn.record_only, 'host_key_policy', tn.host_key_policy,
                   'local_execution', tn.local_execution, 'local_network', tn.local_network,
                   'masking_patterns',
                   coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                             FROM execution.masking_patterns p WHERE p.tenant_id = tn.tenant_id),
                            '[]'::json),
                   'assets',
                   coalesce((SELECT json_agg(a ORDER BY a.asset_id) FROM execution.assets a
                             WHERE a.tenant_id = tn.tenant_id
                               AND a.asset_id = ANY(ARRAY(
                                   SELECT jsonb_array_elements_text(s)
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s))),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context,
              b.timeout_s AS begun_timeout_s;
END $$;

-- The events' key to their execution, checked once per statement instead of once per row.
-- The foreign key ran its check query (SELECT ... FOR KEY SHARE) for every event: about
-- four events per drained execution, 154,000 server instructions per execution in all
-- (perf stat on a drain's statements, 6.6% of the server's work). The same check for a
-- whole statement's events runs in the trigger that already reads them (for the
-- notifications): the executions they name must exist, locked FOR KEY SHARE as the key
-- locked them, so that an execution cannot be deleted between the check and the commit; an
-- event whose execution is missing (or was deleted by a transaction this one waited for)
-- fails the statement with the key's error (SQLSTATE 23503). What the key did besides, the
-- triggers below do: an execution's events go with it (ON DELETE CASCADE), with a TRUNCATE
-- too, and an execution's id does not change under its events.
-- tests/test_event_key.py checks each of these. Net: 103,000 instructions less per
-- drained execution (4.4%).
ALTER TABLE execution.execution_events DROP CONSTRAINT execution_events_execution_id_fkey;

-- Its statements are planned at a connection's first insert of events, maybe on a young
-- database where a scan of every execution looks cheaper: by key, whatever it looks like.
CREATE OR REPLACE FUNCTION execution.notify_events() RETURNS trigger
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    wanted int;
    found int;
BEGIN
    SELECT count(DISTINCT execution_id) INTO wanted FROM added;
    PERFORM FROM execution.executions x
    WHERE x.id = ANY(ARRAY(SELECT execution_id FROM added))
    FOR KEY SHARE OF x;
    GET DIAGNOSTICS found = ROW_COUNT;
    IF found < wanted THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'insert or update on table "execution_events" violates foreign key '
                      'constraint "execution_events_execution_id_fkey"',
            DETAIL = 'An event names an execution that does not exist.';
    END IF;
    PERFORM pg_notify('opsc_execution_events', id || ' ' || execution_id || ' ' || tenant_id)
    FROM added ORDER BY id;
    RETURN NULL;
END $$;

CREATE FUNCTION execution.delete_events_of_executions() RETURNS trigger
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE execution.execution_events;
    ELSE
        DELETE FROM execution.execution_events v
        WHERE v.execution_id = ANY(ARRAY(SELECT id FROM gone));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER executions_events_cascade AFTER DELETE ON execution.executions
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION execution.delete_events_of_executions();
CREATE TRIGGER executions_events_truncate AFTER TRUNCATE ON execution.executions
    FOR EACH STATEMENT EXECUTE FUNCTION execution.delete_events_of_executions();

-- Only an UPDATE that names the id column calls it (none of the system's does).
CREATE FUNCTION execution.keep_id_of_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM execution.execution_events v WHERE v.execution_id = OLD.id) THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'update or delete on table "executions" violates foreign key constraint '
                      '"execution_events_execution_id_fkey" on table "execution_events"';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER executions_id_of_events BEFORE UPDATE OF id ON execution.executions
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION execution.keep_id_of_events();

-- 0039_claim_assets_by_key
-- 0039: the claim reads a run's assets one probe per target, and plans no sequential scan.
--
-- claim_batch (0038) found the claimed runs' assets with `asset_id = ANY(<the plan's
-- targets>)` on the tenant's assets. Its plan is made once per pooled connection (generic,
-- 0033) from the statistics of that moment. On an analysed inventory of 100 assets it read
-- all of them for each claimed run (a sequential scan); on one never analysed, through
-- assets_environment_idx, every asset of the tenant. Each distinct target is now looked up
-- alone (a lateral probe on tenant and asset id: LIMIT 1 keeps it from being turned into a
-- join), and the function plans without sequential scans: a connection that planned it on
-- a young database, where every table is a page or two and a scan looks cheapest, would
-- keep that plan while the tables grow. Rows, locks, writes and the answer are 0038's.
-- Without statistics at all (a new database, before autovacuum's first ANALYZE of the
-- assets: the plan is made again then) the planner may still probe another index that
-- leads with the tenant.
CREATE OR REPLACE FUNCTION execution.claim_batch(
    claim_worker text, claim_limit int, claim_lease_s float8, begin_actor text)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json, begun_timeout_s float8)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at, action_classes, plan_timeout_s, steps_timeout_s
        FROM execution.execution_queue
        WHERE lease_token IS NULL AND available_at <= now()
        ORDER BY (interrupted_at IS NULL), priority, available_at
        LIMIT claim_limit
        FOR UPDATE SKIP LOCKED
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE interrupted_at IS NOT NULL))
          AND e.id = p.execution_id AND e.timeout_at IS NOT NULL AND e.status::text = 'running'
        RETURNING e.id, e.timeout_at
    ), startable AS (
        SELECT x.id, b.timeout_s FROM execution.executions x
        JOIN picked p ON p.execution_id = x.id
        CROSS JOIN LATERAL (
            SELECT execution.execution_timeout_s(x.sla_class, p.action_classes,
                                                 p.plan_timeout_s, p.steps_timeout_s)
                   AS timeout_s
            OFFSET 0) AS b
        WHERE x.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE begin_actor IS NOT NULL))
          AND x.status::text = 'queued' AND x.approval_level = 0 AND b.timeout_s IS NOT NULL
        ORDER BY x.id
        FOR NO KEY UPDATE OF x SKIP LOCKED
    ), begun AS (
        UPDATE execution.executions e SET
            status = 'running',
            started_at = coalesce(e.started_at, now()),
            timeout_at = now() + make_interval(secs => s.timeout_s),
            worker_id = claim_worker
        FROM startable s
        WHERE e.id = ANY(ARRAY(SELECT id FROM startable)) AND e.id = s.id
          AND e.status::text = 'queued'
        RETURNING e AS started, e.id, e.tenant_id, s.timeout_s
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT id, tenant_id, 'status_changed', 'queued', 'running', begin_actor, '{}'::jsonb
        FROM begun ORDER BY id
    )
    UPDATE execution.execution_queue q SET
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => coalesce(claim_lease_s, q.lease_timeout_s)),
        worker_id = claim_worker,
        leased_at = now(),
        attempt_count = q.attempt_count + 1,
        recovery_s = q.recovery_s + coalesce(extract(epoch FROM now() - picked.interrupted_at), 0),
        interrupted_at = NULL
    FROM picked
    JOIN execution.executions e ON e.id = picked.execution_id
    LEFT JOIN extended x ON x.id = picked.execution_id
    LEFT JOIN begun b ON b.id = picked.execution_id
    WHERE q.execution_id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND e.id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND q.execution_id = picked.execution_id
    -- The execution row comes back with the lease (as begun, when it was), and what the
    -- engine reads to start it (runs.start_context, as the start_context statement reads it).
    RETURNING CASE WHEN b.id IS NULL THEN e ELSE b.started END, q.lease_token, q.attempt_count,
              q.max_attempts, coalesce(claim_lease_s, q.lease_timeout_s) AS lease_s,
              x.timeout_at AS extended_timeout_at,
              extract(epoch FROM now() - picked.interrupted_at)::float8 AS recovered_after_s,
              q.interruption, q.interruptions, q.recovery_s,
              (SELECT json_build_object(
                   'record_only', tn.record_only, 'host_key_policy', tn.host_key_policy,
                   'local_execution', tn.local_execution, 'local_network', tn.local_network,
                   'masking_patterns',
                   coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                             FROM execution.masking_patterns p WHERE p.tenant_id = tn.tenant_id),
                            '[]'::json),
                   'assets',
                   coalesce((SELECT json_agg(x.a ORDER BY (x.a).asset_id)
                             FROM (SELECT DISTINCT w.asset_id
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s,
                                        jsonb_array_elements_text(s) AS w(asset_id)) AS want
                             CROSS JOIN LATERAL (
                                 SELECT a FROM execution.assets a
                                 WHERE a.tenant_id = tn.tenant_id AND a.asset_id = want.asset_id
                                 LIMIT 1) AS x),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context,
              b.timeout_s AS begun_timeout_s;
END $$;

-- 0042_claim_free_hosts
-- 0042: the claim leaves new work whose host is busy in the queue.
--
-- Every run takes a per-asset lock (execution_locks) and waits for it up to lock_wait_s,
-- then fails its step with asset_locked. The claim took queued runs by priority and age
-- whatever their hosts: a run whose host another run held took a worker slot only to wait
-- (a drain of plans over 100 assets got slower as the concurrency grew past the hosts
-- free), and a long queue for one host failed asset_locked instead of waiting its turn.
-- Now each queue row carries the assets its run's first lock takes (first_locks.py) and
-- their tenant, set at enqueue; NULL (rows queued before, work not covered) filters
-- nothing. The claim walks the claimable rows in its order (recovered work first, then
-- priority, then age) and passes over new work one of whose first locks is held by a
-- live lock (its lease not run out) or wanted by a run taken earlier in the same claim.
-- Interrupted work is taken as before. Each row taken is locked on its own, SKIP LOCKED,
-- so rows passed over are not locked, and a row another claim is taking is passed over
-- with its hosts counted as taken. The walk stops at claim_limit rows or after reading
-- claim_limit * 4 + 32 rows: a busy host's long queue costs each claim at most that (rows
-- further on wait for a later claim). A run claimed but not yet holding its lock would
-- leave its host looking free: the claim reserves the new runs' first locks for 5
-- seconds (owner '<execution id>:<worker>' as the engine's, execution_id NULL), which
-- their engine takes over (locks.sql); a dead worker's are reaped with its other locks.
-- The statement after the walk is 0039's on the rows taken, which it finds by key, with
-- the reservations, answered in claim order; a resumed run's lease clears its first_locks.
ALTER TABLE execution.execution_queue
    ADD COLUMN first_locks text[],
    ADD COLUMN first_locks_tenant text;

CREATE OR REPLACE FUNCTION execution.claim_batch(
    claim_worker text, claim_limit int, claim_lease_s float8, begin_actor text)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json, begun_timeout_s float8)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
DECLARE
    -- unlocked: a row is locked only when it is taken
    candidates CURSOR FOR
        SELECT q.execution_id, q.interrupted_at, q.first_locks, q.first_locks_tenant
        FROM execution.execution_queue q
        WHERE q.lease_token IS NULL AND q.available_at <= now()
        ORDER BY (q.interrupted_at IS NULL), q.priority, q.available_at;
    c record;
    taken_ids uuid[] := '{}';
    -- first locks of the rows taken (or being taken by another claim), as
    -- length(tenant) || ':' || tenant || asset: no two tenants' assets can meet
    taken_locks text[] := '{}';
    wanted text[];
    budget int := claim_limit * 4 + 32;
BEGIN
    OPEN candidates;
    WHILE cardinality(taken_ids) < claim_limit AND budget > 0 LOOP
        FETCH candidates INTO c;
        EXIT WHEN NOT FOUND;
        budget := budget - 1;
        wanted := NULL;
        IF c.first_locks IS NOT NULL AND c.interrupted_at IS NULL THEN
            wanted := ARRAY(SELECT length(c.first_locks_tenant) || ':' || c.first_locks_tenant || a
                            FROM unnest(c.first_locks) AS a);
            CONTINUE WHEN wanted && taken_locks;
            CONTINUE WHEN EXISTS (
                SELECT FROM execution.execution_locks l
                WHERE l.tenant_id = c.first_locks_tenant AND l.asset_id = ANY(c.first_locks)
                  AND l.expires_at >= now()
                  -- its own reservation, from a claim that did not start it
                  AND split_part(l.owner_tag, ':', 1) <> c.execution_id::text);
            taken_locks := taken_locks || wanted;
        END IF;
        PERFORM FROM execution.execution_queue q
        WHERE q.execution_id = c.execution_id AND q.lease_token IS NULL
          AND q.available_at <= now()
        FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            taken_ids := taken_ids || c.execution_id;
        END IF;
    END LOOP;
    CLOSE candidates;
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at, action_classes, plan_timeout_s, steps_timeout_s,
               first_locks, first_locks_tenant
        FROM execution.execution_queue
        WHERE execution_id = ANY(taken_ids)
    ), reserved AS (
        -- The new runs' first locks, held for them until their engine takes them (a
        -- reservation of its execution is its to take: locks.sql) or for 5 seconds: until
        -- then no other claim hands their hosts out. In (tenant, asset) order, as every
        -- lock is taken; only assets still in the inventory (a missing one fails the run)
        -- and only where no live lock of another execution is (another claim's, just taken).
        INSERT INTO execution.execution_locks AS l
            (tenant_id, asset_id, owner_tag, execution_id, expires_at)
        SELECT p.first_locks_tenant, x.asset_id, p.execution_id || ':' || claim_worker, NULL,
               now() + interval '5 seconds'
        FROM picked p
        CROSS JOIN LATERAL unnest(p.first_locks) AS w(asset_id)
        CROSS JOIN LATERAL (
            SELECT a.asset_id FROM execution.assets a
            WHERE a.tenant_id = p.first_locks_tenant AND a.asset_id = w.asset_id LIMIT 1) AS x
        WHERE p.interrupted_at IS NULL
        ORDER BY 1, 2
        ON CONFLICT (tenant_id, asset_id) DO UPDATE SET
            owner_tag = EXCLUDED.owner_tag, execution_id = NULL, acquired_at = now(),
            expires_at = EXCLUDED.expires_at, last_heartbeat_at = now()
        WHERE l.expires_at < now()
           OR split_part(l.owner_tag, ':', 1) = split_part(EXCLUDED.owner_tag, ':', 1)
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE interrupted_at IS NOT NULL))
          AND e.id = p.execution_id AND e.timeout_at IS NOT NULL AND e.status::text = 'running'
        RETURNING e.id, e.timeout_at
    ), startable AS (
        SELECT x.id, b.timeout_s FROM execution.executions x
        JOIN picked p ON p.execution_id = x.id
        CROSS JOIN LATERAL (
            SELECT execution.execution_timeout_s(x.sla_class, p.action_classes,
                                                 p.plan_timeout_s, p.steps_timeout_s)
                   AS timeout_s
            OFFSET 0) AS b
        WHERE x.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE begin_actor IS NOT NULL))
          AND x.status::text = 'queued' AND x.approval_level = 0 AND b.timeout_s IS NOT NULL
        ORDER BY x.id
        FOR NO KEY UPDATE OF x SKIP LOCKED
    ), begun AS (
        UPDATE execution.executions e SET
            status = 'running',
            started_at = coalesce(e.started_at, now()),
            timeout_at = now() + make_interval(secs => s.timeout_s),
            worker_id = claim_worker
        FROM startable s
        WHERE e.id = ANY(ARRAY(SELECT id FROM startable)) AND e.id = s.id
          AND e.status::text = 'queued'
        RETURNING e AS started, e.id, e.tenant_id, s.timeout_s
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT id, tenant_id, 'status_changed', 'queued', 'running', begin_actor, '{}'::jsonb
        FROM begun ORDER BY id
    ), claimed AS (
    UPDATE execution.execution_queue q SET
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => coalesce(claim_lease_s, q.lease_timeout_s)),
        worker_id = claim_worker,
        leased_at = now(),
        attempt_count = q.attempt_count + 1,
        recovery_s = q.recovery_s + coalesce(extract(epoch FROM now() - picked.interrupted_at), 0),
        interrupted_at = NULL,
        -- a resumed run's first locks are behind it
        first_locks = CASE WHEN picked.interrupted_at IS NULL THEN q.first_locks END
    FROM picked
    JOIN execution.executions e ON e.id = picked.execution_id
    LEFT JOIN extended x ON x.id = picked.execution_id
    LEFT JOIN begun b ON b.id = picked.execution_id
    WHERE q.execution_id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND e.id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND q.execution_id = picked.execution_id
    -- The execution row comes back with the lease (as begun, when it was), and what the
    -- engine reads to start it (runs.start_context, as the start_context statement reads it).
    RETURNING CASE WHEN b.id IS NULL THEN e ELSE b.started END AS e, q.lease_token, q.attempt_count,
              q.max_attempts, coalesce(claim_lease_s, q.lease_timeout_s) AS lease_s,
              x.timeout_at AS extended_timeout_at,
              extract(epoch FROM now() - picked.interrupted_at)::float8 AS recovered_after_s,
              q.interruption, q.interruptions, q.recovery_s,
              (SELECT json_build_object(
                   'record_only', tn.record_only, 'host_key_policy', tn.host_key_policy,
                   'local_execution', tn.local_execution, 'local_network', tn.local_network,
                   'masking_patterns',
                   coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                             FROM execution.masking_patterns p WHERE p.tenant_id = tn.tenant_id),
                            '[]'::json),
                   'assets',
                   coalesce((SELECT json_agg(x.a ORDER BY (x.a).asset_id)
                             FROM (SELECT DISTINCT w.asset_id
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s,
                                        jsonb_array_elements_text(s) AS w(asset_id)) AS want
                             CROSS JOIN LATERAL (
                                 SELECT a FROM execution.assets a
                                 WHERE a.tenant_id = tn.tenant_id AND a.asset_id = want.asset_id
                                 LIMIT 1) AS x),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context,
              b.timeout_s AS begun_timeout_s
    )
    -- in claim order: a worker starts them in that order
    SELECT * FROM claimed c ORDER BY array_position(taken_ids, (c.e).id);
END $$;

-- 0043_claim_walk_in_one_read
-- 0043: the claim's walk reads its candidates in one statement.
--
-- 0042's walk fetched the claimable rows one by one through a cursor and, for each, asked
-- in a statement of its own whether a live lock held one of its first locks; that
-- question read every lock of the tenant (the plan filtered the assets after a probe on
-- the tenant alone), so each candidate cost more the more hosts were busy. The candidates
-- now come from one query in claim order, at most claim_limit * 4 + 32 of them as before,
-- each with that answer probed asset by asset on the locks' key. What is taken is
-- unchanged: rows are passed over, taken and locked (SKIP LOCKED) as in 0042, the hosts
-- of a row another claim is taking still count as taken, and the rest of the claim is
-- 0042's but for the execution's timeout when the claim begins a run: written out in the
-- statement instead of one execution_timeout_s call (a function and its own policy read)
-- per row. execution_timeout_s stays for its other callers.
CREATE OR REPLACE FUNCTION execution.claim_batch(
    claim_worker text, claim_limit int, claim_lease_s float8, begin_actor text)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json, begun_timeout_s float8)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
DECLARE
    c record;
    taken_ids uuid[] := '{}';
    -- first locks of the rows taken (or being taken by another claim), as
    -- length(tenant) || ':' || tenant || asset: no two tenants' assets can meet
    taken_locks text[] := '{}';
    wanted text[];
BEGIN
    -- One read of the claimable rows in claim order, unlocked (a row is locked only when
    -- it is taken), each with whether a live lock of another execution holds one of its
    -- first locks: probed asset by asset on the locks' key, so the cost of a row is its
    -- own assets, not every lock of its tenant.
    FOR c IN
        SELECT q.execution_id, q.interrupted_at, q.first_locks, q.first_locks_tenant,
               q.first_locks IS NOT NULL AND q.interrupted_at IS NULL AND EXISTS (
                   SELECT FROM unnest(q.first_locks) AS w(asset_id)
                   CROSS JOIN LATERAL (
                       SELECT FROM execution.execution_locks l
                       WHERE l.tenant_id = q.first_locks_tenant AND l.asset_id = w.asset_id
                         AND l.expires_at >= now()
                         -- its own reservation, from a claim that did not start it
                         AND split_part(l.owner_tag, ':', 1) <> q.execution_id::text
                       LIMIT 1) AS held) AS busy
        FROM execution.execution_queue q
        WHERE q.lease_token IS NULL AND q.available_at <= now()
        ORDER BY (q.interrupted_at IS NULL), q.priority, q.available_at
        LIMIT claim_limit * 4 + 32
    LOOP
        EXIT WHEN cardinality(taken_ids) >= claim_limit;
        CONTINUE WHEN c.busy;
        wanted := NULL;
        IF c.first_locks IS NOT NULL AND c.interrupted_at IS NULL THEN
            wanted := ARRAY(SELECT length(c.first_locks_tenant) || ':' || c.first_locks_tenant || a
                            FROM unnest(c.first_locks) AS a);
            CONTINUE WHEN wanted && taken_locks;
            taken_locks := taken_locks || wanted;
        END IF;
        PERFORM FROM execution.execution_queue q
        WHERE q.execution_id = c.execution_id AND q.lease_token IS NULL
          AND q.available_at <= now()
        FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            taken_ids := taken_ids || c.execution_id;
        END IF;
    END LOOP;
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at, action_classes, plan_timeout_s, steps_timeout_s,
               first_locks, first_locks_tenant
        FROM execution.execution_queue
        WHERE execution_id = ANY(taken_ids)
    ), reserved AS (
        -- The new runs' first locks, held for them until their engine takes them (a
        -- reservation of its execution is its to take: locks.sql) or for 5 seconds: until
        -- then no other claim hands their hosts out. In (tenant, asset) order, as every
        -- lock is taken; only assets still in the inventory (a missing one fails the run)
        -- and only where no live lock of another execution is (another claim's, just taken).
        INSERT INTO execution.execution_locks AS l
            (tenant_id, asset_id, owner_tag, execution_id, expires_at)
        SELECT p.first_locks_tenant, x.asset_id, p.execution_id || ':' || claim_worker, NULL,
               now() + interval '5 seconds'
        FROM picked p
        CROSS JOIN LATERAL unnest(p.first_locks) AS w(asset_id)
        CROSS JOIN LATERAL (
            SELECT a.asset_id FROM execution.assets a
            WHERE a.tenant_id = p.first_locks_tenant AND a.asset_id = w.asset_id LIMIT 1) AS x
        WHERE p.interrupted_at IS NULL
        ORDER BY 1, 2
        ON CONFLICT (tenant_id, asset_id) DO UPDATE SET
            owner_tag = EXCLUDED.owner_tag, execution_id = NULL, acquired_at = now(),
            expires_at = EXCLUDED.expires_at, last_heartbeat_at = now()
        WHERE l.expires_at < now()
           OR split_part(l.owner_tag, ':', 1) = split_part(EXCLUDED.owner_tag, ':', 1)
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE interrupted_at IS NOT NULL))
          AND e.id = p.execution_id AND e.timeout_at IS NOT NULL AND e.status::text = 'running'
        RETURNING e.id, e.timeout_at
    ), startable AS (
        -- execution_timeout_s, written out: no function call per row (its policy read
        -- runs only for a row that needs it)
        SELECT x.id, b.timeout_s FROM execution.executions x
        JOIN picked p ON p.execution_id = x.id
        CROSS JOIN LATERAL (
            SELECT CASE
                WHEN p.steps_timeout_s IS NULL OR p.action_classes IS NULL
                     OR cardinality(p.action_classes) = 0 THEN NULL
                WHEN p.plan_timeout_s IS NOT NULL THEN p.plan_timeout_s
                ELSE (SELECT CASE WHEN count(*) < cardinality(p.action_classes) THEN NULL
                                  ELSE greatest(max(t.execution_timeout_s), p.steps_timeout_s) END
                      FROM execution.timeout_policies t
                      WHERE t.sla_class = x.sla_class AND t.action_class = ANY(p.action_classes))
                END AS timeout_s) AS b
        WHERE x.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE begin_actor IS NOT NULL))
          AND x.status::text = 'queued' AND x.approval_level = 0 AND b.timeout_s IS NOT NULL
        ORDER BY x.id
        FOR NO KEY UPDATE OF x SKIP LOCKED
    ), begun AS (
        UPDATE execution.executions e SET
            status = 'running',
            started_at = coalesce(e.started_at, now()),
            timeout_at = now() + make_interval(secs => s.timeout_s),
            worker_id = claim_worker
        FROM startable s
        WHERE e.id = ANY(ARRAY(SELECT id FROM startable)) AND e.id = s.id
          AND e.status::text = 'queued'
        RETURNING e AS started, e.id, e.tenant_id, s.timeout_s
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT id, tenant_id, 'status_changed', 'queued', 'running', begin_actor, '{}'::jsonb
        FROM begun ORDER BY id
    ), claimed AS (
    UPDATE execution.execution_queue q SET
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => coalesce(claim_lease_s, q.lease_timeout_s)),
        worker_id = claim_worker,
        leased_at = now(),
        attempt_count = q.attempt_count + 1,
        recovery_s = q.recovery_s + coalesce(extract(epoch FROM now() - picked.interrupted_at), 0),
        interrupted_at = NULL,
        -- a resumed run's first locks are behind it
        first_locks = CASE WHEN picked.interrupted_at IS NULL THEN q.first_locks END
    FROM picked
    JOIN execution.executions e ON e.id = picked.execution_id
    LEFT JOIN extended x ON x.id = picked.execution_id
    LEFT JOIN begun b ON b.id = picked.execution_id
    WHERE q.execution_id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND e.id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND q.execution_id = picked.execution_id
    -- The execution row comes back with the lease (as begun, when it was), and what the
    -- engine reads to start it (runs.start_context, as the start_context statement reads it).
    RETURNING CASE WHEN b.id IS NULL THEN e ELSE b.started END AS e, q.lease_token, q.attempt_count,
              q.max_attempts, coalesce(claim_lease_s, q.lease_timeout_s) AS lease_s,
              x.timeout_at AS extended_timeout_at,
              extract(epoch FROM now() - picked.interrupted_at)::float8 AS recovered_after_s,
              q.interruption, q.interruptions, q.recovery_s,
              (SELECT json_build_object(
                   'record_only', tn.record_only, 'host_key_policy', tn.host_key_policy,
                   'local_execution', tn.local_execution, 'local_network', tn.local_network,
                   'masking_patterns',
                   coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                             FROM execution.masking_patterns p WHERE p.tenant_id = tn.tenant_id),
                            '[]'::json),
                   'assets',
                   coalesce((SELECT json_agg(x.a ORDER BY (x.a).asset_id)
                             FROM (SELECT DISTINCT w.asset_id
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s,
                                        jsonb_array_elements_text(s) AS w(asset_id)) AS want
                             CROSS JOIN LATERAL (
                                 SELECT a FROM execution.assets a
                                 WHERE a.tenant_id = tn.tenant_id AND a.asset_id = want.asset_id
                                 LIMIT 1) AS x),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context,
              b.timeout_s AS begun_timeout_s
    )
    -- in claim order: a worker starts them in that order
    SELECT * FROM claimed c ORDER BY array_position(taken_ids, (c.e).id);
END $$;

-- 0044_claim_past_busy_hosts
-- 0044: work behind a long queue for busy hosts is reached.
--
-- The claim reads at most claim_limit * 4 + 32 claimable rows (0042, 0043). When more runs
-- than that wait at the head of the queue for hosts that are busy (a host down for hours
-- under a job scheduled every minute, a bulk of plans for one host), every claim read only
-- them and passed them over: no other host's work could start until that queue shrank.
-- Now a claim that took nothing after reading its whole budget reads further, up to
-- 10,000 rows, passing over in the query itself the rows whose first hosts it has just
-- found busy (by asset id, whatever the tenant: a row of another tenant's asset of the same
-- name is passed over in this second read only, and met again by a later claim), and
-- treating the others as the first read does. It does so at most once a second on a
-- connection (a session setting holds the time), so a queue whose every host is busy costs
-- that read once a second per connection at most. The rest is 0043's claim.
CREATE OR REPLACE FUNCTION execution.claim_batch(
    claim_worker text, claim_limit int, claim_lease_s float8, begin_actor text)
RETURNS TABLE (e execution.executions, lease_token uuid, attempt_count int,
               max_attempts int, lease_s float8, extended_timeout_at timestamptz,
               recovered_after_s float8, interruption text, interruptions int,
               recovery_s float8, start_context json, begun_timeout_s float8)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET opsconductor.events_of_new_executions = 'on' AS $$
#variable_conflict use_column
DECLARE
    rows refcursor;
    c record;
    taken_ids uuid[] := '{}';
    -- first locks of the rows taken (or being taken by another claim), as
    -- length(tenant) || ':' || tenant || asset: no two tenants' assets can meet
    taken_locks text[] := '{}';
    wanted text[];
    budget int := claim_limit * 4 + 32;
    seen int;
    -- the first locks of the rows found busy (plain asset ids, whatever the tenant)
    busy_assets text[] := '{}';
    deep_at text;
BEGIN
    FOR pass IN 1..2 LOOP
        IF pass = 1 THEN
            -- The claimable rows in claim order, unlocked (a row is locked only when it is
            -- taken), each with whether a live lock of another execution holds one of its
            -- first locks, probed asset by asset on the locks' key (0043).
            OPEN rows FOR
                SELECT q.execution_id, q.interrupted_at, q.first_locks, q.first_locks_tenant,
                       q.first_locks IS NOT NULL AND q.interrupted_at IS NULL AND EXISTS (
                   SELECT FROM unnest(q.first_locks) AS w(asset_id)
                   CROSS JOIN LATERAL (
                       SELECT FROM execution.execution_locks l
                       WHERE l.tenant_id = q.first_locks_tenant AND l.asset_id = w.asset_id
                         AND l.expires_at >= now()
                         -- its own reservation, from a claim that did not start it
                         AND split_part(l.owner_tag, ':', 1) <> q.execution_id::text
                       LIMIT 1) AS held) AS busy
                FROM execution.execution_queue q
                WHERE q.lease_token IS NULL AND q.available_at <= now()
                ORDER BY (q.interrupted_at IS NULL), q.priority, q.available_at
                LIMIT budget;
        ELSE
            -- Nothing taken, the whole budget read, every row passed over: perhaps a long
            -- queue for busy hosts stands in front of other hosts' work. Read further, up to
            -- 10,000 rows, passing over at C speed the rows whose hosts were just found
            -- busy (without asking again), at most once a second on this connection (a
            -- claim that finds nothing looks again within a second: worker.py).
            EXIT WHEN cardinality(taken_ids) > 0 OR seen < budget
                   OR cardinality(busy_assets) = 0;
            deep_at := current_setting('opsconductor.claim_deep_at', true);
            EXIT WHEN CASE WHEN coalesce(deep_at, '') = '' THEN false  -- not yet read deep
                           ELSE deep_at::timestamptz > clock_timestamp() - interval '1 second'
                      END;
            PERFORM set_config('opsconductor.claim_deep_at', clock_timestamp()::text, false);
            OPEN rows FOR
                SELECT q.execution_id, q.interrupted_at, q.first_locks, q.first_locks_tenant,
                       q.first_locks IS NOT NULL AND q.interrupted_at IS NULL AND EXISTS (
                   SELECT FROM unnest(q.first_locks) AS w(asset_id)
                   CROSS JOIN LATERAL (
                       SELECT FROM execution.execution_locks l
                       WHERE l.tenant_id = q.first_locks_tenant AND l.asset_id = w.asset_id
                         AND l.expires_at >= now()
                         -- its own reservation, from a claim that did not start it
                         AND split_part(l.owner_tag, ':', 1) <> q.execution_id::text
                       LIMIT 1) AS held) AS busy
                FROM (SELECT q.execution_id, q.interrupted_at, q.first_locks,
                             q.first_locks_tenant, q.priority, q.available_at
                      FROM execution.execution_queue q
                      WHERE q.lease_token IS NULL AND q.available_at <= now()
                      ORDER BY (q.interrupted_at IS NULL), q.priority, q.available_at
                      OFFSET budget LIMIT 10000) AS q
                WHERE q.first_locks IS NULL OR NOT (q.first_locks && busy_assets)
                ORDER BY (q.interrupted_at IS NULL), q.priority, q.available_at;
        END IF;
        seen := 0;
        LOOP
            EXIT WHEN cardinality(taken_ids) >= claim_limit OR seen >= budget;
            FETCH rows INTO c;
            EXIT WHEN NOT FOUND;
            seen := seen + 1;
            IF c.busy THEN
                busy_assets := busy_assets || c.first_locks;
                CONTINUE;
            END IF;
            wanted := NULL;
            IF c.first_locks IS NOT NULL AND c.interrupted_at IS NULL THEN
                wanted := ARRAY(SELECT length(c.first_locks_tenant) || ':' || c.first_locks_tenant
                                       || a
                                FROM unnest(c.first_locks) AS a);
                CONTINUE WHEN wanted && taken_locks;
                taken_locks := taken_locks || wanted;
            END IF;
            PERFORM FROM execution.execution_queue q
            WHERE q.execution_id = c.execution_id AND q.lease_token IS NULL
              AND q.available_at <= now()
            FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                taken_ids := taken_ids || c.execution_id;
            END IF;
        END LOOP;
        CLOSE rows;
    END LOOP;
    RETURN QUERY
    WITH picked AS (
        SELECT execution_id, interrupted_at, action_classes, plan_timeout_s, steps_timeout_s,
               first_locks, first_locks_tenant
        FROM execution.execution_queue
        WHERE execution_id = ANY(taken_ids)
    ), reserved AS (
        -- The new runs' first locks, held for them until their engine takes them (a
        -- reservation of its execution is its to take: locks.sql) or for 5 seconds: until
        -- then no other claim hands their hosts out. In (tenant, asset) order, as every
        -- lock is taken; only assets still in the inventory (a missing one fails the run)
        -- and only where no live lock of another execution is (another claim's, just taken).
        INSERT INTO execution.execution_locks AS l
            (tenant_id, asset_id, owner_tag, execution_id, expires_at)
        SELECT p.first_locks_tenant, x.asset_id, p.execution_id || ':' || claim_worker, NULL,
               now() + interval '5 seconds'
        FROM picked p
        CROSS JOIN LATERAL unnest(p.first_locks) AS w(asset_id)
        CROSS JOIN LATERAL (
            SELECT a.asset_id FROM execution.assets a
            WHERE a.tenant_id = p.first_locks_tenant AND a.asset_id = w.asset_id LIMIT 1) AS x
        WHERE p.interrupted_at IS NULL
        ORDER BY 1, 2
        ON CONFLICT (tenant_id, asset_id) DO UPDATE SET
            owner_tag = EXCLUDED.owner_tag, execution_id = NULL, acquired_at = now(),
            expires_at = EXCLUDED.expires_at, last_heartbeat_at = now()
        WHERE l.expires_at < now()
           OR split_part(l.owner_tag, ':', 1) = split_part(EXCLUDED.owner_tag, ':', 1)
    ), extended AS (
        UPDATE execution.executions e SET timeout_at = e.timeout_at + (now() - p.interrupted_at)
        FROM picked p
        WHERE e.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE interrupted_at IS NOT NULL))
          AND e.id = p.execution_id AND e.timeout_at IS NOT NULL AND e.status::text = 'running'
        RETURNING e.id, e.timeout_at
    ), startable AS (
        -- execution_timeout_s, written out: no function call per row (its policy read
        -- runs only for a row that needs it)
        SELECT x.id, b.timeout_s FROM execution.executions x
        JOIN picked p ON p.execution_id = x.id
        CROSS JOIN LATERAL (
            SELECT CASE
                WHEN p.steps_timeout_s IS NULL OR p.action_classes IS NULL
                     OR cardinality(p.action_classes) = 0 THEN NULL
                WHEN p.plan_timeout_s IS NOT NULL THEN p.plan_timeout_s
                ELSE (SELECT CASE WHEN count(*) < cardinality(p.action_classes) THEN NULL
                                  ELSE greatest(max(t.execution_timeout_s), p.steps_timeout_s) END
                      FROM execution.timeout_policies t
                      WHERE t.sla_class = x.sla_class AND t.action_class = ANY(p.action_classes))
                END AS timeout_s) AS b
        WHERE x.id = ANY(ARRAY(SELECT execution_id FROM picked WHERE begin_actor IS NOT NULL))
          AND x.status::text = 'queued' AND x.approval_level = 0 AND b.timeout_s IS NOT NULL
        ORDER BY x.id
        FOR NO KEY UPDATE OF x SKIP LOCKED
    ), begun AS (
        UPDATE execution.executions e SET
            status = 'running',
            started_at = coalesce(e.started_at, now()),
            timeout_at = now() + make_interval(secs => s.timeout_s),
            worker_id = claim_worker
        FROM startable s
        WHERE e.id = ANY(ARRAY(SELECT id FROM startable)) AND e.id = s.id
          AND e.status::text = 'queued'
        RETURNING e AS started, e.id, e.tenant_id, s.timeout_s
    ), logged AS (
        INSERT INTO execution.execution_events
            (execution_id, tenant_id, event_type, from_status, to_status, actor_id, payload)
        SELECT id, tenant_id, 'status_changed', 'queued', 'running', begin_actor, '{}'::jsonb
        FROM begun ORDER BY id
    ), claimed AS (
    UPDATE execution.execution_queue q SET
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => coalesce(claim_lease_s, q.lease_timeout_s)),
        worker_id = claim_worker,
        leased_at = now(),
        attempt_count = q.attempt_count + 1,
        recovery_s = q.recovery_s + coalesce(extract(epoch FROM now() - picked.interrupted_at), 0),
        interrupted_at = NULL,
        -- a resumed run's first locks are behind it
        first_locks = CASE WHEN picked.interrupted_at IS NULL THEN q.first_locks END
    FROM picked
    JOIN execution.executions e ON e.id = picked.execution_id
    LEFT JOIN extended x ON x.id = picked.execution_id
    LEFT JOIN begun b ON b.id = picked.execution_id
    WHERE q.execution_id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND e.id = ANY(ARRAY(SELECT execution_id FROM picked))
      AND q.execution_id = picked.execution_id
    -- The execution row comes back with the lease (as begun, when it was), and what the
    -- engine reads to start it (runs.start_context, as the start_context statement reads it).
    RETURNING CASE WHEN b.id IS NULL THEN e ELSE b.started END AS e, q.lease_token, q.attempt_count,
              q.max_attempts, coalesce(claim_lease_s, q.lease_timeout_s) AS lease_s,
              x.timeout_at AS extended_timeout_at,
              extract(epoch FROM now() - picked.interrupted_at)::float8 AS recovered_after_s,
              q.interruption, q.interruptions, q.recovery_s,
              (SELECT json_build_object(
                   'record_only', tn.record_only, 'host_key_policy', tn.host_key_policy,
                   'local_execution', tn.local_execution, 'local_network', tn.local_network,
                   'masking_patterns',
                   coalesce((SELECT json_agg(json_build_array(p.name, p.pattern) ORDER BY p.name)
                             FROM execution.masking_patterns p WHERE p.tenant_id = tn.tenant_id),
                            '[]'::json),
                   'assets',
                   coalesce((SELECT json_agg(x.a ORDER BY (x.a).asset_id)
                             FROM (SELECT DISTINCT w.asset_id
                                   FROM jsonb_array_elements(e.plan_snapshot -> 'targets') AS s,
                                        jsonb_array_elements_text(s) AS w(asset_id)) AS want
                             CROSS JOIN LATERAL (
                                 SELECT a FROM execution.assets a
                                 WHERE a.tenant_id = tn.tenant_id AND a.asset_id = want.asset_id
                                 LIMIT 1) AS x),
                            '[]'::json))
               FROM execution.tenants tn WHERE tn.tenant_id = e.tenant_id) AS start_context,
              b.timeout_s AS begun_timeout_s
    )
    -- in claim order: a worker starts them in that order
    SELECT * FROM claimed c ORDER BY array_position(taken_ids, (c.e).id);
END $$;
