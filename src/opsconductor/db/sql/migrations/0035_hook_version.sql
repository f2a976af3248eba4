-- 0035_hook_version
-- A webhook runs one version of its job, as its creator, like a schedule (0034): the
-- latest when the hook is made, or one named; NULL follows the latest (hooks made before
-- this migration keep doing so).
ALTER TABLE execution.job_hooks ADD COLUMN job_version integer,
    ADD FOREIGN KEY (tenant_id, job_name, job_version)
        REFERENCES execution.job_versions ON DELETE CASCADE;
