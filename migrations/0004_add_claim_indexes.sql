-- The dispatcher's claim reads only what it may lease, whatever a task's backlog.
-- It finds each task with a due queued run by one probe of the first index (a
-- loose index scan) and takes a task's new work from it in occurrence order;
-- the second holds the runs that take a slot of their task's max_active_runs
-- (leased, running, or queued again for a retry or a re-check).
CREATE INDEX hydra_runs_queued_by_task ON hydra_runs (task_id, occurrence)
    WHERE state = 'QUEUED';
CREATE INDEX hydra_runs_in_flight_by_task ON hydra_runs (task_id, occurrence)
    WHERE state IN ('LEASED', 'RUNNING')
       OR (state = 'QUEUED' AND (attempts_used > 0 OR precondition_checks > 0));
