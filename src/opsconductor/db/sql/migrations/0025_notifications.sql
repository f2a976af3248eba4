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
