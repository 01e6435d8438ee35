-- Preconditions are evaluated by agents before an attempt starts; a run keeps
-- how often they were checked, the latest verdict of each, and when checking
-- began (precondition_timeout counts from there).

ALTER TABLE hydra_runs
    ADD COLUMN precondition_checks     integer NOT NULL DEFAULT 0,
    ADD COLUMN precondition_verdicts   jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN first_checked_at        timestamptz;

-- Dependency resolution finds the active runs of a task and the runs of its
-- upstream tasks for one occurrence; both go through (task_id, occurrence).
CREATE INDEX hydra_runs_active_by_task ON hydra_runs (task_id)
    WHERE state IN ('LEASED', 'RUNNING', 'QUEUED');
