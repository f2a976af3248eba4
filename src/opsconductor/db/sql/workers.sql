-- Worker registry: one row per worker process, heartbeats while it runs.

-- name: register
INSERT INTO execution.workers (worker_id, host, pid, concurrency)
VALUES (%(worker_id)s, %(host)s, %(pid)s, %(concurrency)s)
ON CONFLICT (worker_id) DO UPDATE SET
    host = EXCLUDED.host, pid = EXCLUDED.pid, concurrency = EXCLUDED.concurrency,
    started_at = now(), last_heartbeat_at = now(), in_flight = 0, stopped_at = NULL

-- name: heartbeat
UPDATE execution.workers SET last_heartbeat_at = now(), in_flight = %(in_flight)s
WHERE worker_id = %(worker_id)s

-- name: stopped
UPDATE execution.workers SET stopped_at = now(), in_flight = 0, last_heartbeat_at = now()
WHERE worker_id = %(worker_id)s

-- name: list_workers
SELECT *, extract(epoch FROM now() - last_heartbeat_at) AS heartbeat_age_s,
       CASE WHEN stopped_at IS NOT NULL THEN 'stopped'
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
