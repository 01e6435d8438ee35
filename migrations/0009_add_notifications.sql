-- Alerts (docs/alerting.md): the outbox of webhook deliveries, one row per
-- (event, webhook), written in the transaction of the change that caused the
-- event; the cluster's default webhooks; the occurrences already found late.
-- Every statement may run again on a schema that has it (test_online_migrations).

DO $$ BEGIN
CREATE TYPE hydra_notification_state AS ENUM (
    'pending',    -- from: creation
    'delivered',  -- from: pending (the receiver answered 2xx); final
    'failed'      -- from: pending (every try failed, or the body cannot render); final
);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS hydra_notifications (
    id                bigserial PRIMARY KEY,
    -- The same for every webhook of one event; sent as Hydra-Event-Id.
    event_id          uuid NOT NULL,
    event             text NOT NULL
        CHECK (event IN ('failed', 'succeeded', 'retrying', 'skipped', 'late', 'missed')),
    task_id           bigint NOT NULL REFERENCES hydra_tasks (id),
    -- No foreign key: pruning removes runs and their notifications in its own order.
    run_id            uuid,
    occurrence        timestamptz NOT NULL,
    -- Position in the task's notify list, or in the defaults (from_defaults).
    webhook           integer NOT NULL,
    from_defaults     boolean NOT NULL,
    -- The webhook's canonical shape as it was: secrets by name, never their values.
    target            jsonb NOT NULL,
    -- The event as recorded (docs/alerting.md, "The payload").
    payload           jsonb NOT NULL,
    state             hydra_notification_state NOT NULL DEFAULT 'pending',
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text NOT NULL DEFAULT '',
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    -- The coordinator delivering it, until when; an expired lease is taken over.
    lease_owner       text,
    lease_expires_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    UNIQUE (event_id, webhook)
);
-- Hot path of delivery: cost follows the pending rows, not the table.
CREATE INDEX IF NOT EXISTS hydra_notifications_pending ON hydra_notifications (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS hydra_notifications_by_task ON hydra_notifications (task_id, id DESC);

-- The cluster's default webhooks (`hydra coordinator --notify-defaults`), for
-- tasks whose notify is empty. One row; every coordinator writes its own at start.
CREATE TABLE IF NOT EXISTS hydra_notify_defaults (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    webhooks    jsonb NOT NULL DEFAULT '[]',
    written_by  text NOT NULL DEFAULT '',
    written_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO hydra_notify_defaults (id) VALUES (true) ON CONFLICT DO NOTHING;

-- (task, occurrence) already found late: the late event is recorded once.
CREATE TABLE IF NOT EXISTS hydra_late_occurrences (
    task_id     bigint NOT NULL REFERENCES hydra_tasks (id),
    occurrence  timestamptz NOT NULL,
    found_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, occurrence)
);

-- A version's webhooks apart from its spec, so that a run's state change reads them
-- without reading (and detoasting) the whole spec.
-- The same for its deadline (text, e.g. '1h30m'), which the deadline loop reads.
ALTER TABLE hydra_task_versions
    ADD COLUMN IF NOT EXISTS notify jsonb GENERATED ALWAYS AS (spec -> 'notify') STORED,
    ADD COLUMN IF NOT EXISTS deadline text GENERATED ALWAYS AS (spec ->> 'deadline') STORED;

-- Record one event for every webhook of the task version (or the defaults, when
-- its notify is empty) that listens for it; an event recorded already is not
-- recorded again. Wakes the coordinators' deliveries.
CREATE OR REPLACE FUNCTION hydra_record_event(
    p_event text, p_task_id bigint, p_task_version integer, p_run_id uuid,
    p_occurrence timestamptz, p_event_id uuid, p_payload jsonb
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    hooks jsonb;
    defaults boolean := false;
    recorded integer;
BEGIN  -- a PL/pgSQL block, not a transaction
    SELECT v.notify INTO hooks
    FROM hydra_task_versions v WHERE v.task_id = p_task_id AND v.version = p_task_version;
    IF hooks IS NULL OR jsonb_array_length(hooks) = 0 THEN
        SELECT d.webhooks INTO hooks FROM hydra_notify_defaults d;
        defaults := true;
    END IF;
    IF hooks IS NULL OR jsonb_array_length(hooks) = 0 THEN
        RETURN 0;
    END IF;
    INSERT INTO hydra_notifications
        (event_id, event, task_id, run_id, occurrence, webhook, from_defaults, target, payload)
    SELECT p_event_id, p_event, p_task_id, p_run_id, p_occurrence, h.position - 1, defaults,
           h.hook, p_payload || jsonb_build_object('event_id', p_event_id, 'event', p_event)
    FROM jsonb_array_elements(hooks) WITH ORDINALITY AS h (hook, position)
    WHERE h.hook -> 'on' ? p_event
    ON CONFLICT (event_id, webhook) DO NOTHING;
    GET DIAGNOSTICS recorded = ROW_COUNT;
    IF recorded > 0 THEN
        PERFORM pg_notify('hydra_outbox', '');
    END IF;
    RETURN recorded;
END $$;

-- Whether a task version has webhooks, its own or the defaults.
CREATE OR REPLACE FUNCTION hydra_notifies(p_task_id bigint, p_task_version integer)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM hydra_task_versions v
        WHERE v.task_id = p_task_id AND v.version = p_task_version
          AND jsonb_array_length(coalesce(v.notify, '[]')) > 0
    ) OR EXISTS (SELECT 1 FROM hydra_notify_defaults d WHERE jsonb_array_length(d.webhooks) > 0)
$$;

-- A run's state change into SUCCEEDED, FAILED or SKIPPED, or from RUNNING back to
-- QUEUED (a retry), records its event: in a trigger so that every path that
-- changes a run (attempt reports, the reaper, precondition timeouts, overlap and
-- upstream skips, render failures) does so in its own transaction.
CREATE OR REPLACE FUNCTION hydra_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN  -- a PL/pgSQL block, not a transaction
    kind := CASE
        WHEN NEW.state = 'SUCCEEDED' THEN 'succeeded'
        WHEN NEW.state = 'FAILED' THEN 'failed'
        WHEN NEW.state = 'SKIPPED' THEN 'skipped'
        WHEN NEW.state = 'QUEUED' AND TG_OP = 'UPDATE' AND OLD.state = 'RUNNING' THEN 'retrying'
    END;
    -- Most tasks notify nobody: then nothing more is read or built.
    IF kind IS NULL OR NOT hydra_notifies(NEW.task_id, NEW.task_version) THEN
        RETURN NULL;
    END IF;
    PERFORM hydra_record_event(
        kind, NEW.task_id, NEW.task_version, NEW.id, NEW.occurrence,
        -- Its change, once: a run skipped, retried and skipped again has two events.
        md5(NEW.id::text || ':' || kind || ':' || NEW.attempts_used || ':' || now()::text)::uuid,
        jsonb_build_object(
            'task', (SELECT t.name FROM hydra_tasks t WHERE t.id = NEW.task_id),
            'run_id', NEW.id,
            'occurrence', NEW.occurrence,
            'state', NEW.state,
            'reason', NEW.reason,
            'cause', NEW.cause,
            'attempts', NEW.attempts_used,
            'max_attempts', NEW.max_attempts,
            'next_try_at', CASE WHEN kind = 'retrying' THEN NEW.not_before END,
            'recorded_at', now()
        )
    );
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS hydra_runs_event_on_update ON hydra_runs;
CREATE TRIGGER hydra_runs_event_on_update AFTER UPDATE OF state ON hydra_runs
    FOR EACH ROW
    WHEN (NEW.state IS DISTINCT FROM OLD.state
          AND NEW.state IN ('SUCCEEDED', 'FAILED', 'SKIPPED', 'QUEUED'))
    EXECUTE FUNCTION hydra_run_event();

DROP TRIGGER IF EXISTS hydra_runs_event_on_insert ON hydra_runs;
CREATE TRIGGER hydra_runs_event_on_insert AFTER INSERT ON hydra_runs
    FOR EACH ROW
    WHEN (NEW.state = 'SKIPPED')
    EXECUTE FUNCTION hydra_run_event();
