-- 0013: dead workers detected in about a second, recovered work first.
-- Each worker holds a session-level advisory lock (classid 5118, objid lock_key) on a
-- connection of its own for its whole life; a SIGKILLed worker's connection closes at once
-- and frees the lock, which every reaper round looks for (db/sql/workers.sql).
-- No column default: only a worker that takes its lock sets a key (register), so rows of
-- workers from before (or of an older version still running) are never watched by lock.
CREATE SEQUENCE execution.worker_lock_keys AS integer;
ALTER TABLE execution.workers
    ADD COLUMN lock_key        integer UNIQUE,
    -- first reaper round that found the lock free; cleared when it is seen held again
    ADD COLUMN lock_free_since timestamptz,
    -- the reaper declared it dead and took its work back
    ADD COLUMN died_at         timestamptz;
ALTER SEQUENCE execution.worker_lock_keys OWNED BY execution.workers.lock_key;
CREATE INDEX workers_watched_idx ON execution.workers (worker_id)
    WHERE stopped_at IS NULL AND died_at IS NULL;

-- Why and since when a running execution has no worker (crash, lease expiry, hand-back,
-- failed attempt): such a row is claimed before new work, and the time it waits is added
-- to the execution's deadline when it is resumed.
ALTER TABLE execution.execution_queue
    ADD COLUMN interrupted_at  timestamptz,
    ADD COLUMN interruption    text,
    ADD COLUMN interruptions   integer NOT NULL DEFAULT 0 CHECK (interruptions >= 0),
    ADD COLUMN recovery_s      double precision NOT NULL DEFAULT 0 CHECK (recovery_s >= 0),
    -- when the current lease was taken: did the execution make progress under it?
    ADD COLUMN leased_at       timestamptz;
DROP INDEX execution.execution_queue_claim_idx;
CREATE INDEX execution_queue_claim_idx
    ON execution.execution_queue ((interrupted_at IS NULL), priority, available_at)
    WHERE lease_token IS NULL;
CREATE INDEX execution_queue_worker_idx ON execution.execution_queue (worker_id)
    WHERE lease_token IS NOT NULL;
