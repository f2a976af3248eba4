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
