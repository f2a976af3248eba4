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
