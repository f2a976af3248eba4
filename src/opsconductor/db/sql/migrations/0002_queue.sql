-- 0002: background queue (issue 3). Each queue row carries what the worker needs to decide
-- about it without reading the plan: its retry budget and its visibility timeout, both
-- fixed at enqueue time from the policy matrix (and observed step durations).

ALTER TABLE execution.execution_queue
    ADD COLUMN max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    ADD COLUMN lease_timeout_s  double precision NOT NULL DEFAULT 60 CHECK (lease_timeout_s > 0),
    ADD COLUMN last_error       text;

-- Observed step durations per type (routing's p95) read the newest finished attempts.
CREATE INDEX execution_steps_history_idx
    ON execution.execution_steps (tenant_id, step_type, finished_at DESC)
    WHERE finished_at IS NOT NULL AND started_at IS NOT NULL;

CREATE INDEX execution_dlq_open_idx ON execution.execution_dlq (failed_at DESC)
    WHERE NOT requeued;
