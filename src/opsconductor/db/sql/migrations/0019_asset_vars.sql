-- Inventory variables (Ansible host and group vars, merged per host at import): templates
-- read them as asset.vars.*. Not secret: the importer refuses to store passwords here.
ALTER TABLE execution.assets
    ADD COLUMN vars jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(vars) = 'object');
