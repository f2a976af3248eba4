-- Worker registry: one row per worker process, heartbeats while it runs. A worker's life
-- signal is a session-level advisory lock (classid LIFE_CLASS in db/workers.py, objid
-- lock_key) held on a connection of its own: the server frees it when that connection closes.

-- name: register
-- A worker registering again (it was declared dead while cut off) keeps its lock key.
INSERT INTO execution.workers (worker_id, host, pid, concurrency, lock_key)
VALUES (%(worker_id)s, %(host)s, %(pid)s, %(concurrency)s,
        nextval('execution.worker_lock_keys'))
ON CONFLICT (worker_id) DO UPDATE SET
    host = EXCLUDED.host, pid = EXCLUDED.pid, concurrency = EXCLUDED.concurrency,
    started_at = now(), last_heartbeat_at = now(), in_flight = 0, stopped_at = NULL,
    died_at = NULL, lock_free_since = NULL,
    lock_key = coalesce(workers.lock_key, EXCLUDED.lock_key)
RETURNING lock_key

-- name: session_settings
-- The life-signal connection: a worker whose machine vanishes (no FIN) is dropped by the
-- server after about 10 s of silence instead of the kernel's 2 hours; it is never timed
-- out for being idle, which it is by design.
SELECT set_config('tcp_keepalives_idle', '5', false),
       set_config('tcp_keepalives_interval', '2', false),
       set_config('tcp_keepalives_count', '3', false),
       set_config('idle_session_timeout', '0', false),
       set_config('statement_timeout', '5000', false)

-- name: take_life_lock
-- Also says whether a reaper declared this worker dead while its lock was free.
SELECT pg_try_advisory_lock(%(life_class)s, w.lock_key) AS got, w.died_at
FROM execution.workers w WHERE w.worker_id = %(worker_id)s

-- name: watch
-- One statement per reaper round, run by every worker; only the round's reaper (the
-- transaction-level reaper lock) looks further. A free life lock is noted; one still free a
-- round later (confirm_s) names a dead worker. The lock taken here on a dead worker's key
-- lasts only for this statement. The flags say whether the heavier sweep has work.
WITH me AS (
    SELECT pg_try_advisory_xact_lock(%(reaper_key)s) AS got
), seen AS (
    SELECT w.worker_id, w.lock_free_since,
           pg_try_advisory_xact_lock(%(life_class)s, w.lock_key) AS free
    FROM execution.workers w, me
    WHERE me.got AND w.stopped_at IS NULL AND w.died_at IS NULL AND w.lock_key IS NOT NULL
), marked AS (
    UPDATE execution.workers w SET lock_free_since = CASE WHEN s.free THEN now() END
    FROM seen s
    WHERE w.worker_id = s.worker_id AND s.free = (s.lock_free_since IS NULL)
)
SELECT me.got,
       ARRAY(SELECT worker_id FROM seen
             WHERE free AND lock_free_since <= now() - make_interval(secs => %(confirm_s)s))
           AS dead,
       me.got AND (
           EXISTS (SELECT 1 FROM execution.execution_queue
                   WHERE lease_token IS NOT NULL AND lease_expires_at < now())
           OR EXISTS (SELECT 1 FROM execution.execution_locks WHERE expires_at < now())
           OR EXISTS (SELECT 1 FROM execution.execution_queue q
                      JOIN execution.workers w ON w.worker_id = q.worker_id
                      WHERE q.lease_token IS NOT NULL AND w.died_at IS NOT NULL)
       ) AS sweep_due
FROM me

-- name: declare_dead
-- Inside the reclaiming transaction: the lock is taken again, and kept until commit, so a
-- worker that comes back now waits for the reclaim to finish and then learns it was dead.
UPDATE execution.workers SET died_at = now(), in_flight = 0
WHERE worker_id = ANY(%(worker_ids)s) AND died_at IS NULL AND stopped_at IS NULL
  AND pg_try_advisory_xact_lock(%(life_class)s, lock_key)
RETURNING worker_id, lock_free_since

-- name: heartbeat
UPDATE execution.workers SET last_heartbeat_at = now(), in_flight = %(in_flight)s
WHERE worker_id = %(worker_id)s

-- name: stopped
UPDATE execution.workers SET stopped_at = now(), in_flight = 0, last_heartbeat_at = now()
WHERE worker_id = %(worker_id)s

-- name: list_workers
SELECT *, extract(epoch FROM now() - last_heartbeat_at) AS heartbeat_age_s,
       CASE WHEN stopped_at IS NOT NULL THEN 'stopped'
            WHEN died_at IS NOT NULL THEN 'dead'
            WHEN last_heartbeat_at > now() - make_interval(secs => %(stale_s)s) THEN 'alive'
            ELSE 'stale' END AS state
FROM execution.workers
WHERE stopped_at IS NULL OR stopped_at > now() - interval '1 day'
ORDER BY state, started_at DESC

-- name: prune_workers
-- Rows whose last beat (or goodbye) is older than the retention: crashed and stopped
-- workers do not pile up. A live worker beats every few seconds, so it is never one.
DELETE FROM execution.workers
WHERE last_heartbeat_at < now() - make_interval(secs => %(retention_s)s)
