-- hydra: no-transaction
-- Retention (docs/retention.md): the pruner's lease, and the indexes it and
-- `runs list --state` need so that neither reads history.
--
-- One coordinator prunes at a time: the one whose id is in the single row of
-- hydra_pruner while its lease has not expired; every batch renews it in the
-- batch's own transaction. The row also keeps the last pass's figures, so any
-- coordinator (and the metrics) can say what was pruned cluster-wide.
CREATE TABLE IF NOT EXISTS hydra_pruner (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder           text NOT NULL DEFAULT '',
    lease_expires_at timestamptz NOT NULL DEFAULT '-infinity',
    last_pass_started_at  timestamptz,
    last_pass_finished_at timestamptz,
    last_pass_runs   bigint NOT NULL DEFAULT 0
);
INSERT INTO hydra_pruner (singleton) VALUES (true) ON CONFLICT DO NOTHING;
-- Runs of some states newest first (runs list --state FAILED over millions of
-- successes): built concurrently, so a big hydra_runs keeps taking writes.
CREATE INDEX CONCURRENTLY IF NOT EXISTS hydra_runs_by_state ON hydra_runs (state, occurrence DESC, id DESC);
-- The pruner deletes a task version only when no run points to it: one probe.
CREATE INDEX CONCURRENTLY IF NOT EXISTS hydra_runs_by_version ON hydra_runs (task_id, task_version);
-- The pruner deletes a pruned run's finished notifications: one probe per run.
CREATE INDEX CONCURRENTLY IF NOT EXISTS hydra_notifications_by_run ON hydra_notifications (run_id) WHERE run_id IS NOT NULL;
