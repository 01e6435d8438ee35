-- Trust (docs/security.md): credentials with roles and scopes, the audit log, and
-- whether a coordinator serves without authentication. Every statement may run again
-- (IF NOT EXISTS): tests/hostile/test_online_migrations.py re-applies it to a schema
-- that already has it.

-- A credential: a random secret shown once at creation, stored only as its
-- SHA-256 (the secret has 256 bits of entropy, so a fast hash is enough).
CREATE TABLE IF NOT EXISTS hydra_credentials (
    name          text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin', 'agent')),
    token_hash    bytea NOT NULL UNIQUE,
    -- Task-name prefix every call of this credential is limited to; '' = every task.
    scope         text NOT NULL DEFAULT '',
    -- Agent credentials only: the agent id it connects as, the labels it must
    -- announce (NULL: any) and the most capacity it may announce (NULL: any).
    agent_id      text,
    labels        jsonb,
    max_capacity  integer CHECK (max_capacity IS NULL OR max_capacity > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CHECK ((role = 'agent') = (agent_id IS NOT NULL))
);
-- Several live credentials may name one agent id, so that an agent's credential
-- is rotated without downtime (create the new one, deploy it, revoke the old).
CREATE INDEX IF NOT EXISTS hydra_credentials_by_agent ON hydra_credentials (agent_id)
    WHERE agent_id IS NOT NULL;

-- Every call that changes something, and every refused call: written in the same
-- transaction as the change it records.
CREATE TABLE IF NOT EXISTS hydra_audit (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    -- The credential's name ('anonymous' without authentication, '' when the
    -- caller presented no known credential) and its role then.
    who      text NOT NULL,
    role     text NOT NULL DEFAULT '',
    -- The call, as Service/Method ('TaskService/Apply').
    action   text NOT NULL,
    task     text,
    run_id   text,
    peer     text NOT NULL DEFAULT '',
    -- 'OK', or the gRPC status code name of a failed or refused call.
    outcome  text NOT NULL,
    detail   text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS hydra_audit_by_time ON hydra_audit (at DESC, id DESC);
CREATE INDEX IF NOT EXISTS hydra_audit_by_task ON hydra_audit (task, at DESC) WHERE task IS NOT NULL;
CREATE INDEX IF NOT EXISTS hydra_audit_by_who ON hydra_audit (who, at DESC);

ALTER TABLE hydra_coordinators ADD COLUMN IF NOT EXISTS insecure boolean NOT NULL DEFAULT false;
-- Whether it serves TLS (shown by `cluster status` beside insecure).
ALTER TABLE hydra_coordinators ADD COLUMN IF NOT EXISTS tls boolean NOT NULL DEFAULT false;
