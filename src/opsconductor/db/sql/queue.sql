-- The background queue. A row is claimable when it has no lease and its
-- available_at has come; a lease is a random token plus an expiry, and every write by a
-- worker names its token, so a worker that lost its lease changes nothing.

-- name: enqueue
-- Retry budget and visibility timeout come from the policy matrix for the execution's SLA
-- class and the action classes its steps use (strictest budget, longest lease), the lease
-- raised to what the observed step durations need. The NOTIFY goes out at commit.
-- The plan's part of its execution budget (policies.plan_timeout) goes with the row: the
-- claim begins the execution with it (migration 0037; NULL: the engine begins it).
-- So do the assets its first lock takes, with its tenant (first_locks.py, migration 0042):
-- the claim leaves it queued while another run holds one of them (NULL: no filter).
WITH e AS (
    SELECT id, tenant_id, priority, sla_class FROM execution.executions
    WHERE id = %(execution_id)s
), policy AS (
    SELECT min(p.max_attempts) AS max_attempts, max(p.lease_timeout_s) AS lease_timeout_s
    FROM e JOIN execution.timeout_policies p ON p.sla_class = e.sla_class
    WHERE p.action_class = ANY(%(action_classes)s::text[])
), queued AS (
    INSERT INTO execution.execution_queue (execution_id, priority, max_attempts, lease_timeout_s,
                                           action_classes, plan_timeout_s, steps_timeout_s,
                                           first_locks, first_locks_tenant)
    SELECT e.id, e.priority, coalesce(policy.max_attempts, 3),
           greatest(coalesce(policy.lease_timeout_s, 60), %(min_lease_s)s::float8),
           %(action_classes)s::text[], %(plan_timeout_s)s::float8, %(steps_timeout_s)s::float8,
           %(first_locks)s::text[], e.tenant_id
    FROM e, policy
    RETURNING execution_id
)
SELECT pg_notify('opsc_queue', '') FROM queued

