-- Target selection by environment runs in SQL at each submission (db/assets.py
-- select_targets): an index keeps its cost with the matched assets, not the inventory.
-- Asset ids use the primary key, hostnames the (tenant_id, hostname) unique index, tags
-- the GIN index.
CREATE INDEX assets_environment_idx ON execution.assets (tenant_id, environment);
