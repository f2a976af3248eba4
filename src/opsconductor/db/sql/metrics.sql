-- Read at scrape time by /metrics: cluster-wide figures that live in the database, so every
-- API node answers the same whichever process did the work.
--
-- Counters and histograms come from execution.metric_rollup (migration 0014), which
-- statement-level triggers keep current: a scrape reads a few rows whatever the history.
-- Gauges (queue depth, pending approvals, open dead letters, live workers) read live rows
-- through partial indexes, so their cost follows the live rows, not the history.
-- The recount_* blocks compute the same figures from every row: the reference the roll-up
-- is tested against (tests/test_metrics_rollup.py), never run by a scrape.

-- name: compact
-- Fold the writers' slots into slot 0; one scrape at a time (the others skip it).
SELECT execution.metric_rollup_compact() AS folded
WHERE pg_try_advisory_xact_lock(5118830016)

-- name: rollup
SELECT metric, labels, sum(value) AS value FROM execution.metric_rollup GROUP BY 1, 2

-- name: executions_live
-- Unfinished executions, through the partial index (the same list as its predicate).
SELECT tenant_id, status::text AS status, count(*) AS n FROM execution.executions
WHERE status IN ('pending_approval', 'approved', 'queued', 'running')
GROUP BY 1, 2

-- name: recount_executions_by_status
-- In two halves, each read from its partial index alone (migration 0032): unfinished
-- (executions_live_idx) and every other status (executions_finished_idx).
SELECT tenant_id, status::text AS status, count(*) AS n FROM execution.executions
WHERE status IN ('pending_approval', 'approved', 'queued', 'running')
GROUP BY 1, 2
UNION ALL
SELECT tenant_id, status::text AS status, count(*) AS n FROM execution.executions
WHERE status NOT IN ('pending_approval', 'approved', 'queued', 'running')
GROUP BY 1, 2

-- name: recount_step_duration_buckets
SELECT s.step_type, b.le,
       count(*) FILTER (WHERE extract(epoch FROM s.finished_at - s.started_at) <= b.le) AS n
FROM execution.execution_steps s CROSS JOIN unnest(%(buckets)s::float8[]) AS b(le)
WHERE s.started_at IS NOT NULL AND s.finished_at IS NOT NULL
GROUP BY 1, 2

-- name: recount_step_totals
SELECT step_type,
       count(*) FILTER (WHERE finished_at IS NOT NULL AND started_at IS NOT NULL) AS n,
       coalesce(sum(extract(epoch FROM finished_at - started_at))
                FILTER (WHERE finished_at IS NOT NULL AND started_at IS NOT NULL), 0) AS seconds,
       count(*) FILTER (WHERE attempt > 1) AS retries
FROM execution.execution_steps GROUP BY 1

-- name: queue_depth
SELECT e.tenant_id,
       count(*) FILTER (WHERE q.lease_token IS NULL) AS waiting,
       count(*) FILTER (WHERE q.lease_token IS NOT NULL) AS leased,
       coalesce(max(extract(epoch FROM now() - q.enqueued_at))
                FILTER (WHERE q.lease_token IS NULL), 0) AS oldest_wait_s
FROM execution.execution_queue q JOIN execution.executions e ON e.id = q.execution_id
GROUP BY 1

-- name: recount_queue_wait_buckets
-- Background executions: from approval (or queueing) to the start of the run.
WITH waits AS (
    SELECT extract(epoch FROM e.started_at - a.at) AS w
    FROM execution.executions e
    JOIN LATERAL (SELECT min(v.created_at) AS at FROM execution.execution_events v
                  WHERE v.execution_id = e.id AND v.to_status IN ('approved', 'queued')) a
      ON a.at IS NOT NULL
    WHERE e.mode = 'background' AND e.started_at IS NOT NULL
)
SELECT b.le, count(*) FILTER (WHERE w <= b.le) AS n, count(*) AS total,
       coalesce(sum(w), 0) AS seconds
FROM waits CROSS JOIN unnest(%(buckets)s::float8[]) AS b(le)
GROUP BY 1

-- name: recount_approval_wait_buckets
SELECT b.le,
       count(*) FILTER (WHERE extract(epoch FROM a.decided_at - a.created_at) <= b.le) AS n,
       count(*) AS total,
       coalesce(sum(extract(epoch FROM a.decided_at - a.created_at)), 0) AS seconds
FROM execution.approvals a CROSS JOIN unnest(%(buckets)s::float8[]) AS b(le)
WHERE a.decided_at IS NOT NULL
GROUP BY 1

-- name: approvals_pending
SELECT count(*) AS n FROM execution.approvals WHERE state = 'pending'

-- name: recount_executions_misc
SELECT coalesce(sum(lease_renewals), 0) AS lease_renewals FROM execution.executions

-- name: dlq_open
SELECT e.tenant_id, count(*) AS n
FROM execution.execution_dlq d JOIN execution.executions e ON e.id = d.execution_id
WHERE NOT d.requeued GROUP BY 1

-- name: recount_sla_outcomes
-- Finished executions whose SLA clock ran (they were approved), met or violated.
SELECT e.tenant_id, e.sla_class::text AS sla_class,
       count(*) FILTER (WHERE e.sla_violated_at IS NULL) AS met,
       count(*) FILTER (WHERE e.sla_violated_at IS NOT NULL) AS violated
FROM execution.executions e
WHERE e.finished_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM execution.execution_events v
              WHERE v.execution_id = e.id AND v.to_status = 'approved')
GROUP BY 1, 2

-- name: recount_sla_violations
SELECT tenant_id, sla_class::text AS sla_class, count(*) AS n
FROM execution.executions WHERE sla_violated_at IS NOT NULL GROUP BY 1, 2

-- name: recount_events_of_types
SELECT tenant_id, event_type, count(*) AS n
FROM execution.execution_events WHERE event_type = ANY(%(types)s) GROUP BY 1, 2

-- name: workers_alive
SELECT count(*) FILTER (WHERE stopped_at IS NULL
                        AND last_heartbeat_at > now() - make_interval(secs => %(stale_s)s))
           AS alive,
       coalesce(sum(in_flight) FILTER (WHERE stopped_at IS NULL
                        AND last_heartbeat_at > now() - make_interval(secs => %(stale_s)s)), 0)
           AS in_flight
FROM execution.workers
WHERE stopped_at IS NULL
