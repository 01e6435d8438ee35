-- Every SQL statement Hydra runs. Each block starts with `-- name: <name>` and
-- a one-line description; hydra.coordinator.store loads them once by name.
-- Parameters use psycopg's %(name)s style.

-- ---------------------------------------------------------------- tasks --

-- name: lock_task_by_name
-- The live task with this name, locked for the rest of the transaction.
SELECT t.id, t.name, t.version, t.paused, t.created_at, t.updated_at, v.spec
FROM hydra_tasks t
JOIN hydra_task_versions v ON v.task_id = t.id AND v.version = t.version
WHERE t.name = %(name)s AND t.deleted_at IS NULL
FOR UPDATE OF t;

-- name: insert_task
-- Create a task row at version 1; nothing when the name was taken concurrently.
INSERT INTO hydra_tasks (name, version)
VALUES (%(name)s, 1)
ON CONFLICT (name) WHERE deleted_at IS NULL DO NOTHING
RETURNING id;

-- name: insert_task_version
-- Store one version of a task's spec.
INSERT INTO hydra_task_versions (task_id, version, spec)
VALUES (%(task_id)s, %(version)s, %(spec)s);

-- name: set_task_version
-- Point a task at a new current version.
UPDATE hydra_tasks SET version = %(version)s, updated_at = now()
WHERE id = %(task_id)s;

-- name: upsert_trigger
-- Store a trigger at a position; an unchanged trigger keeps its schedule.
INSERT INTO hydra_triggers (task_id, position, kind, spec, next_fire_at, active)
VALUES (%(task_id)s, %(position)s, %(kind)s, %(spec)s, %(next_fire_at)s, NOT %(paused)s)
ON CONFLICT (task_id, position) DO UPDATE
SET kind = EXCLUDED.kind,
    spec = EXCLUDED.spec,
    next_fire_at = CASE
        WHEN hydra_triggers.kind = EXCLUDED.kind AND hydra_triggers.spec = EXCLUDED.spec
        THEN hydra_triggers.next_fire_at
        ELSE EXCLUDED.next_fire_at END,
    last_fired_at = CASE
        WHEN hydra_triggers.kind = EXCLUDED.kind AND hydra_triggers.spec = EXCLUDED.spec
        THEN hydra_triggers.last_fired_at END;

-- name: delete_triggers_from
-- Drop the triggers a new version no longer has.
DELETE FROM hydra_triggers WHERE task_id = %(task_id)s AND position >= %(count)s;

-- name: get_task
-- One live task with its current spec and next fire time.
SELECT t.id, t.name, t.version, t.paused, t.created_at, t.updated_at, v.spec,
       (SELECT min(g.next_fire_at) FROM hydra_triggers g
        WHERE g.task_id = t.id AND g.active) AS next_fire_at
FROM hydra_tasks t
JOIN hydra_task_versions v ON v.task_id = t.id AND v.version = t.version
WHERE t.name = %(name)s AND t.deleted_at IS NULL;

-- name: list_tasks
-- A page of live tasks ordered by name, after a name, with a prefix.
SELECT t.id, t.name, t.version, t.paused, t.created_at, t.updated_at, v.spec,
       (SELECT min(g.next_fire_at) FROM hydra_triggers g
        WHERE g.task_id = t.id AND g.active) AS next_fire_at
FROM hydra_tasks t
JOIN hydra_task_versions v ON v.task_id = t.id AND v.version = t.version
WHERE t.deleted_at IS NULL AND t.name > %(after)s AND t.name LIKE %(prefix)s
ORDER BY t.name
LIMIT %(limit)s;

-- name: list_task_versions
-- Every version of a task, newest first.
SELECT version, spec, created_at FROM hydra_task_versions
WHERE task_id = %(task_id)s ORDER BY version DESC;

-- name: set_task_paused
-- Pause or resume a live task and its triggers; returns the task id.
WITH task AS (
    UPDATE hydra_tasks SET paused = %(paused)s, updated_at = now()
    WHERE name = %(name)s AND deleted_at IS NULL
    RETURNING id
), triggers AS (
    UPDATE hydra_triggers SET active = NOT %(paused)s,
        -- (the old `active` says whether this call changes anything)
        paused_at = CASE WHEN NOT %(paused)s THEN paused_at
                         WHEN active THEN now() ELSE coalesce(paused_at, now()) END,
        resumed_at = CASE WHEN %(paused)s THEN NULL
                          WHEN active THEN resumed_at ELSE now() END
    WHERE task_id = (SELECT id FROM task)
)
SELECT id FROM task;

-- name: delete_task
-- Mark a task deleted and stop its triggers; its runs stay on record.
WITH task AS (
    UPDATE hydra_tasks SET deleted_at = now()
    WHERE id = %(task_id)s
    RETURNING id
)
UPDATE hydra_triggers SET active = false, next_fire_at = NULL
WHERE task_id = (SELECT id FROM task);

-- name: cancel_queued_runs_of_task
-- Cancel every queued run of a task (used when it is deleted).
UPDATE hydra_runs SET state = 'CANCELLED', reason = %(reason)s, finished_at = now(),
                      updated_at = now()
WHERE task_id = %(task_id)s AND state = 'QUEUED'
RETURNING id;

-- name: dependents_of
-- Live tasks whose current spec has an `after` trigger naming this task.
SELECT t.name FROM hydra_tasks t
JOIN hydra_triggers g ON g.task_id = t.id
WHERE t.deleted_at IS NULL AND g.kind = 'after' AND g.spec -> 'after' ? %(name)s
ORDER BY t.name;

-- ------------------------------------------------------------- triggers --

-- name: claim_due_triggers
-- Due time triggers of live, unpaused tasks, locked; others skip them.
SELECT g.id, g.task_id, g.position, g.kind, g.spec, g.next_fire_at, g.last_fired_at,
       g.paused_at, g.resumed_at, t.name, t.version, v.spec AS task_spec
FROM hydra_triggers g
JOIN hydra_tasks t ON t.id = g.task_id
JOIN hydra_task_versions v ON v.task_id = t.id AND v.version = t.version
WHERE g.active AND g.next_fire_at <= %(now)s
ORDER BY g.next_fire_at
LIMIT %(limit)s
FOR UPDATE OF g SKIP LOCKED;

-- name: advance_triggers
-- Move claimed triggers to their next occurrence in one statement.
UPDATE hydra_triggers g
SET next_fire_at = u.next_fire_at, last_fired_at = u.last_fired_at
FROM unnest(%(ids)s::bigint[], %(next_fire_ats)s::timestamptz[],
            %(last_fired_ats)s::timestamptz[]) AS u(id, next_fire_at, last_fired_at)
WHERE g.id = u.id;

