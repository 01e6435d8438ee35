-- Hydra's first schema: tasks and their versions, triggers, runs, attempts,
-- attempt output, agents and coordinators. Mirrors RunState/AttemptState of
-- hydra/domain.py and proto/hydra/v1/types.proto.

CREATE TYPE hydra_run_state AS ENUM (
    'QUEUED',     -- from: creation, LEASED (not ready / lease lost before start), RUNNING (retry), terminal (retry request)
    'LEASED',     -- from: QUEUED (dispatch)
    'RUNNING',    -- from: LEASED (attempt started)
    'SUCCEEDED',  -- from: RUNNING; at most once per run
    'FAILED',     -- from: RUNNING, LEASED
    'CANCELLED',  -- from: QUEUED, LEASED, RUNNING
    'SKIPPED'     -- from: QUEUED, LEASED
);

CREATE TYPE hydra_attempt_state AS ENUM (
    'RUNNING',    -- from: creation
    'SUCCEEDED',  -- from: RUNNING
    'FAILED',     -- from: RUNNING
    'TIMED_OUT',  -- from: RUNNING
    'LOST',       -- from: RUNNING (lease expired)
    'CANCELLED'   -- from: RUNNING
);

-- Fencing tokens: one sequence for the whole cluster, so tokens only grow.
CREATE SEQUENCE hydra_lease_token_seq AS bigint;

CREATE TABLE hydra_tasks (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL,
    version         integer NOT NULL,
    paused          boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
-- A deleted task's name may be used again; its runs stay on record.
CREATE UNIQUE INDEX hydra_tasks_name_live ON hydra_tasks (name) WHERE deleted_at IS NULL;

CREATE TABLE hydra_task_versions (
    task_id     bigint NOT NULL REFERENCES hydra_tasks (id),
    version     integer NOT NULL,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, version)
);

CREATE TABLE hydra_triggers (
    id              bigserial PRIMARY KEY,
    task_id         bigint NOT NULL REFERENCES hydra_tasks (id),
    position        integer NOT NULL,            -- index in the spec's triggers list
    kind            text NOT NULL CHECK (kind IN ('cron', 'interval', 'at', 'after')),
    spec            jsonb NOT NULL,
    -- Next occurrence to fire; NULL when none (an 'at' in the past, 'after').
    next_fire_at    timestamptz,
    -- Last occurrence a run was created (or deliberately not) for.
    last_fired_at   timestamptz,
    -- Copied from the task so the due-trigger index needs no join.
    active          boolean NOT NULL DEFAULT true,
    UNIQUE (task_id, position)
);
-- Hot path: due triggers. Cost follows the triggers due, not the table size.
CREATE INDEX hydra_triggers_due ON hydra_triggers (next_fire_at)
    WHERE active AND next_fire_at IS NOT NULL;

CREATE TABLE hydra_runs (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id           bigint NOT NULL REFERENCES hydra_tasks (id),
    task_version      integer NOT NULL,
    occurrence        timestamptz NOT NULL,
    cause             text NOT NULL,
    params            jsonb NOT NULL DEFAULT '{}',
    idempotency_key   text,
    state             hydra_run_state NOT NULL DEFAULT 'QUEUED',
    reason            text NOT NULL DEFAULT '',
    selector          jsonb NOT NULL DEFAULT '{}',
    not_before        timestamptz NOT NULL DEFAULT now(),
    attempts_used     integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL DEFAULT 1,
    -- The retry policy of the pinned version, so backoff is computed in SQL.
    backoff_seconds       double precision NOT NULL DEFAULT 30,
    backoff_multiplier    double precision NOT NULL DEFAULT 2,
    max_backoff_seconds   double precision NOT NULL DEFAULT 600,
    lease_owner       text,
    lease_token       bigint,
    lease_expires_at  timestamptz,
    cancel_requested  boolean NOT NULL DEFAULT false,
    outputs           jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Guarantee 1: one run per (task, occurrence).
    UNIQUE (task_id, occurrence)
);
CREATE UNIQUE INDEX hydra_runs_idempotency ON hydra_runs (task_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Hot path: dispatchable runs.
CREATE INDEX hydra_runs_queued ON hydra_runs (not_before) WHERE state = 'QUEUED';
-- Hot path: expired leases.
CREATE INDEX hydra_runs_leased ON hydra_runs (lease_expires_at) WHERE state IN ('LEASED', 'RUNNING');
CREATE INDEX hydra_runs_by_owner ON hydra_runs (lease_owner) WHERE state IN ('LEASED', 'RUNNING');
CREATE INDEX hydra_runs_by_task ON hydra_runs (task_id, occurrence DESC);
CREATE INDEX hydra_runs_recent ON hydra_runs (occurrence DESC, id);

CREATE TABLE hydra_attempts (
    run_id        uuid NOT NULL REFERENCES hydra_runs (id),
    number        integer NOT NULL,
    state         hydra_attempt_state NOT NULL DEFAULT 'RUNNING',
    agent_id      text NOT NULL,
    lease_token   bigint NOT NULL,
    argv          text[] NOT NULL DEFAULT '{}',
    exit_code     integer,
    signal        integer,
    message       text NOT NULL DEFAULT '',
    output_bytes  bigint NOT NULL DEFAULT 0,   -- bytes currently kept in hydra_attempt_output
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    PRIMARY KEY (run_id, number),
    UNIQUE (lease_token)
);
-- Guarantee 2: at most one successful attempt per run.
CREATE UNIQUE INDEX hydra_attempts_one_success ON hydra_attempts (run_id) WHERE state = 'SUCCEEDED';

-- Output of attempts in chunks; older chunks are pruned to keep a bounded tail.
CREATE TABLE hydra_attempt_output (
    seq         bigserial PRIMARY KEY,
    run_id      uuid NOT NULL,
    attempt     integer NOT NULL,
    stream      smallint NOT NULL,   -- 1 stdout, 2 stderr
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (run_id, attempt) REFERENCES hydra_attempts (run_id, number)
);
CREATE INDEX hydra_attempt_output_by_attempt ON hydra_attempt_output (run_id, attempt, seq);

CREATE TABLE hydra_agents (
    id              text PRIMARY KEY,
    hostname        text NOT NULL,
    labels          jsonb NOT NULL DEFAULT '{}',
    capacity        integer NOT NULL,
    version         text NOT NULL DEFAULT '',
    state           text NOT NULL CHECK (state IN ('connected', 'draining', 'disconnected')),
    coordinator_id  text,
    connected_at    timestamptz,
    last_seen_at    timestamptz
);

CREATE TABLE hydra_coordinators (
    id                 text PRIMARY KEY,
    address            text NOT NULL,
    version            text NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
