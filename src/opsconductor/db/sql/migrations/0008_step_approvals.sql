-- 0008: level 3 step-by-step approvals: a step waits in `awaiting_approval` (issue 5).

ALTER TABLE execution.execution_steps DROP CONSTRAINT execution_steps_status_check;
ALTER TABLE execution.execution_steps ADD CONSTRAINT execution_steps_status_check CHECK (status IN
    ('pending', 'running', 'completed', 'failed', 'timeout', 'cancelled', 'skipped',
     'awaiting_approval'));
