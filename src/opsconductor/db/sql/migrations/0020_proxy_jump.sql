-- SSH through a bastion: the asset id of the jump host (its own address, login, credential
-- and known_hosts entry apply). No foreign key: a missing bastion fails the connection
-- with a message, rather than blocking the bastion's removal.
ALTER TABLE execution.assets ADD COLUMN proxy_jump text
    CHECK (proxy_jump ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' AND proxy_jump <> asset_id);
