-- No occurrence without a trace (hydra/occurrences.py, `hydractl why`): every occurrence of a time
-- trigger that gets no run is recorded with why, in the transaction that
-- decided to drop it. Contiguous dropped occurrences of one trigger for one
-- reason are one row (first, last, count), so a per-second cron paused for a
-- month writes one row, not 2.6 million.
CREATE TABLE IF NOT EXISTS hydra_skipped_occurrences (
    id                bigserial PRIMARY KEY,
    task_id           bigint NOT NULL REFERENCES hydra_tasks (id),
    -- The trigger's index in the spec's triggers list when it was dropped.
    trigger_position  integer NOT NULL,
    -- hydra.occurrences.SkipReason: catchup_none, catchup_latest, max_catchup,
    -- starting_deadline, paused.
    reason            text NOT NULL,
    first_occurrence  timestamptz NOT NULL,
    last_occurrence   timestamptz NOT NULL,
    -- Occurrences in [first, last]; NULL when there were too many to count cheaply.
    occurrence_count  bigint,
    -- For people: the policy and its figures (e.g. "starting_deadline 2m").
    detail            text NOT NULL DEFAULT '',
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (first_occurrence <= last_occurrence),
    -- Two coordinators (or two upstreams of one `after` task) recording one drop make one row.
    UNIQUE (task_id, trigger_position, first_occurrence)
);
-- Why: the range holding an occurrence is the last one starting at or before it.
CREATE INDEX IF NOT EXISTS hydra_skipped_occurrences_lookup
    ON hydra_skipped_occurrences (task_id, first_occurrence DESC);

-- When a task was last paused and resumed, kept on its triggers (which the
-- trigger loop reads anyway), so that occurrences the catch-up policy drops
-- after a resume are recorded as having fallen in the pause.
ALTER TABLE hydra_triggers
    ADD COLUMN IF NOT EXISTS paused_at   timestamptz,
    ADD COLUMN IF NOT EXISTS resumed_at  timestamptz;
