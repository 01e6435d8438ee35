-- The dispatcher's claim finds each task with a due queued run by one probe of
-- this index (a loose index scan), and takes a task's new work from it in
-- occurrence order: its cost follows the work it leases, not a task's backlog.
CREATE INDEX hydra_runs_queued_by_task ON hydra_runs (task_id, occurrence)
    WHERE state = 'QUEUED';
