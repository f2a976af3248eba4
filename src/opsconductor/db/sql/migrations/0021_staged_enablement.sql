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