-- name: claim
-- Recovered work first (an execution interrupted mid-run: crash, lease expiry, hand-back,
-- failed attempt), then priority, then age; SKIP LOCKED lets many workers claim at once
-- without waiting on each other. attempt_count counts claims: the retry budget is spent by
-- being claimed. The time a running execution spent without a worker is added to its
-- deadline here, as it is resumed: recovery is not charged to its budget.
-- The statement is execution.claim_batch (migration 0033: planned once per connection). The
-- execution row comes back with the lease: the worker need not read it again. So does
-- what the engine reads to start it (runs.start_context: the tenant's settings, masking
-- patterns and the plan's targets, as the start_context statement reads them).
-- With begin_actor it also begins the new work it can (migration 0037): begun_timeout_s
-- is then set, the budget it was given, and the row comes back running.
-- New work whose first locks (migration 0042) another run holds stays queued, and one
-- claim hands out no two runs whose first locks overlap (the first in claim order wins).
SELECT (c.e).*, c.lease_token, c.attempt_count, c.max_attempts, c.lease_s,
       c.extended_timeout_at, c.recovered_after_s, c.interruption, c.interruptions,
       c.recovery_s, c.start_context, c.begun_timeout_s
FROM execution.claim_batch(%(worker_id)s, %(limit)s, %(lease_s)s::float8,
                           %(begin_actor)s::text) AS c

-- name: renew
-- One statement renews every lease a worker holds; leases it no longer holds are missing
-- from the result, which tells the worker to stop working on them.
WITH renewed AS (
    UPDATE execution.execution_queue q
    SET lease_expires_at = now() + make_interval(secs => l.lease_s)
    FROM unnest(%(ids)s::uuid[], %(tokens)s::uuid[], %(secs)s::float8[])
         AS l(execution_id, lease_token, lease_s)
    WHERE q.execution_id = l.execution_id AND q.lease_token = l.lease_token
    RETURNING q.execution_id
), counted AS (
    UPDATE execution.executions e SET lease_renewals = e.lease_renewals + 1
    FROM renewed WHERE e.id = renewed.execution_id
)
SELECT execution_id FROM renewed

-- name: complete
DELETE FROM execution.execution_queue
WHERE execution_id = %(execution_id)s AND lease_token = %(lease_token)s
RETURNING execution_id

-- name: lock_owned
SELECT q.*, e.tenant_id FROM execution.execution_queue q
JOIN execution.executions e ON e.id = q.execution_id
WHERE q.execution_id = %(execution_id)s AND q.lease_token = %(lease_token)s
FOR UPDATE OF q

-- name: retry_later
-- An attempt ended without a verdict (lost database, unexpected error): back off.
UPDATE execution.execution_queue SET
    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
    available_at = now() + make_interval(secs => %(backoff_s)s::float8),
    last_error = %(error)s,
    interrupted_at = now(), interruption = 'a failed attempt', interruptions = interruptions + 1
WHERE execution_id = %(execution_id)s

-- name: recover
-- Its worker died or stopped renewing: claimable at once, and before new work.
UPDATE execution.execution_queue SET
    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
    available_at = now(), last_error = %(error)s,
    interrupted_at = %(interrupted_at)s, interruption = %(cause)s,
    interruptions = interruptions + 1,
    attempt_count = CASE WHEN %(charged)s THEN attempt_count
                         ELSE greatest(attempt_count - 1, 0) END
WHERE execution_id = %(execution_id)s

-- name: dead_letter
WITH gone AS (
    DELETE FROM execution.execution_queue WHERE execution_id = %(execution_id)s
    RETURNING execution_id, attempt_count
), marked AS (
    UPDATE execution.executions SET status_reason = 'dead-lettered: ' || %(reason)s
    WHERE id IN (SELECT execution_id FROM gone)
)
INSERT INTO execution.execution_dlq (execution_id, failure_reason, attempt_count)
SELECT execution_id, %(reason)s, attempt_count FROM gone
RETURNING id

-- name: release
-- Hand leases back (graceful shutdown): available at once, and the claim is not counted
-- as a spent attempt because nothing went wrong with the execution.
WITH released AS (
    UPDATE execution.execution_queue q SET
        lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, available_at = now(),
        attempt_count = greatest(q.attempt_count - 1, 0),
        interrupted_at = now(), interruption = 'worker shutdown',
        interruptions = q.interruptions + 1
    FROM unnest(%(ids)s::uuid[], %(tokens)s::uuid[]) AS l(execution_id, lease_token)
    WHERE q.execution_id = l.execution_id AND q.lease_token = l.lease_token
    RETURNING q.execution_id
)
SELECT execution_id, pg_notify('opsc_queue', '') FROM released

-- name: try_reaper_lock
SELECT pg_try_advisory_xact_lock(%(key)s) AS got

-- name: recoverable_leases
-- Leases to take back: expired ones, and every lease of a worker declared dead (its life
-- lock was free: db/sql/workers.sql), expired or not. Its interruption counts from the
-- first sign of death: the round that first found the life lock free. A crash is charged
-- to the execution's attempt budget (charged) only if, under that lease, a step attempt
-- started and none finished: what a poison execution that kills its worker looks like. One
-- merely claimed, or that made progress, was a bystander (a storm must not dead-letter it);
-- finished targets never run again, so uncharged crashes are bounded by the plan's size.
SELECT q.*, e.tenant_id,
       w.worker_id IS NULL OR (
           EXISTS (SELECT 1 FROM execution.execution_steps s
                   WHERE s.execution_id = q.execution_id AND s.started_at >= q.leased_at)
           -- progress: an attempt that started AND finished under this lease (closing
           -- an earlier worker's interrupted attempt, on resume, is no progress)
           AND NOT EXISTS (SELECT 1 FROM execution.execution_steps s
                           WHERE s.execution_id = q.execution_id
                             AND s.started_at >= q.leased_at
                             AND s.finished_at >= q.leased_at)
       ) AS charged,
       CASE WHEN w.worker_id IS NOT NULL THEN 'worker crash' ELSE 'lease expiry' END AS cause,
       CASE WHEN w.worker_id IS NOT NULL
            THEN least(coalesce(w.lock_free_since, w.died_at), now())
            ELSE least(q.lease_expires_at, now()) END AS interrupted_at
FROM execution.execution_queue q
JOIN execution.executions e ON e.id = q.execution_id
LEFT JOIN execution.workers w ON w.worker_id = q.worker_id AND w.died_at IS NOT NULL
WHERE q.lease_token IS NOT NULL AND (q.lease_expires_at < now() OR w.worker_id IS NOT NULL)
ORDER BY q.lease_expires_at
LIMIT %(limit)s
FOR UPDATE OF q SKIP LOCKED

-- name: notify
SELECT pg_notify('opsc_queue', '')

-- name: next_available_in
SELECT extract(epoch FROM min(available_at) - now())::float8 AS wait_s
FROM execution.execution_queue WHERE lease_token IS NULL

-- name: list_dlq
SELECT d.id, d.execution_id, d.failure_reason, d.attempt_count, d.failed_at, d.requeued,
       d.requeued_at, d.requeued_by, e.plan_name, e.status
FROM execution.execution_dlq d
JOIN execution.executions e ON e.id = d.execution_id
WHERE e.tenant_id = %(tenant_id)s AND (%(include_requeued)s OR NOT d.requeued)
  AND (%(execution_id)s::uuid IS NULL OR d.execution_id = %(execution_id)s::uuid)
ORDER BY d.failed_at DESC, d.id DESC
LIMIT %(limit)s

-- name: mark_requeued
UPDATE execution.execution_dlq SET requeued = true, requeued_at = now(), requeued_by = %(actor_id)s
WHERE execution_id = %(execution_id)s AND NOT requeued
RETURNING id, failure_reason

-- name: clear_dead_letter_reason
UPDATE execution.executions SET status_reason = NULL
WHERE id = %(execution_id)s AND status_reason LIKE 'dead-lettered: %%'

-- name: depth
SELECT count(*) FILTER (WHERE lease_token IS NULL) AS waiting,
       count(*) FILTER (WHERE lease_token IS NOT NULL) AS leased
FROM execution.execution_queue

-- name: park
-- A level 3 step waits for a person: the lease goes back and the row sleeps until the
-- step's approval wakes it, so the wait holds no worker slot. Not a spent attempt. Its
-- first locks (migration 0042) are those of a step it may have passed: no longer a filter.
UPDATE execution.execution_queue SET
    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
    available_at = 'infinity', attempt_count = greatest(attempt_count - 1, 0),
    first_locks = NULL
WHERE execution_id = %(execution_id)s AND lease_token = %(lease_token)s
RETURNING execution_id

-- name: unpark
WITH woken AS (
    UPDATE execution.execution_queue SET available_at = now()
    WHERE execution_id = %(execution_id)s AND lease_token IS NULL
    RETURNING execution_id
)
SELECT execution_id, pg_notify('opsc_queue', '') FROM woken

-- name: drop_parked
DELETE FROM execution.execution_queue
WHERE execution_id = %(execution_id)s AND lease_token IS NULL
