-- Re-running the failed (opsc rerun ID --failed): the new execution points back at the one
-- whose failed targets it re-runs. Not retry_of, which links idempotency-key retries.
-- SET NULL: pruning the old one's history must not be blocked by a kept rerun (the rerun
-- holds its own whole plan snapshot; the link is for reading).
ALTER TABLE execution.executions
    ADD COLUMN rerun_of uuid REFERENCES execution.executions ON DELETE SET NULL;
CREATE INDEX executions_rerun_of_idx ON execution.executions (rerun_of)
    WHERE rerun_of IS NOT NULL;
