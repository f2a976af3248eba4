-- Honest estimates (issue 17): a step's duration is estimated from the history of the same
-- step, keyed by its type and a hash of what it runs (routing.step_key), not only by type.
ALTER TABLE execution.execution_steps ADD COLUMN step_key text;
CREATE INDEX execution_steps_key_history_idx
    ON execution.execution_steps (tenant_id, step_key, finished_at DESC)
    WHERE step_key IS NOT NULL AND finished_at IS NOT NULL AND started_at IS NOT NULL;
