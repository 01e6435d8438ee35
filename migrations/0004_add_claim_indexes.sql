-- hydra: no-transaction
-- The dispatcher's claim reads only what it may lease, whatever a task's backlog.
-- It finds each task with a due queued run by one probe of the first index (a
-- loose index scan) and takes a task's new work from it in occurrence order;
-- the second holds the runs that take a slot of their task's max_active_runs
-- (leased, running, or queued again for a retry or a re-check).
--
-- Built concurrently, outside a transaction, so that a big hydra_runs keeps
-- taking writes while they build (a database that applied this file before it
-- was changed to build concurrently has the very same indexes). A build that
-- was interrupted leaves an INVALID index, which the runner drops and builds again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS hydra_runs_queued_by_task ON hydra_runs (task_id, occurrence)
    WHERE state = 'QUEUED';
CREATE INDEX CONCURRENTLY IF NOT EXISTS hydra_runs_in_flight_by_task ON hydra_runs (task_id, occurrence)
    WHERE state IN ('LEASED', 'RUNNING')
       OR (state = 'QUEUED' AND (attempts_used > 0 OR precondition_checks > 0));
