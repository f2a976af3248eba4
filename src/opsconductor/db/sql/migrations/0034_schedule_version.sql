-- 0034_schedule_version
-- A schedule runs one version of its job, chosen when it is added (the latest then, or
-- one named), unless it was added to follow the latest (NULL). It runs as its creator:
-- following the latest would run whatever a later saver wrote under the creator's roles.
-- Schedules added before this migration keep following the latest (NULL), as they did.
ALTER TABLE execution.schedules ADD COLUMN job_version integer,
    ADD FOREIGN KEY (tenant_id, job_name, job_version)
        REFERENCES execution.job_versions ON DELETE CASCADE;
