-- 0010: local execution is a capability of a tenant, off unless an installation admin turns
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