-- name: next_trigger_fire
-- The earliest next fire time over all active triggers (for the loop's sleep).
SELECT min(next_fire_at) AS next_fire_at FROM hydra_triggers
WHERE active AND next_fire_at IS NOT NULL;

-- ----------------------------------------------------------------- runs --

-- name: insert_runs
-- Create runs for (task, occurrence) pairs; existing pairs are left alone. One row per
-- created run, or one with a NULL id when none was. With a guard_version (a run built from
-- a task read earlier), only if that is still the current version of the first run's task:
-- current = false, and nothing inserted, otherwise.
WITH current AS (
    SELECT %(guard_version)s::int IS NULL OR EXISTS (
        SELECT 1 FROM hydra_tasks t
        WHERE t.id = (%(task_ids)s::bigint[])[1] AND t.version = %(guard_version)s::int
          AND t.deleted_at IS NULL) AS current
), inserted AS (
    INSERT INTO hydra_runs (task_id, task_version, occurrence, cause, params, selector,
                            not_before, max_attempts, backoff_seconds, backoff_multiplier,
                            max_backoff_seconds, idempotency_key, timezone)
    SELECT u.task_id, u.task_version, u.occurrence, u.cause, u.params, u.selector,
           greatest(u.occurrence, now()), u.max_attempts, u.backoff_seconds,
           u.backoff_multiplier, u.max_backoff_seconds, u.idempotency_key, u.timezone
    FROM unnest(%(task_ids)s::bigint[], %(task_versions)s::int[], %(occurrences)s::timestamptz[],
                %(causes)s::text[], %(params)s::jsonb[], %(selectors)s::jsonb[],
                %(max_attempts)s::int[], %(backoff_seconds)s::float8[],
                %(backoff_multipliers)s::float8[], %(max_backoff_seconds)s::float8[],
                %(idempotency_keys)s::text[], %(timezones)s::text[])
         AS u(task_id, task_version, occurrence, cause, params, selector, max_attempts,
              backoff_seconds, backoff_multiplier, max_backoff_seconds, idempotency_key, timezone)
    WHERE (SELECT current FROM current)
    ON CONFLICT DO NOTHING
    RETURNING id, task_id, occurrence, state
)
SELECT c.current, i.id, i.task_id, i.occurrence, i.state
FROM current c LEFT JOIN inserted i ON true;

-- name: notify_dispatch
-- Wake every coordinator's dispatcher (delivered at commit); the payload names the sender.
SELECT pg_notify('hydra_dispatch', %(sender)s::text);

-- name: find_run_by_key
-- The run a task got for an idempotency key.
SELECT id FROM hydra_runs WHERE task_id = %(task_id)s AND idempotency_key = %(key)s;

-- name: find_run_by_occurrence
-- The run a task got for an occurrence.
SELECT id FROM hydra_runs WHERE task_id = %(task_id)s AND occurrence = %(occurrence)s;

-- name: get_run
-- One run with its task's name.
SELECT r.*, t.name AS task_name FROM hydra_runs r
JOIN hydra_tasks t ON t.id = r.task_id
WHERE r.id = %(id)s;

-- name: get_runs
-- Several runs by id (without attempts), oldest occurrence first.
SELECT r.*, t.name AS task_name FROM hydra_runs r
JOIN hydra_tasks t ON t.id = r.task_id
WHERE r.id = ANY(%(ids)s::uuid[])
ORDER BY r.occurrence;

-- name: get_attempts
-- Every attempt of a run, oldest first.
SELECT * FROM hydra_attempts WHERE run_id = %(run_id)s ORDER BY number;

-- name: get_attempts_of_runs
-- Every attempt of several runs, by run, oldest first.
SELECT * FROM hydra_attempts WHERE run_id = ANY(%(run_ids)s::uuid[]) ORDER BY run_id, number;

-- name: list_runs
-- A page of runs, newest occurrence first, keyset-paged by (occurrence, id), in a
-- range of occurrences [from, to); read from the newest (never through history).
SELECT r.*, t.name AS task_name FROM hydra_runs r
JOIN hydra_tasks t ON t.id = r.task_id
WHERE t.name LIKE %(task_prefix)s
  AND r.occurrence >= coalesce(%(occurrence_from)s::timestamptz, '-infinity')
  AND r.occurrence < coalesce(%(occurrence_to)s::timestamptz, 'infinity')
  AND r.occurrence <= coalesce(%(after_occurrence)s::timestamptz, 'infinity')
  AND (r.occurrence, r.id) < (coalesce(%(after_occurrence)s::timestamptz, 'infinity'),
                              coalesce(%(after_id)s::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
ORDER BY r.occurrence DESC, r.id DESC
LIMIT %(limit)s;

-- name: list_runs_of_task
-- The same page of one live task's runs (in some states, if any), read from its own newest.
SELECT r.*, t.name AS task_name FROM hydra_runs r
JOIN hydra_tasks t ON t.id = r.task_id
WHERE r.task_id = (SELECT id FROM hydra_tasks WHERE name = %(task)s AND deleted_at IS NULL)
  AND t.name LIKE %(task_prefix)s
  AND (cardinality(%(states)s::hydra_run_state[]) = 0 OR r.state = ANY(%(states)s))
  AND r.occurrence >= coalesce(%(occurrence_from)s::timestamptz, '-infinity')
  AND r.occurrence < coalesce(%(occurrence_to)s::timestamptz, 'infinity')
  AND r.occurrence <= coalesce(%(after_occurrence)s::timestamptz, 'infinity')
  AND (r.occurrence, r.id) < (coalesce(%(after_occurrence)s::timestamptz, 'infinity'),
                              coalesce(%(after_id)s::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
ORDER BY r.occurrence DESC, r.id DESC
LIMIT %(limit)s;

-- name: list_runs_in_states
-- The same page of runs in some states: each state's newest (hydra_runs_by_state), merged.
SELECT p.* FROM unnest(%(states)s::hydra_run_state[]) AS s(state)
CROSS JOIN LATERAL (
    SELECT r.*, t.name AS task_name FROM hydra_runs r
    JOIN hydra_tasks t ON t.id = r.task_id
    WHERE r.state = s.state AND t.name LIKE %(task_prefix)s
      AND r.occurrence >= coalesce(%(occurrence_from)s::timestamptz, '-infinity')
      AND r.occurrence < coalesce(%(occurrence_to)s::timestamptz, 'infinity')
      AND r.occurrence <= coalesce(%(after_occurrence)s::timestamptz, 'infinity')
      AND (r.occurrence, r.id) < (coalesce(%(after_occurrence)s::timestamptz, 'infinity'),
                                  coalesce(%(after_id)s::uuid,
                                           'ffffffff-ffff-ffff-ffff-ffffffffffff'))
    ORDER BY r.occurrence DESC, r.id DESC
    LIMIT %(limit)s
) p
ORDER BY p.occurrence DESC, p.id DESC
LIMIT %(limit)s;

-- name: lock_runs
-- Runs locked (in id order) for the rest of the transaction, each with whether a live task runs after its task.
SELECT r.*, t.name AS task_name, EXISTS (
    SELECT 1 FROM hydra_triggers g JOIN hydra_tasks d ON d.id = g.task_id
    WHERE g.kind = 'after' AND g.spec -> 'after' ? t.name AND d.deleted_at IS NULL
) AS has_dependents
FROM hydra_runs r
JOIN hydra_tasks t ON t.id = r.task_id
WHERE r.id = ANY(%(ids)s::uuid[])
ORDER BY r.id
FOR UPDATE OF r;

-- name: requeue_run_for_retry
-- A finished run gets one more attempt (explicit retry request).
UPDATE hydra_runs
SET state = 'QUEUED', reason = '', not_before = now(), finished_at = NULL,
    max_attempts = greatest(max_attempts, attempts_used + 1),
    cancel_requested = false, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = %(id)s;

-- name: cancel_run
-- End a run CANCELLED and drop its lease; the agent is told by revocation.
UPDATE hydra_runs
SET state = 'CANCELLED', reason = %(reason)s, finished_at = now(), cancel_requested = true,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = %(id)s;

-- name: cancel_running_attempt
-- The running attempt of a cancelled run ends CANCELLED.
UPDATE hydra_attempts
SET state = 'CANCELLED', finished_at = now(), message = %(reason)s
WHERE run_id = %(run_id)s AND state = 'RUNNING';

-- name: notify_run_changed
-- Tell watchers runs changed: payload "<run id>[,<run id>...]" (under 8000 bytes).
SELECT pg_notify('hydra_run_changed', %(run_id)s::text);

-- --------------------------------------------------------------- leases --

-- name: claim_runs
-- Lease due runs this agent may take, honouring each task's max_active_runs:
-- per task, runs already in flight (leased, running, or queued for a retry or
-- a re-check) come first, then due queued runs in occurrence order; only the
-- first max_active_runs of them may be active. Row locks arbitrate between
-- coordinators, so no run is leased twice and no task exceeds its limit. Runs
-- due within the "ahead" interval count as due: the agent waits for not_before.
-- Every task with due work is considered, one index probe each, and a task's
-- new work is read only as far as the claim can use it: the cost follows the
-- runs leased and the runs in flight, not the size of a backlog.
WITH RECURSIVE due_tasks AS (
    (SELECT r.task_id FROM hydra_runs r
     WHERE r.state = 'QUEUED' AND r.not_before <= now() + %(ahead)s
     ORDER BY r.task_id LIMIT 1)
    UNION ALL
    SELECT (SELECT r.task_id FROM hydra_runs r
            WHERE r.state = 'QUEUED' AND r.not_before <= now() + %(ahead)s
              AND r.task_id > d.task_id
            ORDER BY r.task_id LIMIT 1)
    FROM due_tasks d WHERE d.task_id IS NOT NULL
), tasks AS (
    SELECT t.id AS task_id,
           coalesce((v.spec -> 'concurrency' ->> 'max_active_runs')::int, 1) AS max_active
    FROM due_tasks d
    JOIN hydra_tasks t ON t.id = d.task_id
    JOIN hydra_task_versions v ON v.task_id = t.id AND v.version = t.version
), in_flight AS (
    SELECT r.id, r.task_id, r.state, r.not_before, r.selector, r.occurrence,
           row_number() OVER (PARTITION BY r.task_id ORDER BY r.occurrence) AS position
    FROM hydra_runs r
    JOIN tasks k ON k.task_id = r.task_id
    WHERE r.state IN ('LEASED', 'RUNNING')
       OR (r.state = 'QUEUED' AND (r.attempts_used > 0 OR r.precondition_checks > 0))
), allowed AS (
    -- More than asked for: runs another coordinator holds are skipped below.
    -- A retry or a re-check goes before new work: it already holds a slot of its task.
    SELECT id, in_flight, not_before, occurrence FROM (
        SELECT f.id, true AS in_flight, f.not_before, f.occurrence
        FROM in_flight f
        JOIN tasks k ON k.task_id = f.task_id
        WHERE f.position <= k.max_active AND f.state = 'QUEUED'
          AND f.not_before <= now() + %(ahead)s AND f.selector <@ %(labels)s::jsonb
        UNION ALL
        SELECT n.id, false, n.not_before, n.occurrence
        FROM tasks k
        CROSS JOIN LATERAL (
            SELECT r.id, r.not_before, r.occurrence, r.selector FROM hydra_runs r
            WHERE r.task_id = k.task_id AND r.state = 'QUEUED'
              AND r.attempts_used = 0 AND r.precondition_checks = 0
              AND r.not_before <= now() + %(ahead)s
            ORDER BY r.occurrence
            LIMIT least(%(limit)s * 4, greatest(0, k.max_active - (
                SELECT count(*) FROM in_flight f WHERE f.task_id = k.task_id)))
        ) n
        WHERE n.selector <@ %(labels)s::jsonb
    ) c
    ORDER BY in_flight DESC, not_before, occurrence
    LIMIT %(limit)s * 4
), locked AS (
    SELECT r.id FROM hydra_runs r
    JOIN allowed a ON a.id = r.id
    WHERE r.state = 'QUEUED'
    ORDER BY a.in_flight DESC, a.not_before, a.occurrence
    LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE hydra_runs r
SET state = 'LEASED', lease_owner = %(agent_id)s,
    lease_token = nextval('hydra_lease_token_seq'),
    lease_expires_at = now() + %(ttl)s, updated_at = now()
FROM locked c, hydra_tasks t, hydra_task_versions v
WHERE r.id = c.id AND t.id = r.task_id AND v.task_id = r.task_id AND v.version = r.task_version
RETURNING r.id, r.lease_token, r.occurrence, r.not_before, r.params, r.attempts_used,
          r.max_attempts,
          r.timezone, r.task_id, r.task_version, t.name AS task_name, v.spec AS task_spec;

-- name: upstream_outputs
-- Outputs of the successful runs of some tasks for one occurrence.
SELECT t.name, r.outputs FROM hydra_runs r
JOIN hydra_tasks t ON t.id = r.task_id
WHERE t.name = ANY(%(names)s) AND t.deleted_at IS NULL
  AND r.occurrence = %(occurrence)s AND r.state = 'SUCCEEDED';

-- name: queued_runs_due
-- Whether any queued run is due (within the "ahead" interval), whoever may take it.
SELECT EXISTS (
    SELECT 1 FROM hydra_runs WHERE state = 'QUEUED' AND not_before <= now() + %(ahead)s
) AS due;

-- name: next_queued_due
-- When the next queued run becomes due (for the dispatcher's sleep); runs already
-- claimable but held back by max_active_runs wait for a notification instead.
SELECT min(not_before) AS not_before FROM hydra_runs
WHERE state = 'QUEUED' AND not_before > now() + %(ahead)s;

-- name: release_lease
-- A lease given back before any attempt started: the run is queued again.
UPDATE hydra_runs
SET state = 'QUEUED', lease_owner = NULL, lease_expires_at = NULL,
    not_before = now() + %(delay)s, reason = %(reason)s, updated_at = now()
WHERE id = %(run_id)s AND lease_token = %(lease_token)s AND state = 'LEASED'
RETURNING id;

-- name: renew_leases
-- Extend each listed lease that is current and owned by the agent that listed it.
UPDATE hydra_runs r SET lease_expires_at = now() + %(ttl)s
FROM unnest(%(run_ids)s::uuid[], %(lease_tokens)s::bigint[], %(agent_ids)s::text[])
    AS u(run_id, lease_token, agent_id)
WHERE r.id = u.run_id AND r.lease_token = u.lease_token
  AND r.lease_owner = u.agent_id AND r.state IN ('LEASED', 'RUNNING')
RETURNING r.id, r.lease_token, r.lease_owner;

-- name: leases_of_agent
-- Every current lease an agent holds.
SELECT id, lease_token FROM hydra_runs
WHERE lease_owner = %(agent_id)s AND state IN ('LEASED', 'RUNNING');

-- name: expire_leases
-- Make leases expire now (the agent said it no longer holds them).
UPDATE hydra_runs r SET lease_expires_at = now()
FROM unnest(%(run_ids)s::uuid[], %(lease_tokens)s::bigint[]) AS u(run_id, lease_token)
WHERE r.id = u.run_id AND r.lease_token = u.lease_token AND r.state IN ('LEASED', 'RUNNING');

-- name: start_attempts
-- LEASED -> RUNNING under the current tokens, recording the attempts; returns the started leases, each attempt's number, task and schedule lag (for metrics), current = true.
-- A start under the token of a run cancelled before that start was recorded (its process
-- did start; the agent is told to kill it) is recorded too, as an attempt ended CANCELLED,
-- once per token, and returned with current = false: the record keeps every attempt.
WITH u AS (
    SELECT * FROM unnest(%(run_ids)s::uuid[], %(lease_tokens)s::bigint[], %(argvs)s::jsonb[],
                         %(started_ats)s::timestamptz[]) AS u(run_id, lease_token, argv, started_at)
), started AS (
    UPDATE hydra_runs r
    SET state = 'RUNNING', attempts_used = r.attempts_used + 1,
        started_at = coalesce(r.started_at, u.started_at), updated_at = now()
    FROM u
    WHERE r.id = u.run_id AND r.lease_token = u.lease_token AND r.state = 'LEASED'
    RETURNING r.id, r.attempts_used, u.lease_token, u.argv, u.started_at, r.task_id, r.occurrence
), inserted AS (
    INSERT INTO hydra_attempts (run_id, number, agent_id, lease_token, argv, started_at)
    SELECT id, attempts_used, %(agent_id)s, lease_token,
           ARRAY(SELECT jsonb_array_elements_text(argv)), started_at
    FROM started
    RETURNING run_id, lease_token, number
), cancelled AS (
    UPDATE hydra_runs r
    SET attempts_used = r.attempts_used + 1, updated_at = now()
    FROM u
    WHERE r.id = u.run_id AND r.lease_token = u.lease_token AND r.state = 'CANCELLED'
      AND r.cancel_requested
      AND NOT EXISTS (SELECT 1 FROM hydra_attempts a
                      WHERE a.run_id = r.id AND a.lease_token = u.lease_token)
    RETURNING r.id, r.attempts_used, u.lease_token, u.argv, u.started_at, r.reason
), cancelled_inserted AS (
    INSERT INTO hydra_attempts (run_id, number, agent_id, lease_token, argv, started_at, state,
                                finished_at, message)
    SELECT id, attempts_used, %(agent_id)s, lease_token,
           ARRAY(SELECT jsonb_array_elements_text(argv)), least(started_at, now()), 'CANCELLED',
           now(), 'started after the run was cancelled (' || coalesce(reason, 'cancelled') || ')'
    FROM cancelled
    RETURNING run_id, lease_token, number
)
SELECT i.run_id, i.lease_token, i.number, t.name AS task_name,
       extract(epoch FROM s.started_at - s.occurrence)::float8 AS lag_seconds, true AS current
FROM inserted i
JOIN started s ON s.id = i.run_id
JOIN hydra_tasks t ON t.id = s.task_id
UNION ALL
SELECT c.run_id, c.lease_token, c.number, NULL, NULL, false FROM cancelled_inserted c;

-- name: finish_attempts
-- End attempts of current RUNNING leases, many in one statement: each one's output tails, the attempt, the run (SUCCEEDED, or QUEUED after backoff while attempts remain, else FAILED); a row per run with its new state.
-- `reports` is a JSON array of each report's position, lease, how the attempt
-- ended, the run's outputs (a success; absent: none), why it failed without the
-- attempt's number ("failed with exit code 1"; the reason says "attempt <number> ...")
-- and the factor of its backoff, and notify_as, the run id hydra_output is told about
-- when it has tails. `tails`, in report order, the tails' lease, stream, total bytes
-- and last bytes (base64): after the head stored of each stream, a marker for the bytes
-- dropped, if any, then what the head lacks of the true tail (none if it fit).
-- JSON, not arrays: two parameters to send, and a row estimate that does not depend
-- on them, so that the prepared statement's generic plan is used, not planned anew.
WITH u AS (
    SELECT * FROM jsonb_to_recordset(%(reports)s::jsonb)
        AS u(run_id uuid, lease_token bigint, succeeded boolean, state hydra_attempt_state,
             exit_code int, signal int, finished_at timestamptz, message text, argv jsonb,
             outputs jsonb, failure text, backoff_factor float8, notify_as text, position bigint)
), tail AS (
    SELECT u.position, a.run_id, a.number, t.stream, t.total, decode(t.data, 'base64') AS data,
           coalesce((
        SELECT sum(length(o.data)) FROM hydra_attempt_output o
        WHERE o.run_id = a.run_id AND o.attempt = a.number AND o.stream = t.stream
    ), 0) AS head
    FROM jsonb_to_recordset(%(tails)s::jsonb) AS t(lease_token bigint, stream smallint,
                                                    total bigint, data text)
    JOIN u ON u.lease_token = t.lease_token
    JOIN hydra_attempts a ON a.lease_token = t.lease_token
), pieces AS (
    SELECT position, run_id, number, stream, 1 AS part, total - length(data) - head AS dropped,
           ''::bytea AS data
    FROM tail WHERE total - length(data) > head
    UNION ALL
    SELECT position, run_id, number, stream, 2, 0,
           substring(data FROM (greatest(head - (total - length(data)), 0) + 1)::int)
    FROM tail WHERE head < total
), stored AS (
    INSERT INTO hydra_attempt_output (run_id, attempt, stream, data, dropped_bytes)
    SELECT run_id, number, stream, data, dropped FROM pieces ORDER BY position, stream, part
    RETURNING run_id, attempt, length(data) AS bytes
), ended_attempts AS (
    UPDATE hydra_attempts a
    SET state = u.state, exit_code = u.exit_code, signal = u.signal,
        finished_at = u.finished_at, message = u.message,
        argv = CASE WHEN cardinality(a.argv) = 0
                    THEN ARRAY(SELECT jsonb_array_elements_text(u.argv)) ELSE a.argv END,
        output_bytes = a.output_bytes + coalesce((
            SELECT sum(s.bytes) FROM stored s WHERE s.run_id = a.run_id AND s.attempt = a.number
        ), 0)
    FROM u
    WHERE a.run_id = u.run_id AND a.lease_token = u.lease_token AND a.state = 'RUNNING'
    RETURNING a.run_id, a.number
), ended AS (
    UPDATE hydra_runs r
    SET state = CASE WHEN u.succeeded THEN 'SUCCEEDED'
                     WHEN r.attempts_used < r.max_attempts THEN 'QUEUED'
                     ELSE 'FAILED' END::hydra_run_state,
        outputs = CASE WHEN u.succeeded THEN u.outputs ELSE r.outputs END,
        not_before = CASE WHEN NOT u.succeeded AND r.attempts_used < r.max_attempts
            THEN now() + make_interval(secs => least(
                r.backoff_seconds * power(r.backoff_multiplier, greatest(r.attempts_used - 1, 0)),
                r.max_backoff_seconds) * u.backoff_factor)
            ELSE r.not_before END,
        finished_at = CASE WHEN u.succeeded OR r.attempts_used >= r.max_attempts
                           THEN now() END,
        reason = CASE WHEN u.succeeded THEN ''
                      ELSE 'attempt ' || e.number || ' ' || u.failure END,
        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    FROM u LEFT JOIN ended_attempts e ON e.run_id = u.run_id
    WHERE r.id = u.run_id AND r.lease_token = u.lease_token AND r.state = 'RUNNING'
    RETURNING r.id, r.state
)
SELECT u.run_id, e.state::text AS state,
       CASE WHEN u.notify_as IS NOT NULL THEN pg_notify('hydra_output', u.notify_as) END
           IS NOT NULL AS output_notified
FROM u LEFT JOIN ended e ON e.id = u.run_id
ORDER BY u.position;

-- name: fail_or_requeue_run
-- After a failed attempt: QUEUED after backoff if attempts remain, else FAILED.
UPDATE hydra_runs
SET state = CASE WHEN attempts_used < max_attempts THEN 'QUEUED' ELSE 'FAILED' END
                ::hydra_run_state,
    not_before = CASE WHEN attempts_used < max_attempts
        THEN now() + make_interval(secs => least(
            backoff_seconds * power(backoff_multiplier, greatest(attempts_used - 1, 0)),
            max_backoff_seconds) * %(backoff_factor)s)
        ELSE not_before END,
    finished_at = CASE WHEN attempts_used < max_attempts THEN NULL ELSE now() END,
    reason = %(reason)s,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = %(run_id)s AND lease_token = %(lease_token)s AND state IN ('LEASED', 'RUNNING')
RETURNING state;

-- name: claim_expired_leases
-- Runs whose lease expired, locked, each with whether a live task runs after its task; the reaper decides their fate.
SELECT r.id, r.state, r.lease_token, r.lease_owner, r.attempts_used, r.max_attempts,
       r.cancel_requested, r.occurrence, r.timezone, t.name AS task_name, EXISTS (
    SELECT 1 FROM hydra_triggers g JOIN hydra_tasks d ON d.id = g.task_id
    WHERE g.kind = 'after' AND g.spec -> 'after' ? t.name AND d.deleted_at IS NULL
) AS has_dependents
FROM hydra_runs r
JOIN hydra_tasks t ON t.id = r.task_id
WHERE r.state IN ('LEASED', 'RUNNING') AND r.lease_expires_at < now()
  -- After a database restart, agents need a lease TTL to renew through their
  -- coordinators before anything counts as expired.
  AND pg_postmaster_start_time() < now() - %(restart_grace)s
ORDER BY r.lease_expires_at
LIMIT %(limit)s
FOR UPDATE OF r SKIP LOCKED;

-- name: lose_attempt
-- The running attempt of an expired lease is LOST.
UPDATE hydra_attempts
SET state = 'LOST', finished_at = now(), message = %(message)s
WHERE run_id = %(run_id)s AND lease_token = %(lease_token)s AND state = 'RUNNING';

-- name: next_lease_expiry
-- The earliest lease expiry (for the reaper's sleep).
SELECT min(lease_expires_at) AS lease_expires_at FROM hydra_runs
WHERE state IN ('LEASED', 'RUNNING');

-- --------------------------------------------------------------- output --

-- name: append_output
-- Store what fits of a chunk of a running attempt's output in the head of `limit` bytes.
WITH attempt AS (
    SELECT run_id, number, least(length(%(data)s::bytea), %(limit)s - output_bytes)::int AS kept
    FROM hydra_attempts
    WHERE run_id = %(run_id)s AND lease_token = %(lease_token)s AND state = 'RUNNING'
      AND output_bytes < %(limit)s
    FOR UPDATE
), counted AS (
    UPDATE hydra_attempts a SET output_bytes = a.output_bytes + attempt.kept
    FROM attempt WHERE a.run_id = attempt.run_id AND a.number = attempt.number
), chunk AS (
    INSERT INTO hydra_attempt_output (run_id, attempt, stream, data)
    SELECT run_id, number, %(stream)s, substring(%(data)s::bytea FROM 1 FOR kept) FROM attempt
)
SELECT number FROM attempt;

-- name: notify_output
-- Tell log followers a run has new output: payload "<run id>".
SELECT pg_notify('hydra_output', %(run_id)s::text);

-- name: read_output
-- Output chunks of a run after a sequence number, oldest first.
SELECT seq, attempt, stream, data, dropped_bytes FROM hydra_attempt_output
WHERE run_id = %(run_id)s AND seq > %(after_seq)s
  AND (%(attempt)s = 0 OR attempt = %(attempt)s)
ORDER BY seq
LIMIT 1000;

-- --------------------------------------------------------------- agents --

-- name: upsert_agent
-- Record an agent as connected to this coordinator; no row if another instance of it is live.
-- Live: not disconnected and heard from within the TTL. The row stays locked to the end.
INSERT INTO hydra_agents (id, hostname, labels, capacity, version, state, coordinator_id,
                          connected_at, last_seen_at, instance_id)
VALUES (%(id)s, %(hostname)s, %(labels)s, %(capacity)s, %(version)s, %(state)s,
        %(coordinator_id)s, now(), now(), %(instance_id)s)
ON CONFLICT (id) DO UPDATE
SET hostname = EXCLUDED.hostname, labels = EXCLUDED.labels, capacity = EXCLUDED.capacity,
    version = EXCLUDED.version, state = EXCLUDED.state,
    coordinator_id = EXCLUDED.coordinator_id, connected_at = now(), last_seen_at = now(),
    instance_id = EXCLUDED.instance_id
WHERE hydra_agents.instance_id = EXCLUDED.instance_id
   OR hydra_agents.state = 'disconnected'
   OR hydra_agents.last_seen_at IS NULL
   OR hydra_agents.last_seen_at <= now() - %(ttl)s::interval
RETURNING id;

-- name: agent_holder
-- The coordinator an agent's session is recorded on, and its address if it is alive.
SELECT a.coordinator_id, c.address FROM hydra_agents a
LEFT JOIN hydra_coordinators c ON c.id = a.coordinator_id
WHERE a.id = %(id)s;

-- name: set_lock_timeout
-- For the rest of the transaction, give up on a lock not granted within the timeout.
SELECT set_config('lock_timeout', %(timeout)s, true);

-- name: touch_agents
-- Agents (one row each) were heard from; those that say so are now draining.
UPDATE hydra_agents a SET last_seen_at = now(),
    state = CASE WHEN u.draining THEN 'draining'
                 WHEN a.state = 'disconnected' THEN 'connected' ELSE a.state END
FROM unnest(%(ids)s::text[], %(draining)s::boolean[]) AS u(id, draining)
WHERE a.id = u.id AND a.coordinator_id = %(coordinator_id)s;

-- name: disconnect_agent
-- The agent's stream to this coordinator ended.
UPDATE hydra_agents SET state = 'disconnected', last_seen_at = now()
WHERE id = %(id)s AND coordinator_id = %(coordinator_id)s;

-- name: set_agent_draining
-- Mark an agent draining; returns it.
UPDATE hydra_agents SET state = 'draining' WHERE id = %(id)s AND state <> 'disconnected'
RETURNING id, coordinator_id;

-- name: list_agents
-- Known agents with the number of leases each holds.
SELECT a.*, (SELECT count(*) FROM hydra_runs r
             WHERE r.lease_owner = a.id AND r.state IN ('LEASED', 'RUNNING')) AS active_runs
FROM hydra_agents a
WHERE %(include_disconnected)s OR a.state <> 'disconnected'
ORDER BY a.id;

-- name: get_agent
-- One agent with the number of leases it holds.
SELECT a.*, (SELECT count(*) FROM hydra_runs r
             WHERE r.lease_owner = a.id AND r.state IN ('LEASED', 'RUNNING')) AS active_runs
FROM hydra_agents a WHERE a.id = %(id)s;

-- name: notify_agent_command
-- Tell the coordinator holding an agent's stream to act: payload "<verb>:<agent id>".
SELECT pg_notify('hydra_agent_command', %(payload)s::text);

-- --------------------------------------------------------- coordinators --

-- name: register_coordinator
-- Record this coordinator as alive, and whether it serves TLS and without authentication.
INSERT INTO hydra_coordinators (id, address, version, insecure, tls)
VALUES (%(id)s, %(address)s, %(version)s, %(insecure)s, %(tls)s)
ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now(), address = EXCLUDED.address,
    insecure = EXCLUDED.insecure, tls = EXCLUDED.tls;

-- name: unregister_coordinator
-- This coordinator stops.
DELETE FROM hydra_coordinators WHERE id = %(id)s;

-- name: disconnect_agents_of_coordinator
-- Agents of a stopping coordinator are disconnected from it.
UPDATE hydra_agents SET state = 'disconnected' WHERE coordinator_id = %(id)s;

-- name: notify_triggers
-- Wake every coordinator's trigger loop: a trigger changed (delivered at commit).
SELECT pg_notify('hydra_triggers', '');

-- ------------------------------------------------------------ scheduling --

-- name: active_runs_of_task
-- Runs of a task that are queued or active, except one, oldest first (overlap policy).
SELECT id, state, lease_owner, lease_token, occurrence FROM hydra_runs
WHERE task_id = %(task_id)s AND id <> %(except_id)s
  AND state IN ('QUEUED', 'LEASED', 'RUNNING')
ORDER BY occurrence
FOR UPDATE;

-- name: skip_run
-- End a run that never ran as SKIPPED, with the reason.
UPDATE hydra_runs
SET state = 'SKIPPED', reason = %(reason)s, finished_at = now(), lease_owner = NULL,
    lease_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND state IN ('QUEUED', 'LEASED');

-- name: lock_dependents
-- Live tasks with an `after` trigger naming any of some tasks, locked in id order (fan-in is serialised per downstream task), each with the ones of those tasks it names.
SELECT t.id, t.name, t.version, t.paused, v.spec, ARRAY(
    SELECT n.name FROM unnest(%(names)s::text[]) AS n(name)
    WHERE EXISTS (SELECT 1 FROM hydra_triggers g
                  WHERE g.task_id = t.id AND g.kind = 'after' AND g.spec -> 'after' ? n.name)
) AS upstreams
FROM hydra_tasks t
JOIN hydra_task_versions v ON v.task_id = t.id AND v.version = t.version
WHERE t.deleted_at IS NULL AND EXISTS (
    SELECT 1 FROM hydra_triggers g
    WHERE g.task_id = t.id AND g.kind = 'after' AND g.spec -> 'after' ?| %(names)s::text[])
ORDER BY t.id
FOR NO KEY UPDATE OF t;

-- name: run_states_for_occurrence
-- The run state of each named live task for one occurrence (absent when it has none).
SELECT t.name, r.state FROM hydra_tasks t
JOIN hydra_runs r ON r.task_id = t.id AND r.occurrence = %(occurrence)s
WHERE t.name = ANY(%(names)s) AND t.deleted_at IS NULL;

-- name: run_of_task_at
-- The run of a task for an occurrence, locked.
SELECT id, state, cause FROM hydra_runs
WHERE task_id = %(task_id)s AND occurrence = %(occurrence)s
FOR UPDATE;

-- name: reopen_skipped_run
-- A run skipped because an upstream failed is queued again (the upstream succeeded on retry).
UPDATE hydra_runs
SET state = 'QUEUED', reason = '', finished_at = NULL, not_before = now(), updated_at = now()
WHERE id = %(id)s AND state = 'SKIPPED';

-- name: after_edges
-- Every dependency edge (downstream name, upstream name) among live tasks.
SELECT t.name AS downstream, jsonb_array_elements_text(g.spec -> 'after') AS upstream
FROM hydra_triggers g JOIN hydra_tasks t ON t.id = g.task_id
WHERE g.kind = 'after' AND t.deleted_at IS NULL;

-- name: lock_dependency_graph
-- Serialise applies that change dependencies, so two cannot form a cycle together.
SELECT pg_advisory_xact_lock(7306916250214745467);

-- name: record_precondition_checks
-- Record an agent's verdicts on a run's preconditions under the current lease.
UPDATE hydra_runs
SET precondition_checks = precondition_checks + 1, precondition_verdicts = %(verdicts)s,
    first_checked_at = coalesce(first_checked_at, %(checked_at)s), updated_at = now()
WHERE id = %(run_id)s AND lease_token = %(lease_token)s AND state = 'LEASED'
RETURNING first_checked_at;

-- name: run_spec
-- The spec of the version a run is pinned to.
SELECT v.spec, r.task_id, r.task_version, t.name AS task_name, r.occurrence, r.timezone
FROM hydra_runs r
JOIN hydra_tasks t ON t.id = r.task_id
JOIN hydra_task_versions v ON v.task_id = r.task_id AND v.version = r.task_version
WHERE r.id = %(run_id)s;

-- name: end_run_unstarted
-- A leased run whose preconditions timed out ends FAILED or SKIPPED.
UPDATE hydra_runs
SET state = %(state)s, reason = %(reason)s, finished_at = now(), lease_owner = NULL,
    lease_expires_at = NULL, updated_at = now()
WHERE id = %(run_id)s AND lease_token = %(lease_token)s AND state = 'LEASED';

-- name: time_triggers_of_task
-- A live task's time triggers, locked (to reschedule them on resume).
SELECT g.id, g.task_id, g.position, g.next_fire_at, g.paused_at FROM hydra_triggers g
JOIN hydra_tasks t ON t.id = g.task_id
WHERE t.name = %(name)s AND t.deleted_at IS NULL AND g.kind <> 'after'
FOR UPDATE OF g;

-- name: set_trigger_next_fire
-- Move one trigger's next occurrence.
UPDATE hydra_triggers SET next_fire_at = %(next_fire_at)s WHERE id = %(id)s;

-- name: ping
-- Nothing: the answer says the database is reachable.
SELECT 1;

-- name: list_coordinators
-- Coordinators seen alive within a window, with the agents each holds.
SELECT c.*, (SELECT count(*) FROM hydra_agents a
             WHERE a.coordinator_id = c.id AND a.state <> 'disconnected') AS agents_connected
FROM hydra_coordinators c
WHERE c.last_heartbeat_at > now() - %(window)s
ORDER BY c.id;

-- name: forget_dead_coordinators
-- Coordinators silent for longer than a window are forgotten, and their agents
-- recorded as disconnected (nothing needs manual repair after a crash).
WITH dead AS (
    DELETE FROM hydra_coordinators WHERE last_heartbeat_at < now() - %(window)s
    RETURNING id
)
UPDATE hydra_agents SET state = 'disconnected'
WHERE state <> 'disconnected'
  AND (coordinator_id IN (SELECT id FROM dead)
       OR coordinator_id NOT IN (SELECT id FROM hydra_coordinators));

-- ---------------------------------------------------------------- audit --

-- name: insert_audit_entry
-- Record one entry of the audit log (in the transaction of the change it records).
INSERT INTO hydra_audit (who, role, action, task, run_id, peer, outcome, detail)
VALUES (%(who)s, %(role)s, %(action)s, %(task)s, %(run_id)s, %(peer)s, %(outcome)s, %(detail)s);

-- name: insert_audit_entries
-- Record many entries of the audit log in one statement (the refused calls of a round).
INSERT INTO hydra_audit (who, role, action, task, run_id, peer, outcome, detail)
SELECT * FROM unnest(%(who)s::text[], %(role)s::text[], %(action)s::text[], %(task)s::text[],
                     %(run_id)s::text[], %(peer)s::text[], %(outcome)s::text[],
                     %(detail)s::text[]);

-- name: list_audit_entries
-- A page of the audit log, newest first, keyset-paged by (at, id); '' and NULL filter nothing.
SELECT * FROM hydra_audit
WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(who)s = '' OR who = %(who)s)
  AND (%(task)s = '' OR task = %(task)s)
  AND (%(after_at)s::timestamptz IS NULL OR (at, id) < (%(after_at)s, %(after_id)s::bigint))
ORDER BY at DESC, id DESC
LIMIT %(limit)s;

-- ---------------------------------------------------------- credentials --

-- name: insert_credential
-- Store a new credential (its secret's hash only); nothing when the name is taken.
INSERT INTO hydra_credentials
    (name, role, token_hash, scope, agent_id, labels, max_capacity, created_by, expires_at)
VALUES (%(name)s, %(role)s, %(token_hash)s, %(scope)s, %(agent_id)s, %(labels)s,
        %(max_capacity)s, %(created_by)s, %(expires_at)s)
ON CONFLICT (name) DO NOTHING
RETURNING name, role, token_hash, scope, agent_id, labels, max_capacity, created_by,
          created_at, expires_at, revoked_at, last_used_at;

-- name: list_credentials
-- A page of credentials ordered by name, after a name, revoked ones if asked.
SELECT name, role, token_hash, scope, agent_id, labels, max_capacity, created_by,
       created_at, expires_at, revoked_at, last_used_at
FROM hydra_credentials
WHERE name > %(after)s AND (%(include_revoked)s OR revoked_at IS NULL)
ORDER BY name
LIMIT %(limit)s;

-- name: revoke_credential
-- Revoke a credential (the first revocation's time stays); the credential after it.
UPDATE hydra_credentials SET revoked_at = coalesce(revoked_at, now())
WHERE name = %(name)s
RETURNING name, role, token_hash, scope, agent_id, labels, max_capacity, created_by,
          created_at, expires_at, revoked_at, last_used_at;

-- name: notify_credential_revoked
-- Tell every coordinator to forget what it cached of a credential (payload: its name).
SELECT pg_notify('hydra_credentials', %(name)s);

-- name: live_agent_credential
-- The newest live (not revoked, not expired) agent credential naming this agent id.
SELECT name, role, token_hash, scope, agent_id, labels, max_capacity, created_by,
       created_at, expires_at, revoked_at, last_used_at
FROM hydra_credentials
WHERE agent_id = %(agent_id)s AND role = 'agent' AND revoked_at IS NULL
  AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at DESC
LIMIT 1;

-- name: credential_by_token_hash
-- The credential whose secret has this SHA-256, revoked or expired ones included.
SELECT name, role, token_hash, scope, agent_id, labels, max_capacity, created_by,
       created_at, expires_at, revoked_at, last_used_at
FROM hydra_credentials
WHERE token_hash = %(token_hash)s;

-- name: touch_credentials
-- Record when credentials were last used (never moving a time back).
UPDATE hydra_credentials c SET last_used_at = greatest(c.last_used_at, u.used_at)
FROM unnest(%(names)s::text[], %(used_at)s::timestamptz[]) AS u (name, used_at)
WHERE c.name = u.name;

-- --------------------------------------------------------------- metrics --

-- name: metrics_runs_by_state
-- Runs queued, leased and running, by state (the cluster's queue depth).
SELECT state::text AS state, count(*) AS runs FROM hydra_runs
WHERE state IN ('QUEUED', 'LEASED', 'RUNNING')
GROUP BY state;

-- name: metrics_task_last_finished
-- Each live task's latest success and failure among its latest runs (a bounded walk of hydra_runs_by_task).
SELECT t.name,
       max(r.finished_at) FILTER (WHERE r.state = 'SUCCEEDED') AS last_success,
       max(r.finished_at) FILTER (WHERE r.state = 'FAILED') AS last_failure
FROM hydra_tasks t
LEFT JOIN LATERAL (
    SELECT state, finished_at FROM hydra_runs
    WHERE task_id = t.id
    ORDER BY occurrence DESC
    LIMIT %(window)s
) r ON true
WHERE t.deleted_at IS NULL
GROUP BY t.name;

-- name: metrics_agents
-- Agents connected or draining, with their slots and the leases they hold.
SELECT a.state, count(*) AS agents, coalesce(sum(a.capacity), 0) AS capacity,
       coalesce(sum((SELECT count(*) FROM hydra_runs r
                      WHERE r.lease_owner = a.id AND r.state IN ('LEASED', 'RUNNING'))), 0)
           AS used
FROM hydra_agents a
WHERE a.state IN ('connected', 'draining')
GROUP BY a.state;

-- ---------------------------------------------------------- occurrences --

-- name: extend_skipped_occurrences
-- Grow a trigger's range of dropped occurrences that ends right before the new ones (same reason).
UPDATE hydra_skipped_occurrences
SET last_occurrence = %(last)s,
    occurrence_count = occurrence_count + %(count)s::bigint,
    recorded_at = now()
WHERE id = (
    SELECT id FROM hydra_skipped_occurrences
    WHERE task_id = %(task_id)s AND trigger_position = %(position)s AND reason = %(reason)s
      AND last_occurrence = %(previous)s
    ORDER BY first_occurrence DESC LIMIT 1)
RETURNING id;

-- name: insert_skipped_occurrences
-- Record a range of dropped occurrences; the same drop recorded twice is one row.
INSERT INTO hydra_skipped_occurrences
    (task_id, trigger_position, reason, first_occurrence, last_occurrence, occurrence_count, detail)
VALUES (%(task_id)s, %(position)s, %(reason)s, %(first)s, %(last)s, %(count)s, %(detail)s)
ON CONFLICT (task_id, trigger_position, first_occurrence) DO NOTHING
RETURNING id;

-- name: skipped_ranges_covering
-- The recorded ranges of dropped occurrences of a task that hold an instant.
SELECT trigger_position, reason, first_occurrence, last_occurrence, occurrence_count,
       detail, recorded_at
FROM hydra_skipped_occurrences
WHERE task_id = %(task_id)s AND first_occurrence <= %(occurrence)s
  AND last_occurrence >= %(occurrence)s
ORDER BY first_occurrence DESC
LIMIT 10;

-- name: run_id_at
-- The id of a task's run for an occurrence, if it has one (no lock: for reading).
SELECT id FROM hydra_runs WHERE task_id = %(task_id)s AND occurrence = %(occurrence)s;

-- name: runs_holding_slots
-- The runs that take a task's slots before a queued run (claim_runs' order), oldest first, and how many.
SELECT id, state, occurrence, count(*) OVER () AS ahead FROM hydra_runs
WHERE task_id = %(task_id)s AND id <> %(except_id)s
  AND (state IN ('LEASED', 'RUNNING')
       OR (state = 'QUEUED' AND (attempts_used > 0 OR precondition_checks > 0
                                 OR occurrence < %(occurrence)s)))
ORDER BY occurrence
LIMIT %(limit)s;

-- name: upstream_runs_at
-- The runs of named live tasks for one occurrence: id, state and reason.
SELECT t.name, r.id, r.state, r.reason FROM hydra_tasks t
JOIN hydra_runs r ON r.task_id = t.id AND r.occurrence = %(occurrence)s
WHERE t.name = ANY(%(names)s) AND t.deleted_at IS NULL;

-- name: trigger_schedules_of_task
-- A task's triggers with their next fire time and pause, for explaining an occurrence.
SELECT position, kind, next_fire_at, last_fired_at, paused_at, resumed_at, active
FROM hydra_triggers WHERE task_id = %(task_id)s ORDER BY position;

-- name: runs_active_at
-- A task's runs for earlier occurrences that were queued or active at an instant (newest first).
SELECT id, state, occurrence FROM (
    SELECT id, state, occurrence, created_at, finished_at FROM hydra_runs
    WHERE task_id = %(task_id)s AND occurrence < %(occurrence)s
    ORDER BY occurrence DESC
    LIMIT 100
) recent
WHERE created_at <= %(at)s AND (finished_at IS NULL OR finished_at >= %(at)s)
ORDER BY occurrence DESC
LIMIT %(limit)s;

-- name: time_triggers_behind
-- A task's active time triggers whose next fire time has passed (locked: a new version replaces them).
SELECT position, kind, spec, next_fire_at FROM hydra_triggers
WHERE task_id = %(task_id)s AND kind <> 'after' AND next_fire_at <= %(now)s
FOR UPDATE;

-- -------------------------------------------------------- notifications --

-- name: write_notify_defaults
-- Store the cluster's default webhooks (the last coordinator started wins).
UPDATE hydra_notify_defaults
SET webhooks = %(webhooks)s, written_by = %(written_by)s, written_at = now();

-- name: record_missed_event
-- Record the missed event of occurrences a trigger dropped, once per trigger and first missed occurrence.
SELECT hydra_record_event(
    'missed', %(task_id)s, %(task_version)s, NULL, %(occurrence)s,
    md5(%(task_id)s::text || ':' || %(position)s::text || ':missed:'
        || %(occurrence)s::timestamptz::text)::uuid,
    %(payload)s
) AS recorded;

-- name: record_late_events
-- Record once the late event of each occurrence past its deadline without success: its run queued, leased or running, or never created.
WITH candidates AS (
    SELECT r.task_id, r.task_version, r.id AS run_id, r.occurrence, r.state::text AS state,
           r.reason, r.attempts_used, v.deadline AS deadline
    FROM hydra_runs r
    JOIN hydra_task_versions v ON v.task_id = r.task_id AND v.version = r.task_version
    WHERE r.state IN ('QUEUED', 'LEASED', 'RUNNING')
      AND v.deadline IS NOT NULL
      AND r.occurrence + (v.deadline)::interval <= %(now)s
    UNION ALL
    SELECT tr.task_id, t.version, NULL, tr.next_fire_at, 'NOT_CREATED', '', 0,
           v.deadline
    FROM hydra_triggers tr
    JOIN hydra_tasks t ON t.id = tr.task_id AND t.deleted_at IS NULL
    JOIN hydra_task_versions v ON v.task_id = t.id AND v.version = t.version
    WHERE tr.active AND tr.next_fire_at IS NOT NULL
      AND v.deadline IS NOT NULL
      AND tr.next_fire_at + (v.deadline)::interval <= %(now)s
      AND NOT EXISTS (
          SELECT 1 FROM hydra_runs r WHERE r.task_id = tr.task_id AND r.occurrence = tr.next_fire_at
      )
),
due AS (
    SELECT DISTINCT ON (c.task_id, c.occurrence) c.*
    FROM candidates c
    WHERE NOT EXISTS (
        SELECT 1 FROM hydra_late_occurrences l
        WHERE l.task_id = c.task_id AND l.occurrence = c.occurrence
    )
    ORDER BY c.task_id, c.occurrence, c.run_id NULLS LAST
    LIMIT %(limit)s
),
fresh AS (
    INSERT INTO hydra_late_occurrences (task_id, occurrence)
    SELECT task_id, occurrence FROM due
    ON CONFLICT DO NOTHING
    RETURNING task_id, occurrence
)
SELECT d.task_id, d.occurrence, hydra_record_event(
    'late', d.task_id, d.task_version, d.run_id, d.occurrence,
    md5(d.task_id::text || ':late:' || d.occurrence::text)::uuid,
    jsonb_build_object(
        'task', (SELECT t.name FROM hydra_tasks t WHERE t.id = d.task_id),
        'run_id', d.run_id,
        'occurrence', d.occurrence,
        'state', d.state,
        'reason', d.reason,
        'attempts', d.attempts_used,
        'deadline', d.deadline,
        'due_at', d.occurrence + d.deadline::interval,
        'recorded_at', now()
    )
) AS recorded
FROM due d JOIN fresh f ON f.task_id = d.task_id AND f.occurrence = d.occurrence;

-- name: claim_notifications
-- Lease up to limit pending notifications that are due and free (SKIP LOCKED), with the attempt their event is about.
WITH due AS (
    SELECT id FROM hydra_notifications
    WHERE state = 'pending' AND next_attempt_at <= now()
      AND (lease_expires_at IS NULL OR lease_expires_at <= now())
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE hydra_notifications n
SET lease_owner = %(owner)s, lease_expires_at = now() + %(lease)s
FROM due
WHERE n.id = due.id
RETURNING n.id, n.event_id, n.event, n.target, n.payload, n.attempts,
    (SELECT jsonb_build_object(
                'exit_code', a.exit_code, 'signal', a.signal, 'message', a.message,
                'agent', a.agent_id, 'started_at', a.started_at, 'finished_at', a.finished_at)
     FROM hydra_attempts a
     WHERE a.run_id = n.run_id AND a.number = (n.payload ->> 'attempts')::integer) AS attempt;

-- name: record_notification_try
-- Count a failed try of a notification this coordinator holds, and extend its lease.
UPDATE hydra_notifications
SET attempts = %(attempts)s, last_error = %(error)s, lease_expires_at = now() + %(lease)s
WHERE id = %(id)s AND state = 'pending' AND lease_owner = %(owner)s;

-- name: finish_notification
-- Record a notification's final state (delivered or failed); a final one stays as it is.
UPDATE hydra_notifications
SET state = %(state)s, attempts = GREATEST(attempts, %(attempts)s), last_error = %(error)s,
    finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND state = 'pending';

-- name: release_notifications
-- Give back the leases of a stopping coordinator's undelivered notifications.
UPDATE hydra_notifications SET lease_expires_at = NULL
WHERE lease_owner = %(owner)s AND state = 'pending' AND id = ANY(%(ids)s);

-- name: list_notifications
-- A page of notifications, newest first, keyset-paged by id; '' and NULL filter nothing, prefix limits task names.
SELECT n.id, n.event_id, n.event, t.name AS task, n.run_id, n.occurrence, n.webhook,
       n.from_defaults, n.target, n.state::text AS state, n.attempts, n.last_error,
       n.created_at, n.finished_at
FROM hydra_notifications n
JOIN hydra_tasks t ON t.id = n.task_id
WHERE (%(task)s = '' OR t.name = %(task)s)
  AND (%(prefix)s = '' OR starts_with(t.name, %(prefix)s))
  AND (%(state)s = '' OR n.state = %(state)s::hydra_notification_state)
  AND (%(before)s::bigint IS NULL OR n.id < %(before)s)
ORDER BY n.id DESC
LIMIT %(limit)s;
-- ------------------------------------------------------------ retention --

-- name: claim_pruner
-- Take or renew the pruner's lease for a coordinator; no row while another holds it.
WITH free AS (
    SELECT singleton FROM hydra_pruner
    WHERE singleton AND (holder = %(holder)s OR lease_expires_at < now())
    FOR UPDATE SKIP LOCKED
)
UPDATE hydra_pruner p SET holder = %(holder)s, lease_expires_at = now() + %(ttl)s
FROM free WHERE p.singleton
RETURNING p.holder;

-- name: record_prune_pass
-- A pass ended: its figures; the lease is given up (the next pass is anyone's).
UPDATE hydra_pruner
SET last_pass_started_at = %(started_at)s, last_pass_finished_at = now(),
    last_pass_runs = %(runs)s, lease_expires_at = now()
WHERE singleton AND holder = %(holder)s;

-- name: retention_policies
-- Every task (deleted ones too) with the retention of its current version and its dependents.
SELECT t.id, t.name, t.deleted_at IS NOT NULL AS deleted, v.spec -> 'retention' AS retention,
       ARRAY(SELECT d.id FROM hydra_triggers g JOIN hydra_tasks d ON d.id = g.task_id
             WHERE t.deleted_at IS NULL AND d.deleted_at IS NULL AND g.kind = 'after'
               AND g.spec -> 'after' ? t.name) AS dependent_ids
FROM hydra_tasks t
JOIN hydra_task_versions v ON v.task_id = t.id AND v.version = t.version
ORDER BY t.id;

-- name: upstreams_of
-- The live tasks each of some tasks runs after: (dependent, upstream) pairs.
SELECT DISTINCT g.task_id AS dependent_id, u.id FROM hydra_triggers g
JOIN hydra_tasks u ON u.name IN (SELECT jsonb_array_elements_text(g.spec -> 'after'))
WHERE g.task_id = ANY(%(task_ids)s::bigint[]) AND g.kind = 'after' AND u.deleted_at IS NULL;

-- name: tasks_with_old_runs
-- Of some tasks, those with a run after an occurrence and older than their max_age (one probe each).
SELECT p.task_id
FROM unnest(%(task_ids)s::bigint[], %(max_ages)s::float8[], %(afters)s::timestamptz[])
     AS p(task_id, max_age, after)
WHERE EXISTS (SELECT 1 FROM hydra_runs r
              WHERE r.task_id = p.task_id AND r.occurrence > p.after
                AND r.occurrence < now() - make_interval(secs => p.max_age));

-- name: lock_prunable_runs
-- The next `limit` runs after (occurrence, id), oldest first across every task,
-- whose occurrence is older than the shortest max_age; of them, those that may go
-- are locked: their task has a policy, they are finished, ended longer than its
-- max_age ago, are not among its keep_last newest, and (for a live task) are not
-- its latest success nor a run a dependent still waits on (a dependent's run for
-- the occurrence is active, or it has none yet while another upstream's run for
-- it is active). Oldest first across tasks, the way runs were written, so that a
-- batch reads and deletes neighbouring rows. Others' locks are skipped.
WITH policy AS (
    SELECT * FROM unnest(%(task_ids)s::bigint[], %(max_ages)s::float8[],
                         %(keep_lasts)s::int[], %(protects)s::boolean[])
        AS p(task_id, max_age, keep_last, protect)
), scanned AS (
    SELECT r.id, r.occurrence, r.task_id FROM hydra_runs r
    WHERE r.occurrence >= %(after_occurrence)s
      AND (r.occurrence > %(after_occurrence)s OR r.id < %(after_id)s::uuid)
      AND r.occurrence < now() - make_interval(secs => %(min_age)s)
    ORDER BY r.occurrence, r.id DESC
    LIMIT %(limit)s
), bounds AS (
    SELECT p.task_id, p.protect, now() - make_interval(secs => p.max_age) AS cutoff,
           coalesce((SELECT k.occurrence FROM hydra_runs k WHERE k.task_id = p.task_id
                     ORDER BY k.occurrence DESC OFFSET p.keep_last LIMIT 1),
                    '-infinity') AS last
    FROM policy p WHERE p.task_id IN (SELECT task_id FROM scanned)
), locked AS (
    SELECT r.id FROM hydra_runs r
    JOIN scanned s ON s.id = r.id
    JOIN bounds b ON b.task_id = r.task_id
    WHERE r.occurrence <= b.last AND r.occurrence < b.cutoff
      AND r.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'SKIPPED')
      AND coalesce(r.finished_at, r.updated_at) < b.cutoff
      AND NOT (b.protect AND r.state = 'SUCCEEDED' AND NOT EXISTS (
          SELECT 1 FROM hydra_runs n
          WHERE n.task_id = r.task_id AND n.state = 'SUCCEEDED' AND n.occurrence > r.occurrence))
      AND NOT (b.protect AND EXISTS (
          SELECT 1 FROM unnest(%(dependent_of)s::bigint[], %(dependent_ids)s::bigint[])
              AS e(task_id, dependent_id)
          JOIN hydra_runs d ON d.task_id = e.dependent_id AND d.occurrence = r.occurrence
          WHERE e.task_id = r.task_id AND d.state IN ('QUEUED', 'LEASED', 'RUNNING')))
      AND NOT (b.protect
          AND EXISTS (
              SELECT 1 FROM unnest(%(dependent_of)s::bigint[], %(dependent_ids)s::bigint[])
                  AS e(task_id, dependent_id)
              WHERE e.task_id = r.task_id
                AND NOT EXISTS (SELECT 1 FROM hydra_runs d
                                WHERE d.task_id = e.dependent_id AND d.occurrence = r.occurrence))
          AND EXISTS (
              SELECT 1 FROM unnest(%(upstream_of)s::bigint[], %(upstream_ids)s::bigint[])
                  AS e(task_id, upstream_id)
              JOIN hydra_runs u ON u.task_id = e.upstream_id AND u.occurrence = r.occurrence
              WHERE e.task_id = r.task_id AND u.state IN ('QUEUED', 'LEASED', 'RUNNING')))
    FOR UPDATE OF r SKIP LOCKED
), last AS (
    SELECT occurrence, id FROM scanned ORDER BY occurrence DESC, id LIMIT 1
)
SELECT (SELECT occurrence FROM last) AS scanned_until, (SELECT id FROM last) AS scanned_id,
       (SELECT count(*) FROM scanned) AS scanned,
       ARRAY(SELECT id FROM locked) AS run_ids;

-- name: lock_runs_with_old_output
-- The next `limit` runs of a task after an occurrence that ended before the
-- output's max_age; those that ended longer ago and still have output are
-- locked, and the first that has not ended that long ago is named (the next
-- scan starts there).
WITH scanned AS (
    SELECT r.id, r.occurrence, r.state, r.finished_at FROM hydra_runs r
    WHERE r.task_id = %(task_id)s AND r.occurrence > %(after)s
      AND r.occurrence < now() - make_interval(secs => %(max_age)s)
    ORDER BY r.occurrence
    LIMIT %(limit)s
), pending AS (
    SELECT min(occurrence) AS occurrence FROM scanned
    WHERE state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'SKIPPED')
       OR coalesce(finished_at, now()) >= now() - make_interval(secs => %(max_age)s)
), locked AS (
    SELECT r.id FROM hydra_runs r
    JOIN scanned s ON s.id = r.id
    WHERE r.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'SKIPPED')
      AND r.finished_at < now() - make_interval(secs => %(max_age)s)
      AND EXISTS (SELECT 1 FROM hydra_attempt_output o WHERE o.run_id = r.id)
    FOR UPDATE OF r SKIP LOCKED
)
SELECT (SELECT max(occurrence) FROM scanned) AS scanned_until,
       (SELECT count(*) FROM scanned) AS scanned,
       (SELECT occurrence FROM pending) AS pending_from,
       ARRAY(SELECT id FROM locked) AS run_ids;

-- name: delete_output_of_runs
-- Delete the output of some runs; how many chunks went.
WITH gone AS (
    DELETE FROM hydra_attempt_output WHERE run_id = ANY(%(run_ids)s::uuid[]) RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: forget_output_bytes
-- The attempts of some runs keep no output any more.
UPDATE hydra_attempts SET output_bytes = 0
WHERE run_id = ANY(%(run_ids)s::uuid[]) AND output_bytes <> 0;

-- name: delete_attempts_of_runs
-- Delete the attempts of some runs (their output first); how many went.
WITH gone AS (
    DELETE FROM hydra_attempts WHERE run_id = ANY(%(run_ids)s::uuid[]) RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: delete_notifications_of_runs
-- Delete the finished notifications of some runs (pending ones are still delivered); how many went.
WITH gone AS (
    DELETE FROM hydra_notifications
    WHERE run_id = ANY(%(run_ids)s::uuid[]) AND state <> 'pending'
    RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: delete_runs
-- Delete some runs (their attempts, output and other rows first); how many went.
WITH gone AS (
    DELETE FROM hydra_runs WHERE id = ANY(%(run_ids)s::uuid[]) RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: delete_old_audit_entries
-- Delete up to `limit` audit entries older than max_age, oldest first; how many went.
WITH old AS (
    SELECT id FROM hydra_audit WHERE at < now() - make_interval(secs => %(max_age)s)
    ORDER BY at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM hydra_audit a USING old WHERE a.id = old.id RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: delete_old_skipped_occurrences
-- Of some tasks, delete up to `limit` records of dropped occurrences whose last occurrence is older than the task's max_age; how many went.
WITH policy AS (
    SELECT * FROM unnest(%(task_ids)s::bigint[], %(max_ages)s::float8[]) AS p(task_id, max_age)
), old AS (
    SELECT s.id FROM hydra_skipped_occurrences s
    JOIN policy p ON p.task_id = s.task_id
    WHERE s.last_occurrence < now() - make_interval(secs => p.max_age)
    LIMIT %(limit)s
    FOR UPDATE OF s SKIP LOCKED
), gone AS (
    DELETE FROM hydra_skipped_occurrences d USING old WHERE d.id = old.id RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: delete_old_late_marks
-- Of some tasks, delete up to `limit` marks of late occurrences found longer ago than the task's max_age that could not be late again (no active run of the occurrence, no trigger waiting at it); how many went.
WITH policy AS (
    SELECT * FROM unnest(%(task_ids)s::bigint[], %(max_ages)s::float8[]) AS p(task_id, max_age)
), old AS (
    SELECT l.task_id, l.occurrence FROM hydra_late_occurrences l
    JOIN policy p ON p.task_id = l.task_id
    WHERE l.found_at < now() - make_interval(secs => p.max_age)
      AND NOT EXISTS (SELECT 1 FROM hydra_runs r
                      WHERE r.task_id = l.task_id AND r.occurrence = l.occurrence
                        AND r.state IN ('QUEUED', 'LEASED', 'RUNNING'))
      AND NOT EXISTS (SELECT 1 FROM hydra_triggers t
                      WHERE t.task_id = l.task_id AND t.next_fire_at = l.occurrence)
    LIMIT %(limit)s
    FOR UPDATE OF l SKIP LOCKED
), gone AS (
    DELETE FROM hydra_late_occurrences d USING old
    WHERE d.task_id = old.task_id AND d.occurrence = old.occurrence RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: delete_unused_versions
-- Delete up to `limit` versions that are not their task's current one and that no run points to.
WITH unused AS (
    SELECT v.task_id, v.version FROM hydra_task_versions v
    JOIN hydra_tasks t ON t.id = v.task_id
    WHERE v.version <> t.version
      AND NOT EXISTS (SELECT 1 FROM hydra_runs r
                      WHERE r.task_id = v.task_id AND r.task_version = v.version)
    LIMIT %(limit)s
    FOR UPDATE OF v SKIP LOCKED
), gone AS (
    DELETE FROM hydra_task_versions v USING unused u
    WHERE v.task_id = u.task_id AND v.version = u.version
    RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: lock_emptied_tasks
-- Up to `limit` deleted tasks that have no run left, locked.
SELECT t.id FROM hydra_tasks t
WHERE t.deleted_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM hydra_runs r WHERE r.task_id = t.id)
ORDER BY t.id
LIMIT %(limit)s
FOR UPDATE OF t SKIP LOCKED;

-- name: delete_tasks
-- Delete some tasks with their triggers, versions, skipped occurrences, late marks and notifications; how many went.
WITH skipped AS (
    DELETE FROM hydra_skipped_occurrences WHERE task_id = ANY(%(task_ids)s::bigint[])
), late AS (
    DELETE FROM hydra_late_occurrences WHERE task_id = ANY(%(task_ids)s::bigint[])
), notified AS (
    DELETE FROM hydra_notifications WHERE task_id = ANY(%(task_ids)s::bigint[])
), triggers AS (
    DELETE FROM hydra_triggers WHERE task_id = ANY(%(task_ids)s::bigint[])
), versions AS (
    DELETE FROM hydra_task_versions WHERE task_id = ANY(%(task_ids)s::bigint[])
), gone AS (
    DELETE FROM hydra_tasks WHERE id = ANY(%(task_ids)s::bigint[]) RETURNING 1
)
SELECT count(*) AS deleted FROM gone;
