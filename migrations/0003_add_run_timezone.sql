-- The IANA zone a run's occurrence is shown in to templates ({{ ds }}, {{ ts }}):
-- its cron trigger's zone, the upstream run's zone for a dependency, else the
-- task's first cron zone, else UTC. Stored so a whole pipeline sees one day.

ALTER TABLE hydra_runs ADD COLUMN timezone text NOT NULL DEFAULT 'UTC';
